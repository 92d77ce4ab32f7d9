"""The queue of what needs a person: a person's actions on FAILED sagas, against the engine's fakes.

Each action is decided on the stored saga (a refusal writes nothing), taken through the fenced claim,
recorded with who and why, and then run by the engine as any claimed saga is. The fakes are those of
the engine's own tests, with the two reads and the one write the actions add.
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from orchestrator import definitions, ports, usecases
from orchestrator.domain import errors
from orchestrator.domain.breaker import BreakerPolicy
from orchestrator.domain.model import Event, OnTimeout, Operator, Saga, SagaStatus, StepStatus
from orchestrator.engine import Breakers, Engine, EngineConfig
from services.orchestrator.tests.unit.test_orchestrator_engine import (
    PAYLOAD,
    TTL,
    FakeClock,
    FakeParticipants,
    FakeRepository,
    Invocation,
    decline,
    permanent,
    run,
    short_deadline,
    start_saga,
    transient,
)

ADMIN = Operator("ops-alice", "admin", "payment service restored")


class QueueRepository(FakeRepository):
    """The engine's fake repository, plus the operator store: reads return copies, `apply` is a fenced save."""

    async def load(self, saga_id: str) -> Saga | None:
        row = self.rows.get(saga_id)
        return None if row is None else copy.deepcopy(row.saga)

    async def apply(self, saga: Saga, lease: ports.Lease, ttl: timedelta) -> None:
        await self.save(saga, lease, ttl)

    async def history(self, saga_id: str) -> dict[str, Any] | None:  # pragma: no cover - not used here
        return None


@pytest.fixture
def repo() -> QueueRepository:
    return QueueRepository()


@pytest.fixture
def engine(repo: QueueRepository, participants: FakeParticipants, clock: FakeClock) -> Engine:
    breakers = Breakers(BreakerPolicy(), clock.monotonic)
    return Engine(repo, participants, clock, breakers, EngineConfig(lease_ttl=TTL), rand=lambda: 0.5)  # type: ignore[arg-type]


@pytest.fixture
def service(repo: QueueRepository, clock: FakeClock) -> usecases.SagaService:
    return usecases.SagaService(repo, definitions.registry(), clock, operator=repo)  # type: ignore[arg-type]


@dataclass(frozen=True)
class World:
    """The fakes one test drives: an engine and the queue's use cases over one repository."""

    engine: Engine
    repo: QueueRepository
    participants: FakeParticipants
    clock: FakeClock
    service: usecases.SagaService


@pytest.fixture
def w(
    engine: Engine,
    repo: QueueRepository,
    participants: FakeParticipants,
    clock: FakeClock,
    service: usecases.SagaService,
) -> World:
    return World(engine, repo, participants, clock, service)


def written(repo: QueueRepository, saga_id: str) -> tuple[int, int, str | None]:
    """What a refused action must leave alone: the fence, the number of events, the owner."""
    row = repo.rows[saga_id]
    return row.fence, len(row.events), row.owner


def actions(repo: QueueRepository, saga_id: str) -> list[dict[str, Any]]:
    return [e.detail for e in repo.events(saga_id) if e.kind == "operator_action"]


async def failed_compensating(
    engine: Engine, repo: QueueRepository, participants: FakeParticipants, clock: FakeClock
) -> Saga:
    """FAILED because RefundPayment was refused: process_payment is COMPENSATION_FAILED."""
    participants.will("inventory", "ReserveStock", decline())
    participants.will("payment", "RefundPayment", permanent())
    saga, lease = await start_saga(repo, clock)
    await run(engine, saga, lease)
    assert saga.status is SagaStatus.FAILED
    return saga


async def failed_forward(
    engine: Engine, repo: QueueRepository, participants: FakeParticipants, clock: FakeClock
) -> Saga:
    """FAILED by its deadline with on_timeout=fail: create_order done, process_payment EXECUTING, nothing undone."""
    participants.latency[("order", "CreateOrder")] = 3.0
    saga, lease = await start_saga(repo, clock, short_deadline(2), on_timeout=OnTimeout.FAIL)
    await run(engine, saga, lease)
    participants.latency.clear()
    assert [s.status for s in saga.steps[:2]] == [StepStatus.SUCCEEDED, StepStatus.EXECUTING]
    return saga


