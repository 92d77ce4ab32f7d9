"""Checkpoints of many sagas share statements (group commit) and each stays fenced on its own row.

Real PostgreSQL, real asyncpg pools. The repository's pool has one connection and notes every statement
it sends, so "shared" is counted, not assumed.
"""

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg

from orchestrator import definitions, ports
from orchestrator.adapters.postgres import PostgresSagaRepository
from orchestrator.domain import errors
from orchestrator.domain.model import Saga
from services.orchestrator.tests.integration.test_orchestrator_it_ownership import LONG, new_saga


async def owned_sagas(repo: PostgresSagaRepository, n: int, owner: str = "owner-a") -> list[ports.Claimed]:
    claimed = []
    for _ in range(n):
        saga = new_saga(start=True)
        created = await repo.create(saga, f"key-{saga.id}", "hash", owner, LONG)
        assert created.lease is not None
        claimed.append(ports.Claimed(saga, created.lease, None))
    return claimed


def move(saga: Saga, note: str) -> None:
    """One engine-like move: the first step succeeds, which also records events."""
    saga.step_succeeded(saga.steps[0], {"order_id": note}, {"order_id": note}, datetime.now(UTC))


async def test_concurrent_saves_share_statements_and_every_one_lands_with_its_steps_and_events(
    database: str, db: asyncpg.Connection, statement_log: Any
) -> None:
    repo = PostgresSagaRepository(await statement_log.pool(database), definitions.registry())
    [warm_up, *sagas] = await owned_sagas(repo, 21)
    await repo.save(warm_up.saga, warm_up.lease, LONG)
    for c in sagas:
        move(c.saga, c.saga.id)
    statement_log.sent.clear()  # the first save also read the types of the statement's parameters
    flags = await asyncio.gather(*(repo.save(c.saga, c.lease, LONG) for c in sagas))
    assert flags == [False] * 20
    # All twenty were queued before the sender first ran: one statement, one commit (it was twenty).
    assert statement_log.sent == ["WITH"]
    rows = await db.fetch(
        "SELECT s.id, s.revision, st.response->>'order_id' AS order_id FROM sagas s "
        "JOIN saga_steps st ON st.saga_id = s.id AND st.position = 0"
    )
    stored = {str(r["id"]): (r["revision"], r["order_id"]) for r in rows if str(r["id"]) != warm_up.saga.id}
    assert stored == {c.saga.id: (1, c.saga.id) for c in sagas}
    events = await db.fetch(
        "SELECT saga_id, fence, owner_id FROM saga_events WHERE kind = 'step' AND to_status = 'SUCCEEDED'"
    )
    assert sorted(str(e["saga_id"]) for e in events) == sorted(c.saga.id for c in sagas)
    assert {(e["fence"], e["owner_id"]) for e in events} == {(1, "owner-a")}


async def test_in_a_shared_statement_a_stale_fence_is_refused_and_only_its_saga_loses_its_lease(
    database: str, db: asyncpg.Connection, statement_log: Any
) -> None:
    repo = PostgresSagaRepository(await statement_log.pool(database), definitions.registry())
    sagas = await owned_sagas(repo, 6)
    taken = sagas[3]
    # Another instance took saga 3 meanwhile (its lease expired): fence 2 is theirs.
    await db.execute("UPDATE sagas SET owner_id = 'owner-b', fence = 2 WHERE id = $1", uuid.UUID(taken.saga.id))
    for c in sagas:
        move(c.saga, "stale" if c is taken else "ok")
    results = await asyncio.gather(*(repo.save(c.saga, c.lease, LONG) for c in sagas), return_exceptions=True)
    assert [type(r) for r in results] == [bool, bool, bool, errors.LeaseLost, bool, bool]
    untouched = await db.fetchrow(
        "SELECT s.revision, st.status FROM sagas s JOIN saga_steps st ON st.saga_id = s.id AND st.position = 0 "
        "WHERE s.id = $1",
        uuid.UUID(taken.saga.id),
    )
    assert (untouched["revision"], untouched["status"]) == (0, "EXECUTING")
    landed = await db.fetchval("SELECT count(*) FROM sagas WHERE revision = 1")
    assert landed == 5


async def test_a_checkpoint_the_database_refuses_fails_only_its_own_saga(
    database: str, db: asyncpg.Connection, statement_log: Any
) -> None:
    repo = PostgresSagaRepository(await statement_log.pool(database), definitions.registry())
    sagas = await owned_sagas(repo, 5)
    for c in sagas:
        move(c.saga, "ok")
    sagas[2].saga.context["note"] = "\u0000"  # jsonb cannot hold NUL: a permanent error for this one save
    results = await asyncio.gather(*(repo.save(c.saga, c.lease, LONG) for c in sagas), return_exceptions=True)
    assert isinstance(results[2], asyncpg.PostgresError)
    assert [r for i, r in enumerate(results) if i != 2] == [False] * 4
    assert await db.fetchval("SELECT count(*) FROM sagas WHERE revision = 1") == 4


async def _hot_and_cold_updates(pool: asyncpg.Pool, db: asyncpg.Connection) -> tuple[int, int]:
    """The `sagas` table's (HOT, all) updates so far, once the pool's backend has reported them."""
    async with pool.acquire() as connection:
        await connection.execute("SELECT pg_stat_force_next_flush()")  # reported when the backend idles
    for _ in range(50):
        row = await db.fetchrow("SELECT n_tup_hot_upd, n_tup_upd FROM pg_stat_user_tables WHERE relname = 'sagas'")
        if row["n_tup_upd"] > 0:
            return row["n_tup_hot_upd"], row["n_tup_upd"]
        await asyncio.sleep(0.05)
    raise AssertionError("the updates were never reported")


async def test_checkpoints_in_the_middle_of_a_saga_update_its_row_without_touching_an_index(
    database: str, db: asyncpg.Connection, statement_log: Any
) -> None:
    # A step that begins leaves an already-due saga's next_attempt_at alone, and the table keeps room on
    # each page: the row's update is HOT (no new entry in any of its indexes). Before, every checkpoint
    # wrote a new entry into each of the saga's five indexes.
    pool = await statement_log.pool(database)
    repo = PostgresSagaRepository(pool, definitions.registry())
    sagas = []
    for _ in range(12):
        saga = new_saga(start=True, next_attempt_at=datetime.now(UTC))  # due at once, as a started saga is
        created = await repo.create(saga, f"key-{saga.id}", "hash", "owner-a", LONG)
        assert created.lease is not None
        sagas.append((saga, created.lease))
    for position in (0, 1):
        for saga, lease in sagas:
            saga.step_succeeded(saga.steps[position], {"n": position}, {}, datetime.now(UTC))
            await repo.save(saga, lease, LONG)
    hot, updates = await _hot_and_cold_updates(pool, db)
    assert updates == 24
    assert hot >= 22, f"only {hot} of {updates} mid-saga checkpoints were HOT updates"
