"""A migrated payment database, the service running on ephemeral ports, and a stub to call it."""

from __future__ import annotations

import functools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import asyncpg
import grpc
import pytest
from pydantic import SecretStr

from payment_service import bootstrap, config
from sagaline_contracts.payment.v1 import payment_pb2_grpc
from servicekit import settings

NewAccount = Callable[..., Awaitable[uuid.UUID]]

# initial = balance + every payment ever captured - the refunded ones, per customer.
CONSERVATION_SQL = """
SELECT a.customer_id, a.initial_balance, a.balance,
       COALESCE(sum(p.amount), 0) AS captured,
       COALESCE(sum(p.amount) FILTER (WHERE p.status = 'REFUNDED'), 0) AS refunded
FROM accounts a LEFT JOIN payments p ON p.customer_id = a.customer_id
GROUP BY a.customer_id"""


def service_settings(url: str, **overrides: Any) -> config.Settings:
    fields: dict[str, Any] = {
        "database": settings.DatabaseSettings(url=SecretStr(url), min_size=1, max_size=10),
        "grpc_host": "127.0.0.1",
        "grpc_port": 0,
        "http_host": "127.0.0.1",
        "http_port": 0,
    }
    return config.Settings(**{**fields, **overrides})


@pytest.fixture
async def payment_db(make_database: Any) -> str:
    url: str = await make_database(bootstrap.MIGRATIONS_DIR)
    return url


@pytest.fixture
async def db(payment_db: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(payment_db)
    yield connection
    await connection.close()


@pytest.fixture
def make_settings(payment_db: str) -> Callable[..., config.Settings]:
    return functools.partial(service_settings, payment_db)


@pytest.fixture
def payment_settings(payment_db: str) -> config.Settings:
    return service_settings(payment_db)


@pytest.fixture
async def running(payment_settings: config.Settings) -> AsyncIterator[bootstrap.Running]:
    service = await bootstrap.start(payment_settings)
    yield service
    await service.stop()


@pytest.fixture
async def stub(running: bootstrap.Running) -> AsyncIterator[Any]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.grpc_port}") as channel:
        yield payment_pb2_grpc.PaymentServiceStub(channel)


@pytest.fixture
def new_account(db: asyncpg.Connection) -> NewAccount:
    async def create(balance: str = "100.00", currency: str = "USD") -> uuid.UUID:
        customer = uuid.uuid4()
        await db.execute(
            "INSERT INTO accounts (customer_id, name, currency, balance, initial_balance) VALUES ($1, $2, $3, $4, $4)",
            customer,
            f"test-{customer.hex[:8]}",
            currency,
            Decimal(balance),
        )
        return customer

    return create


@pytest.fixture
def conserved(db: asyncpg.Connection) -> Callable[[], Awaitable[None]]:
    async def check() -> None:
        for row in await db.fetch(CONSERVATION_SQL):
            assert row["balance"] >= 0
            assert row["initial_balance"] == row["balance"] + row["captured"] - row["refunded"], dict(row)

    return check
