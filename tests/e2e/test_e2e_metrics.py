"""Every process's /metrics parses and counts what was run, with the labels SPEC section 10 names."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from sagaline import stack
from tests.e2e.conftest import ALICE, BOB, order


async def scrape(url: str) -> dict[str, list[Any]]:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{url}/metrics")).text
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def value(families: dict[str, list[Any]], sample: str, **labels: str) -> float:
    name = sample.removesuffix("_total").removesuffix("_count")
    return sum(
        s.value
        for family in (name, sample)
        for s in families.get(family, [])
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def all_terminal(client: httpx.AsyncClient, ids: list[str]) -> bool:
    statuses = [(await client.get(f"/v1/sagas/{i}")).json()["status"] for i in ids]
    return all(s in ("COMPLETED", "COMPENSATED", "FAILED") for s in statuses)


async def orchestrators(system: stack.Supervisor) -> list[dict[str, list[Any]]]:
    return [await scrape(system.topology.orchestrator_url(i)) for i in range(2)]


def total(scrapes: list[dict[str, list[Any]]], sample: str, **labels: str) -> float:
    return sum(value(s, sample, **labels) for s in scrapes)


async def test_metrics_of_every_process_count_the_sagas_that_ran(system: stack.Supervisor) -> None:
    topology = system.topology
    participants = {s: f"http://127.0.0.1:{topology.http_ports[s]}" for s in stack.SERVICES}
    before = await orchestrators(system)
    payment_before = await scrape(participants["payment"])
    async with httpx.AsyncClient(base_url=topology.orchestrator_url(0)) as client:
        bodies = [order(ALICE), order(ALICE), order(BOB, price="500.00")]
        ids = [
            (await client.post("/v1/sagas", json=b, headers={"Idempotency-Key": str(uuid.uuid4())})).json()["id"]
            for b in bodies
        ]
        async with asyncio.timeout(30):
            while not await all_terminal(client, ids):
                await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)
    after = await orchestrators(system)
    completed = {"saga_type": "order_saga", "status": "COMPLETED"}
    compensated = {"saga_type": "order_saga", "status": "COMPENSATED"}
    assert total(after, "saga_total", **completed) - total(before, "saga_total", **completed) == 2
    assert total(after, "saga_total", **compensated) - total(before, "saga_total", **compensated) == 1
    assert (
        total(after, "saga_duration_seconds_count", **completed)
        - total(before, "saga_duration_seconds_count", **completed)
        == 2
    )
    step = {"step_name": "process_payment", "status": "succeeded"}
    assert (
        total(after, "saga_step_duration_seconds_count", **step)
        - total(before, "saga_step_duration_seconds_count", **step)
        == 2
    )
    for name in ("saga_leases_held", "saga_takeovers_total", "saga_lease_losses_total", "saga_retry_total",
                 "saga_oldest_nonterminal_age_seconds", "saga_circuit_breaker_state", "saga_compensations_total",
                 "saga_failed_current", "grpc_request_duration_seconds", "db_query_duration_seconds"):  # fmt: skip
        assert any(name in s or name.removesuffix("_total") in s for s in after[0]), name
    for scraped in after:
        for samples in scraped.values():
            assert all("saga_id" not in s.labels for s in samples), "never a saga id as a label"
    payment_after = await scrape(participants["payment"])
    calls = {"role": "server", "service": "sagaline.payment.v1.PaymentService", "method": "ProcessPayment"}
    ok = value(payment_after, "grpc_request_duration_seconds_count", **calls, code="OK") - value(
        payment_before, "grpc_request_duration_seconds_count", **calls, code="OK"
    )
    declined = value(payment_after, "grpc_request_duration_seconds_count", **calls, code="FAILED_PRECONDITION") - value(
        payment_before, "grpc_request_duration_seconds_count", **calls, code="FAILED_PRECONDITION"
    )
    assert (ok, declined) == (2, 1)
    for service, url in participants.items():
        scraped = await scrape(url)
        assert "db_query_duration_seconds" in scraped, service
        assert value(scraped, "db_query_duration_seconds_count") > 0, service
