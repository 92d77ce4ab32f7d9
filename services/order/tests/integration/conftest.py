"""A real order service per test: a fresh migrated database, gRPC and HTTP on ephemeral ports."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import asyncpg
import grpc
import pytest
from pydantic import SecretStr

from order_service import bootstrap, config
from sagaline_contracts.order.v1 import order_pb2, order_pb2_grpc
from servicekit import settings


def service_settings(url: str, grace: float = 5.0) -> config.Settings:
    return config.Settings(
        database=settings.DatabaseSettings(url=SecretStr(url)),
        grpc_port=0,
        http_port=0,
        http_host="127.0.0.1",
        grpc_host="127.0.0.1",
        shutdown_grace=timedelta(seconds=grace),
    )


class Requests:
    """Builders of valid requests; each test changes what it is about."""

    @staticmethod
    def create(key: str | None = None, saga_id: str | None = None, **changes: Any) -> order_pb2.CreateOrderRequest:
        fields: dict[str, Any] = {
            "idempotency_key": f"create-{uuid.uuid4()}" if key is None else key,
            "saga_id": str(uuid.uuid4()) if saga_id is None else saga_id,
            "customer_id": str(uuid.UUID(int=7)),
            "currency": "USD",
            "items": [
                order_pb2.OrderItem(sku="SKU-1", quantity=2, unit_price="10.25"),
                order_pb2.OrderItem(sku="SKU-2", quantity=3, unit_price="0.5"),
            ],
        }
        return order_pb2.CreateOrderRequest(**(fields | changes))

    @staticmethod
    def cancel(action_key: str, key: str | None = None, saga_id: str | None = None) -> order_pb2.CancelOrderRequest:
        return order_pb2.CancelOrderRequest(
            idempotency_key=key or f"cancel-{action_key}",
            saga_id=saga_id or str(uuid.UUID(int=1)),
            action_idempotency_key=action_key,
            reason="test",
        )

    @staticmethod
    def confirm(order_id: str, key: str | None = None, saga_id: str | None = None) -> order_pb2.ConfirmOrderRequest:
        return order_pb2.ConfirmOrderRequest(
            idempotency_key=key or f"confirm-{order_id}",
            saga_id=saga_id or str(uuid.UUID(int=1)),
            order_id=order_id,
        )


@dataclass
class Service:
    url: str
    running: bootstrap.Running
    channel: grpc.aio.Channel
    stub: order_pb2_grpc.OrderServiceAsyncStub
    db: asyncpg.Connection
    requests: ClassVar[type[Requests]] = Requests

    async def count(self, table: str, where: str = "true", *args: object) -> int:
        return int(await self.db.fetchval(f"SELECT count(*) FROM {table} WHERE {where}", *args))


@pytest.fixture
async def database(make_database: Callable[[Path | None], Awaitable[str]]) -> str:
    return await make_database(bootstrap.MIGRATIONS_DIR)


@pytest.fixture
async def service(database: str) -> AsyncIterator[Service]:
    running = await bootstrap.start(service_settings(database))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.grpc_port}")
    db = await asyncpg.connect(database)
    try:
        yield Service(database, running, channel, order_pb2_grpc.OrderServiceStub(channel), db)
    finally:
        await channel.close()
        await running.stop()
        await db.close()
