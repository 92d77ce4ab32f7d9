"""The composition root: the only module that reads settings and builds adapters.

`start` wires pool -> store -> use cases -> gRPC servicer and the probe server; `serve` runs them until
the stop event; `main` is the process entry point (`python -m inventory_service`, `sagaline serve inventory`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import asyncpg

from inventory_service import config, usecases
from inventory_service.adapters import grpc_api, postgres
from servicekit import db, grpc_server, health, http_server, lifecycle, logging, migrations
from servicekit.settings import ConfigError

MIGRATIONS_DIR: Final = Path(__file__).resolve().parents[2] / "migrations"
SERVICE: Final = "inventory"

# The stock the demo and the benchmark rely on: plenty of widgets for load, some gadgets, and a SKU
# that is always out of stock for the declined-reservation saga.
DEMO_STOCK: Final[Mapping[str, int]] = {
    "SKU-WIDGET": 1_000_000_000,
    "SKU-GADGET": 100_000,
    "SKU-RARE": 0,
}

log = logging.get_logger(__name__)


async def migrate(url: str) -> list[int]:
    """Apply pending migrations to the database at url; returns the versions applied."""
    return await migrations.apply(url, MIGRATIONS_DIR)


async def seed(url: str) -> list[str]:
    """Create the demo SKUs that do not exist yet (never resetting existing stock); one line per SKU."""
    levels = await postgres.seed_stock(url, DEMO_STOCK)
    return [f"sku {sku} available {available}" for sku, available in levels]


class Running:
    """A started service: its bound ports, and `stop` to drain and close it."""

    def __init__(
        self,
        settings: config.Settings,
        pool: asyncpg.Pool,
        grpc: grpc_server.GrpcServer,
        http: http_server.HttpServer,
        readiness: health.DatabaseReadiness,
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._grpc = grpc
        self._http = http
        self._readiness = readiness
        self.grpc_port = grpc.port
        self.http_port = http.port

    async def stop(self) -> None:
        """Readiness 503 and health NOT_SERVING, let in-flight calls finish within the grace, then close."""
        self._readiness.draining = True
        await self._grpc.stop(self._settings.shutdown_grace.total_seconds())
        await self._http.stop()
        await self._pool.close()
        log.info("inventory service stopped")


async def start(settings: config.Settings) -> Running:
    """Build the service graph and start serving gRPC and the probes; ports 0 pick free ports."""
    pool = await db.create_pool(settings.database, application_name="inventory_service")
    readiness = health.DatabaseReadiness(pool)
    grpc = grpc_server.GrpcServer(
        settings.grpc_host, settings.grpc_port, tls=settings.tls, reflection=settings.grpc_reflection
    )
    servicer = grpc_api.InventoryServicer(usecases.Inventory(postgres.PostgresInventory(pool)))
    grpc_api.register(grpc.server, servicer)
    grpc.add_service_name(grpc_api.SERVICE_NAME)
    http = http_server.HttpServer(health.ProbeApp(readiness), settings.http_host, settings.http_port)
    try:
        await grpc.start()
        await http.start()
    except BaseException:
        await grpc.stop(0)
        await pool.close()
        raise
    running = Running(settings, pool, grpc, http, readiness)
    log.info("inventory service started", grpc_port=running.grpc_port, http_port=running.http_port)
    return running


async def serve(settings: config.Settings, stop: asyncio.Event) -> int:
    """Run the service until stop is set, then drain and close it; returns the exit code (2: bad TLS files)."""
    try:
        running = await start(settings)
    except ConfigError as exc:
        log.error("inventory service cannot start", error=str(exc))
        return 2
    await stop.wait()
    await running.stop()
    return 0


def main() -> int:
    """Entry point of `python -m inventory_service`: 2 on a bad configuration, else the exit code of serve."""
    return lifecycle.main(SERVICE, config.Settings, serve)
