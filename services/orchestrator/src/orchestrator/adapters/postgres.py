"""PostgreSQL persistence of sagas, with lease-based ownership and fencing.

Ownership is data on the saga row (owner_id, fence, lease_expires_at), never a session lock, so it
survives database restarts and can be reasoned about from SQL alone. Lease arithmetic uses the
database clock (`clock_timestamp()`, not `now()`, which is frozen at transaction start), so instances
with different clocks agree. Every write an owner makes is conditional on its fence in the same
statement that changes state; zero rows means the lease is gone and the owner must stop.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import os
import re
import uuid
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, ParamSpec, TypeVar

import asyncpg

from orchestrator import ports
from orchestrator.adapters import checkpoints
from orchestrator.adapters.checkpoints import dumps as _dumps
from orchestrator.domain import errors
from orchestrator.domain.definition import Registry
from orchestrator.domain.model import LIVE, Event, OnTimeout, Saga, SagaStatus, Step, StepStatus
from servicekit import db

_LIVE: Final = [s.value for s in LIVE]


P = ParamSpec("P")
R = TypeVar("R")


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """The orchestrator's one translation of database errors, applied at every repository method.

    What servicekit classifies as transient (unreachable, cancelled, terminated, too many connections,
    deadlock, serialization failure, read-only after failover) becomes `StoreUnavailable`, which callers
    retry (the engine repeats the same fenced save) or answer with 503; anything else is a bug and
    propagates as it is.
    """
    try:
        yield
    except Exception as exc:
        if db.transient(exc):
            raise errors.StoreUnavailable(f"{what}: {exc!r}") from exc
        raise


def _store(what: str) -> Callable[[Callable[P, Coroutine[Any, Any, R]]], Callable[P, Coroutine[Any, Any, R]]]:
    """Decorate a repository method with the one translation of database errors."""

    def decorate(method: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
        @functools.wraps(method)
        async def translated(*args: P.args, **kwargs: P.kwargs) -> R:
            with _translated(what):
                return await method(*args, **kwargs)

        return translated

    return decorate


# Acceptance in one statement: the client's Idempotency-Key, the saga (owned at once, fence 1, by the
# accepting instance when $10 is not null), its steps and its first events, answered as written (the
# API's 202 body, with no read after the write). Everything else hangs off the key insert, so a
# duplicate key writes nothing. ON CONFLICT waits for a concurrent insert of the
# same key to commit or abort: of N concurrent duplicates on any instances exactly one inserts.
CREATE: Final = """
WITH new_key AS (
    INSERT INTO idempotency_keys (key, request_hash, saga_id, expires_at)
    VALUES ($14, $15, $1, clock_timestamp() + $16::interval)
    ON CONFLICT (key) DO NOTHING
    RETURNING saga_id
), new_saga AS (
    INSERT INTO sagas (id, saga_type, definition_version, status, payload, context, deadline, on_timeout,
                       trace_context, owner_id, fence, lease_expires_at, next_attempt_at, created_at)
    SELECT $1, $2, $3, $4, $5::jsonb, $6::jsonb, $7, $8, $9::jsonb, $10,
           CASE WHEN $10::text IS NULL THEN 0 ELSE 1 END,
           CASE WHEN $10::text IS NULL THEN NULL ELSE clock_timestamp() + $11::interval END,
           $12, $13
    FROM new_key
    RETURNING *
), new_steps AS (
    INSERT INTO saga_steps (saga_id, position, name, status, attempts, compensation_attempts, next_attempt_at,
                            idempotency_key, compensation_key, started_at)
    SELECT new_saga.id, u.* FROM new_saga,
           unnest($17::int[], $18::text[], $19::text[], $20::int[], $21::int[], $22::timestamptz[], $23::text[],
                  $24::text[], $25::timestamptz[])
           AS u(position, name, status, attempts, compensation_attempts, next_attempt_at, idempotency_key,
                compensation_key, started_at)
    RETURNING *
), new_events AS (
    INSERT INTO saga_events (saga_id, fence, owner_id, kind, step, from_status, to_status, detail)
    SELECT new_saga.id, new_saga.fence, new_saga.owner_id, e.kind, e.step, e.from_status, e.to_status, e.detail
    FROM new_saga, unnest($26::text[], $27::text[], $28::text[], $29::text[], $30::jsonb[])
         WITH ORDINALITY AS e(kind, step, from_status, to_status, detail, n)
    ORDER BY e.n
    RETURNING *
)
SELECT new_key.saga_id,
       (SELECT ROW(n.*)::sagas FROM new_saga AS n) AS saga,
       (SELECT array_agg(ROW(s.*)::saga_steps ORDER BY s.position) FROM new_steps AS s) AS steps,
       (SELECT array_agg(ROW(e.*)::saga_events ORDER BY e.id) FROM new_events AS e) AS events
