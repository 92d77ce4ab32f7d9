"""Group commit for checkpoints: the saves of many sagas in one statement, each still fenced on its own.

Every save that arrives while a checkpoint statement is in flight waits for it to return and then goes,
with all the others that arrived meanwhile, in the next statement: at low load each save is sent alone
and at once (no added wait), and under load one round trip and one commit carry many sagas' moves. The
statement checks each saga's owner, fence, unexpired lease and revision on that saga's own row, writes its
steps and events only through that row, and answers the rows it updated; a save whose conditions fail
writes nothing and answers "not landed", exactly as a save sent alone. A transient error reaches every
save of the statement (each is repeated by its engine, the revision recognising one that had landed); any
other error sends the saves of that statement again one by one, so a bad checkpoint fails only its saga.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

import asyncpg

from orchestrator import ports
from orchestrator.domain.model import Event, Saga, Step
from servicekit import db

# The fenced checkpoint of N sagas, one round trip and one commit. A saga's row is updated only if its
# owner's fence still holds, its lease has not expired (database clock) and its revision is the one the
# save expects; the row lock makes a concurrent claim of that saga wait for this statement. Steps and
# events are written only through the updated rows (`owned`), so a refused save writes nothing at all.
# Each save renews its lease; a terminal one releases it. The revision makes a repeated save (after an
# unknown outcome) match nothing once the first landed.
SAVE: Final = """
WITH input AS (
    SELECT *
    FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::jsonb[], $7::text[],
                $8::timestamptz[], $9::boolean[], $10::interval[])
         AS i(id, owner_id, fence, revision, status, context, error, next_attempt_at, terminal, ttl)
), owned AS (
    UPDATE sagas AS s
    SET status = i.status, context = i.context, error = i.error,
        next_attempt_at = coalesce(i.next_attempt_at, s.next_attempt_at),
        updated_at = clock_timestamp(), revision = s.revision + 1,
        finished_at = CASE WHEN i.terminal THEN clock_timestamp() END,
        owner_id = CASE WHEN i.terminal THEN NULL ELSE s.owner_id END,
        lease_expires_at = CASE WHEN i.terminal THEN NULL ELSE clock_timestamp() + i.ttl END
    FROM input AS i
    WHERE s.id = i.id AND s.owner_id = i.owner_id AND s.fence = i.fence
      AND s.lease_expires_at > clock_timestamp() AND s.revision = i.revision
    RETURNING s.id, s.cancel_requested, i.owner_id AS saved_by, i.fence AS saved_fence
), changed_steps AS (
    UPDATE saga_steps AS st
    SET status = u.status, attempts = u.attempts, compensation_attempts = u.compensation_attempts,
        next_attempt_at = u.next_attempt_at, request = u.request, response = u.response, error = u.error,
        started_at = u.started_at, finished_at = u.finished_at
    FROM owned, unnest($11::uuid[], $12::int[], $13::text[], $14::int[], $15::int[], $16::timestamptz[],
                       $17::jsonb[], $18::jsonb[], $19::text[], $20::timestamptz[], $21::timestamptz[])
         AS u(saga_id, position, status, attempts, compensation_attempts, next_attempt_at, request, response,
              error, started_at, finished_at)
    WHERE u.saga_id = owned.id AND st.saga_id = owned.id AND st.position = u.position
), new_events AS (
    INSERT INTO saga_events (saga_id, fence, owner_id, kind, step, from_status, to_status, detail)
    SELECT owned.id, owned.saved_fence, owned.saved_by, e.kind, e.step, e.from_status, e.to_status, e.detail
    FROM owned
    JOIN unnest($22::uuid[], $23::text[], $24::text[], $25::text[], $26::text[], $27::jsonb[])
         WITH ORDINALITY AS e(saga_id, kind, step, from_status, to_status, detail, n) ON e.saga_id = owned.id
    ORDER BY e.n
)
SELECT id, cancel_requested FROM owned"""


def dumps(value: Any) -> str | None:
    """A JSON column's text, compact; None stays NULL."""
    return None if value is None else json.dumps(value, separators=(",", ":"))


@dataclass(frozen=True)
class Checkpoint:
    """One saga's save: its state now, the steps and events not saved yet, under one lease."""

    saga: Saga
    lease: ports.Lease
    ttl: timedelta
    steps: Sequence[Step]
    events: Sequence[Event]


