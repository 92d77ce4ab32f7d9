"""Lease-based ownership and fencing of sagas on the real PostgreSQL (SPEC sections 5, 6 and 8).

Every test gets a fresh migrated database and talks to it through PostgresSagaRepository on real asyncpg
pools: real connections, real commits, the database clock for every lease. Two repositories on two pools
stand for two orchestrator instances.
"""

import asyncio
import dataclasses
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from orchestrator import definitions, ports
from orchestrator.adapters.postgres import PostgresSagaRepository
from orchestrator.domain import errors
from orchestrator.domain.model import Saga, SagaStatus, StepStatus

LONG = timedelta(seconds=60)
SHORT = timedelta(seconds=1)
PAST_SHORT = 1.2  # seconds: SHORT plus a margin, measured on the database clock through the sleep

PAYLOAD = {
    "customer_id": "11111111-1111-4111-8111-111111111111",
    "items": [{"sku": "SKU-WIDGET", "quantity": 2, "unit_price": "9.99"}],
    "currency": "USD",
}


class Instance:
    """One simulated orchestrator instance: its own pool and repository."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.repo = PostgresSagaRepository(pool, definitions.registry())


@pytest.fixture
async def instances(database: str) -> AsyncIterator[Callable[[], Awaitable[Instance]]]:
    pools: list[asyncpg.Pool] = []

    async def make() -> Instance:
        pool = await asyncpg.create_pool(database, min_size=1, max_size=4)
        assert pool is not None
        pools.append(pool)
        return Instance(pool)

    yield make
    for pool in pools:
        await pool.close()


def new_saga(*, start: bool = False, next_attempt_at: datetime | None = None) -> Saga:
    definition = definitions.registry().latest(definitions.ORDER_SAGA)
    assert definition is not None
    now = datetime.now(UTC)
    saga = Saga.new(str(uuid.uuid4()), definition, dict(PAYLOAD), now)
    if start:
        saga.start(now)
    saga.next_attempt_at = next_attempt_at
    return saga


async def create(
    repo: PostgresSagaRepository,
    *,
    owner_id: str | None = None,
    start: bool = False,
    next_attempt_at: datetime | None = None,
) -> ports.Created:
    saga = new_saga(start=start, next_attempt_at=next_attempt_at)
    created = await repo.create(saga, f"key-{saga.id}", "hash", owner_id, LONG)
    assert created.created
    return created


async def row(db: asyncpg.Connection, saga_id: str) -> asyncpg.Record:
    record = await db.fetchrow(
        "SELECT status, owner_id, fence, lease_expires_at, cancel_requested FROM sagas WHERE id = $1",
        uuid.UUID(saga_id),
    )
    assert record is not None
    return record


async def event_fences(db: asyncpg.Connection, saga_id: str) -> list[int]:
    rows = await db.fetch("SELECT fence FROM saga_events WHERE saga_id = $1 ORDER BY id", uuid.UUID(saga_id))
    return [r["fence"] for r in rows]


async def test_two_instances_racing_claims_never_both_take_a_saga(
    instances: Callable[[], Awaitable[Instance]], db: asyncpg.Connection
) -> None:
    a, b = await instances(), await instances()
    ids = {(await create(a.repo)).saga_id for _ in range(30)}
    claimed: list[tuple[str, ports.Claimed]] = []
    for _ in range(10):  # rounds until nothing is left; SKIP LOCKED may leave rows for the next round
        rounds = await asyncio.gather(
            *(a.repo.claim("owner-a", LONG, 4, []) for _ in range(4)),
            *(b.repo.claim("owner-b", LONG, 4, []) for _ in range(4)),
        )
        got = [
            (owner, c) for owner, batch in zip(["owner-a"] * 4 + ["owner-b"] * 4, rounds, strict=True) for c in batch
        ]
        if not got:
            break
        claimed.extend(got)
    counts = Counter(c.saga.id for _, c in claimed)
    assert set(counts) == ids
    assert set(counts.values()) == {1}
    assert {c.lease.fence for _, c in claimed} == {1}
    assert {c.previous_owner for _, c in claimed} == {None}
    assert all(c.lease.owner_id == owner for owner, c in claimed)
    owners = {
        str(r["id"]): (r["owner_id"], r["fence"]) for r in await db.fetch("SELECT id, owner_id, fence FROM sagas")
    }
    assert owners == {c.saga.id: (owner, 1) for owner, c in claimed}
    acquired = await db.fetchval("SELECT count(*) FROM saga_events WHERE kind = 'lease_acquired'")
    assert acquired == 30


async def test_an_expired_lease_is_handed_over_with_the_next_fence(
    instances: Callable[[], Awaitable[Instance]], db: asyncpg.Connection
) -> None:
    a, b = await instances(), await instances()
    created = await create(a.repo)
    [first] = await a.repo.claim("owner-a", SHORT, 10, [])
    assert (first.saga.id, first.lease.fence, first.previous_owner) == (created.saga_id, 1, None)
    assert await b.repo.claim("owner-b", LONG, 10, []) == []
    await asyncio.sleep(PAST_SHORT)
    [second] = await b.repo.claim("owner-b", LONG, 10, [])
    assert (second.saga.id, second.lease.owner_id, second.lease.fence) == (created.saga_id, "owner-b", 2)
    assert second.previous_owner == "owner-a"
    assert second.saga.status is SagaStatus.PENDING
    current = await row(db, created.saga_id)
    assert (current["owner_id"], current["fence"]) == ("owner-b", 2)
    events = await db.fetch(
        "SELECT owner_id, fence, detail FROM saga_events WHERE saga_id = $1 AND kind = 'lease_acquired' ORDER BY id",
        uuid.UUID(created.saga_id),
    )
    assert [(e["owner_id"], e["fence"]) for e in events] == [("owner-a", 1), ("owner-b", 2)]
    assert '"previous_owner":"owner-a"' in events[1]["detail"].replace(" ", "")


async def test_a_former_owner_waking_after_a_takeover_has_every_write_refused(
    instances: Callable[[], Awaitable[Instance]], db: asyncpg.Connection
) -> None:
    a, b = await instances(), await instances()
    created = await create(a.repo)
    [mine] = await a.repo.claim("owner-a", SHORT, 10, [])
    await asyncio.sleep(PAST_SHORT)  # A is "paused" past its lease
    [theirs] = await b.repo.claim("owner-b", LONG, 10, [])
    now = datetime.now(UTC)
    theirs.saga.start(now)
    assert await b.repo.save(theirs.saga, theirs.lease, LONG) is False
    steps_before = await db.fetch(
        "SELECT position, status, attempts, compensation_attempts FROM saga_steps WHERE saga_id = $1 ORDER BY position",
        uuid.UUID(created.saga_id),
    )
    events_before = await db.fetchval("SELECT count(*) FROM saga_events WHERE saga_id = $1", uuid.UUID(created.saga_id))
    b_row = await row(db, created.saga_id)

    # A wakes and acts on its stale copy: start, then give up and compensate.
    mine.saga.start(now)
    mine.saga.begin_compensation("stale owner", now, mine.saga.steps[0], unknown=True)
    with pytest.raises(errors.LeaseLost):
        await a.repo.save(mine.saga, mine.lease, LONG)
    assert (await a.repo.renew("owner-a", [mine.lease], LONG)).lost == {created.saga_id}  # reported lost
    await a.repo.release(mine.lease)

    current = await row(db, created.saga_id)
    assert current == b_row  # status, owner, fence and lease exactly as B left them
    assert (current["status"], current["owner_id"], current["fence"]) == ("EXECUTING", "owner-b", 2)
    steps_after = await db.fetch(
        "SELECT position, status, attempts, compensation_attempts FROM saga_steps WHERE saga_id = $1 ORDER BY position",
        uuid.UUID(created.saga_id),
    )
    assert steps_after == steps_before
    assert steps_after[0]["status"] == StepStatus.EXECUTING
    events_after = await db.fetchval("SELECT count(*) FROM saga_events WHERE saga_id = $1", uuid.UUID(created.saga_id))
    assert events_after == events_before
    # B is still the owner in every sense: it renews and writes on.
    assert (await b.repo.renew("owner-b", [theirs.lease], LONG)).renewed == {created.saga_id}
    theirs.saga.begin_compensation("owner b decides", datetime.now(UTC), theirs.saga.steps[0], unknown=True)
    await b.repo.save(theirs.saga, theirs.lease, LONG)
    assert (await row(db, created.saga_id))["status"] == "COMPENSATING"


async def test_an_expired_lease_nobody_took_is_neither_renewed_nor_written_through(
    instances: Callable[[], Awaitable[Instance]], db: asyncpg.Connection
) -> None:
    a = await instances()
    created = await create(a.repo)
    [mine] = await a.repo.claim("owner-a", SHORT, 10, [])
    claimed_until = (await row(db, created.saga_id))["lease_expires_at"]
    assert (await a.repo.renew("owner-a", [mine.lease], SHORT)).lost == set()  # alive: renewed, nothing lost
    assert (await row(db, created.saga_id))["lease_expires_at"] > claimed_until
    await asyncio.sleep(PAST_SHORT)
    assert (await a.repo.renew("owner-a", [mine.lease], LONG)).lost == {created.saga_id}  # expired: lost, not revived
    before = await row(db, created.saga_id)
    assert before["lease_expires_at"] <= await db.fetchval("SELECT clock_timestamp()")
    mine.saga.start(datetime.now(UTC))
    with pytest.raises(errors.LeaseLost):
        await a.repo.save(mine.saga, mine.lease, LONG)
    after = await row(db, created.saga_id)
    assert after == before
    assert after["status"] == "PENDING"
    # The saga is free for anyone, A included, only through a new claim with a new fence.
    [again] = await a.repo.claim("owner-a", LONG, 10, [])
    assert (again.saga.id, again.lease.fence, again.previous_owner) == (created.saga_id, 2, "owner-a")


async def test_renew_extends_the_leases_still_held_and_reports_the_live_ones_lost(
    instances: Callable[[], Awaitable[Instance]], db: asyncpg.Connection
) -> None:
    a = await instances()
    kept = await create(a.repo)
    [claimed] = await a.repo.claim("owner-a", SHORT, 10, [])
    lost = await create(a.repo, owner_id="owner-a")
    stale = ports.Lease(lost.saga_id, "owner-a", 0)  # a fence this owner no longer has
    finished = await create(a.repo, owner_id="owner-a", start=True)
    assert finished.lease is not None
    saga = await a.repo.load(finished.saga_id)
    assert saga is not None
    saga.begin_compensation("stop", datetime.now(UTC), saga.steps[0], unknown=False)
    saga.compensation_succeeded(saga.steps[0], {}, datetime.now(UTC))
    await a.repo.save(saga, finished.lease, LONG)  # terminal: released in the same statement
    before = {r["id"]: r["lease_expires_at"] for r in await db.fetch("SELECT id, lease_expires_at FROM sagas")}

    renewal = await a.repo.renew("owner-a", [claimed.lease, stale, finished.lease], LONG)
    assert renewal.lost == {lost.saga_id}  # a terminal saga's missing lease is not a loss worth reporting
    # ...nor a renewal: only what the statement extended is fresh (a stale run must not make one more call)
    assert renewal.renewed == {kept.saga_id}
    after = {r["id"]: r["lease_expires_at"] for r in await db.fetch("SELECT id, lease_expires_at FROM sagas")}
    assert after[uuid.UUID(kept.saga_id)] - before[uuid.UUID(kept.saga_id)] > timedelta(seconds=50)
    assert after[uuid.UUID(lost.saga_id)] == before[uuid.UUID(lost.saga_id)]
    assert after[uuid.UUID(finished.saga_id)] is None
    assert (await a.repo.renew("owner-b", [claimed.lease], LONG)).lost == {kept.saga_id}  # another owner id: no
    assert await a.repo.renew("owner-a", [], LONG) == ports.Renewal(frozenset(), frozenset())


async def test_the_fence_in_saga_events_never_decreases_across_takeovers(
    instances: Callable[[], Awaitable[Instance]], db: asyncpg.Connection
) -> None:
    a, b = await instances(), await instances()
    created = await create(a.repo)
    [first] = await a.repo.claim("owner-a", SHORT, 10, [])
    now = datetime.now(UTC)
    first.saga.start(now)
    await a.repo.save(first.saga, first.lease, SHORT)
    await asyncio.sleep(PAST_SHORT)
    [second] = await b.repo.claim("owner-b", LONG, 10, [])
    stale = first.saga
    stale.schedule_retry(stale.steps[0], "UNAVAILABLE", now)
    with pytest.raises(errors.LeaseLost):
        await a.repo.save(stale, first.lease, LONG)
    saga = second.saga
    saga.schedule_retry(saga.steps[0], "UNAVAILABLE", datetime.now(UTC))
    await b.repo.save(saga, second.lease, LONG)
    await b.repo.release(second.lease)
    [third] = await a.repo.claim("owner-a", LONG, 10, [])
    assert (third.lease.fence, third.previous_owner) == (3, None)
    third.saga.begin_compensation("done", datetime.now(UTC), third.saga.steps[0], unknown=True)
    await a.repo.save(third.saga, third.lease, LONG)

    fences = await event_fences(db, created.saga_id)
    assert fences == sorted(fences)
    assert set(fences) == {0, 1, 2, 3}
    refused = await db.fetchval(
        "SELECT count(*) FROM saga_events WHERE saga_id = $1 AND owner_id = 'owner-a' AND fence = 1 AND kind = $2",
        uuid.UUID(created.saga_id),
        "retry_scheduled",
    )
    assert refused == 0
    released = await db.fetch(
        "SELECT owner_id, fence FROM saga_events WHERE saga_id = $1 AND kind = 'lease_released'",
        uuid.UUID(created.saga_id),
    )
    assert [(r["owner_id"], r["fence"]) for r in released] == [("owner-b", 2)]


async def test_claim_skips_sagas_not_yet_due_and_the_excluded_ones(
    instances: Callable[[], Awaitable[Instance]], db: asyncpg.Connection
) -> None:
    a = await instances()
    later = await create(a.repo, next_attempt_at=datetime.now(UTC) + timedelta(hours=1))
    excluded = await create(a.repo)
    due = await create(a.repo)
    claimed = await a.repo.claim("owner-a", LONG, 10, [excluded.saga_id])
    assert [c.saga.id for c in claimed] == [due.saga_id]
    assert await a.repo.claim("owner-a", LONG, 10, [excluded.saga_id]) == []
    for saga_id in (later.saga_id, excluded.saga_id):
        untouched = await row(db, saga_id)
        assert (untouched["owner_id"], untouched["fence"]) == (None, 0)
    [rest] = await a.repo.claim("owner-a", LONG, 10, [])
    assert rest.saga.id == excluded.saga_id
    assert await a.repo.claim("owner-b", LONG, 10, []) == []  # `later` is still not due


async def test_claim_leaves_a_saga_of_an_unknown_definition_version_to_an_instance_that_has_it(
    instances: Callable[[], Awaitable[Instance]], db: asyncpg.Connection
) -> None:
    a = await instances()
    current = definitions.registry().latest(definitions.ORDER_SAGA)
    assert current is not None
    newer = dataclasses.replace(current, version=current.version + 1)
    saga = Saga.new(str(uuid.uuid4()), newer, dict(PAYLOAD), datetime.now(UTC))
    assert (await a.repo.create(saga, f"key-{saga.id}", "hash", None, LONG)).created
    known = await create(a.repo)
    claimed = await a.repo.claim("owner-a", LONG, 10, [])
    assert [c.saga.id for c in claimed] == [known.saga_id], "the poller neither claims nor crashes on it"
    untouched = await row(db, saga.id)
    assert (untouched["owner_id"], untouched["fence"]) == (None, 0)


async def test_claim_ignores_terminal_sagas_and_a_terminal_save_releases_the_lease(
    instances: Callable[[], Awaitable[Instance]], db: asyncpg.Connection
) -> None:
    a = await instances()
    created = await create(a.repo, owner_id="owner-a", start=True)
    assert created.lease == ports.Lease(created.saga_id, "owner-a", 1)
    saga = await a.repo.load(created.saga_id)
    assert saga is not None
    saga.begin_compensation("stop", datetime.now(UTC), saga.steps[0], unknown=False)
    saga.compensation_succeeded(saga.steps[0], {}, datetime.now(UTC))
    assert saga.status is SagaStatus.COMPENSATED
    await a.repo.save(saga, created.lease, LONG)
    finished = await row(db, created.saga_id)
    assert (finished["status"], finished["owner_id"], finished["lease_expires_at"]) == ("COMPENSATED", None, None)
    assert await a.repo.claim("owner-b", LONG, 10, []) == []


async def test_request_cancel_flags_a_live_saga_and_leaves_a_terminal_one_alone(
    instances: Callable[[], Awaitable[Instance]], db: asyncpg.Connection
) -> None:
    a = await instances()
    live = await create(a.repo, owner_id="owner-a", start=True)
    assert live.lease is not None
    assert await a.repo.request_cancel(live.saga_id) == "EXECUTING"
    assert (await row(db, live.saga_id))["cancel_requested"] is True
    saga = await a.repo.load(live.saga_id)
    assert saga is not None
    assert saga.cancel_requested is True
    saga.schedule_retry(saga.steps[0], "UNAVAILABLE", datetime.now(UTC))
    assert await a.repo.save(saga, live.lease, LONG) is True
    cancel_events = await db.fetch(
        "SELECT fence, owner_id FROM saga_events WHERE saga_id = $1 AND kind = 'cancel_requested'",
        uuid.UUID(live.saga_id),
    )
    assert [(e["fence"], e["owner_id"]) for e in cancel_events] == [(1, None)]

    done = await create(a.repo)
    await db.execute(
        "UPDATE sagas SET status = 'COMPLETED', finished_at = clock_timestamp() WHERE id = $1", uuid.UUID(done.saga_id)
    )
    before = await row(db, done.saga_id)
    events = await db.fetchval("SELECT count(*) FROM saga_events WHERE saga_id = $1", uuid.UUID(done.saga_id))
    assert await a.repo.request_cancel(done.saga_id) == "COMPLETED"
    assert await row(db, done.saga_id) == before
    assert before["cancel_requested"] is False
    assert await db.fetchval("SELECT count(*) FROM saga_events WHERE saga_id = $1", uuid.UUID(done.saga_id)) == events

    assert await a.repo.request_cancel(str(uuid.uuid4())) is None


@pytest.mark.parametrize("owned", [True, False], ids=["owned", "pending"])
async def test_a_creation_answers_the_saga_exactly_as_a_later_read_shows_it(
    instances: Callable[[], Awaitable[Instance]], owned: bool
) -> None:
    # The API's 202 body is this answer: it must be the stored saga, not the aggregate's idea of it.
    a = await instances()
    created = await create(a.repo, owner_id="owner-a" if owned else None, start=owned)
    assert created.view is not None
    assert created.view == await a.repo.get_view(created.saga_id)
    assert created.view["status"] == ("EXECUTING" if owned else "PENDING")
    assert [s["name"] for s in created.view["steps"]] == ["create_order", "process_payment", "reserve_inventory",
                                                          "confirm_order"]  # fmt: skip
    assert created.view["events"]
    assert all(e["id"] for e in created.view["events"])


async def test_a_replayed_creation_answers_no_view_and_writes_nothing(
    instances: Callable[[], Awaitable[Instance]],
) -> None:
    a = await instances()
    saga = new_saga()
    assert (await a.repo.create(saga, "same-key", "hash", None, LONG)).created
    replay = await a.repo.create(new_saga(), "same-key", "hash", None, LONG)
    assert not replay.created
    assert replay.view is None
    assert replay.saga_id == saga.id
