"""The saga and step state machines: every pair of statuses, then random engine-like walks.

The allowed pairs are written out here from SPEC section 5 and the model's docstring, not read from the
tables, so a drifting table fails these tests instead of silently agreeing with itself.
"""

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from orchestrator import definitions
from orchestrator.domain import errors
from orchestrator.domain.model import (
    SAGA_TRANSITIONS,
    STEP_TRANSITIONS,
    Event,
    OnTimeout,
    Saga,
    SagaStatus,
    Step,
    StepStatus,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)
DEFINITION = definitions.order_saga()
PAYLOAD = DEFINITION.validate(
    {
        "customer_id": "3f1b6c9e-7d2a-4e8b-9c1d-2a3b4c5d6e7f",
        "items": [{"sku": "SKU-1", "quantity": 2, "unit_price": "10.00"}],
        "currency": "USD",
    }
)

S, T = SagaStatus, StepStatus
SAGA_ALLOWED = {
    (S.PENDING, S.EXECUTING),
    (S.PENDING, S.COMPENSATING),
    (S.EXECUTING, S.COMPLETED),
    (S.EXECUTING, S.COMPENSATING),
    (S.EXECUTING, S.FAILED),
    (S.COMPENSATING, S.COMPENSATED),
    (S.COMPENSATING, S.FAILED),
    (S.FAILED, S.COMPENSATING),
    (S.FAILED, S.EXECUTING),
}
STEP_ALLOWED = {
    (T.PENDING, T.EXECUTING),
    (T.EXECUTING, T.SUCCEEDED),
    (T.EXECUTING, T.FAILED),
    (T.EXECUTING, T.COMPENSATING),
    (T.SUCCEEDED, T.COMPENSATING),
    (T.FAILED, T.COMPENSATING),
    (T.COMPENSATING, T.COMPENSATED),
    (T.COMPENSATING, T.COMPENSATION_FAILED),
    (T.COMPENSATION_FAILED, T.COMPENSATING),
}
SAGA_PAIRS = list(itertools.product(SagaStatus, repeat=2))
STEP_PAIRS = list(itertools.product(StepStatus, repeat=2))


def fresh_saga() -> Saga:
    saga = Saga.new(str(uuid.uuid4()), DEFINITION, PAYLOAD, T0)
    saga.take_events()
    saga.take_dirty_steps()
    return saga


def pair_id(pair: tuple[Any, ...]) -> str:
    return f"{pair[0]}->{pair[1]}"


def test_status_values_equal_the_sql_check_lists() -> None:
    assert [s.value for s in SagaStatus] == [
        "PENDING",
        "EXECUTING",
        "COMPENSATING",
        "COMPLETED",
        "COMPENSATED",
        "FAILED",
    ]
    assert [s.value for s in StepStatus] == [
        "PENDING",
        "EXECUTING",
        "SUCCEEDED",
        "FAILED",
        "COMPENSATING",
        "COMPENSATED",
        "COMPENSATION_FAILED",
    ]


def test_only_completed_compensated_and_failed_are_terminal() -> None:
    assert {s for s in SagaStatus if s.terminal} == {S.COMPLETED, S.COMPENSATED, S.FAILED}


def test_transition_tables_cover_every_status() -> None:
    assert set(SAGA_TRANSITIONS) == set(SagaStatus)
    assert set(STEP_TRANSITIONS) == set(StepStatus)


@pytest.mark.parametrize(("source", "target"), SAGA_PAIRS, ids=map(pair_id, SAGA_PAIRS))
def test_saga_transition_follows_the_documented_machine(source: SagaStatus, target: SagaStatus) -> None:
    saga = fresh_saga()
    saga.status = source
    if (source, target) in SAGA_ALLOWED:
        saga.transition(target, "because")
        assert saga.status is target
        assert saga.take_events() == [Event("saga", None, source, target, {"reason": "because"})]
    else:
        with pytest.raises(errors.IllegalTransition, match=f"{source} -> {target}"):
            saga.transition(target)
        assert saga.status is source
        assert saga.take_events() == []


