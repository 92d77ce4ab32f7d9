"""What the engine, the worker and the use cases need from the outside world."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from orchestrator.domain.definition import Call
from orchestrator.domain.model import Saga


@dataclass(frozen=True)
class Lease:
    """Proof of ownership of one saga: valid while the row still carries this owner and fence."""

    saga_id: str
    owner_id: str
    fence: int


@dataclass(frozen=True)
class Claimed:
    """A saga this instance just acquired, with its lease and the owner it was taken from.

    `acquired_at` is this process's monotonic time when the statement that granted (or last renewed)
    the lease was sent, where the caller knows it; the run counts its lease from there.
    """

    saga: Saga
    lease: Lease
    previous_owner: str | None
    acquired_at: float | None = None


@dataclass(frozen=True)
class Renewal:
    """What one heartbeat statement did: the leases it extended, and the live sagas whose lease is lost.

    A lease in neither set belongs to a saga that finished (its terminal save released it): it was not
    renewed, and nothing may treat it as fresh.
    """

    renewed: frozenset[str]
    lost: frozenset[str]


@dataclass(frozen=True)
class Stats:
    """What the housekeeping gauges show: the same for every instance, since all read the shared table."""

    oldest_live_age: float  # seconds since the oldest non-terminal saga was accepted (0: none)
    failed: int  # sagas in FAILED, waiting for a person
    past_deadline: int  # non-terminal sagas whose deadline has passed (compensating late, or stuck)
    most_overdue: float  # seconds the most overdue of those is past its deadline (0: none)


@dataclass(frozen=True)
class Created:
    """The result of an idempotent start: the saga, and whether this request created it."""

    saga_id: str
    created: bool
    lease: Lease | None
    # For a replay: the fingerprint stored with the key, to compare with the request's.
    request_hash: str | None = None
    # For a creation: the saga as written (its API view), when the store answers it with the write.
    view: dict[str, Any] | None = None


class Participants(Protocol):
    """The downstream services; translates their outcomes into domain step errors."""

    async def invoke(
        self,
        call: Call,
        request: dict[str, Any],
        *,
        saga_id: str,
        idempotency_key: str,
        action_key: str | None,
        lease: Lease | None = None,
    ) -> dict[str, Any]:
        """Call `call.service`/`call.method` within `call.timeout`, naming the caller's `lease` (owner, fence).

        Raises:
            errors.TransientStepError: worth retrying with the same key; the effect may have happened.
            errors.PermanentStepError: the participant refused and applied nothing.
        """
        ...


class SagaRepository(Protocol):
    """Durable saga state; every owner write is fenced by a Lease.

    Every method raises `errors.StoreUnavailable` when the database is unreachable or answers with a
    transient error (the one translation lives in the adapter); any other database error is a bug.
    """

    async def create(self, saga: Saga, key: str, request_hash: str, owner_id: str | None, ttl: timedelta) -> Created:
        """Insert the saga, its steps, its events and the client's key in one transaction.

        When the key already exists, nothing is written and the existing saga id is returned with
        created=False and the request hash stored with the key.
        """
        ...

    async def save(self, saga: Saga, lease: Lease, ttl: timedelta) -> bool:
        """Persist the saga's changes since the last save, fenced; returns cancel_requested.

        A terminal saga is released in the same statement.

        Raises:
            errors.LeaseLost: the lease expired or another owner holds the saga.
            errors.StoreUnavailable: the database could not be reached or refused for now; the write may
                have committed, and repeating the same save is safe (it detects its own earlier commit).
        """
        ...

    async def claim(self, owner_id: str, ttl: timedelta, limit: int, exclude: Sequence[str]) -> list[Claimed]:
        """Acquire up to `limit` live sagas that are unowned or whose lease expired and that are due."""
        ...

    async def claim_one(self, saga_id: str, owner_id: str, ttl: timedelta) -> Claimed | None:
        """Acquire one FAILED saga now if nobody holds a live lease on it (admin retry); None otherwise."""
        ...

    async def renew(self, owner_id: str, leases: Sequence[Lease], ttl: timedelta) -> Renewal:
        """Extend unexpired leases still carrying their fence, in one statement."""
        ...

    async def release(self, lease: Lease, *, clean: bool = True) -> None:
        """Give the saga back (fenced) so another instance can continue it at once.

        `clean` means no call was in flight (released between moves): the next owner spends no attempt.
        Otherwise the lease only ends now, and the next owner counts the interrupted attempt as spent.
        """
        ...

    async def database_time(self) -> datetime:
        """The database's clock, on which every time rule (leases, deadlines, due times) is decided."""
        ...

    async def cancel_requested(self, saga_id: str) -> bool:
        """Whether an admin asked this saga to stop (read while a run waits between attempts)."""
        ...

    async def status(self, saga_id: str) -> str | None:
        """The saga's status, or None when it does not exist."""
        ...

    async def stats(self) -> Stats:
        """Gauges for health and alerts, read on the database clock."""
        ...

    async def purge_expired_keys(self) -> int:
        """Forget client idempotency keys past their retention; returns how many."""
        ...

    async def request_cancel(self, saga_id: str) -> str | None:
        """Flag a live saga for cancellation; returns its status, or None when it does not exist."""
        ...