async def failed_at_the_point_of_no_return(
    engine: Engine, repo: QueueRepository, participants: FakeParticipants, clock: FakeClock
) -> Saga:
    """Parked FAILED by a bug while confirm_order was executing: past the point of no return."""

    def crash(call: Invocation) -> None:
        if call.method == "ConfirmOrder":
            raise RuntimeError("a bug in the confirmation")

    participants.on_call = crash
    saga, lease = await start_saga(repo, clock)
    await run(engine, saga, lease)
    participants.on_call = None
    assert saga.status is SagaStatus.FAILED
    assert saga.past_point_of_no_return()
    return saga


# -- retry, audited -------------------------------------------------------------------------------------


async def test_a_retry_is_recorded_with_who_and_why_then_compensates_to_the_end(w: World) -> None:
    engine, repo, participants, clock, service = w.engine, w.repo, w.participants, w.clock, w.service
    saga = await failed_compensating(engine, repo, participants, clock)

    claimed = await service.retry(saga.id, "orchestrator-2", ADMIN)
    await run(engine, claimed.saga, claimed.lease)

    assert actions(repo, saga.id) == [
        {"action": "retry", "by": "ops-alice", "role": "admin", "reason": "payment service restored"}
    ]
    assert claimed.saga.status is SagaStatus.COMPENSATED


# -- retry with an edited payload -----------------------------------------------------------------------


async def test_retry_with_an_edited_payload_resumes_forward_from_the_stuck_step_with_the_new_payload(w: World) -> None:
    engine, repo, participants, clock, service = w.engine, w.repo, w.participants, w.clock, w.service
    saga = await failed_forward(engine, repo, participants, clock)
    edited = {**PAYLOAD, "currency": "EUR"}

    claimed = await service.retry_with_payload(saga.id, edited, "orchestrator-2", ADMIN)
    assert repo.rows[saga.id].status == "EXECUTING", "the move is persisted before the run"
    assert claimed.saga.deadline > clock.now(), "a forward move gets a fresh deadline"
    await run(engine, claimed.saga, claimed.lease)

    assert claimed.saga.status is SagaStatus.COMPLETED
    assert participants.methods() == ["CreateOrder", "ProcessPayment", "ReserveStock", "ConfirmOrder"]
    assert participants.calls_to("ProcessPayment")[0].request["currency"] == "EUR"
    (action,) = actions(repo, saga.id)
    assert (action["action"], action["step"], action["previous_payload"]["currency"]) == (
        "retry_with_payload",
        "process_payment",
        "USD",
    )


async def test_an_edited_payload_is_validated_like_a_start_and_a_refusal_writes_nothing(w: World) -> None:
    engine, repo, participants, clock, service = w.engine, w.repo, w.participants, w.clock, w.service
    saga = await failed_forward(engine, repo, participants, clock)
    before = written(repo, saga.id)

    with pytest.raises(errors.InvalidRequest) as refused:
        await service.retry_with_payload(saga.id, {**PAYLOAD, "currency": "usd\n"}, "orchestrator-2", ADMIN)

    assert refused.value.problems == ["payload.currency: must be a 3-letter upper-case code such as USD"]
    assert written(repo, saga.id) == before
    assert repo.rows[saga.id].saga.payload == saga.payload


async def test_retry_with_an_edited_payload_is_refused_once_compensation_has_begun(w: World) -> None:
    engine, repo, participants, clock, service = w.engine, w.repo, w.participants, w.clock, w.service
    saga = await failed_compensating(engine, repo, participants, clock)
    before = written(repo, saga.id)

    with pytest.raises(errors.StateConflict, match="cannot change what is undone"):
        await service.retry_with_payload(saga.id, PAYLOAD, "orchestrator-2", ADMIN)
    assert written(repo, saga.id) == before


# -- skip a step ----------------------------------------------------------------------------------------