FROM new_key"""

SELECT_KEY: Final = "SELECT request_hash, saga_id FROM idempotency_keys WHERE key = $1"

INSERT_EVENT: Final = """
INSERT INTO saga_events (saga_id, fence, owner_id, kind, step, from_status, to_status, detail)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)"""

# The fenced checkpoint is `checkpoints.SAVE`: many sagas' saves in one statement, each fenced on its own row.

# After a save matched nothing: did an earlier attempt of the same save commit? Only the holder of this
# fence can have moved the revision past what the save expected (a new claim changes the fence).
SAVED_BEFORE: Final = "SELECT cancel_requested FROM sagas WHERE id = $1 AND fence = $2 AND revision = $3"

# Acquisition: due live sagas that nobody holds, or whose lease expired (database clock). SKIP LOCKED
# lets instances poll concurrently without blocking on each other's rows; FOR UPDATE OF is on the saga
# row itself (no outer join). The fence increments, invalidating every write of any former owner, and
# the new state is returned by the same statement (no read-before-claim race).
CLAIM: Final = """
WITH due AS (
    SELECT id, owner_id AS previous_owner
    FROM sagas
    WHERE status = ANY($5::text[])
      AND next_attempt_at <= clock_timestamp()
      AND (owner_id IS NULL OR lease_expires_at <= clock_timestamp())
      AND NOT (id = ANY($4::uuid[]))
      -- Only saga types and versions this release knows: during a rolling deploy, a saga started on a
      -- newer definition waits for an instance that has it instead of crashing this one.
      AND (saga_type, definition_version) IN (SELECT * FROM unnest($6::text[], $7::int[]))
    ORDER BY next_attempt_at
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
UPDATE sagas s
SET owner_id = $1, fence = s.fence + 1, lease_expires_at = clock_timestamp() + $2::interval
FROM due
WHERE s.id = due.id
RETURNING s.*, due.previous_owner"""

# Acquisition of one FAILED saga for an admin retry; waits for (does not skip) a row lock. Any other
# status matches nothing, so a refused retry writes nothing.
CLAIM_ONE: Final = """
WITH target AS (
    SELECT id, owner_id AS previous_owner
    FROM sagas
    WHERE id = $3 AND status = 'FAILED' AND (owner_id IS NULL OR lease_expires_at <= clock_timestamp())
    FOR UPDATE
)
UPDATE sagas s
SET owner_id = $1, fence = s.fence + 1, lease_expires_at = clock_timestamp() + $2::interval
FROM target
WHERE s.id = target.id
RETURNING s.*, target.previous_owner"""

# Of the sagas a heartbeat could not renew, those still live: their lease is lost (expired or taken).
# The others finished (a terminal save releases the lease) and are simply done.
STILL_LIVE: Final = "SELECT id FROM sagas WHERE id = ANY($1::uuid[]) AND status = ANY($2::text[])"

SELECT_STEPS: Final = "SELECT * FROM saga_steps WHERE saga_id = ANY($1::uuid[]) ORDER BY saga_id, position"

# Heartbeat: extends only leases that are still ours (same fence) and not yet expired, so an expired
# lease is never revived; one statement for all of this instance's sagas, no row per step.
RENEW: Final = """
UPDATE sagas s
SET lease_expires_at = clock_timestamp() + $2::interval
FROM unnest($3::uuid[], $4::bigint[]) AS l(id, fence)
WHERE s.id = l.id AND s.fence = l.fence AND s.owner_id = $1 AND s.lease_expires_at > clock_timestamp()
RETURNING s.id"""

# Release is fenced too: a former owner can never release its successor's lease. A clean release ($4,
# between moves, no call in flight) clears the owner, so the next claimer knows no attempt was spent; a
# release in doubt (a run cut mid-call) only ends the lease now and keeps the owner for the next claimer
# to see, and that claimer counts the interrupted attempt.
RELEASE: Final = """
UPDATE sagas SET owner_id = CASE WHEN $4 THEN NULL ELSE owner_id END, lease_expires_at = clock_timestamp()
WHERE id = $1 AND owner_id = $2 AND fence = $3
RETURNING id"""

# The cancel flag is a request, not a state change: the owner acts on it at its next move.
REQUEST_CANCEL: Final = """
UPDATE sagas SET cancel_requested = true
WHERE id = $1 AND status = ANY($2::text[])
RETURNING status, fence"""

SELECT_STATUS: Final = "SELECT status FROM sagas WHERE id = $1"
DATABASE_TIME: Final = "SELECT clock_timestamp()"
SELECT_CANCEL: Final = "SELECT cancel_requested FROM sagas WHERE id = $1"

SELECT_SAGA: Final = "SELECT * FROM sagas WHERE id = $1"
SELECT_EVENTS: Final = "SELECT * FROM saga_events WHERE saga_id = $1 ORDER BY id"

LIST_SAGAS: Final = """
SELECT * FROM sagas
WHERE ($1::text IS NULL OR status = $1)
  AND ($2::text IS NULL OR saga_type = $2)
  AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4::uuid))
