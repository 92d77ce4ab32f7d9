"""What clients and admins can ask of the orchestrator, independent of HTTP.

Starting a saga is idempotent per client key: the key, the saga, its steps and its first events are
written in one transaction, and the saga is owned at once by the accepting instance (fence 1) so it
starts without waiting for a poll. A duplicate request with the same body gets the same saga; with a
different body it is refused. Admin retry and cancel never write over a live owner: retry acquires
the FAILED saga through the fenced claim, cancel only raises a flag the owner acts on. The other actions
a person takes on a FAILED saga (the queue) acquire it the same way; the dry run writes nothing; and
retention deletes only finished sagas, in small batches that skip what anyone holds.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from orchestrator import metrics, ports
from orchestrator.domain import errors
from orchestrator.domain import plan as dry_run
from orchestrator.domain.definition import Registry, SagaDefinition
from orchestrator.domain.model import OnTimeout, Operator, Saga, SagaStatus
from servicekit import logging

log = logging.get_logger(__name__)


@dataclass(frozen=True)
class StartRequest:
    """A client's request to start a saga."""

    idempotency_key: str
    saga_type: str
    payload: Any
    deadline: timedelta | None = None


@dataclass(frozen=True)
class Started:
    """The saga a start request refers to; `created` is False for a replay of the same request."""

    saga_id: str
    created: bool
    claimed: ports.Claimed | None
    view: dict[str, Any] | None = None  # the new saga as written, when the store answered it