@pytest.mark.parametrize(("source", "target"), STEP_PAIRS, ids=map(pair_id, STEP_PAIRS))
def test_step_transition_follows_the_documented_machine(source: StepStatus, target: StepStatus) -> None:
    saga = fresh_saga()
    step = saga.steps[1]
    step.status = source
    if (source, target) in STEP_ALLOWED:
        saga.move_step(step, target, attempt=1)
        assert step.status is target
        assert saga.take_events() == [Event("step", "process_payment", source, target, {"attempt": 1})]
        assert saga.take_dirty_steps() == [step]
    else:
        with pytest.raises(errors.IllegalTransition, match=f"{source} -> {target}"):
            saga.move_step(step, target)
        assert step.status is source
        assert saga.take_events() == []
        assert saga.take_dirty_steps() == []


def test_new_saga_is_pending_with_deterministic_step_keys() -> None:
    saga = Saga.new("s-1", DEFINITION, PAYLOAD, T0)
    assert saga.status is S.PENDING
    assert saga.deadline == T0 + timedelta(seconds=60)
    assert [(s.name, s.status) for s in saga.steps] == [
        ("create_order", T.PENDING),
        ("process_payment", T.PENDING),
        ("reserve_inventory", T.PENDING),
        ("confirm_order", T.PENDING),
    ]
    assert saga.steps[1].idempotency_key == "s-1:process_payment:action"
    assert saga.steps[1].compensation_key == "s-1:process_payment:compensation"
    assert saga.take_events() == [Event("saga", to_status=S.PENDING, detail={"version": 1})]
    assert len(saga.take_dirty_steps()) == 4


def test_admin_retry_of_a_saga_that_is_not_failed_is_a_conflict() -> None:
    saga = fresh_saga()
    saga.start(T0)
    with pytest.raises(errors.StateConflict):
        saga.retry_failed(T0)
    assert saga.status is S.EXECUTING


def test_unknown_outcome_of_a_step_without_compensation_fails_it_and_undoes_the_rest() -> None:
    saga = fresh_saga()
    saga.start(T0)
    for step in saga.steps[:3]:
        saga.step_succeeded(step, {}, {}, T0)
    confirm = saga.steps[3]
    saga.begin_compensation("confirm_order failed", T0, confirm, unknown=True)
    assert confirm.status is T.FAILED
    assert saga.status is S.COMPENSATING
    assert saga.compensating is saga.steps[2]


def test_compensation_order_is_reverse_position_order() -> None:
    saga = fresh_saga()
    saga.start(T0)
    saga.step_succeeded(saga.steps[0], {}, {}, T0)
    saga.step_succeeded(saga.steps[1], {}, {}, T0)
    saga.begin_compensation("reserve_inventory failed", T0, saga.steps[2], unknown=False)
    undone = []
    while saga.status is S.COMPENSATING:
        step = saga.compensating
        assert step is not None
        undone.append(step.name)
        saga.compensation_succeeded(step, {}, T0)
    assert undone == ["reserve_inventory", "process_payment", "create_order"], "the refused step is tombstoned first"
    assert saga.status is S.COMPENSATED


# -- random walks ------------------------------------------------------------------------------------

RESPONSES: dict[str, dict[str, Any]] = {
    "create_order": {"order": {"order_id": "o-1", "total_amount": "20.00"}},
    "process_payment": {"payment": {"payment_id": "p-1"}},
    "reserve_inventory": {"reservation": {"reservation_id": "r-1"}},
    "confirm_order": {"order": {"order_id": "o-1"}},
}


