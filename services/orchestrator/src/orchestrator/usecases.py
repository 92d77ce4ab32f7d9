"""What clients and admins can ask of the orchestrator, independent of HTTP.

Starting a saga is idempotent per client key: the key, the saga, its steps and its first events are
written in one transaction, and the saga is owned at once by the accepting instance (fence 1) so it
starts without waiting for a poll. A duplicate request with the same body gets the same saga; with a
different body it is refused. Admin retry and cancel never write over a live owner: retry acquires
the FAILED saga through the fenced claim, cancel only raises a flag the owner acts on.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from orchestrator import ports
from orchestrator.domain import errors
from orchestrator.domain.definition import Registry
from orchestrator.domain.model import OnTimeout, Saga, SagaStatus


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
    ) -> None:
        """Wire the use cases."""
        self._repo, self._registry, self._clock = repository, registry, clock
        self._on_timeout, self._ttl = on_timeout, lease_ttl

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
        return Started(saga.id, created=True, claimed=claimed)

    async def retry(self, saga_id: str, owner_id: str) -> ports.Claimed:
        """Resume a FAILED saga in the only honest direction; the caller runs the returned claim.

        Parked at or past the point of no return it goes forward; otherwise its compensation resumes
        (see `Saga.retry_failed`).

        Raises:
            errors.SagaNotFound: no such saga.
            errors.StateConflict: the saga is not FAILED, or someone holds it.
        """
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

    async def _conflict_or_missing(self, saga_id: str, message: str) -> errors.OrchestratorError:
        status = await self._repo.status(saga_id)
        if status is None:
            return errors.SagaNotFound(f"saga {saga_id} not found")
        if status != SagaStatus.FAILED:
            return errors.StateConflict(f"saga {saga_id} is {status}; only FAILED sagas can be retried")
        return errors.StateConflict(f"saga {saga_id} {message}")
