"""The composition root: the only module that reads settings and builds adapters.

`start` wires pool -> ledger -> use cases -> gRPC servicer -> servers and returns a handle to stop them;
`serve` runs that until the stop event is set; `main` is the process entry point.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Final

import asyncpg

from payment_service import config, domain, usecases
from payment_service.adapters import grpc_api, postgres
from sagaline_contracts.payment.v1 import payment_pb2_grpc
from servicekit import db, grpc_server, health, http_server, lifecycle, logging, migrations
from servicekit.settings import ConfigError

MIGRATIONS_DIR: Final = Path(__file__).resolve().parents[2] / "migrations"

# The demo and the benchmark rely on these ids and balances.
DEMO_CUSTOMERS: Final = (
    domain.Account(uuid.UUID("11111111-1111-4111-8111-111111111111"), "alice", Decimal("1000000000.00")),
    domain.Account(uuid.UUID("22222222-2222-4222-8222-222222222222"), "bob", Decimal("50.00")),
    domain.Account(uuid.UUID("33333333-3333-4333-8333-333333333333"), "carol", Decimal("5000.00")),
)

log = logging.get_logger(__name__)


async def migrate(url: str) -> list[int]:
    """Apply the pending migrations to the database at url; returns the versions applied."""
    return await migrations.apply(url, MIGRATIONS_DIR)


async def seed(url: str) -> list[str]:
    """Create the demo accounts that do not exist yet; returns one line per account as it is now."""
    accounts = await postgres.seed_accounts(url, DEMO_CUSTOMERS)
    return [
        f"customer {a.name} {a.customer_id} balance {domain.format_money(a.balance)} {a.currency}" for a in accounts
    ]


class Running:
    """A started payment service; `stop` drains it."""

    def __init__(
        self,
        settings: config.Settings,
        pool: asyncpg.Pool,
        grpc: grpc_server.GrpcServer,
        http: http_server.HttpServer,
        readiness: health.DatabaseReadiness,
    ) -> None:
        self._grace = settings.shutdown_grace.total_seconds()
        self._pool = pool
        self._grpc = grpc
        self._http = http
        self._readiness = readiness

    @property
    def grpc_port(self) -> int:
        """The bound gRPC port."""
        return self._grpc.port

    @property
    def http_port(self) -> int:
        """The bound HTTP port of the probes and metrics."""
        return self._http.port

    async def stop(self) -> None:
        """Report NOT_SERVING, let in-flight calls finish within the grace period, then close everything."""
        self._readiness.draining = True
        await self._grpc.stop(self._grace)
        await self._http.stop()
        await self._pool.close()
        log.info("payment service stopped")


def _grpc_server(settings: config.Settings, pool: asyncpg.Pool) -> grpc_server.GrpcServer:
    ledger = postgres.PostgresLedger(pool)
    servicer = grpc_api.PaymentApi(
        process=usecases.ProcessPayment(ledger),
        refund=usecases.RefundPayment(ledger),
        get=usecases.GetPayment(ledger),
    )
    server = grpc_server.GrpcServer(
        settings.grpc_host, settings.grpc_port, tls=settings.tls, reflection=settings.grpc_reflection
    )
    payment_pb2_grpc.add_PaymentServiceServicer_to_server(servicer, server.server)
    server.add_service_name(grpc_api.SERVICE_NAME)
    return server


async def start(settings: config.Settings) -> Running:
    """Build and start the service; ports 0 pick free ports, readable from the returned handle."""
    async with contextlib.AsyncExitStack() as undo:
        # Whatever started before a failure is stopped again; on success nothing is undone.
        pool = await db.create_pool(settings.database, application_name="sagaline-payment")
        undo.push_async_callback(pool.close)
        grpc = _grpc_server(settings, pool)
        await grpc.start()
        undo.push_async_callback(grpc.stop, 0)
        readiness = health.DatabaseReadiness(pool)
        http = http_server.HttpServer(health.ProbeApp(readiness), settings.http_host, settings.http_port)
        await http.start()
        undo.pop_all()
    running = Running(settings, pool, grpc, http, readiness)
    log.info("payment service started", grpc_port=running.grpc_port, http_port=running.http_port)
    return running


async def serve(settings: config.Settings, stop: asyncio.Event) -> int:
    """Run the service until stop is set, then drain it; returns the exit code (2: a TLS file cannot be read)."""
    try:
        running = await start(settings)
    except ConfigError as exc:
        log.error("payment service cannot start", error=str(exc))
        return 2
    await stop.wait()
    await running.stop()
    return 0


def main() -> int:
    """Entry point of `python -m payment_service`: 2 on a bad configuration, else the exit code of serve."""
    return lifecycle.main("payment", config.Settings, serve)