def replay(history: list[Event], step_names: list[str]) -> tuple[SagaStatus | None, dict[str, StepStatus]]:
    """Rebuild the statuses from the history alone, checking that every event starts where the last ended."""
    saga: SagaStatus | None = None
    steps = dict.fromkeys(step_names, T.PENDING)
    for event in history:
        if event.kind == "saga":
            assert event.from_status == saga, f"saga event {event} does not follow {saga}"
            assert event.to_status is not None
            assert saga is None or event.to_status in SAGA_TRANSITIONS[saga]
            saga = SagaStatus(event.to_status)
        elif event.kind == "step":
            assert event.step is not None
            assert event.to_status is not None
            current = steps[event.step]
            assert event.from_status == current, f"step event {event} does not follow {current}"
            assert event.to_status in STEP_TRANSITIONS[current]
            steps[event.step] = StepStatus(event.to_status)
    return saga, steps


class SagaMoves(RuleBasedStateMachine):
    """Drives one order saga with the moves the engine makes, checkpointing after each like the engine."""

    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.saga = Saga.new(str(uuid.uuid4()), DEFINITION, PAYLOAD, self.now)
        self.saga.start(self.now)
        self.history: list[Event] = []
        self.checkpoint()

    def checkpoint(self) -> None:
        self.history.extend(self.saga.take_events())
        assert all(s in self.saga.steps for s in self.saga.take_dirty_steps())

    def tick(self) -> datetime:
        self.now += timedelta(milliseconds=250)
        return self.now

    def going_forward(self) -> bool:
        return self.saga.status is S.EXECUTING

    def interruptible(self) -> bool:
        return self.going_forward() and not self.saga.past_point_of_no_return()

    def forward_step(self) -> Step:
        step = self.saga.current
        assert step is not None
        return step

    def backward_step(self) -> Step:
        step = self.saga.compensating
        assert step is not None
        return step

    @precondition(going_forward)
    @rule()
    def action_succeeds(self) -> None:
        step = self.forward_step()
        response = RESPONSES[step.name]
        output = DEFINITION.step(step.position).action.output(response)
        self.saga.step_succeeded(step, response, output, self.tick())
        self.checkpoint()

    @precondition(going_forward)
    @rule()
    def action_fails_transiently_and_is_retried(self) -> None:
        step = self.forward_step()
        policy = DEFINITION.step(step.position).action.retry
        if policy.exhausted(step.attempts):
            self.saga.begin_compensation("exhausted", self.tick(), step, unknown=True)
        else:
            self.saga.schedule_retry(step, "UNAVAILABLE", self.tick() + policy.delay(step.attempts, 0.5))
        self.checkpoint()

    @precondition(going_forward)
    @rule()
    def action_is_declined(self) -> None:
        self.saga.begin_compensation("declined", self.tick(), self.forward_step(), unknown=False)
        self.checkpoint()

    @precondition(interruptible)
    @rule()
    def action_exhausts_its_retries(self) -> None:
        self.saga.begin_compensation("exhausted", self.tick(), self.forward_step(), unknown=True)
        self.checkpoint()

    @precondition(interruptible)
    @rule(reason=st.sampled_from(["cancelled by an admin", "deadline exceeded"]))
    def cancel_or_deadline_compensates(self, reason: str) -> None:
        self.saga.begin_compensation(reason, self.tick(), self.forward_step(), unknown=True)
        self.checkpoint()

    @precondition(interruptible)
    @rule()
    def deadline_fails_the_saga(self) -> None:
        self.saga.on_timeout = OnTimeout.FAIL
        self.saga.fail("deadline exceeded")
        self.checkpoint()

    @precondition(lambda self: self.saga.status is S.COMPENSATING)
    @rule()
    def compensation_succeeds(self) -> None:
        self.saga.compensation_succeeded(self.backward_step(), {}, self.tick())
        self.checkpoint()

    @precondition(lambda self: self.saga.status is S.COMPENSATING)
    @rule()
    def compensation_fails_transiently_and_is_retried(self) -> None:
        step = self.backward_step()
        self.saga.schedule_retry(step, "UNAVAILABLE", self.tick(), compensation=True)
        self.checkpoint()

    @precondition(lambda self: self.saga.status is S.COMPENSATING)
    @rule()
    def compensation_is_exhausted(self) -> None:
        self.saga.compensation_exhausted(self.backward_step(), "UNAVAILABLE", self.tick())
        self.checkpoint()

    @precondition(lambda self: self.saga.status is S.FAILED)
    @rule()
    def admin_retries(self) -> None:
        self.saga.retry_failed(self.tick())
        self.checkpoint()

    @precondition(lambda self: self.saga.status is not S.FAILED)
    @rule()
    def admin_retry_is_refused_unless_failed(self) -> None:
        before = (self.saga.status, [s.status for s in self.saga.steps])
        with pytest.raises(errors.StateConflict):
            self.saga.retry_failed(self.tick())
        assert (self.saga.status, [s.status for s in self.saga.steps]) == before
        self.checkpoint()

    def count(self, status: StepStatus) -> int:
        return sum(s.status is status for s in self.saga.steps)

    @invariant()
    def statuses_are_legal(self) -> None:
        assert self.saga.status in SagaStatus
        assert all(s.status in StepStatus for s in self.saga.steps)

    @invariant()
    def at_most_one_step_executing_and_one_compensating(self) -> None:
        assert self.count(T.EXECUTING) <= 1
        assert self.count(T.COMPENSATING) <= 1

    @invariant()
    def a_live_saga_always_has_its_next_step(self) -> None:
        if self.saga.status is S.EXECUTING:
            assert self.count(T.EXECUTING) == 1
            assert self.count(T.COMPENSATING) == 0
        if self.saga.status is S.COMPENSATING:
            assert self.count(T.COMPENSATING) == 1

    @invariant()
    def forward_progress_is_a_prefix(self) -> None:
        if self.saga.status is S.EXECUTING:
            current = self.forward_step().position
            assert all(s.status is T.SUCCEEDED for s in self.saga.steps[:current])
            assert all(s.status is T.PENDING for s in self.saga.steps[current + 1 :])

    @invariant()
    def completed_means_every_step_succeeded(self) -> None:
        if self.saga.status is S.COMPLETED:
            assert all(s.status is T.SUCCEEDED for s in self.saga.steps)

    @invariant()
    def compensated_leaves_nothing_to_undo(self) -> None:
        if self.saga.status is S.COMPENSATED:
            for step in self.saga.steps:
                compensable = DEFINITION.step(step.position).compensation is not None
                assert not (compensable and step.status is T.SUCCEEDED), step
                assert step.status not in (T.EXECUTING, T.COMPENSATING, T.COMPENSATION_FAILED), step

    @invariant()
    def history_replays_to_the_current_state_in_order(self) -> None:
        saga, steps = replay(self.history, [s.name for s in self.saga.steps])
        assert saga is self.saga.status
        assert steps == {s.name: s.status for s in self.saga.steps}


TestSagaMoves = SagaMoves.TestCase
TestSagaMoves.settings = settings(
    max_examples=150,
    stateful_step_count=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_a_step_that_begins_keeps_an_already_due_saga_due_from_its_earlier_time() -> None:
    # The earlier time is just as due; keeping it leaves the indexed column alone (a HOT update).
    saga = Saga.new(str(uuid.uuid4()), DEFINITION, PAYLOAD, T0)
    saga.start(T0)
    later = T0 + timedelta(seconds=5)

    saga.step_succeeded(saga.steps[0], {}, {}, later)

    assert saga.next_attempt_at == T0
    assert saga.steps[1].next_attempt_at == later


def test_a_step_that_begins_brings_a_saga_due_later_forward_to_now() -> None:
    saga = Saga.new(str(uuid.uuid4()), DEFINITION, PAYLOAD, T0)
    saga.start(T0)
    saga.next_attempt_at = T0 + timedelta(minutes=1)  # e.g. a retry was scheduled
    now = T0 + timedelta(seconds=5)

    saga.step_succeeded(saga.steps[0], {}, {}, now)

    assert saga.next_attempt_at == now
