"""The saga aggregate: saga and step state machines, and the moves the engine makes on them.

Saga:  PENDING -> EXECUTING -> COMPLETED
                  EXECUTING -> COMPENSATING -> COMPENSATED
                  EXECUTING -> FAILED (deadline with on_timeout=fail)
                  COMPENSATING -> FAILED (compensation exhausted; needs a person) -> COMPENSATING (admin retry)
                  EXECUTING -> FAILED (parked at the point of no return) -> EXECUTING (admin retry, forward only)
                  FAILED -> EXECUTING | COMPENSATING (a person's move from the queue; see "A person's moves")
Step:  PENDING -> EXECUTING -> SUCCEEDED | FAILED
       SUCCEEDED | FAILED | EXECUTING -> COMPENSATING -> COMPENSATED | COMPENSATION_FAILED -> COMPENSATING

Every move goes through one `transition` method that enforces the tables and appends an event. The
engine persists the aggregate after each move (fenced by its lease) before it acts on the new state;
`take_events` and `take_dirty_steps` hand over exactly what changed since the last save.

Compensation runs in reverse position order over the steps that may have had an effect: every
SUCCEEDED step with a compensation, and a step whose last attempts ended with an unknown outcome
(it is compensated too, which is safe because compensation tombstones the action's key).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Final

from orchestrator.domain import errors
from orchestrator.domain.definition import SagaDefinition


class SagaStatus(StrEnum):
    """Saga statuses; the values equal the SQL CHECK list."""

    PENDING = "PENDING"
    EXECUTING = "EXECUTING"
    COMPENSATING = "COMPENSATING"
    COMPLETED = "COMPLETED"
    COMPENSATED = "COMPENSATED"
    FAILED = "FAILED"

    @property
    def terminal(self) -> bool:
        """True for states no engine moves out of (FAILED only by an admin retry)."""
        return self in TERMINAL


class StepStatus(StrEnum):
    """Step statuses; the values equal the SQL CHECK list."""

    PENDING = "PENDING"
    EXECUTING = "EXECUTING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    COMPENSATING = "COMPENSATING"
    COMPENSATED = "COMPENSATED"
    COMPENSATION_FAILED = "COMPENSATION_FAILED"


class OnTimeout(StrEnum):
    """What a saga does past its deadline."""

    COMPENSATE = "compensate"
    FAIL = "fail"


TERMINAL: Final = frozenset({SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.FAILED})
LIVE: Final = frozenset(SagaStatus) - TERMINAL

SAGA_TRANSITIONS: Final[dict[SagaStatus, frozenset[SagaStatus]]] = {
    SagaStatus.PENDING: frozenset({SagaStatus.EXECUTING, SagaStatus.COMPENSATING}),
    SagaStatus.EXECUTING: frozenset({SagaStatus.COMPLETED, SagaStatus.COMPENSATING, SagaStatus.FAILED}),
    SagaStatus.COMPENSATING: frozenset({SagaStatus.COMPENSATED, SagaStatus.FAILED}),
    SagaStatus.FAILED: frozenset({SagaStatus.COMPENSATING, SagaStatus.EXECUTING}),
    SagaStatus.COMPLETED: frozenset(),
    SagaStatus.COMPENSATED: frozenset(),
}

STEP_TRANSITIONS: Final[dict[StepStatus, frozenset[StepStatus]]] = {
    StepStatus.PENDING: frozenset({StepStatus.EXECUTING}),
    StepStatus.EXECUTING: frozenset({StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.COMPENSATING}),
    StepStatus.SUCCEEDED: frozenset({StepStatus.COMPENSATING}),
    StepStatus.FAILED: frozenset({StepStatus.COMPENSATING}),
    StepStatus.COMPENSATING: frozenset({StepStatus.COMPENSATED, StepStatus.COMPENSATION_FAILED}),
    StepStatus.COMPENSATION_FAILED: frozenset({StepStatus.COMPENSATING}),
    StepStatus.COMPENSATED: frozenset(),
}


@dataclass(frozen=True)
class Event:
    """One entry of the saga's history; persisted with the writer's fencing token."""

    kind: str
    step: str | None = None
    from_status: str | None = None
    to_status: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def step_keys(saga_id: str, step_name: str) -> tuple[str, str]:
    """Deterministic idempotency keys (action, compensation) for a step, shared by every instance."""
    return f"{saga_id}:{step_name}:action", f"{saga_id}:{step_name}:compensation"


@dataclass
class Step:
    """The persisted state of one step of one saga."""

    position: int
    name: str
    idempotency_key: str
    compensation_key: str
    status: StepStatus = StepStatus.PENDING
    attempts: int = 0
    compensation_attempts: int = 0
    next_attempt_at: datetime | None = None
    request: dict[str, Any] | None = None
    response: dict[str, Any] | None = None
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass
class Saga:
    """A saga and its steps, with the moves that keep both state machines legal."""

    id: str
    definition: SagaDefinition
    status: SagaStatus
    payload: dict[str, Any]
    deadline: datetime
    steps: list[Step]
    on_timeout: OnTimeout = OnTimeout.COMPENSATE
    context: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    cancel_requested: bool = False
    trace_context: dict[str, str] = field(default_factory=dict)
    created_at: datetime | None = None
    next_attempt_at: datetime | None = None
    # Set when a person marked a FAILED saga handled without acting (it stays FAILED, out of the queue).
    resolution: dict[str, Any] | None = None
    # Checkpoints saved so far: a save expects this number and the store bumps it, so a save retried
    # after an unknown outcome can tell "my earlier attempt committed" from "the lease is gone".
    revision: int = 0
    _events: list[Event] = field(default_factory=list, repr=False)
    _dirty: set[int] = field(default_factory=set, repr=False)

    @classmethod
    def new(
        cls,
        saga_id: str,
        definition: SagaDefinition,
        payload: dict[str, Any],
        now: datetime,
        deadline: timedelta | None = None,
        **kw: Any,
    ) -> Saga:
        """A PENDING saga with all its steps PENDING; its deadline is the definition's unless given."""
        steps = [Step(i, s.name, *step_keys(saga_id, s.name)) for i, s in enumerate(definition.steps)]
        ends = now + (deadline if deadline is not None else definition.deadline)
        saga = cls(saga_id, definition, SagaStatus.PENDING, payload, ends, steps, **kw)
        saga.created_at = now
        saga._events.append(Event("saga", to_status=SagaStatus.PENDING, detail={"version": definition.version}))
        saga._dirty.update(range(len(steps)))
        return saga

    # -- bookkeeping -------------------------------------------------------------------------------

    def transition(self, to: SagaStatus, reason: str | None = None) -> None:
        """Move the saga to `to`, or raise IllegalTransition."""
        if to not in SAGA_TRANSITIONS[self.status]:
            raise errors.IllegalTransition(f"saga {self.id}: {self.status} -> {to} is not allowed")
        detail = {"reason": reason} if reason else {}
        self._events.append(Event("saga", from_status=self.status, to_status=to, detail=detail))
        self.status = to

    def move_step(self, step: Step, to: StepStatus, **detail: Any) -> None:
        """Move one step to `to`, or raise IllegalTransition."""
        if to not in STEP_TRANSITIONS[step.status]:
            raise errors.IllegalTransition(f"saga {self.id} step {step.name}: {step.status} -> {to} is not allowed")
        self._events.append(Event("step", step.name, step.status, to, detail))
        step.status = to
        self._dirty.add(step.position)

    def note(self, kind: str, step: Step | None = None, **detail: Any) -> None:
        """Record an event that is not a state change (a retry scheduled, a cancel ignored)."""
        self._events.append(Event(kind, step.name if step else None, detail=detail))
        if step is not None:
            self._dirty.add(step.position)

    def take_events(self) -> list[Event]:
        """The events since the last save; the caller persists them."""
        events, self._events = self._events, []
        return events

    def take_dirty_steps(self) -> list[Step]:
        """The steps changed since the last save."""
        dirty = [self.steps[i] for i in sorted(self._dirty)]
        self._dirty.clear()
        return dirty

    def unsaved(self) -> tuple[list[Step], list[Event]]:
        """The changed steps and new events since the last confirmed save, kept until `saved` is called.

        A save whose outcome is unknown (the connection broke around the commit) sends the same changes
        again, so nothing is lost and nothing is recorded twice.
        """
        return [self.steps[i] for i in sorted(self._dirty)], list(self._events)

    def saved(self) -> None:
        """The store confirmed the checkpoint of `unsaved()`: forget those changes, count the revision."""
        self._events.clear()
        self._dirty.clear()
        self.revision += 1

    # -- questions -----------------------------------------------------------------------------------

    @property
    def current(self) -> Step | None:
        """The step being executed, while the saga goes forward."""
        return next((s for s in self.steps if s.status is StepStatus.EXECUTING), None)

    @property
    def compensating(self) -> Step | None:
        """The step being compensated, while the saga goes backward."""
        return next((s for s in reversed(self.steps) if s.status is StepStatus.COMPENSATING), None)

    def past_point_of_no_return(self) -> bool:
        """True once a forward-only step has started: the saga can only finish forward."""
        step = self.current
        return step is not None and self.definition.step(step.position).forward_only

    # -- forward moves -------------------------------------------------------------------------------

    def start(self, now: datetime) -> None:
        """PENDING -> EXECUTING with the first step executing (attempt 1)."""
        self.transition(SagaStatus.EXECUTING)
        self._begin_step(self.steps[0], now)

    def _begin_step(self, step: Step, now: datetime) -> None:
        self.move_step(step, StepStatus.EXECUTING, attempt=1)
        step.attempts = 1
        step.started_at = now
        step.next_attempt_at = now
        self._due_by(now)

    def step_succeeded(self, step: Step, response: dict[str, Any], output: dict[str, Any], now: datetime) -> None:
        """The step's action succeeded: keep its output, then start the next step or complete."""
        self.move_step(step, StepStatus.SUCCEEDED, attempts=step.attempts)
        step.response, step.error, step.finished_at = response, None, now
        self.context.update(output)
        following = next((s for s in self.steps if s.position > step.position), None)
        if following is None:
            self.transition(SagaStatus.COMPLETED)
        else:
            self._begin_step(following, now)

    def schedule_retry(self, step: Step, error: str, at: datetime, *, compensation: bool = False) -> None:
        """Spend one more attempt of the step's (or its compensation's) budget, no earlier than `at`."""
        if compensation:
            step.compensation_attempts += 1
            attempt = step.compensation_attempts
        else:
            step.attempts += 1
            attempt = step.attempts
        step.error, step.next_attempt_at, self.next_attempt_at = error, at, at
        self.note("retry_scheduled", step, attempt=attempt, error=error, at=at.isoformat(), compensation=compensation)

    # -- backward moves ------------------------------------------------------------------------------

    def begin_compensation(self, reason: str, now: datetime, failed: Step | None = None, *, unknown: bool) -> None:
        """Stop going forward and compensate what may have happened, in reverse order.

        `failed` is the step that ended the forward path (FAILED, with the reason). It is compensated
        first whenever it has a compensation, whether its outcome is unknown (`unknown=True`: retries
        exhausted on timeouts, a deadline or a cancel mid-step) or it was declined: a decline leaves
        nothing at the participant, but a delayed duplicate of an earlier attempt could still arrive
        later and succeed, and only the compensation's tombstone makes the participant refuse it.
        """
        self.error = reason
        if failed is not None and failed.status is StepStatus.EXECUTING:
            self.move_step(failed, StepStatus.FAILED, error=reason, outcome="unknown" if unknown else "refused")
            failed.error, failed.finished_at = reason, now
        self.transition(SagaStatus.COMPENSATING, reason)
        if failed is not None and self.definition.step(failed.position).compensation is not None:
            self._begin_compensating(failed, now)
        self._compensate_next(now)

    def _begin_compensating(self, step: Step, now: datetime) -> None:
        self.move_step(step, StepStatus.COMPENSATING, attempt=1)
        step.compensation_attempts = 1
        step.next_attempt_at = now
        self._due_by(now)

    def _due_by(self, now: datetime) -> None:
        # Work is due at once. A saga that was already due keeps its earlier time: it is just as due, and
        # the checkpoint then leaves the indexed column alone, so the row's update can stay HOT.
        if self.next_attempt_at is None or self.next_attempt_at > now:
            self.next_attempt_at = now

    def _compensate_next(self, now: datetime) -> None:
        if self.compensating is not None:
            return
        pending = [
            s
            for s in reversed(self.steps)
            if s.status is StepStatus.SUCCEEDED and self.definition.step(s.position).compensation is not None
        ]
        if pending:
            self._begin_compensating(pending[0], now)
        else:
            self.transition(SagaStatus.COMPENSATED)

    def compensation_succeeded(self, step: Step, response: dict[str, Any], now: datetime) -> None:
        """The step's compensation succeeded: compensate the next one, or finish COMPENSATED."""
        self.move_step(step, StepStatus.COMPENSATED, attempts=step.compensation_attempts)
        step.response, step.finished_at = response, now
        self._compensate_next(now)

    def compensation_exhausted(self, step: Step, error: str, now: datetime) -> None:
        """The compensation keeps failing: the saga needs a person (FAILED, with the reason)."""
        self.move_step(step, StepStatus.COMPENSATION_FAILED, error=error)
        step.error, step.finished_at = error, now
        self.error = f"compensation of {step.name} failed: {error}"
        self.transition(SagaStatus.FAILED, self.error)

    def fail(self, reason: str) -> None:
        """Stop without compensating (deadline with on_timeout=fail); an admin may retry later."""
        self.error = reason
        self.transition(SagaStatus.FAILED, reason)

    def retry_failed(self, now: datetime) -> None:
        """Admin retry of a FAILED saga, in the only direction still honest.

        Parked at or past the point of no return (a forward-only step was executing: its effect may
        already be final), the saga resumes forward with a fresh budget for that step; compensating it
        would refund and release what a confirmed order still needs. Otherwise its compensation resumes
        with fresh compensation budgets.
        """
        if self.status is not SagaStatus.FAILED:
            raise errors.StateConflict(f"saga {self.id} is {self.status}; only FAILED sagas can be retried")
        if self.past_point_of_no_return():
            step = self.current
            assert step is not None  # noqa: S101 - past_point_of_no_return implies an executing step
            self.transition(SagaStatus.EXECUTING, "retried by an admin: past the point of no return, forward only")
            self.note("retry_scheduled", step, attempt=1, error=step.error, at=now.isoformat(), compensation=False)
            step.attempts, step.next_attempt_at, self.next_attempt_at = 1, now, now
            self.error = None
            return
        self._resume_compensation(now, "retried by an admin")

    def _resume_compensation(self, now: datetime, reason: str) -> None:
        """FAILED -> COMPENSATING with fresh budgets, from the step that stopped it (or the last step run)."""
        self.transition(SagaStatus.COMPENSATING, reason)
        for step in reversed(self.steps):
            compensable = self.definition.step(step.position).compensation is not None
            if compensable and step.status in (StepStatus.COMPENSATION_FAILED, StepStatus.EXECUTING):
                self._begin_compensating(step, now)
                break
        self._compensate_next(now)

    # -- a person's moves on a FAILED saga (the queue) ---------------------------------------------------
    #
    # Each starts with an `operator_action` event naming who acted and why, so the history answers "who
    # touched this saga by hand". None compensates at or past the point of no return, and a resolved
    # saga takes no further move: it was handled.

    def _check_actionable(self) -> None:
        if self.status is not SagaStatus.FAILED:
            raise errors.StateConflict(f"saga {self.id} is {self.status}; only FAILED sagas take a person's action")
        if self.resolution is not None:
            raise errors.StateConflict(
                f"saga {self.id} was resolved by {self.resolution.get('by')}: {self.resolution.get('reason')}"
            )

    def _operator_action(self, action: str, by: Operator, **detail: Any) -> None:
        self._check_actionable()
        record = {"action": action, "by": by.name, "role": by.role, "reason": by.reason, **detail}
        self._events.append(Event("operator_action", detail=record))

    def operator_retry(self, now: datetime, by: Operator) -> None:
        """An admin retry (see `retry_failed`), recorded with who asked and why."""
        self._operator_action("retry", by)
        self.retry_failed(now)

    def retry_with_payload(self, payload: dict[str, Any], now: datetime, by: Operator) -> None:
        """Resume forward, from the step that was executing, with a corrected (already validated) payload.

        Only a saga that failed going forward (its deadline with on_timeout=fail, a bug, the point of no
        return) can still use a new payload: once compensation has begun, what is undone was done with
        the old one. The step gets a fresh budget and the saga a fresh deadline; steps that already
        succeeded are not run again (the event keeps the previous payload for the record).
        """
        self._check_actionable()
        step = self.current
        if step is None or self._compensation_begun():
            raise errors.StateConflict(
                f"saga {self.id} failed while compensating: an edited payload cannot change what is undone; "
                "retry it or force its compensation instead"
            )
        self._operator_action("retry_with_payload", by, step=step.name, previous_payload=self.payload)
        self.payload = payload
        self._resume_forward(step, now, f"retried with an edited payload by {by.name}")

    def skip_step(self, name: str, output: dict[str, Any], now: datetime, by: Operator) -> None:
        """Mark the stuck step done by hand, with the output a person recorded, and let the saga go on.

        Going forward, the output joins the saga's context for the later steps (it must hold what they
        read); going backward, it is the compensation's recorded answer, and the next compensation follows.
        """
        self._check_actionable()
        step = self._stuck_step()
        if step.name != name:
            raise errors.StateConflict(
                f"saga {self.id} is stuck at {step.name}, not {name}: only that step can be skipped"
            )
        backward = step.status is not StepStatus.EXECUTING
        if not backward:
            self._check_output_serves_later_steps(step, output)
        self._operator_action("skip_step", by, step=name, output=output, phase="compensation" if backward else "action")
        reason = f"{name} done by hand ({by.name})"
        if backward:
            self.transition(SagaStatus.COMPENSATING, reason)
            if step.status is StepStatus.COMPENSATION_FAILED:
                self.move_step(step, StepStatus.COMPENSATING, by=by.name)
            self.compensation_succeeded(step, output, now)  # `error` keeps why the saga compensates
            return
        self.transition(SagaStatus.EXECUTING, reason)
        self.error = None
        self.step_succeeded(step, output, output, now)
        if self.status is SagaStatus.EXECUTING:
            self.deadline = now + self.definition.deadline

    def force_compensation(self, now: datetime, by: Operator) -> None:
        """Undo what the saga did, now: its compensations resume (or begin) with fresh budgets.

        Refused at or past the point of no return: a forward-only step may already be final, and
        compensating would take back what it needs (a confirmed order keeps its payment and stock).
        """
        self._check_actionable()
        if self.past_point_of_no_return():
            step = self.current
            assert step is not None  # noqa: S101 - past_point_of_no_return implies an executing step
            raise errors.PastPointOfNoReturn(
                f"saga {self.id} stopped while {step.name} was executing, past the point of no return: it may "
                "already be final, and compensating would take back what it needs; retry it (forward) or skip it "
                "with its recorded output"
            )
        self._operator_action("force_compensation", by)
        self._resume_compensation(now, f"compensation forced by {by.name}")

    def resolve(self, now: datetime, by: Operator) -> None:
        """Mark the saga handled without acting: it stays FAILED, leaves the queue, and takes no further move."""
        self._operator_action("resolve", by)
        self.resolution = {"by": by.name, "role": by.role, "reason": by.reason, "at": now.isoformat()}

    def _compensation_begun(self) -> bool:
        begun = (StepStatus.COMPENSATING, StepStatus.COMPENSATED, StepStatus.COMPENSATION_FAILED)
        return any(s.status in begun for s in self.steps)

    def _stuck_step(self) -> Step:
        """The step a FAILED saga stopped at: a compensation that failed, else the action that was executing."""
        backward = (StepStatus.COMPENSATION_FAILED, StepStatus.COMPENSATING)
        step = next((s for s in reversed(self.steps) if s.status in backward), None) or self.current
        if step is None:
            raise errors.StateConflict(f"saga {self.id} has no step stopped mid-way; there is nothing to skip")
        return step

    def _resume_forward(self, step: Step, now: datetime, reason: str) -> None:
        self.transition(SagaStatus.EXECUTING, reason)
        self.note("retry_scheduled", step, attempt=1, error=step.error, at=now.isoformat(), compensation=False)
        step.attempts, step.next_attempt_at, self.next_attempt_at = 1, now, now
        self.error = None
        self.deadline = now + self.definition.deadline

    def _check_output_serves_later_steps(self, step: Step, output: dict[str, Any]) -> None:
        """A forward skip's output must hold what the later steps' requests read from the context."""
        context = {**self.context, **output}
        problems = []
        for later in self.definition.steps[step.position + 1 :]:
            try:
                later.action.request(self.payload, context)
            except (KeyError, TypeError, ValueError) as exc:
                problems.append(f"output: {later.name} needs {exc} from the skipped step")
        if problems:
            raise errors.InvalidRequest(f"the output of {step.name} lacks what later steps read", problems)


@dataclass(frozen=True)
class Operator:
    """A person acting on a saga from the queue: who (API key name and role), and why."""

    name: str
    role: str
    reason: str