async def test_skipping_a_failed_compensation_records_its_output_and_compensates_the_rest(w: World) -> None:
    engine, repo, participants, clock, service = w.engine, w.repo, w.participants, w.clock, w.service
    saga = await failed_compensating(engine, repo, participants, clock)
    calls = len(participants.calls)

    output = {"refund": "wired by hand", "ticket": "OPS-17"}
    claimed = await service.skip_step(saga.id, "process_payment", output, "orchestrator-2", ADMIN)
    await run(engine, claimed.saga, claimed.lease)

    assert participants.methods()[calls:] == ["CancelOrder"], "the refund is not attempted again"
    assert claimed.saga.status is SagaStatus.COMPENSATED
    assert claimed.saga.steps[1].status is StepStatus.COMPENSATED
    assert claimed.saga.steps[1].response == output
    assert actions(repo, saga.id)[0]["phase"] == "compensation"


async def test_skipping_the_confirmation_past_the_point_of_no_return_completes_the_saga(w: World) -> None:
    engine, repo, participants, clock, service = w.engine, w.repo, w.participants, w.clock, w.service
    saga = await failed_at_the_point_of_no_return(engine, repo, participants, clock)

    claimed = await service.skip_step(saga.id, "confirm_order", {"confirmed": "by phone"}, "orchestrator-2", ADMIN)

    assert claimed.saga.status is SagaStatus.COMPLETED
    assert repo.rows[saga.id].status == "COMPLETED"
    assert repo.rows[saga.id].owner is None, "a terminal move releases the saga"
    assert not any(c.method in ("RefundPayment", "ReleaseStock", "CancelOrder") for c in participants.calls)


async def test_only_the_stuck_step_can_be_skipped_and_a_forward_skip_must_feed_the_later_steps(w: World) -> None:
    engine, repo, participants, clock, service = w.engine, w.repo, w.participants, w.clock, w.service
    # Past its deadline during create_order's backoff: FAILED with create_order still executing.
    participants.will("order", "CreateOrder", transient())
    saga, lease = await start_saga(repo, clock, short_deadline(0.05), on_timeout=OnTimeout.FAIL)
    await run(engine, saga, lease)
    assert (saga.status, saga.steps[0].status) == (SagaStatus.FAILED, StepStatus.EXECUTING)
    before = written(repo, saga.id)

    with pytest.raises(errors.StateConflict, match="stuck at create_order, not process_payment"):
        await service.skip_step(saga.id, "process_payment", {}, "orchestrator-2", ADMIN)
    with pytest.raises(errors.InvalidRequest) as refused:
        await service.skip_step(saga.id, "create_order", {"order_id": "by-hand"}, "orchestrator-2", ADMIN)

    assert refused.value.problems == ["output: process_payment needs 'total_amount' from the skipped step"]
    assert written(repo, saga.id) == before


async def test_a_forward_skip_with_a_sufficient_output_goes_on_with_the_next_step(w: World) -> None:
    engine, repo, participants, clock, service = w.engine, w.repo, w.participants, w.clock, w.service
    saga = await failed_forward(engine, repo, participants, clock)

    output = {"payment_id": "paid-by-hand"}
    claimed = await service.skip_step(saga.id, "process_payment", output, "orchestrator-2", ADMIN)
    await run(engine, claimed.saga, claimed.lease)

    assert participants.methods() == ["CreateOrder", "ReserveStock", "ConfirmOrder"]
    assert claimed.saga.status is SagaStatus.COMPLETED
    assert claimed.saga.context["payment_id"] == "paid-by-hand"


# -- force compensation ---------------------------------------------------------------------------------


async def test_forcing_compensation_of_a_saga_that_failed_going_forward_undoes_it_in_reverse(w: World) -> None:
    engine, repo, participants, clock, service = w.engine, w.repo, w.participants, w.clock, w.service
    saga = await failed_forward(engine, repo, participants, clock)

    claimed = await service.force_compensation(saga.id, "orchestrator-2", ADMIN)
    await run(engine, claimed.saga, claimed.lease)

    assert participants.methods()[1:] == ["RefundPayment", "CancelOrder"]
    assert claimed.saga.status is SagaStatus.COMPENSATED
    assert [e.detail.get("reason") for e in repo.events(saga.id) if e.kind == "saga"][-2] == (
        "compensation forced by ops-alice"
    )


