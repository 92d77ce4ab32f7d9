"""Retention on the real PostgreSQL: exactly what is due goes, in bounded batches, under concurrent load.

A database is seeded with sagas of every kind (finished long ago, finished just now, FAILED and waiting
for a person, FAILED and resolved, live and owned), then several retention runs race each other and a
stream of new sagas being started and finished. The verdict is the set of saga ids left, the rows of
their steps, events and keys, the export files and the counters. The export is then replayed.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from orchestrator import bootstrap, definitions, usecases
from orchestrator.adapters.postgres import PostgresSagaRepository
from orchestrator.config import RetentionSettings
from orchestrator.domain import errors
from orchestrator.domain.breaker import BreakerPolicy
from orchestrator.domain.model import Saga, SagaStatus
from orchestrator.engine import Breakers, Engine, EngineConfig
from services.orchestrator.tests.integration.test_orchestrator_it_api import settings
from services.orchestrator.tests.unit.test_orchestrator_engine import (
    FakeClock,
    FakeParticipants,
    FakeRepository,
    decline,
    permanent,
    transient,
)

LEASE = timedelta(minutes=5)
AGE = timedelta(hours=1)
PAYLOAD = {
    "customer_id": "11111111-1111-4111-8111-111111111111",
    "items": [{"sku": "SKU-WIDGET", "quantity": 2, "unit_price": "9.99"}],
    "currency": "USD",
}


@pytest.fixture
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    created = await asyncpg.create_pool(database, min_size=2, max_size=12)
    assert created is not None
    yield created
    await created.close()


@pytest.fixture
def repo(pool: asyncpg.Pool) -> PostgresSagaRepository:
    return PostgresSagaRepository(pool, definitions.registry())


async def make(repo: PostgresSagaRepository, shape: str, owner: str = "seeder") -> str:
    """A saga driven through the domain to `shape`: COMPLETED, COMPENSATED, FAILED, RESOLVED or LIVE."""
    definition = definitions.registry().latest(definitions.ORDER_SAGA)
    assert definition is not None
    now = datetime.now(UTC)
    saga = Saga.new(str(uuid.uuid4()), definition, dict(PAYLOAD), now)
    saga.start(now)
    created = await repo.create(saga, f"key-{saga.id}", "hash", owner, LEASE)
    assert created.lease is not None
    if shape == "LIVE":
        return saga.id
    if shape == "COMPLETED":
        for step, output in zip(saga.steps, [{"order_id": "o", "total_amount": "1"}, {}, {}, {}], strict=True):
            saga.step_succeeded(step, {"ok": True}, output, now)
    elif shape == "COMPENSATED":
        saga.begin_compensation("declined", now, saga.steps[0], unknown=False)
        saga.compensation_succeeded(saga.steps[0], {}, now)
    else:
        saga.begin_compensation("create_order failed", now, saga.steps[0], unknown=True)
        saga.compensation_exhausted(saga.steps[0], "UNAVAILABLE", now)
        if shape == "RESOLVED":
            saga.resolution = {"by": "ops", "role": "admin", "reason": "handled", "at": now.isoformat()}
    if saga.resolution is None:
        await repo.save(saga, created.lease, LEASE)
    else:
        await repo.apply(saga, created.lease, LEASE)
    return saga.id


async def backdate(pool: asyncpg.Pool, ids: list[str], by: timedelta) -> None:
    await pool.execute(
        "UPDATE sagas SET finished_at = finished_at - $2::interval, created_at = created_at - $2::interval"
        " WHERE id = ANY($1::uuid[])",
        [uuid.UUID(i) for i in ids],
        by,
    )


async def seed(repo: PostgresSagaRepository, pool: asyncpg.Pool, shape: str, count: int, *, old: bool) -> list[str]:
    ids = [await make(repo, shape) for _ in range(count)]
    if old:
        await backdate(pool, ids, 2 * AGE)
    return ids


async def remaining(pool: asyncpg.Pool) -> set[str]:
    return {str(r["id"]) for r in await pool.fetch("SELECT id FROM sagas")}


def exports(directory: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for path in directory.glob("sagas-*.jsonl") for line in path.read_text().splitlines()]


def counter(kind: str) -> float:
    return REGISTRY.get_sample_value("saga_retention_deleted_total", {"kind": kind}) or 0.0


async def test_retention_removes_exactly_what_is_due_and_nothing_live_under_concurrent_load(
    repo: PostgresSagaRepository, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    due = [
        *await seed(repo, pool, "COMPLETED", 60, old=True),
        *await seed(repo, pool, "COMPENSATED", 25, old=True),
        *await seed(repo, pool, "RESOLVED", 8, old=True),
    ]
    held = await seed(repo, pool, "RESOLVED", 2, old=True)  # finished, but a person's action holds it now
    await pool.execute(
        "UPDATE sagas SET owner_id = 'ops', lease_expires_at = clock_timestamp() + interval '1 hour'"
        " WHERE id = ANY($1::uuid[])",
        [uuid.UUID(i) for i in held],
    )
    kept = [
        *held,
        *await seed(repo, pool, "FAILED", 8, old=True),  # waits for a person, however old
        *await seed(repo, pool, "COMPLETED", 10, old=False),  # finished, but not long enough ago
        *await seed(repo, pool, "LIVE", 10, old=True),  # old and still running: never finished
    ]
    ids = [uuid.UUID(i) for i in due]
    rows_due = {
        table: await pool.fetchval(f"SELECT count(*) FROM {table} WHERE saga_id = ANY($1::uuid[])", ids)
        for table in ("saga_steps", "saga_events")
    }
    # Keys of kept sagas past their retention: forgotten; the sagas stay.
    await pool.execute(
        "UPDATE idempotency_keys SET expires_at = clock_timestamp() - interval '1 second'"
        " WHERE saga_id = ANY($1::uuid[])",
        [uuid.UUID(i) for i in kept[:12]],
    )
    before = {kind: counter(kind) for kind in ("saga", "step", "event", "idempotency_key")}
    policy = usecases.RetentionPolicy(AGE, batch=7, max_batches=3, export_dir=tmp_path)
    retention = usecases.Retention(repo, policy)

    # One run is bounded: three batches of seven, however much is due.
    first, first_keys = await retention.run()
    assert first.sagas == 21

    started: list[str] = []
    stop = asyncio.Event()

    async def load() -> None:  # new sagas started and finished while retention runs: none of them is due
        while not stop.is_set():
            started.append(await make(repo, "COMPLETED"))
            started.append(await make(repo, "LIVE"))

    async def retain() -> tuple[int, int]:
        sagas = keys = 0
        while True:
            purged, forgotten = await usecases.Retention(repo, policy).run()
            sagas, keys = sagas + purged.sagas, keys + forgotten
            if purged.sagas == 0 and forgotten == 0:
                return sagas, keys

    loader = asyncio.create_task(load())
    results = await asyncio.gather(*(retain() for _ in range(4)))
    stop.set()
    await loader

    assert first.sagas + sum(s for s, _ in results) == len(due)
    assert first_keys + sum(k for _, k in results) == 12
    left = await remaining(pool)
    assert left == set(kept) | set(started), "exactly the due sagas are gone"
    for table in ("saga_steps", "saga_events", "idempotency_keys"):
        orphans = await pool.fetchval(f"SELECT count(*) FROM {table} WHERE saga_id = ANY($1::uuid[])", ids)
        assert orphans == 0, table
    assert await pool.fetchval("SELECT count(*) FROM idempotency_keys") == len(left) - 12
    assert counter("saga") - before["saga"] == len(due)
    assert counter("step") - before["step"] == rows_due["saga_steps"]
    assert counter("event") - before["event"] == rows_due["saga_events"]
    assert counter("idempotency_key") - before["idempotency_key"] == 12

    exported = exports(tmp_path)
    assert sorted(h["id"] for h in exported) == sorted(due), "each deleted saga exported exactly once"
    assert all(h["format"] == "sagaline.saga-history/1" and len(h["steps"]) == 4 for h in exported)


async def test_a_failed_export_deletes_nothing(
    repo: PostgresSagaRepository, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    due = await seed(repo, pool, "COMPLETED", 3, old=True)
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("in the way")

    with pytest.raises(errors.ExportFailed, match="cannot export"):
        await repo.purge_finished(AGE, 10, not_a_directory)
    failures = REGISTRY.get_sample_value("saga_retention_export_failures_total") or 0.0
    purged, _ = await usecases.Retention(repo, usecases.RetentionPolicy(AGE, export_dir=not_a_directory)).run()

    assert purged.sagas == 0
    assert REGISTRY.get_sample_value("saga_retention_export_failures_total") == failures + 1
    assert set(due) <= await remaining(pool)


async def test_an_instance_runs_retention_in_its_housekeeping(
    database: str, repo: PostgresSagaRepository, pool: asyncpg.Pool
) -> None:
    due = await seed(repo, pool, "COMPENSATED", 5, old=True)
    kept = await seed(repo, pool, "COMPENSATED", 2, old=False)
    cfg = settings(database).model_copy(update={"retention": RetentionSettings(finished_after=AGE, batch=2)})

    running = await bootstrap.start(cfg)
    try:
        for _ in range(100):
            if not set(due) & await remaining(pool):
                break
            await asyncio.sleep(0.1)
    finally:
        await running.stop()

    assert await remaining(pool) == set(kept)


def test_retention_settings_parse_durations_and_refuse_nonsense() -> None:
    parsed = RetentionSettings.model_validate({"finished_after": "720h", "batch": 50, "export_dir": "exports"})
    assert (parsed.finished_after, parsed.batch, parsed.max_batches) == (timedelta(hours=720), 50, 10)
    assert RetentionSettings().finished_after is None, "by default every saga is kept"
    with pytest.raises(ValueError, match="finished_after"):
        RetentionSettings.model_validate({"finished_after": "0s"})


# -- the export, replayed against the fakes -------------------------------------------------------------


def script_from_history(history: dict[str, Any], participants: FakeParticipants) -> None:
    """Each participant call's outcome as the history records it, scripted for the fakes to answer again."""
    definition = definitions.order_saga()
    calls = {s.name: (s.action, s.compensation) for s in definition.steps}
    for event in history["events"]:
        action, undo = calls.get(event["step"] or "", (None, None))
        detail = event["detail"]
        if event["kind"] == "retry_scheduled" and action is not None:
            call = undo if detail["compensation"] else action
            assert call is not None
            participants.will(call.service, call.method, transient(str(detail["error"]).split(":")[0]))
        elif event["kind"] == "step" and event["to_status"] == "FAILED" and action is not None:
            refused = detail.get("outcome") == "refused"
            participants.will(action.service, action.method, decline() if refused else transient())
        elif event["kind"] == "step" and event["to_status"] == "COMPENSATION_FAILED" and undo is not None:
            participants.will(undo.service, undo.method, permanent())