ORDER BY created_at DESC, id DESC
LIMIT $5"""

# Housekeeping for health and alerts; the partial index keeps it cheap. Deadlines are compared with the
# database clock, like every other time rule.
STATS: Final = """
SELECT extract(epoch FROM clock_timestamp() - min(created_at) FILTER (WHERE status = ANY($1::text[]))) AS oldest,
       count(*) FILTER (WHERE status = 'FAILED' AND resolution IS NULL) AS failed,  -- the queue: not yet resolved
       count(*) FILTER (WHERE status = ANY($1::text[]) AND deadline < clock_timestamp()) AS past_deadline,
       extract(epoch FROM clock_timestamp() - min(deadline) FILTER (WHERE status = ANY($1::text[]))) AS overdue
FROM sagas WHERE status = ANY($1::text[]) OR status = 'FAILED'"""

PURGE_KEYS: Final = "DELETE FROM idempotency_keys WHERE expires_at < clock_timestamp()"

# The operator UI's list: LIST_SAGAS's keyset order with more filters. Ages are measured on the database
# clock; the error text is a case-insensitive substring found with strpos, so `%` and `_` are plain text.
SEARCH_SAGAS: Final = """
SELECT * FROM sagas
WHERE ($1::text IS NULL OR status = $1)
  AND ($2::text IS NULL OR saga_type = $2)
  AND ($3::interval IS NULL OR created_at >= clock_timestamp() - $3::interval)
  AND ($4::interval IS NULL OR created_at < clock_timestamp() - $4::interval)
  AND ($5::text IS NULL OR strpos(lower(error), lower($5)) > 0)
  AND ($6::timestamptz IS NULL OR (created_at, id) < ($6, $7::uuid))
ORDER BY created_at DESC, id DESC
LIMIT $8"""

# The UI's live counts: one pass over the table per poll (the UI polls every few seconds per open page).
COUNT_BY_STATUS: Final = "SELECT status, count(*) AS n FROM sagas GROUP BY status"


# -- a person's moves and retention (the queue, `sagaline saga export`, the retention job) ------------------


def _named(sql: str) -> tuple[str, tuple[str, ...]]:
    """A statement written with `%(name)s` parameters as asyncpg's `$n`, and the names in `$n` order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return re.sub(r"%\((\w+)\)s", number, sql), tuple(names)


# A person's move on a FAILED saga, fenced by the claim the action just took (`CLAIM_ONE`): SAVE's
# checkpoint (same fence, lease and revision conditions, steps and events written only through the owned
# row) that also writes what only a person changes: the payload (a retry with an edited payload), the
# deadline (a forward move gets a fresh one) and the resolution. A terminal result releases the saga.
OPERATOR_SAVE, OPERATOR_SAVE_PARAMS = _named("""
WITH owned AS (
    UPDATE sagas
    SET status = %(status)s, context = %(context)s::jsonb, error = %(error)s, payload = %(payload)s::jsonb,
        deadline = %(deadline)s, resolution = %(resolution)s::jsonb,
        next_attempt_at = coalesce(%(next_attempt_at)s, next_attempt_at),
        updated_at = clock_timestamp(), revision = revision + 1,
        finished_at = CASE WHEN %(terminal)s THEN clock_timestamp() END,
        owner_id = CASE WHEN %(terminal)s THEN NULL ELSE owner_id END,
        lease_expires_at = CASE WHEN %(terminal)s THEN NULL ELSE clock_timestamp() + %(ttl)s::interval END
    WHERE id = %(id)s AND owner_id = %(owner_id)s AND fence = %(fence)s AND lease_expires_at > clock_timestamp()
      AND revision = %(revision)s
    RETURNING id
), changed_steps AS (
    UPDATE saga_steps s
    SET status = u.status, attempts = u.attempts, compensation_attempts = u.compensation_attempts,
        next_attempt_at = u.next_attempt_at, request = u.request, response = u.response, error = u.error,
        started_at = u.started_at, finished_at = u.finished_at
    FROM owned, unnest(%(step_position)s::int[], %(step_status)s::text[], %(step_attempts)s::int[],
                       %(step_compensation_attempts)s::int[], %(step_next_attempt_at)s::timestamptz[],
                       %(step_request)s::jsonb[], %(step_response)s::jsonb[], %(step_error)s::text[],
                       %(step_started_at)s::timestamptz[], %(step_finished_at)s::timestamptz[])
         AS u(position, status, attempts, compensation_attempts, next_attempt_at, request, response, error,
              started_at, finished_at)
    WHERE s.saga_id = owned.id AND s.position = u.position
), new_events AS (
    INSERT INTO saga_events (saga_id, fence, owner_id, kind, step, from_status, to_status, detail)
    SELECT owned.id, %(fence)s, %(owner_id)s, e.kind, e.step, e.from_status, e.to_status, e.detail
    FROM owned, unnest(%(event_kind)s::text[], %(event_step)s::text[], %(event_from)s::text[],
                       %(event_to)s::text[], %(event_detail)s::jsonb[])
         WITH ORDINALITY AS e(kind, step, from_status, to_status, detail, n)
    ORDER BY e.n
)
SELECT id FROM owned""")

