"""Composition root of an orchestrator instance: the only place that reads settings and builds adapters."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import asyncpg

from orchestrator import api, config, definitions, engine, usecases, worker
from orchestrator.adapters.clock import SystemClock
from orchestrator.adapters.participants import GrpcParticipants
from orchestrator.adapters.postgres import PostgresSagaRepository
from orchestrator.domain.definition import Registry
from orchestrator.domain.model import OnTimeout
from servicekit import db, http_server, lifecycle, logging, migrations, settings

MIGRATIONS_DIR: Final = Path(__file__).resolve().parents[2] / "migrations"

log = logging.get_logger(__name__)


def new_owner_id() -> str:
    """Unique per process start: host, pid and randomness (a restarted process never reuses one)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


async def migrate(url: str) -> list[int]:
    """Apply the orchestrator's migrations."""
    return await migrations.apply(url, MIGRATIONS_DIR)


def _skewed_wall(skew: timedelta) -> Callable[[], datetime]:
    """A host clock off by `skew` (fault injection: what a badly synchronised host would read)."""
    log.warning("FAULT INJECTION: this instance's wall clock is skewed", skew_seconds=skew.total_seconds())
    return lambda: datetime.now(UTC) + skew


def _authenticator(cfg: config.Settings) -> api.Authenticator:
    if cfg.auth == "off":
        log.warning(
            "AUTHENTICATION IS OFF: anyone who can reach this port is an admin (SAGALINE_AUTH=off)",
            http_host=cfg.http_host,
            insecure_override=cfg.allow_insecure_auth_off,
        )
        return api.Authenticator(None)
    keys: list[tuple[str, str, bytes]] = []
    for key in cfg.api_keys:
        if key.key_file is not None:
            digest = hashlib.sha256(key.key_file.read_text().strip().encode()).digest()
        else:
            digest = bytes.fromhex(key.sha256.get_secret_value()) if key.sha256 else b""
        keys.append((key.name, key.role, digest))
    return api.Authenticator(keys)


def saga_registry(cfg: config.Settings) -> Registry:
    """The saga definitions with the configured deadline, retry policies and step timeouts applied.

    Raises:
        ConfigError: a step is named that no saga has, or the resulting policy is not usable.
    """
    try:
        return definitions.registry(
            cfg.saga.deadline,
            action_retry=cfg.retry.overrides(),
            steps={name: step.tuning() for name, step in cfg.steps.items()},
        )
    except ValueError as exc:
        raise settings.ConfigError(f"invalid configuration for the saga definitions: {exc}") from exc


def _retention_policy(cfg: config.RetentionSettings) -> usecases.RetentionPolicy:
    return usecases.RetentionPolicy(cfg.finished_after, cfg.batch, cfg.max_batches, cfg.export_dir)


@dataclass
class Running:
    """A started instance; `stop` drains it."""

    http_port: int
    owner_id: str
    worker: worker.Worker
    _http: http_server.HttpServer
    _pool: asyncpg.Pool
    _participants: GrpcParticipants
    _grace: float

    async def stop(self) -> None:
        """Readiness 503 (stopping), stop claiming, checkpoint and release, close the API, the pool, the channels."""
        await self.worker.stop(self._grace)
        await self._http.stop()
        await self._participants.close()
        await self._pool.close()
        log.info("orchestrator stopped", owner_id=self.owner_id)


async def start(cfg: config.Settings) -> Running:
    """Build and start one orchestrator instance.

    Raises:
        ConfigError: auth is off on a reachable HTTP bind (see `Settings.auth_off_exposure`), or a TLS
            file cannot be read; nothing has been started then.
    """
    if problem := cfg.auth_off_exposure():
        raise settings.ConfigError(problem)
    registry = saga_registry(cfg)
    participants = GrpcParticipants(cfg.participants.model_dump(), cfg.tls)
    pool = await db.create_pool(cfg.database, application_name=f"sagaline-orchestrator-{cfg.instance}")
    repo = PostgresSagaRepository(pool, registry, cfg.saga.idempotency_key_ttl)
    clock = SystemClock(_skewed_wall(cfg.fault_clock_skew) if cfg.fault_clock_skew else None)
    per_service = {service: cfg.breaker.policy(service) for service in cfg.breaker.services}
    own = cfg.ownership
    runner = engine.Engine(
        repo, participants, clock, engine.Breakers(cfg.breaker.policy(), clock.monotonic, per_service),
        engine.EngineConfig(lease_ttl=own.lease_ttl, max_wait=min(1.0, own.lease_ttl.total_seconds() / 3)),
    )  # fmt: skip
    owner_id = new_owner_id()
    work = worker.Worker(
        owner_id,
        repo,
        runner,
        worker.WorkerConfig(own.lease_ttl, own.poll_interval, own.max_concurrent, own.claim_batch),
        clock,
        retention=usecases.Retention(repo, _retention_policy(cfg.retention)),
    )
    await work.sync_clock()  # every time rule on the database's clock, from the first saga on
    service = usecases.SagaService(
        repo, registry, clock, on_timeout=OnTimeout(cfg.saga.on_timeout), lease_ttl=own.lease_ttl, operator=repo
    )
    stale_after = max(3 * own.poll_interval.total_seconds(), 5.0)

    async def readiness() -> tuple[bool, dict[str, Any]]:
        if work.stopping:
            return False, {"reason": "shutting down"}
        if not await db.ping(pool):
            return False, {"reason": "database unreachable"}
        if asyncio.get_running_loop().time() - work.last_poll_ok > stale_after:
            return False, {"reason": "no recent successful poll"}
        return True, {"owner_id": owner_id}

    app = api.create_app(
        service, repo, work, _authenticator(cfg), readiness, cfg.max_body_bytes,
        protect_operator_paths=cfg.operator_endpoints == "authenticated", ui_trace_url=cfg.ui.trace_url,
    )  # fmt: skip
    timeouts = cfg.http_timeouts
    http = http_server.HttpServer(
        app, cfg.http_host, cfg.http_port,
        timeouts=http_server.Timeouts(timeouts.read.total_seconds(), timeouts.write.total_seconds(),
                                      timeouts.keep_alive.total_seconds()),
    )  # fmt: skip
    await work.start()
    await http.start()
    log.info("orchestrator started", owner_id=owner_id, http_port=http.port, instance=cfg.instance)
    return Running(http.port, owner_id, work, http, pool, participants, cfg.shutdown_grace.total_seconds())


async def serve(cfg: config.Settings, stop: asyncio.Event) -> int:
    """Run until stop is set (exit 0) or a worker side task dies (exit 1); 2 if it must not start."""
    try:
        running = await start(cfg)
    except settings.ConfigError as exc:
        log.error("orchestrator refuses to start", reason=str(exc))
        return 2
    stopped = asyncio.create_task(stop.wait(), name="stop-signal")
    failed = asyncio.create_task(running.worker.wait_failed(), name="worker-monitor")
    await asyncio.wait([stopped, failed], return_when=asyncio.FIRST_COMPLETED)
    code = 0 if stopped.done() else 1
    for task in (stopped, failed):
        task.cancel()
    await running.stop()
    return code


def main() -> int:
    """Entry point of `sagaline serve orchestrator`: 2 on a bad configuration, else the exit code of serve."""
    return lifecycle.main("orchestrator", config.Settings, serve, log_name=lambda cfg: f"orchestrator-{cfg.instance}")
