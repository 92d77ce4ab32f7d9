"""The saga engine: drives one saga, move by move, persisting each move before acting on it.

One `run` owns one saga under one lease. Each iteration decides the next move from the persisted
state alone (so any instance, after any crash, decides the same), performs at most one participant
call, records the outcome on the aggregate and saves it fenced by the lease. The save is the
checkpoint: if the process dies after a call but before its save, the next owner repeats the call
with the same idempotency key and the participant answers with the stored response.

Stopping (shutdown) is checked between moves, never in the middle of one: the current call finishes
and is saved, then the lease is released so another instance continues at once (and spends no attempt
of the saga). A lost lease ends the run without another write. A save the database could not confirm
(unreachable, cancelled, terminated, deadlocked) is repeated, same fence and same changes, until it
commits or the lease is reported lost: a database blip delays a saga by the blip, not by a lease.
Waits (backoff, an open breaker) happen in-process while the heartbeat keeps the lease; the deadline
and an admin's cancel are checked before every move, on the database's clock (`ports.Clock`).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

from orchestrator import metrics, ports
from orchestrator.domain import errors
from orchestrator.domain.breaker import BreakerPolicy, BreakerState, CircuitBreaker, Permit
from orchestrator.domain.definition import Call
from orchestrator.domain.model import OnTimeout, Saga, SagaStatus, Step
from servicekit import failpoints, logging
from servicekit.metrics import labelled

log = logging.get_logger(__name__)
tracer = trace.get_tracer("sagaline.orchestrator")

_BREAKER_GAUGE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


class Breakers:
    """One circuit breaker per downstream service, shared by every saga of this instance."""

    def __init__(
        self, policy: BreakerPolicy, clock: Callable[[], float], per_service: Mapping[str, BreakerPolicy] | None = None
    ) -> None:
        """Breakers are created on first use of a service, with its own policy if per_service has one."""
        self._policy, self._clock = policy, clock
        self._per_service = dict(per_service or {})
        self._by_service: dict[str, CircuitBreaker] = {}

    def __getitem__(self, service: str) -> CircuitBreaker:
        if service not in self._by_service:
            self._by_service[service] = CircuitBreaker(self._per_service.get(service, self._policy), self._clock)
        return self._by_service[service]

    def publish(self) -> None:
        """Export every breaker's state as a gauge."""
        for service, breaker in self._by_service.items():
            labelled(metrics.BREAKER_STATE, service).set(_BREAKER_GAUGE[breaker.state])


@dataclass(frozen=True)
class EngineConfig:
    """Lease TTL (each save renews it), the longest single in-process wait, and the backoff of a save retry."""

    lease_ttl: timedelta = timedelta(seconds=4)
    max_wait: float = 1.0
    save_retry_first: float = 0.05
    save_retry_max: float = 1.0


@dataclass(frozen=True)
class _Outcome:
    response: dict[str, Any] | None = None
    error: errors.StepError | None = None