# What retention may delete: finished (COMPLETED, COMPENSATED, or FAILED and resolved by a person) longer
# ago than $1 on the database clock, oldest first. SKIP LOCKED passes over any row a transaction holds
# (a person's claim, a concurrent retention batch on another instance), so a batch never waits and two
# instances never delete the same saga; the row locks are held until the batch commits. An unresolved
# FAILED saga is never picked: it waits for its person. A live saga has no finished_at. A finished saga
# someone holds a live lease on (a person's action between its claim and its write) is left alone too.
PICK_FINISHED: Final = """
SELECT id FROM sagas
WHERE (status IN ('COMPLETED', 'COMPENSATED') OR (status = 'FAILED' AND resolution IS NOT NULL))
  AND finished_at < clock_timestamp() - $1::interval
  AND (owner_id IS NULL OR lease_expires_at <= clock_timestamp())
ORDER BY finished_at
LIMIT $2
FOR UPDATE SKIP LOCKED"""

# Deletes the picked sagas; steps, events and the client's key go with them (ON DELETE CASCADE). The
# counts read the statement's snapshot, taken before the cascade.
DELETE_PICKED: Final = """
WITH gone AS (DELETE FROM sagas WHERE id = ANY($1::uuid[]) RETURNING id)
SELECT (SELECT count(*) FROM gone) AS sagas,
       (SELECT count(*) FROM saga_steps WHERE saga_id = ANY($1::uuid[])) AS steps,
       (SELECT count(*) FROM saga_events WHERE saga_id = ANY($1::uuid[])) AS events"""

SELECT_SAGAS: Final = "SELECT * FROM sagas WHERE id = ANY($1::uuid[]) ORDER BY finished_at, id"
SELECT_EVENTS_OF: Final = "SELECT * FROM saga_events WHERE saga_id = ANY($1::uuid[]) ORDER BY saga_id, id"

# Expired client keys, a bounded batch at a time, skipping keys a concurrent start is inserting or reading.
PURGE_KEYS_BATCH: Final = """
WITH doomed AS (
    SELECT key FROM idempotency_keys WHERE expires_at < clock_timestamp()
    ORDER BY expires_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
DELETE FROM idempotency_keys k USING doomed WHERE k.key = doomed.key"""

HISTORY_FORMAT: Final = "sagaline.saga-history/1"


def _loads(value: str | None) -> Any:
    return None if value is None else json.loads(value)


