"""Composition root of the order service: the only module that reads settings and builds adapters.

`start` wires pool -> store -> use cases -> gRPC servicer, then serves gRPC and the HTTP probes;
`Running.stop` undoes it in the order that lets in-flight calls finish.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Final

import asyncpg

from order_service import config, usecases
from order_service.adapters import grpc_api, postgres
from sagaline_contracts.order.v1 import order_pb2_grpc
from servicekit import db, grpc_server, health, http_server, lifecycle, logging, migrations
from servicekit.settings import ConfigError

MIGRATIONS_DIR: Final = Path(__file__).resolve().parents[2] / "migrations"
SERVICE: Final = "order"

log = logging.get_logger(__name__)


async def migrate(url: str) -> list[int]:
    """Apply the pending migrations of the order database at url; returns the versions applied."""
    return await migrations.apply(url, MIGRATIONS_DIR)


async def seed(url: str) -> list[str]:
    """Demo data for orders: none, orders come from sagas (customers live in payment, SKUs in inventory).

    Kept so the CLI can seed every service the same way; it never touches the database at url.
    """
    return []


class Running:
    """A started order service; `stop` drains it."""

    def __init__(
        self,
        grpc: grpc_server.GrpcServer,
        http: http_server.HttpServer,
        pool: asyncpg.Pool,
        readiness: health.DatabaseReadiness,
        grace: float,
    ) -> None:
        self._grpc = grpc
        self._http = http
        self._pool = pool
        self._readiness = readiness
        self._grace = grace
        self._stopped = False
        self.grpc_port: int = grpc.port
        self.http_port: int = http.port

    async def stop(self) -> None:
        """Readiness and health go NOT_SERVING, in-flight calls finish within the grace, then all closes."""
        if self._stopped:
            return
        self._stopped = True
        self._readiness.draining = True
        await self._grpc.stop(self._grace)
        await self._http.stop()
        await self._pool.close()
        log.info("order service stopped")


async def start(settings: config.Settings) -> Running:
    """Build the service from settings and start serving; ports 0 pick free ports."""
    pool = await db.create_pool(settings.database, application_name="order_service")
    readiness = health.DatabaseReadiness(pool)
    grpc = _grpc_server(settings, usecases.Orders(postgres.PostgresOrderStore(pool)))
    http = http_server.HttpServer(health.ProbeApp(readiness), settings.http_host, settings.http_port)
    try:
        await grpc.start()
        await http.start()
    except BaseException:
        await grpc.stop(0)
        await pool.close()
        raise
    return Running(grpc, http, pool, readiness, settings.shutdown_grace.total_seconds())


def _grpc_server(settings: config.Settings, orders: usecases.Orders) -> grpc_server.GrpcServer:
    server = grpc_server.GrpcServer(
        settings.grpc_host, settings.grpc_port, tls=settings.tls, reflection=settings.grpc_reflection
    )
    order_pb2_grpc.add_OrderServiceServicer_to_server(grpc_api.OrderServicer(orders), server.server)
    server.add_service_name(grpc_api.SERVICE_NAME)
    return server


async def serve(settings: config.Settings, stop: asyncio.Event) -> int:
    """Run until stop is set, then drain; returns the process exit code (2: a TLS file cannot be read)."""
    try:
        running = await start(settings)
    except ConfigError as exc:
        log.error("order service cannot start", error=str(exc))
        return 2
    log.info("order service started", grpc_port=running.grpc_port, http_port=running.http_port)
    try:
        await stop.wait()
    finally:
        await running.stop()
    return 0


def main() -> int:
    """Entry point of `python -m order_service`: 2 on a bad configuration, else the exit code of serve."""
    return lifecycle.main(SERVICE, config.Settings, serve)