def _arguments(batch: Sequence[Checkpoint]) -> list[Any]:
    sagas = [(uuid.UUID(c.saga.id), c) for c in batch]
    steps = [(sid, s) for sid, c in sagas for s in c.steps]
    events = [(sid, e) for sid, c in sagas for e in c.events]
    return [
        [sid for sid, _ in sagas], [c.lease.owner_id for _, c in sagas], [c.lease.fence for _, c in sagas],
        [c.saga.revision for _, c in sagas], [c.saga.status.value for _, c in sagas],
        [dumps(c.saga.context) for _, c in sagas], [c.saga.error for _, c in sagas],
        [c.saga.next_attempt_at for _, c in sagas], [c.saga.status.terminal for _, c in sagas],
        [c.ttl for _, c in sagas],
        [sid for sid, _ in steps], [s.position for _, s in steps], [s.status.value for _, s in steps],
        [s.attempts for _, s in steps], [s.compensation_attempts for _, s in steps],
        [s.next_attempt_at for _, s in steps], [dumps(s.request) for _, s in steps],
        [dumps(s.response) for _, s in steps], [s.error for _, s in steps], [s.started_at for _, s in steps],
        [s.finished_at for _, s in steps],
        [sid for sid, _ in events], [e.kind for _, e in events], [e.step for _, e in events],
        [e.from_status for _, e in events], [e.to_status for _, e in events], [dumps(e.detail) for _, e in events],
    ]  # fmt: skip


_Waiting = tuple[Checkpoint, "asyncio.Future[bool | None]"]


class Checkpoints:
    """Sends checkpoints for one process, at most one statement at a time, each carrying what has queued."""

    def __init__(self, pool: asyncpg.Pool, max_batch: int = 64) -> None:
        """`max_batch`: the most sagas in one statement."""
        self._pool, self._max_batch = pool, max_batch
        self._queue: list[_Waiting] = []
        self._sender: asyncio.Task[None] | None = None
        self.statements = 0  # sent so far, for tests and the curious

    async def save(self, checkpoint: Checkpoint) -> bool | None:
        """The saga's `cancel_requested` once its save landed; None if it matched nothing (fence, lease or revision).

        Raises whatever the database raised for the statement that carried it.
        """
        future: asyncio.Future[bool | None] = asyncio.get_running_loop().create_future()
        self._queue.append((checkpoint, future))
        if self._sender is None:
            # A fresh context: a statement that carries many sagas' saves belongs to no one saga's trace.
            self._sender = asyncio.create_task(self._send_all(), name="checkpoints", context=contextvars.Context())
        return await future

    async def _send_all(self) -> None:
        try:
            while self._queue:
                batch = self._next_batch()
                if batch:
                    await self._send(batch)
        finally:
            self._sender = None
            for _, future in self._queue:  # only if this task itself was cancelled (the loop is closing)
                if not future.done():
                    future.cancel()
            self._queue.clear()

    def _next_batch(self) -> list[_Waiting]:
        """Up to `max_batch` waiting saves, one per saga (a second save of a saga waits for the next statement)."""
        batch: list[_Waiting] = []
        kept: list[_Waiting] = []
        seen: set[str] = set()
        for waiting in self._queue:
            checkpoint, future = waiting
            if future.done():  # its caller was cancelled before it was sent: nothing to send
                continue
            if len(batch) < self._max_batch and checkpoint.saga.id not in seen:
                seen.add(checkpoint.saga.id)
                batch.append(waiting)
            else:
                kept.append(waiting)
        self._queue = kept
        return batch

    async def _send(self, batch: list[_Waiting]) -> None:
        try:
            self.statements += 1
            rows = await self._pool.fetch(SAVE, *_arguments([checkpoint for checkpoint, _ in batch]))
        except Exception as exc:
            if len(batch) > 1 and not db.transient(exc):
                for waiting in batch:  # find the one that cannot be saved; the others land
                    await self._send([waiting])
            else:
                _settle(batch, error=exc)
            return
        except BaseException:
            _settle(batch, error=None)  # cancelled: every waiting save is cancelled with it
            raise
        landed = {str(row["id"]): bool(row["cancel_requested"]) for row in rows}
        _settle(batch, landed=landed)


def _settle(batch: list[_Waiting], *, landed: dict[str, bool] | None = None, error: Exception | None = None) -> None:
    """Give each save still awaited its outcome: its row's cancel flag (None: not landed), the error, or a cancel."""
    for checkpoint, future in batch:
        if future.done():
            continue
        if landed is not None:
            future.set_result(landed.get(checkpoint.saga.id))
        elif error is not None:
            future.set_exception(error)
        else:
            future.cancel()