class PostgresSagaRepository:
    """The SagaRepository port on asyncpg."""

    def __init__(self, pool: asyncpg.Pool, registry: Registry, key_ttl: timedelta = timedelta(hours=24)) -> None:
        self._pool, self._registry, self._key_ttl = pool, registry, key_ttl
        self._checkpoints = checkpoints.Checkpoints(pool)

    # -- creation ----------------------------------------------------------------------------------------

    @_store("start saga")
    async def create(
        self, saga: Saga, key: str, request_hash: str, owner_id: str | None, ttl: timedelta
    ) -> ports.Created:
        steps, events = saga.take_dirty_steps(), saga.take_events()
        inserted = await self._pool.fetchrow(
            CREATE, uuid.UUID(saga.id), saga.definition.saga_type, saga.definition.version, saga.status.value,
            _dumps(saga.payload), _dumps(saga.context), saga.deadline, saga.on_timeout.value,
            _dumps(saga.trace_context), owner_id, ttl, saga.next_attempt_at or saga.created_at, saga.created_at,
            key, request_hash, self._key_ttl,
            [s.position for s in steps], [s.name for s in steps], [s.status.value for s in steps],
            [s.attempts for s in steps], [s.compensation_attempts for s in steps], [s.next_attempt_at for s in steps],
            [s.idempotency_key for s in steps], [s.compensation_key for s in steps], [s.started_at for s in steps],
            [e.kind for e in events], [e.step for e in events], [e.from_status for e in events],
            [e.to_status for e in events], [_dumps(e.detail) for e in events],
        )  # fmt: skip
        if inserted is None:
            existing = await self.key_hash(key)
            if existing is None:  # pragma: no cover - the key expired and was purged in between
                raise errors.IdempotencyConflict("Idempotency-Key expired while in use; retry the request")
            return ports.Created(existing[1], created=False, lease=None, request_hash=existing[0])
        lease = ports.Lease(saga.id, owner_id, 1) if owner_id else None
        view = _full_view(inserted["saga"], inserted["steps"], inserted["events"])
        return ports.Created(saga.id, created=True, lease=lease, view=view)

    @_store("read idempotency key")
    async def key_hash(self, key: str) -> tuple[str, str] | None:
        row = await self._pool.fetchrow(SELECT_KEY, key)
        return None if row is None else (row["request_hash"], str(row["saga_id"]))

    # -- the owner's writes ----------------------------------------------------------------------------

    async def save(self, saga: Saga, lease: ports.Lease, ttl: timedelta) -> bool:
        steps, events = saga.unsaved()
        with _translated(f"checkpoint of saga {saga.id} not confirmed"):
            cancel = await self._checkpoints.save(checkpoints.Checkpoint(saga, lease, ttl, steps, events))
            if cancel is None:
                cancel = await self._pool.fetchval(SAVED_BEFORE, uuid.UUID(saga.id), lease.fence, saga.revision + 1)
        if cancel is None:
            raise errors.LeaseLost(f"saga {saga.id}: fence {lease.fence} of {lease.owner_id} no longer holds")
        saga.saved()
        return bool(cancel)

    @_store("claim sagas")
    async def claim(self, owner_id: str, ttl: timedelta, limit: int, exclude: Sequence[str]) -> list[ports.Claimed]:
        excluded = [uuid.UUID(s) for s in exclude]
        async with self._pool.acquire() as conn, conn.transaction():
            known = self._registry.versions
            rows = await conn.fetch(
                CLAIM, owner_id, ttl, limit, excluded, _LIVE, [t for t, _ in known], [v for _, v in known]
            )
            return await self._claimed(conn, rows)

    @_store("claim saga")
    async def claim_one(self, saga_id: str, owner_id: str, ttl: timedelta) -> ports.Claimed | None:
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(CLAIM_ONE, owner_id, ttl, uuid.UUID(saga_id))
            claimed = await self._claimed(conn, rows)
        return claimed[0] if claimed else None

    async def _claimed(self, conn: asyncpg.Connection, rows: list[asyncpg.Record]) -> list[ports.Claimed]:
        if not rows:
            return []
        steps: dict[str, list[Step]] = {}
        for row in await conn.fetch(SELECT_STEPS, [r["id"] for r in rows]):
            steps.setdefault(str(row["saga_id"]), []).append(_step(row))
        claimed = []
        for row in rows:
            saga = self._saga(row, steps[str(row["id"])])
            lease = ports.Lease(saga.id, row["owner_id"], row["fence"])
            saga.note("lease_acquired", previous_owner=row["previous_owner"])
            claimed.append(ports.Claimed(saga, lease, row["previous_owner"]))
        await conn.executemany(
            INSERT_EVENT,
            [_event_row(c.saga.id, c.lease.fence, c.lease.owner_id, e) for c in claimed for e in c.saga.take_events()],
        )
        return claimed

    @_store("renew leases")
    async def renew(self, owner_id: str, leases: Sequence[ports.Lease], ttl: timedelta) -> ports.Renewal:
        if not leases:
            return ports.Renewal(frozenset(), frozenset())
        rows = await self._pool.fetch(
            RENEW, owner_id, ttl, [uuid.UUID(le.saga_id) for le in leases], [le.fence for le in leases]
        )
        renewed = frozenset(str(r["id"]) for r in rows)
        missed = [uuid.UUID(le.saga_id) for le in leases if le.saga_id not in renewed]
        if not missed:
            return ports.Renewal(renewed, frozenset())
        lost = frozenset(str(r["id"]) for r in await self._pool.fetch(STILL_LIVE, missed, _LIVE))
        return ports.Renewal(renewed, lost)

    @_store("release lease")
    async def release(self, lease: ports.Lease, *, clean: bool = True) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            released = await conn.fetchval(RELEASE, uuid.UUID(lease.saga_id), lease.owner_id, lease.fence, clean)
            if released is not None:
                detail = "{}" if clean else '{"in_doubt":true}'
                await conn.execute(
                    INSERT_EVENT, uuid.UUID(lease.saga_id), lease.fence, lease.owner_id, "lease_released",
                    None, None, None, detail,
                )  # fmt: skip

    @_store("request cancel")
    async def request_cancel(self, saga_id: str) -> str | None:
        sid = uuid.UUID(saga_id)
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(REQUEST_CANCEL, sid, _LIVE)
            if row is None:
                return await conn.fetchval(SELECT_STATUS, sid)  # type: ignore[no-any-return]
            await conn.execute(INSERT_EVENT, sid, row["fence"], None, "cancel_requested", None, None, None, "{}")
            return str(row["status"])

    # -- reads for the API and for operations ------------------------------------------------------------

    @_store("read cancel flag")
    async def cancel_requested(self, saga_id: str) -> bool:
        return bool(await self._pool.fetchval(SELECT_CANCEL, uuid.UUID(saga_id)))

    @_store("read the database clock")
    async def database_time(self) -> datetime:
        """The database's clock (`clock_timestamp()`), the one clock every time rule is decided on."""
        return await self._pool.fetchval(DATABASE_TIME)  # type: ignore[no-any-return]

    @_store("read saga status")
    async def status(self, saga_id: str) -> str | None:
        return await self._pool.fetchval(SELECT_STATUS, uuid.UUID(saga_id))  # type: ignore[no-any-return]

    @_store("read saga")
    async def get_view(self, saga_id: str) -> dict[str, Any] | None:
        """The saga, its steps and its history, as plain data."""
        sid = uuid.UUID(saga_id)
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(SELECT_SAGA, sid)
            if row is None:
                return None
            steps = await conn.fetch(SELECT_STEPS, [sid])
            events = await conn.fetch(SELECT_EVENTS, sid)
        return _full_view(row, steps, events)

    @_store("list sagas")
    async def list_view(
        self, status: str | None, saga_type: str | None, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Newest first; returns the page and the cursor of the next page (None at the end)."""
        after_at, after_id = decode_cursor(cursor) if cursor else (None, None)
        rows = await self._pool.fetch(LIST_SAGAS, status, saga_type, after_at, after_id, limit + 1)
        page = rows[:limit]
        following = encode_cursor(page[-1]["created_at"], page[-1]["id"]) if len(rows) > limit else None
        return [_saga_view(r) for r in page], following

    @_store("read saga statistics")
    async def stats(self) -> ports.Stats:
        """The housekeeping gauges' values."""
        row = await self._pool.fetchrow(STATS, _LIVE)
        return ports.Stats(
            float(row["oldest"] or 0.0),
            int(row["failed"] or 0),
            int(row["past_deadline"] or 0),
            max(float(row["overdue"] or 0.0), 0.0),  # negative: the earliest deadline is still ahead
        )

    @_store("purge idempotency keys")
    async def purge_expired_keys(self) -> int:
        """Forget client idempotency keys past their retention."""
        result = await self._pool.execute(PURGE_KEYS)
        return int(result.split()[-1])

    @_store("load saga")
    async def load(self, saga_id: str) -> Saga | None:
        """The aggregate, unowned (for tests and tools)."""
        sid = uuid.UUID(saga_id)
        row = await self._pool.fetchrow(SELECT_SAGA, sid)
        if row is None:
            return None
        steps = await self._pool.fetch(SELECT_STEPS, [sid])
        return self._saga(row, [_step(s) for s in steps])

    # -- a person's moves (the queue) -------------------------------------------------------------------

    @_store("save a person's move")
    async def apply(self, saga: Saga, lease: ports.Lease, ttl: timedelta) -> None:
        """Persist a person's move on a claimed saga (`OPERATOR_SAVE`), fenced by that claim."""
        steps, events = saga.unsaved()
        values: dict[str, Any] = {
            "id": uuid.UUID(saga.id), "owner_id": lease.owner_id, "fence": lease.fence, "revision": saga.revision,
            "status": saga.status.value, "context": _dumps(saga.context), "error": saga.error,
            "payload": _dumps(saga.payload), "deadline": saga.deadline, "resolution": _dumps(saga.resolution),
            "next_attempt_at": saga.next_attempt_at, "terminal": saga.status.terminal, "ttl": ttl,
            "step_position": [s.position for s in steps], "step_status": [s.status.value for s in steps],
            "step_attempts": [s.attempts for s in steps],
            "step_compensation_attempts": [s.compensation_attempts for s in steps],
            "step_next_attempt_at": [s.next_attempt_at for s in steps],
            "step_request": [_dumps(s.request) for s in steps], "step_response": [_dumps(s.response) for s in steps],
            "step_error": [s.error for s in steps], "step_started_at": [s.started_at for s in steps],
            "step_finished_at": [s.finished_at for s in steps],
            "event_kind": [e.kind for e in events], "event_step": [e.step for e in events],
            "event_from": [e.from_status for e in events], "event_to": [e.to_status for e in events],
            "event_detail": [_dumps(e.detail) for e in events],
        }  # fmt: skip
        written = await self._pool.fetchval(OPERATOR_SAVE, *(values[name] for name in OPERATOR_SAVE_PARAMS))
        if written is None:
            raise errors.LeaseLost(f"saga {saga.id}: fence {lease.fence} of {lease.owner_id} no longer holds")
        saga.saved()

    # -- retention and export ------------------------------------------------------------------------------

    @_store("retention: delete finished sagas")
    async def purge_finished(self, older_than: timedelta, batch: int, export_dir: Path | None) -> ports.Purged:
        """Delete one batch of old finished sagas (`PICK_FINISHED`, `DELETE_PICKED`), exported first if asked."""
        async with self._pool.acquire() as conn, conn.transaction():
            ids = [r["id"] for r in await conn.fetch(PICK_FINISHED, older_than, batch)]
            if not ids:
                return ports.Purged()
            if export_dir is not None:
                histories = await self._histories(conn, ids)
                # Written and synced before the deletion commits: a failed export rolls the batch back.
                # A crash between the two leaves a saga exported twice, never one deleted unexported.
                try:
                    await asyncio.to_thread(_append_lines, export_dir, histories)
                except OSError as exc:  # not the database's: never StoreUnavailable
                    raise errors.ExportFailed(f"cannot export to {export_dir}: {exc}") from exc
            row = await conn.fetchrow(DELETE_PICKED, ids)
        return ports.Purged(int(row["sagas"]), int(row["steps"]), int(row["events"]))

    @_store("retention: forget expired keys")
    async def purge_expired_keys_batch(self, batch: int) -> int:
        """Forget one batch of client idempotency keys past their retention (`PURGE_KEYS_BATCH`)."""
        result = await self._pool.execute(PURGE_KEYS_BATCH, batch)
        return int(result.split()[-1])

    @_store("read saga history")
    async def history(self, saga_id: str) -> dict[str, Any] | None:
        """One saga's whole history, the shape retention exports (`HISTORY_FORMAT`)."""
        async with self._pool.acquire() as conn:
            found = await self._histories(conn, [uuid.UUID(saga_id)])
        return found[0] if found else None

    async def _histories(self, conn: asyncpg.Connection, ids: list[uuid.UUID]) -> list[dict[str, Any]]:
        sagas = await conn.fetch(SELECT_SAGAS, ids)
        steps: dict[uuid.UUID, list[asyncpg.Record]] = {}
        for step in await conn.fetch(SELECT_STEPS, ids):
            steps.setdefault(step["saga_id"], []).append(step)
        events: dict[uuid.UUID, list[asyncpg.Record]] = {}
        for event in await conn.fetch(SELECT_EVENTS_OF, ids):
            events.setdefault(event["saga_id"], []).append(event)
        return [_history(row, steps.get(row["id"], []), events.get(row["id"], [])) for row in sagas]

    def _saga(self, row: asyncpg.Record, steps: list[Step]) -> Saga:
        saga = Saga(
            id=str(row["id"]),
            definition=self._registry.get(row["saga_type"], row["definition_version"]),
            status=SagaStatus(row["status"]),
            payload=_loads(row["payload"]),
            deadline=row["deadline"],
            steps=steps,
            on_timeout=OnTimeout(row["on_timeout"]),
            context=_loads(row["context"]),
            error=row["error"],
            cancel_requested=row["cancel_requested"],
            trace_context=_loads(row["trace_context"]) or {},
            created_at=row["created_at"],
            next_attempt_at=row["next_attempt_at"],
            revision=row["revision"],
            resolution=_loads(row["resolution"]),
        )
        return saga

    # -- reads for the operator UI -----------------------------------------------------------------------

    @_store("search sagas")
    async def search_view(
        self, query: ports.SagaQuery, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Newest first with the UI's filters, each saga with its steps (not its events).

        Returns the page and the cursor of the next page (None at the end).
        """
        after_at, after_id = decode_cursor(cursor) if cursor else (None, None)
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                SEARCH_SAGAS, query.status, query.saga_type, query.newer_than, query.older_than, query.error_text,
                after_at, after_id, limit + 1,
            )  # fmt: skip
            page = rows[:limit]
            steps: dict[str, list[dict[str, Any]]] = {}
            for step in await conn.fetch(SELECT_STEPS, [r["id"] for r in page]):
                steps.setdefault(str(step["saga_id"]), []).append(_step_view(step))
        following = encode_cursor(page[-1]["created_at"], page[-1]["id"]) if len(rows) > limit else None
        return [{**_saga_view(r), "steps": steps.get(str(r["id"]), [])} for r in page], following

    @_store("count sagas")
    async def status_counts(self) -> dict[str, int]:
        """How many sagas are in each status."""
        return {row["status"]: int(row["n"]) for row in await self._pool.fetch(COUNT_BY_STATUS)}


def encode_cursor(created_at: datetime, saga_id: uuid.UUID) -> str:
    """An opaque keyset cursor."""
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{saga_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """Parse a cursor from `encode_cursor`.

    Raises:
        errors.MalformedCursor: the cursor is malformed.
    """
    try:
        at, _, sid = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        return datetime.fromisoformat(at), uuid.UUID(sid)
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.MalformedCursor("malformed cursor") from exc


def _step(row: asyncpg.Record) -> Step:
    return Step(
        position=row["position"],
        name=row["name"],
        idempotency_key=row["idempotency_key"],
        compensation_key=row["compensation_key"],
        status=StepStatus(row["status"]),
        attempts=row["attempts"],
        compensation_attempts=row["compensation_attempts"],
        next_attempt_at=row["next_attempt_at"],
        request=_loads(row["request"]),
        response=_loads(row["response"]),
        error=row["error"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


def _event_row(saga_id: str, fence: int, owner: str | None, e: Event) -> tuple[Any, ...]:
    return (uuid.UUID(saga_id), fence, owner, e.kind, e.step, e.from_status, e.to_status, _dumps(e.detail))


def _full_view(
    saga: asyncpg.Record, steps: Sequence[asyncpg.Record], events: Sequence[asyncpg.Record]
) -> dict[str, Any]:
    return {**_saga_view(saga), "steps": [_step_view(s) for s in steps], "events": [_event_view(e) for e in events]}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _saga_view(row: asyncpg.Record) -> dict[str, Any]:
    trace_context = _loads(row["trace_context"]) or {}
    parent = trace_context.get("traceparent", "")
    return {
        "id": str(row["id"]),
        "saga_type": row["saga_type"],
        "definition_version": row["definition_version"],
        "status": row["status"],
        "payload": _loads(row["payload"]),
        "context": _loads(row["context"]),
        "error": row["error"],
        "deadline": _iso(row["deadline"]),
        "on_timeout": row["on_timeout"],
        "cancel_requested": row["cancel_requested"],
        "trace_id": parent.split("-")[1] if parent.count("-") == 3 else None,
        "fence": row["fence"],
        "created_at": _iso(row["created_at"]),
        "updated_at": _iso(row["updated_at"]),
        "finished_at": _iso(row["finished_at"]),
        "resolution": _loads(row["resolution"]),
    }


def _step_view(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "position": row["position"],
        "name": row["name"],
        "status": row["status"],
        "attempts": row["attempts"],
        "compensation_attempts": row["compensation_attempts"],
        "next_attempt_at": _iso(row["next_attempt_at"]),
        "last_error": row["error"],
        "started_at": _iso(row["started_at"]),
        "finished_at": _iso(row["finished_at"]),
        "response": _loads(row["response"]),
    }


def _event_view(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "kind": row["kind"],
        "step": row["step"],
        "from_status": row["from_status"],
        "to_status": row["to_status"],
        "fence": row["fence"],
        "owner_id": row["owner_id"],
        "detail": _loads(row["detail"]),
        "at": _iso(row["created_at"]),
    }


def _history(saga: asyncpg.Record, steps: Sequence[asyncpg.Record], events: Sequence[asyncpg.Record]) -> dict[str, Any]:
    """The export of one saga: the API's view of it, plus what a replay needs (requests, keys, trace)."""
    view = _full_view(saga, steps, events)
    for step_view, step in zip(view["steps"], steps, strict=True):
        step_view["request"] = _loads(step["request"])
        step_view["idempotency_key"] = step["idempotency_key"]
        step_view["compensation_key"] = step["compensation_key"]
    view["trace_context"] = _loads(saga["trace_context"]) or {}
    return {"format": HISTORY_FORMAT, **view}


def _append_lines(directory: Path, histories: list[dict[str, Any]]) -> None:
    """Append one JSON line per saga to today's file (UTC) in `directory`, durably (fsync)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"sagas-{datetime.now(UTC):%Y-%m-%d}.jsonl"
    with path.open("a", encoding="utf-8") as out:
        out.writelines(json.dumps(h, separators=(",", ":"), sort_keys=True) + "\n" for h in histories)
        out.flush()
        os.fsync(out.fileno())