def request_hash(saga_type: str, payload: Any, deadline: timedelta | None = None) -> str:
    """A stable fingerprint of a start request's body (key order and spacing do not matter)."""
    body = {"saga_type": saga_type, "payload": payload}
    if deadline is not None:
        body["deadline_seconds"] = deadline.total_seconds()
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class SagaService:
    """Use cases over the repository; the composition root wires one per process."""

    def __init__(
        self,
        repository: ports.SagaRepository,
        registry: Registry,
        clock: ports.Clock,
        *,
        on_timeout: OnTimeout = OnTimeout.COMPENSATE,
        lease_ttl: timedelta = timedelta(seconds=4),
        operator: ports.OperatorStore | None = None,
    ) -> None:
        """Wire the use cases; `operator` serves a person's actions on FAILED sagas (the queue)."""
        self._repo, self._registry, self._clock = repository, registry, clock
        self._on_timeout, self._ttl = on_timeout, lease_ttl
        self._operator = operator

    async def start(self, request: StartRequest, owner_id: str | None, trace_context: dict[str, str]) -> Started:
        """Create the saga for this key, or find the one it already created.

        With an `owner_id`, a new saga is created already owned by that instance and EXECUTING its
        first step, which the caller then runs; without one it waits PENDING for any poller.

        Raises:
            errors.UnknownSagaType: no definition for the type.
            errors.InvalidRequest: the payload fails the definition's validation.
            errors.IdempotencyConflict: the key was used with a different body.
        """
        definition = self._registry.latest(request.saga_type)
        if definition is None:
            known = ", ".join(self._registry.types)
            raise errors.UnknownSagaType(f"unknown saga type {request.saga_type!r}", [f"saga_type: one of {known}"])
        payload = definition.validate(request.payload)
        fingerprint = request_hash(request.saga_type, request.payload, request.deadline)
        now = self._clock.now()
        saga = Saga.new(str(uuid.uuid4()), definition, payload, now, request.deadline, on_timeout=self._on_timeout)
        saga.trace_context = trace_context
        if owner_id is not None:
            saga.start(now)
        sent_at = self._clock.monotonic()
        created = await self._repo.create(saga, request.idempotency_key, fingerprint, owner_id, self._ttl)
        if not created.created:
            if created.request_hash != fingerprint:
                raise errors.IdempotencyConflict("Idempotency-Key was already used with a different request body")
            return Started(created.saga_id, created=False, claimed=None)
        claimed = ports.Claimed(saga, created.lease, None, sent_at) if created.lease else None
        return Started(saga.id, created=True, claimed=claimed, view=created.view)

    async def retry(self, saga_id: str, owner_id: str, by: Operator | None = None) -> ports.Claimed:
        """Resume a FAILED saga in the only honest direction; the caller runs the returned claim.

        Parked at or past the point of no return it goes forward; otherwise its compensation resumes
        (see `Saga.retry_failed`). With `by`, the retry is recorded with who asked and why, and a saga a
        person resolved is refused.

        Raises:
            errors.SagaNotFound: no such saga.
            errors.StateConflict: the saga is not FAILED, or someone holds it.
        """
        if by is not None:
            stored = await self._stored(saga_id)
            return await self._operate(stored, owner_id, lambda saga: saga.operator_retry(self._clock.now(), by))
        claimed = await self._repo.claim_one(saga_id, owner_id, self._ttl)
        if claimed is None:
            raise await self._conflict_or_missing(saga_id, "is held by a live owner and cannot be retried now")
        claimed.saga.retry_failed(self._clock.now())
        sent_at = self._clock.monotonic()
        await self._repo.save(claimed.saga, claimed.lease, self._ttl)
        return replace(claimed, acquired_at=sent_at)

    async def cancel(self, saga_id: str) -> str:
        """Ask a live saga to stop going forward and compensate; returns its status.

        Raises:
            errors.SagaNotFound: no such saga.
            errors.StateConflict: the saga is already terminal.
        """
        status = await self._repo.request_cancel(saga_id)
        if status is None:
            raise errors.SagaNotFound(f"saga {saga_id} not found")
        if SagaStatus(status).terminal:
            raise errors.StateConflict(f"saga {saga_id} is {status}; a terminal saga cannot be cancelled")
        return status

    # -- the dry run ---------------------------------------------------------------------------------------

    def plan(self, saga_type: str, payload: Any, deadline: timedelta | None = None) -> dict[str, Any]:
        """What a saga of this type and payload would do, step by step and for a failure at each step.

        Validates exactly like `start`, and writes and calls nothing (see `domain.plan`).

        Raises:
            errors.UnknownSagaType: no definition for the type.
            errors.InvalidRequest: the payload fails the definition's validation.
        """
        definition = self._definition(saga_type)
        return dry_run.plan(definition, definition.validate(payload), deadline, self._on_timeout)

    def _definition(self, saga_type: str) -> SagaDefinition:
        definition = self._registry.latest(saga_type)
        if definition is None:
            known = ", ".join(self._registry.types)
            raise errors.UnknownSagaType(f"unknown saga type {saga_type!r}", [f"saga_type: one of {known}"])
        return definition

    # -- a person's actions on FAILED sagas (the queue) ------------------------------------------------------
    #
    # Each action decides on the stored saga first, so a refusal writes nothing; then it acquires the saga
    # through the fenced claim (never over a live owner), decides again on what the claim returned (the
    # saga may have changed in between: then the claim is released and the action refused), and persists
    # the move fenced by that claim. A returned claim whose saga is live is for the caller to run.

    async def retry_with_payload(self, saga_id: str, payload: Any, owner_id: str, by: Operator) -> ports.Claimed:
        """Resume a saga that failed going forward, from its stuck step, with a corrected payload.

        The payload is validated exactly like a start's (see `Saga.retry_with_payload`).

        Raises:
            errors.SagaNotFound: no such saga.
            errors.InvalidRequest: the payload fails the saga type's validation.
            errors.StateConflict: the saga is not FAILED, was resolved, compensation has begun, or it is held.
        """
        stored = await self._stored(saga_id)
        valid = stored.definition.validate(payload)
        return await self._operate(stored, owner_id, lambda saga: saga.retry_with_payload(valid, self._clock.now(), by))

    async def skip_step(
        self, saga_id: str, step: str, output: dict[str, Any], owner_id: str, by: Operator
    ) -> ports.Claimed:
        """Mark the stuck step done by hand with a recorded output; the saga goes on (see `Saga.skip_step`).

        Raises:
            errors.SagaNotFound: no such saga.
            errors.InvalidRequest: a forward skip's output lacks what later steps read.
            errors.StateConflict: the saga is not FAILED, was resolved, is stuck elsewhere, or it is held.
        """
        stored = await self._stored(saga_id)
        return await self._operate(stored, owner_id, lambda saga: saga.skip_step(step, output, self._clock.now(), by))

    async def force_compensation(self, saga_id: str, owner_id: str, by: Operator) -> ports.Claimed:
        """Undo what the saga did (see `Saga.force_compensation`).

        Raises:
            errors.SagaNotFound: no such saga.
            errors.PastPointOfNoReturn: a forward-only step was executing; compensating could undo a final effect.
            errors.StateConflict: the saga is not FAILED, was resolved, or it is held.
        """
        stored = await self._stored(saga_id)
        return await self._operate(stored, owner_id, lambda saga: saga.force_compensation(self._clock.now(), by))

    async def resolve(self, saga_id: str, owner_id: str, by: Operator) -> ports.Claimed:
        """Mark a FAILED saga handled without acting: it stays FAILED and leaves the queue (see `Saga.resolve`).

        Raises:
            errors.SagaNotFound: no such saga.
            errors.StateConflict: the saga is not FAILED, was resolved already, or it is held.
        """
        stored = await self._stored(saga_id)
        return await self._operate(stored, owner_id, lambda saga: saga.resolve(self._clock.now(), by))

    async def history(self, saga_id: str) -> dict[str, Any]:
        """One saga's whole history, as retention exports it (for `sagaline saga export`).

        Raises:
            errors.SagaNotFound: no such saga.
        """
        found = await self._operator_store().history(saga_id)
        if found is None:
            raise errors.SagaNotFound(f"saga {saga_id} not found")
        return found

    def _operator_store(self) -> ports.OperatorStore:
        if self._operator is None:  # pragma: no cover - the composition root always wires it
            raise RuntimeError("SagaService was built without an operator store")
        return self._operator

    async def _stored(self, saga_id: str) -> Saga:
        saga = await self._operator_store().load(saga_id)
        if saga is None:
            raise errors.SagaNotFound(f"saga {saga_id} not found")
        return saga

    async def _operate(self, stored: Saga, owner_id: str, move: Callable[[Saga], None]) -> ports.Claimed:
        move(stored)  # decided on the stored state: a refusal here has written nothing
        claimed = await self._repo.claim_one(stored.id, owner_id, self._ttl)
        if claimed is None:
            raise await self._conflict_or_missing(stored.id, "is held by a live owner; try again once it is released")
        try:
            move(claimed.saga)
        except errors.OrchestratorError:
            await self._repo.release(claimed.lease)  # it changed between the read and the claim
            raise
        sent_at = self._clock.monotonic()
        await self._operator_store().apply(claimed.saga, claimed.lease, self._ttl)
        return replace(claimed, acquired_at=sent_at)

    async def _conflict_or_missing(self, saga_id: str, message: str) -> errors.OrchestratorError:
        status = await self._repo.status(saga_id)
        if status is None:
            return errors.SagaNotFound(f"saga {saga_id} not found")
        if status != SagaStatus.FAILED:
            return errors.StateConflict(f"saga {saga_id} is {status}; only FAILED sagas can be retried")
        return errors.StateConflict(f"saga {saga_id} {message}")