async def drive(store: Any, participants: FakeParticipants, clock: FakeClock, payload: dict[str, Any]) -> Saga:
    """One order saga accepted by `store` and run to its end by the engine, with the given participants."""
    definition = definitions.order_saga()
    saga = Saga.new(str(uuid.uuid4()), definition, payload, clock.now())
    saga.start(clock.now())
    created = await store.create(saga, f"replay-{saga.id}", "hash", "replayer", LEASE)
    engine = Engine(store, participants, clock, Breakers(BreakerPolicy(), clock.monotonic),
                    EngineConfig(lease_ttl=LEASE), rand=lambda: 0.5)  # fmt: skip
    await engine.run(saga, created.lease, asyncio.Event(), acquired_at=clock.monotonic())
    return saga


def moves(events: list[dict[str, Any]]) -> list[tuple[Any, Any, Any]]:
    return [(e["step"], e["from_status"], e["to_status"]) for e in events if e["kind"] in ("saga", "step")]


async def test_an_exported_saga_replays_against_the_fakes_to_the_same_history(
    repo: PostgresSagaRepository, tmp_path: Path
) -> None:
    # The original: the real PostgreSQL, a declined reservation, and a refund that needed a retry.
    clock = FakeClock()
    original_participants = FakeParticipants(clock)
    original_participants.will("inventory", "ReserveStock", decline())
    original_participants.will("payment", "RefundPayment", transient())
    original = await drive(repo, original_participants, clock, definitions.validate_order_payload(PAYLOAD))
    assert original.status is SagaStatus.COMPENSATED
    history = await repo.history(original.id)
    assert history is not None
    exported = tmp_path / "saga.json"
    exported.write_text(json.dumps(history))

    # The replay: nothing but the export file, and the fakes.
    loaded = json.loads(exported.read_text())
    participants = FakeParticipants(FakeClock())
    script_from_history(loaded, participants)
    fakes = FakeRepository()
    replayed = await drive(fakes, participants, participants._clock, loaded["payload"])

    replay_events = [
        {"kind": e.kind, "step": e.step, "from_status": e.from_status, "to_status": e.to_status}
        for e in fakes.events(replayed.id)
    ]
    assert moves(replay_events) == moves(loaded["events"])
    assert len(moves(replay_events)) > 10
    assert replayed.status.value == loaded["status"]
    assert [c.method for c in participants.calls] == [c.method for c in original_participants.calls]
    assert [s["status"] for s in loaded["steps"]] == [s.status.value for s in replayed.steps]