class SagaViews(Protocol):
    """Read models for the API: plain data, never aggregates."""

    async def get_view(self, saga_id: str) -> dict[str, Any] | None:
        """The saga, its steps and its history; None when it does not exist."""
        ...

    async def list_view(
        self, status: str | None, saga_type: str | None, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Newest first, and the cursor of the next page.

        Raises:
            errors.MalformedCursor: the cursor was not issued by this API.
        """
        ...

    async def search_view(
        self, query: SagaQuery, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """The operator UI's list: `list_view` with more filters and each saga's steps; the next page's cursor.

        Raises:
            errors.MalformedCursor: the cursor was not issued by this store.
        """
        ...

    async def status_counts(self) -> dict[str, int]:
        """How many sagas are in each status (statuses with none are absent)."""
        ...


class Clock(Protocol):
    """Time, injectable: wall time for deadlines and timestamps, monotonic time for waits."""

    def now(self) -> datetime:
        """Wall-clock time, UTC."""
        ...

    def monotonic(self) -> float:
        """Monotonic seconds."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait; may return early when the process is stopping."""
        ...


class AnchoredClock(Clock, Protocol):
    """A Clock whose `now()` follows the database's clock once synced (the worker re-syncs it)."""

    async def sync(self, database_time: Callable[[], Awaitable[datetime]]) -> timedelta:
        """Read the database clock and anchor to it; returns database minus host clock."""
        ...


@dataclass(frozen=True)
class SagaQuery:
    """The operator UI's filters; None means "any". Ages are measured on the database clock."""

    status: str | None = None
    saga_type: str | None = None
    newer_than: timedelta | None = None
    older_than: timedelta | None = None
    # A case-insensitive substring of the saga's error.
    error_text: str | None = None


@dataclass(frozen=True)
class Purged:
    """What one retention batch removed."""

    sagas: int = 0
    steps: int = 0
    events: int = 0


class OperatorStore(Protocol):
    """What a person's actions on FAILED sagas need beyond the engine's repository (the queue).

    Each action first reads the saga (so a refusal writes nothing), then acquires it through the
    repository's fenced `claim_one`, and applies the move with `apply`, fenced by that claim.
    """

    async def load(self, saga_id: str) -> Saga | None:
        """The aggregate as stored, unowned (read only: to decide whether an action is possible)."""
        ...

    async def apply(self, saga: Saga, lease: Lease, ttl: timedelta) -> None:
        """Persist a person's move: like `SagaRepository.save`, fenced, plus payload, deadline and resolution.

        A terminal saga is released in the same statement.

        Raises:
            errors.LeaseLost: the claim no longer holds.
            errors.StoreUnavailable: the database could not be reached or refused for now.
        """
        ...

    async def history(self, saga_id: str) -> dict[str, Any] | None:
        """One saga's whole history (saga, steps with requests and responses, events) as plain data."""
        ...


class RetentionStore(Protocol):
    """Deleting what is finished and old, in small batches that never wait on a row someone holds."""

    async def purge_finished(self, older_than: timedelta, batch: int, export_dir: Path | None) -> Purged:
        """Delete up to `batch` finished sagas (with steps, events and key) finished more than `older_than` ago.

        Finished means COMPLETED, COMPENSATED, or FAILED and resolved by a person; an unresolved FAILED
        saga waits for its person forever. With `export_dir`, each saga's whole history is appended
        there as one JSON line before the deletion commits (a failed export deletes nothing).
        """
        ...

    async def purge_expired_keys_batch(self, batch: int) -> int:
        """Forget up to `batch` client idempotency keys past their retention; returns how many."""
        ...