class Engine:
    """Runs sagas; one instance per process, many concurrent `run` calls."""

    def __init__(
        self,
        repository: ports.SagaRepository,
        participants: ports.Participants,
        clock: ports.Clock,
        breakers: Breakers,
        config: EngineConfig = EngineConfig(),
        rand: Callable[[], float] = random.random,
    ) -> None:
        """Wire the engine to its ports; `rand` drives the backoff jitter."""
        self._repo, self._participants, self._clock = repository, participants, clock
        self._breakers, self._config, self._rand = breakers, config, rand
        # (saga id, fence) -> this process's monotonic time when the run's last save was sent
        self._saved_at: dict[tuple[str, int], float] = {}

    async def run(
        self,
        saga: Saga,
        lease: ports.Lease,
        stopping: asyncio.Event,
        *,
        resumed: bool = False,
        in_doubt: bool = False,
        acquired_at: float | None = None,
    ) -> None:
        """Drive saga until it is terminal, its lease is lost, or the process stops.

        `resumed`: the saga continues here after another run (its trace links to the original).
        `in_doubt`: that run ended without a clean release (a crash, a pause past its lease, a cut at
        shutdown), so a call of the current step may have been made: that attempt counts as spent.
        `acquired_at` (monotonic) is when the statement granting the lease was sent, if the caller knows;
        otherwise the run saves, renewing the lease, before its first call.
        """
        token = otel_context.attach(_saga_context(saga, resumed))
        try:
            if acquired_at is not None:
                self._saved_at[(saga.id, lease.fence)] = acquired_at
            await self._drive(saga, lease, stopping, resumed, in_doubt)
        except errors.LeaseLost:
            metrics.LEASE_LOSSES.inc()
            log.warning("lease lost, saga abandoned to its new owner", saga_id=saga.id, fence=lease.fence)
        except errors.StoreUnavailable as exc:
            # Only a release can end here (saves are retried): the lease then simply expires.
            log.warning("database unavailable, saga left to lease expiry", saga_id=saga.id, error=str(exc))
        except Exception as exc:  # a bug must park the saga for a person, not crash-loop it
            await self._park(saga, lease, exc)
        finally:
            self._saved_at.pop((saga.id, lease.fence), None)
            otel_context.detach(token)

    async def _park(self, saga: Saga, lease: ports.Lease, exc: Exception) -> None:
        """An unexpected error: FAILED with the reason, so a person sees it and no instance retries it blindly."""
        log.error("saga run failed unexpectedly, parking it as FAILED", saga_id=saga.id, exc_info=exc)
        if saga.status.terminal:
            return
        saga.take_events()  # whatever the interrupted move recorded is not what happened
        saga.take_dirty_steps()
        saga.fail(f"internal error: {exc!r}")
        try:
            await self._save(saga, lease)
        except (errors.LeaseLost, errors.StoreUnavailable):
            log.warning("could not park the saga; it returns after its lease expires", saga_id=saga.id)

    async def _drive(
        self, saga: Saga, lease: ports.Lease, stopping: asyncio.Event, resumed: bool, in_doubt: bool
    ) -> None:
        if saga.status is SagaStatus.PENDING:
            saga.start(self._clock.now())
            await self._save(saga, lease)
        elif in_doubt:
            self._count_resumed_attempt(saga)
            await self._save(saga, lease)
        elif resumed:
            await self._save(saga, lease)  # renews the lease and refreshes the cancel flag before any call
        while not saga.status.terminal:
            if stopping.is_set():
                await self._repo.release(lease, clean=True)
                log.info("saga checkpointed and released for shutdown", saga_id=saga.id, status=saga.status)
                return
            await self._move(saga, lease, stopping)

    def _count_resumed_attempt(self, saga: Saga) -> None:
        """A taken-over step may have been attempted by the previous owner: that attempt is spent.

        Counting it before the next call keeps the retry budget honest across crashes (a saga that keeps
        killing its owners still runs out of retries).
        """
        compensating = saga.status is SagaStatus.COMPENSATING
        step = saga.compensating if compensating else saga.current
        if step is None:
            return
        definition = saga.definition.step(step.position)
        call = definition.compensation if compensating else definition.action
        spent = step.compensation_attempts if compensating else step.attempts
        now = self._clock.now()
        if call is not None and call.retry.exhausted(spent):
            reason = f"{step.name}: {spent} attempts spent, the last ones by owners lost mid-call"
            if compensating:
                saga.compensation_exhausted(step, reason, now)
            else:
                saga.begin_compensation(reason, now, step, unknown=True)
            return
        saga.schedule_retry(step, "resumed after a takeover", now, compensation=compensating)

    async def _move(self, saga: Saga, lease: ports.Lease, stopping: asyncio.Event) -> None:
        if saga.status is SagaStatus.EXECUTING and self._interrupt(saga):
            await self._save(saga, lease)
            return
        compensating = saga.status is SagaStatus.COMPENSATING
        step = saga.compensating if compensating else saga.current
        if step is None:  # pragma: no cover - the aggregate never leaves a live saga without a step
            raise errors.IllegalTransition(f"saga {saga.id} is {saga.status} with no step to run")
        definition = saga.definition.step(step.position)
        call = definition.compensation if compensating else definition.action
        assert call is not None  # noqa: S101 - only steps with a compensation are ever compensating
        if not await self._ready(saga, step, call, stopping) or not await self._lease_fresh(saga, lease):
            return
        permit = self._breakers[call.service].admit()
        if permit is None:  # half-open with every probe slot taken: wait, spending nothing
            return
        outcome = await self._attempt(saga, lease, step, call, compensating, permit)
        if compensating:
            self._after_compensation(saga, step, call, outcome)
        else:
            self._after_action(saga, step, call, outcome)
        await self._save(saga, lease)

    def _interrupt(self, saga: Saga) -> bool:
        """Deadline or cancel: stop going forward (unless past the point of no return)."""
        if saga.past_point_of_no_return():
            return False
        now = self._clock.now()
        step = saga.current
        if saga.cancel_requested:
            reason, kind = "cancelled by an admin", "cancelled"
        elif now >= saga.deadline:
            reason, kind = "deadline exceeded", "deadline"
            metrics.DEADLINES.labels(saga.definition.saga_type, saga.on_timeout.value).inc()
            if saga.on_timeout is OnTimeout.FAIL:
                saga.fail(reason)
                return True
        else:
            return False
        metrics.COMPENSATIONS.labels(saga.definition.saga_type, kind).inc()
        saga.begin_compensation(reason, now, step, unknown=True)
        return True

    async def _ready(self, saga: Saga, step: Step, call: Call, stopping: asyncio.Event) -> bool:
        """Wait out backoff and an open breaker in short slices; False to re-decide first."""
        now = self._clock.now()
        wait = (step.next_attempt_at - now).total_seconds() if step.next_attempt_at else 0.0
        wait = max(wait, self._breakers[call.service].wait_time())
        if saga.status is SagaStatus.EXECUTING and not saga.past_point_of_no_return():
            wait = min(wait, max((saga.deadline - now).total_seconds(), 0.0))
        if wait <= 0:
            return True
        await self._clock.sleep(min(wait, self._config.max_wait))
        if saga.status is SagaStatus.EXECUTING:
            # A long wait (backoff, open breaker) must not delay an admin's cancel until the next save.
            try:
                saga.cancel_requested = await self._repo.cancel_requested(saga.id)
            except errors.StoreUnavailable as exc:  # the next save reads the flag again
                log.debug("cancel flag not read", saga_id=saga.id, error=str(exc))
        return False

    async def _attempt(
        self, saga: Saga, lease: ports.Lease, step: Step, call: Call, compensating: bool, permit: Permit
    ) -> _Outcome:
        definition = saga.definition
        request = call.request(saga.payload, saga.context)
        attempt = step.compensation_attempts if compensating else step.attempts
        kind = "compensation" if compensating else "action"
        started = self._clock.monotonic()
        with tracer.start_as_current_span(
            f"saga.{kind} {step.name}",
            attributes={
                "saga.id": saga.id,
                "saga.type": definition.saga_type,
                "saga.step": step.name,
                "saga.attempt": attempt,
                "saga.phase": kind,
            },
        ) as span:
            log.debug("step attempt", saga_id=saga.id, step=step.name, attempt=attempt, phase=kind)
            await failpoints.hit("engine.before_call")
            outcome = await self._invoke(saga, lease, step, call, request, compensating, permit)
            await failpoints.hit("engine.after_call")
            done = "compensated" if compensating else "succeeded"
            status = done if outcome.error is None else type(outcome.error).__name__
            span.set_attribute("saga.outcome", status)
        if not compensating and step.attempts == 1:
            step.request = request
        labelled(metrics.STEP_DURATION, step.name, status).observe(self._clock.monotonic() - started)
        return outcome

    async def _invoke(
        self,
        saga: Saga,
        lease: ports.Lease,
        step: Step,
        call: Call,
        request: dict[str, Any],
        compensating: bool,
        permit: Permit,
    ) -> _Outcome:
        breaker = self._breakers[call.service]
        key = step.compensation_key if compensating else step.idempotency_key
        try:
            response = await self._participants.invoke(
                call,
                request,
                saga_id=saga.id,
                idempotency_key=key,
                action_key=step.idempotency_key if compensating else None,
                lease=lease,
            )
        except errors.TransientStepError as exc:
            breaker.record_failure(permit)
            return _Outcome(error=exc)
        except errors.PermanentStepError as exc:
            breaker.record_success(permit)
            return _Outcome(error=exc)
        except BaseException:
            breaker.abandon(permit)  # cancelled mid-call: no outcome, but the probe slot is free again
            raise
        finally:
            self._breakers.publish()
        breaker.record_success(permit)
        return _Outcome(response=response)

    def _after_action(self, saga: Saga, step: Step, call: Call, outcome: _Outcome) -> None:
        now = self._clock.now()
        error = outcome.error
        if error is None:
            response = outcome.response or {}
            saga.step_succeeded(step, response, call.output(response), now)
        elif isinstance(error, errors.TransientStepError) and not call.retry.exhausted(step.attempts):
            metrics.RETRIES.labels(step.name, "action").inc()
            saga.schedule_retry(step, str(error), now + call.retry.delay(step.attempts, self._rand()))
        else:
            unknown = isinstance(error, errors.TransientStepError)
            reason = f"{step.name} failed: {error}" + (f" (after {step.attempts} attempts)" if unknown else "")
            metrics.COMPENSATIONS.labels(saga.definition.saga_type, "declined" if not unknown else "exhausted").inc()
            saga.begin_compensation(reason, now, step, unknown=unknown)

    def _after_compensation(self, saga: Saga, step: Step, call: Call, outcome: _Outcome) -> None:
        now = self._clock.now()
        error = outcome.error
        if error is None:
            saga.compensation_succeeded(step, outcome.response or {}, now)
        elif isinstance(error, errors.TransientStepError) and not call.retry.exhausted(step.compensation_attempts):
            metrics.RETRIES.labels(step.name, "compensation").inc()
            delay = call.retry.delay(step.compensation_attempts, self._rand())
            saga.schedule_retry(step, str(error), now + delay, compensation=True)
        else:
            saga.compensation_exhausted(step, str(error), now)

    async def _lease_fresh(self, saga: Saga, lease: ports.Lease) -> bool:
        """Before a call, the lease must be fresh by this process's own monotonic clock; False to re-decide.

        Every save renews the lease in the database (fenced), and in a saga's normal course a call leaves
        right after one. After a longer gap (a long wait, or a pause of this process: GC, SIGSTOP, CPU
        starvation) the heartbeat may have lost the lease without this run having noticed yet, so the run
        saves first: the fenced save renews the lease or raises LeaseLost, and no call leaves after the
        lease is gone. The clock is the conservative local deadline: it starts when the save is sent,
        before the database sets the new expiry.
        """
        key, half = (saga.id, lease.fence), self._config.lease_ttl.total_seconds() / 2
        saved_at = self._saved_at.get(key)
        if saved_at is not None and self._clock.monotonic() - saved_at < half:
            return True
        metrics.LEASE_REFRESHES.inc()
        await self._save(saga, lease)
        if self._clock.monotonic() - self._saved_at[key] >= half:
            # The save itself took half a lease (an overloaded database): pause before trying again
            # rather than answering slow saves with more saves.
            await self._clock.sleep(self._config.max_wait)
        return False  # the save also refreshed the cancel flag: decide again before calling

    def monotonic(self) -> float:
        """The engine's monotonic clock, for callers that renew leases on its behalf."""
        return self._clock.monotonic()

    def renewed(self, leases: list[ports.Lease], sent_at: float) -> None:
        """The heartbeat renewed these leases with a statement sent at `sent_at` (monotonic).

        Only leases the renewing statement returned may be passed here: a saga that finished elsewhere
        was not renewed, and refreshing its run's deadline would let a stale run make one more call.
        """
        for lease in leases:
            key = (lease.saga_id, lease.fence)
            if key in self._saved_at:  # only runs still going here; a finished run has dropped its entry
                self._saved_at[key] = max(self._saved_at[key], sent_at)

    async def _save(self, saga: Saga, lease: ports.Lease) -> None:
        """Checkpoint, fenced; a save the database could not confirm is repeated until it lands.

        The repetition sends the same changes with the same fence and revision, so it commits once or
        finds its earlier attempt committed. It ends only by landing or by LeaseLost (the lease expired
        meanwhile, on the database's clock, or another instance took the saga). Its local lease clock
        starts at the first attempt: whichever attempt committed was sent no earlier.
        """
        sent_at = self._clock.monotonic()
        delay, failures = self._config.save_retry_first, 0
        while True:
            try:
                await failpoints.hit("engine.before_save")
                saga.cancel_requested = await self._repo.save(saga, lease, self._config.lease_ttl)
                await failpoints.hit("engine.after_save")
                break
            except errors.StoreUnavailable as exc:
                failures += 1
                metrics.SAVE_RETRIES.inc()
                if failures == 1:
                    log.warning("checkpoint not confirmed, repeating it", saga_id=saga.id, error=str(exc))
                await self._clock.sleep(delay * (0.5 + self._rand() / 2))
                delay = min(delay * 2, self._config.save_retry_max)
        if failures:
            log.info("checkpoint confirmed after retries", saga_id=saga.id, retries=failures)
        key = (saga.id, lease.fence)
        self._saved_at[key] = max(sent_at, self._saved_at.get(key, sent_at))  # a heartbeat may have renewed since
        if saga.status.terminal:
            _record_terminal(saga, self._clock.now())


def _record_terminal(saga: Saga, now: datetime) -> None:
    saga_type = saga.definition.saga_type
    labelled(metrics.SAGA_TOTAL, saga_type, saga.status.value).inc()
    if saga.created_at is not None:
        labelled(metrics.SAGA_DURATION, saga_type, saga.status.value).observe((now - saga.created_at).total_seconds())
    log.info("saga finished", saga_id=saga.id, status=saga.status, error=saga.error)


def _saga_context(saga: Saga, resumed: bool) -> otel_context.Context:
    """The saga's own trace when it continues where it was accepted; a linked new trace when resumed."""
    original = propagate.extract(saga.trace_context) if saga.trace_context else otel_context.Context()
    if not resumed:
        return original
    parent = trace.get_current_span(original).get_span_context()
    links = [trace.Link(parent)] if parent.is_valid else []
    span = tracer.start_span(
        "saga.resume", links=links, attributes={"saga.id": saga.id}, context=otel_context.Context()
    )
    span.end()
    return trace.set_span_in_context(span, otel_context.Context())


def carrier() -> Mapping[str, str]:
    """The current trace context as a W3C carrier, to store with a new saga."""
    out: dict[str, str] = {}
    propagate.inject(out)
    return out
