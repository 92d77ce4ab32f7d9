"""Per-RPC latency of the participant services: `python -m bench.rpc_latency [--calls N]`.

Starts a stack on fresh databases and free ports (as `make bench` does), then calls every mutating RPC N
times in sequence through the generated stubs, each with a new idempotency key, plus a replay of each
(same key again). Prints p50/p99 in milliseconds per RPC.
"""

from __future__ import annotations

import argparse
import io
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import uvloop

from bench.__main__ import ALICE, QUANTILES, percentile
from sagaline import pg, stack
from sagaline_contracts.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from sagaline_contracts.order.v1 import order_pb2, order_pb2_grpc
from sagaline_contracts.payment.v1 import payment_pb2, payment_pb2_grpc


async def timed(samples: dict[str, list[float]], name: str, call: Awaitable[Any]) -> Any:
    started = time.perf_counter()
    result = await call
    samples.setdefault(name, []).append(time.perf_counter() - started)
    return result


async def one_round(stubs: dict[str, Any], samples: dict[str, list[float]]) -> None:
    saga = str(uuid.uuid4())
    order, payment, inventory = stubs["order"], stubs["payment"], stubs["inventory"]
    item = order_pb2.OrderItem(sku="SKU-WIDGET", quantity=1, unit_price="1.00")
    create = order_pb2.CreateOrderRequest(idempotency_key=f"{saga}:c", saga_id=saga, customer_id=ALICE,
                                          items=[item], currency="USD")  # fmt: skip
    created = await timed(samples, "CreateOrder", order.CreateOrder(create))
    await timed(samples, "CreateOrder (replay)", order.CreateOrder(create))
    pay = payment_pb2.ProcessPaymentRequest(idempotency_key=f"{saga}:p", saga_id=saga, customer_id=ALICE,
                                            amount="1.00", currency="USD")  # fmt: skip
    await timed(samples, "ProcessPayment", payment.ProcessPayment(pay))
    await timed(samples, "ProcessPayment (replay)", payment.ProcessPayment(pay))
    widget = inventory_pb2.StockItem(sku="SKU-WIDGET", quantity=1)
    reserve = inventory_pb2.ReserveStockRequest(idempotency_key=f"{saga}:r", saga_id=saga, items=[widget])
    await timed(samples, "ReserveStock", inventory.ReserveStock(reserve))
    await timed(samples, "ReserveStock (replay)", inventory.ReserveStock(reserve))
    if len(samples["CreateOrder"]) % 2:
        confirm = order_pb2.ConfirmOrderRequest(
            idempotency_key=f"{saga}:k", saga_id=saga, order_id=created.order.order_id
        )
        await timed(samples, "ConfirmOrder", order.ConfirmOrder(confirm))
        return
    undo: list[tuple[str, Callable[..., Awaitable[Any]], Any]] = [
        ("ReleaseStock", inventory.ReleaseStock, inventory_pb2.ReleaseStockRequest),
        ("RefundPayment", payment.RefundPayment, payment_pb2.RefundPaymentRequest),
        ("CancelOrder", order.CancelOrder, order_pb2.CancelOrderRequest),
    ]
    for name, rpc, message in undo:
        action = {"ReleaseStock": "r", "RefundPayment": "p", "CancelOrder": "c"}[name]
        request = message(
            idempotency_key=f"{saga}:{action}:undo", saga_id=saga, action_idempotency_key=f"{saga}:{action}"
        )
        await timed(samples, name, rpc(request))


async def measure(calls: int) -> dict[str, list[float]]:
    server_url, _ = pg.server_url()
    topology = stack.Topology.ephemeral(server_url, f"rpc_{os.getpid()}", orchestrators=1)
    await stack.prepare(topology, out=io.StringIO())
    env = {f"SAGALINE_{s.upper()}_LOG__LEVEL": "warning" for s in stack.SERVICES} | {"OTEL_SDK_DISABLED": "true"}
    supervisor = stack.Supervisor(topology, extra_env=env, out=io.StringIO())
    samples: dict[str, list[float]] = {}
    try:
        await supervisor.start()
        channels = {s: grpc.aio.insecure_channel(f"127.0.0.1:{topology.grpc_ports[s]}") for s in stack.SERVICES}
        stubs = {
            "order": order_pb2_grpc.OrderServiceStub(channels["order"]),
            "payment": payment_pb2_grpc.PaymentServiceStub(channels["payment"]),
            "inventory": inventory_pb2_grpc.InventoryServiceStub(channels["inventory"]),
        }
        for _ in range(20):  # warm-up
            await one_round(stubs, {})
        for _ in range(calls):
            await one_round(stubs, samples)
        for channel in channels.values():
            await channel.close()
    finally:
        await supervisor.stop()
        for name in topology.databases.values():
            await pg.drop_database(server_url, name)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200, help="rounds; undo RPCs run in every other round")
    samples = uvloop.run(measure(parser.parse_args().calls))
    print(f"{'rpc':<26} {'calls':>6} " + " ".join(f"{q + ' ms':>8}" for q, _ in QUANTILES))
    for name, values in samples.items():
        cells = " ".join(f"{percentile(values, v) * 1000:>8.2f}" for _, v in QUANTILES)
        print(f"{name:<26} {len(values):>6} {cells}")


if __name__ == "__main__":
    main()