async def test_forcing_compensation_past_the_point_of_no_return_is_refused_with_the_reason_and_writes_nothing(
    w: World,
) -> None:
    engine, repo, participants, clock, service = w.engine, w.repo, w.participants, w.clock, w.service
    saga = await failed_at_the_point_of_no_return(engine, repo, participants, clock)
    before = written(repo, saga.id)

    with pytest.raises(errors.PastPointOfNoReturn, match="confirm_order was executing, past the point of no return"):
        await service.force_compensation(saga.id, "orchestrator-2", ADMIN)
    assert written(repo, saga.id) == before


# -- resolve --------------------------------------------------------------------------------------------


async def test_resolving_marks_the_saga_handled_without_acting_and_it_takes_no_further_action(w: World) -> None:
    engine, repo, participants, clock, service = w.engine, w.repo, w.participants, w.clock, w.service
    saga = await failed_compensating(engine, repo, participants, clock)
    calls = len(participants.calls)

    claimed = await service.resolve(saga.id, "orchestrator-2", ADMIN)

    assert claimed.saga.status is SagaStatus.FAILED
    assert claimed.saga.resolution == {
        "by": "ops-alice",
        "role": "admin",
        "reason": "payment service restored",
        "at": clock.now().isoformat(),
    }
    assert repo.rows[saga.id].owner is None
    assert len(participants.calls) == calls
    before = written(repo, saga.id)
    for action in (
        service.retry(saga.id, "orchestrator-3", ADMIN),
        service.force_compensation(saga.id, "orchestrator-3", ADMIN),
        service.resolve(saga.id, "orchestrator-3", ADMIN),
    ):
        with pytest.raises(errors.StateConflict, match="resolved by ops-alice"):
            await action
    assert written(repo, saga.id) == before


# -- what every action refuses --------------------------------------------------------------------------


async def test_no_action_touches_a_saga_that_is_not_failed_or_does_not_exist(
    repo: QueueRepository, clock: FakeClock, service: usecases.SagaService
) -> None:
    saga, _ = await start_saga(repo, clock)
    before = written(repo, saga.id)
    for action in (
        service.retry_with_payload(saga.id, PAYLOAD, "orchestrator-2", ADMIN),
        service.skip_step(saga.id, "create_order", {}, "orchestrator-2", ADMIN),
        service.force_compensation(saga.id, "orchestrator-2", ADMIN),
        service.resolve(saga.id, "orchestrator-2", ADMIN),
    ):
        with pytest.raises(errors.StateConflict, match="only FAILED"):
            await action
    assert written(repo, saga.id) == before
    with pytest.raises(errors.SagaNotFound):
        await service.resolve(str(uuid.uuid4()), "orchestrator-2", ADMIN)


async def test_an_action_never_writes_over_a_live_owner(w: World) -> None:
    engine, repo, participants, clock, service = w.engine, w.repo, w.participants, w.clock, w.service
    saga = await failed_compensating(engine, repo, participants, clock)
    repo.take_over(saga.id, "orchestrator-9")  # someone holds it (e.g. another person's retry, running)
    before = written(repo, saga.id)

    with pytest.raises(errors.StateConflict, match="held by a live owner"):
        await service.force_compensation(saga.id, "orchestrator-2", ADMIN)
    assert written(repo, saga.id) == before


async def test_a_saga_that_changed_between_the_read_and_the_claim_is_released_and_refused(
    monkeypatch: pytest.MonkeyPatch,
    engine: Engine,
    repo: QueueRepository,
    participants: FakeParticipants,
    clock: FakeClock,
    service: usecases.SagaService,
) -> None:
    saga = await failed_compensating(engine, repo, participants, clock)
    stale = await repo.load(saga.id)
    stored = repo.rows[saga.id].saga
    stored.resolution = {"by": "ops-bob", "role": "admin", "reason": "handled", "at": "x"}  # resolved meanwhile

    async def stale_load(_: str) -> Saga | None:
        return stale

    monkeypatch.setattr(repo, "load", stale_load)
    with pytest.raises(errors.StateConflict, match="resolved by ops-bob"):
        await service.force_compensation(saga.id, "orchestrator-2", ADMIN)
    row = repo.rows[saga.id]
    assert row.owner is None, "the claim taken for the action was given back"
    assert [e.kind for e in repo.events(saga.id)][-2:] == ["lease_acquired", "lease_released"]
    assert not any(isinstance(e, Event) and e.kind == "operator_action" for e in repo.events(saga.id))