@dataclass(frozen=True)
class RetentionPolicy:
    """What retention deletes, and how much per run; `finished_after=None` keeps every saga."""

    finished_after: timedelta | None = None
    batch: int = 100
    max_batches: int = 10
    export_dir: Path | None = None


class Retention:
    """Deletes old finished sagas and expired client keys in small batches; run by the worker's housekeeping.

    Each batch is one short transaction that skips rows someone holds (`SKIP LOCKED`), so it never
    waits on, or delays, a saga in flight; a run stops after `max_batches` batches of each kind, or as
    soon as a batch comes back short, so one tick stays bounded however much is due.
    """

    def __init__(self, store: ports.RetentionStore, policy: RetentionPolicy) -> None:
        """Wire the store and the policy."""
        self._store, self._policy = store, policy

    async def run(self) -> tuple[ports.Purged, int]:
        """One bounded pass: (what was deleted of finished sagas, how many expired keys)."""
        policy = self._policy
        sagas = steps = events = 0
        if policy.finished_after is not None:
            for _ in range(policy.max_batches):
                try:
                    purged = await self._store.purge_finished(policy.finished_after, policy.batch, policy.export_dir)
                except errors.ExportFailed as exc:  # nothing was deleted; try again at the next tick
                    metrics.RETENTION_EXPORT_FAILURES.inc()
                    log.error("retention export failed, nothing deleted", error=str(exc))
                    break
                sagas, steps, events = sagas + purged.sagas, steps + purged.steps, events + purged.events
                metrics.RETENTION_DELETED.labels("saga").inc(purged.sagas)
                metrics.RETENTION_DELETED.labels("step").inc(purged.steps)
                metrics.RETENTION_DELETED.labels("event").inc(purged.events)
                if policy.export_dir is not None:
                    metrics.RETENTION_EXPORTED.inc(purged.sagas)
                if purged.sagas < policy.batch:
                    break
        keys = 0
        for _ in range(policy.max_batches):
            forgotten = await self._store.purge_expired_keys_batch(policy.batch)
            keys += forgotten
            metrics.RETENTION_DELETED.labels("idempotency_key").inc(forgotten)
            if forgotten < policy.batch:
                break
        return ports.Purged(sagas, steps, events), keys
