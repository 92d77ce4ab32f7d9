"""The engine and the start use case against behavioural fakes of their ports.

FakeParticipants answers each (service, method) from a script of outcomes (a response, or a step
error to raise), then with a default success, and records every call. FakeRepository keeps, like the
PostgreSQL one, an owner and a fence per saga and refuses a save whose lease no longer matches them.
FakeClock's sleep advances time, so waits cost nothing and their length can be asserted.
"""

import asyncio
import copy
import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import grpc.aio
import pytest
from opentelemetry import trace

from orchestrator import definitions, ports, usecases
from orchestrator import engine as engine_module
from orchestrator.adapters import participants as grpc_participants
from orchestrator.domain import errors
from orchestrator.domain.breaker import BreakerPolicy, BreakerState
from orchestrator.domain.definition import Call, SagaDefinition
from orchestrator.domain.model import LIVE, Event, OnTimeout, Saga, SagaStatus, StepStatus
from orchestrator.engine import Breakers, Engine, EngineConfig

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
TTL = timedelta(seconds=30)
OWNER = "orchestrator-1"
CUSTOMER = "3f1b6c9e-7d2a-4e8b-9c1d-2a3b4c5d6e7f"
PAYLOAD: dict[str, Any] = {
    "customer_id": CUSTOMER,
    "items": [
        {"sku": "SKU-1", "quantity": 2, "unit_price": "10.00"},
        {"sku": "SKU-2", "quantity": 1, "unit_price": "5.50"},
    ],
    "currency": "USD",
}
ORDER_TOTAL = "25.50"

# (service, method) of each forward step, and the compensation that undoes it, by position.
ACTIONS = [("order", "CreateOrder"), ("payment", "ProcessPayment"), ("inventory", "ReserveStock")]
UNDO = ["CancelOrder", "RefundPayment", "ReleaseStock"]
STEP_NAMES = ["create_order", "process_payment", "reserve_inventory", "confirm_order"]

DEFAULT_RESPONSES: dict[tuple[str, str], dict[str, Any]] = {
    ("order", "CreateOrder"): {"order": {"order_id": "order-1", "total_amount": ORDER_TOTAL, "status": "CREATED"}},
    ("payment", "ProcessPayment"): {"payment": {"payment_id": "payment-1", "status": "CAPTURED"}},
    ("inventory", "ReserveStock"): {"reservation": {"reservation_id": "reservation-1"}},
    ("order", "ConfirmOrder"): {"order": {"order_id": "order-1", "status": "CONFIRMED"}},
    ("order", "CancelOrder"): {"order": {"order_id": "order-1", "status": "CANCELLED"}},
    ("payment", "RefundPayment"): {"payment": {"payment_id": "payment-1", "status": "REFUNDED"}},
    ("inventory", "ReleaseStock"): {"reservation": {"reservation_id": "reservation-1", "status": "RELEASED"}},
}

Outcome = dict[str, Any] | errors.StepError


# -- fakes ---------------------------------------------------------------------------------------------


class FakeClock:
    """Wall and monotonic time that only move when told to, or when someone sleeps."""

    def __init__(self) -> None:
        self.elapsed = 0.0
        self.sleeps: list[float] = []

    def now(self) -> datetime:
        return T0 + timedelta(seconds=self.elapsed)

    def monotonic(self) -> float:
        return self.elapsed

    def advance(self, seconds: float) -> None:
        assert seconds >= 0
        self.elapsed += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)


@dataclass(frozen=True)
class Invocation:
    service: str
    method: str
    request: dict[str, Any]
    saga_id: str
    idempotency_key: str
    action_key: str | None
    at: float


class FakeParticipants:
    """Scripted participants: per (service, method), the next outcomes, then default successes."""

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock
        self.script: dict[tuple[str, str], list[Outcome]] = {}
        self.latency: dict[tuple[str, str], float] = {}
        self.calls: list[Invocation] = []
        self.on_call: Callable[[Invocation], None] | None = None

    def will(self, service: str, method: str, *outcomes: Outcome) -> None:
        self.script.setdefault((service, method), []).extend(outcomes)

    async def invoke(
        self,
        call: Call,
        request: dict[str, Any],
        *,
        saga_id: str,
        idempotency_key: str,
        action_key: str | None,
        lease: ports.Lease | None = None,
    ) -> dict[str, Any]:
        target = (call.service, call.method)
        invocation = Invocation(*target, request, saga_id, idempotency_key, action_key, self._clock.monotonic())
        self.calls.append(invocation)
        self._clock.advance(self.latency.get(target, 0.0))
        if self.on_call is not None:
            self.on_call(invocation)
        queue = self.script.get(target)
        outcome = queue.pop(0) if queue else DEFAULT_RESPONSES[target]
        if isinstance(outcome, errors.StepError):
            raise outcome
        return copy.deepcopy(outcome)

    def methods(self) -> list[str]:
        return [c.method for c in self.calls]

    def calls_to(self, method: str) -> list[Invocation]:
        return [c for c in self.calls if c.method == method]


@dataclass
class Row:
    saga: Saga
    status: str
    owner: str | None
    fence: int
    cancel_requested: bool = False
    events: list[tuple[int, Event]] = field(default_factory=list)


class FakeRepository:
    """In-memory SagaRepository with the PostgreSQL one's ownership rules: fenced saves and releases."""

    def __init__(self) -> None:
        self.rows: dict[str, Row] = {}
        self.keys: dict[str, tuple[str, str]] = {}
        self.released: list[ports.Lease] = []

    def _persist(self, row: Row, fence: int) -> None:
        row.status = row.saga.status.value
        row.events.extend((fence, event) for event in row.saga.take_events())
        row.saga.take_dirty_steps()

    def _check(self, lease: ports.Lease) -> Row:
        row = self.rows[lease.saga_id]
        if (row.owner, row.fence) != (lease.owner_id, lease.fence):
            raise errors.LeaseLost(f"saga {lease.saga_id}: fence {lease.fence} of {lease.owner_id} no longer holds")
        return row

    async def create(
        self, saga: Saga, key: str, request_hash: str, owner_id: str | None, ttl: timedelta
    ) -> ports.Created:
        if key in self.keys:
            stored_hash, saga_id = self.keys[key]
            return ports.Created(saga_id, created=False, lease=None, request_hash=stored_hash)
        self.keys[key] = (request_hash, saga.id)
        row = self.rows[saga.id] = Row(saga, saga.status.value, owner_id, 1 if owner_id else 0)
        self._persist(row, row.fence)
        lease = ports.Lease(saga.id, owner_id, 1) if owner_id else None
        return ports.Created(saga.id, created=True, lease=lease)

    async def save(self, saga: Saga, lease: ports.Lease, ttl: timedelta) -> bool:
        row = self._check(lease)
        self._persist(row, lease.fence)
        if saga.status.terminal:
            row.owner = None
        return row.cancel_requested

    async def claim_one(self, saga_id: str, owner_id: str, ttl: timedelta) -> ports.Claimed | None:
        row = self.rows.get(saga_id)
        if row is None or row.saga.status is not SagaStatus.FAILED:
            return None
        return self.acquire(saga_id, owner_id)

    def acquire(self, saga_id: str, owner_id: str) -> ports.Claimed | None:
        """What the poller's claim does for one unowned saga."""
        row = self.rows[saga_id]
        if row.owner is not None:
            return None
        row.owner, row.fence = owner_id, row.fence + 1
        row.saga.note("lease_acquired", previous_owner=None)
        self._persist(row, row.fence)
        return ports.Claimed(row.saga, ports.Lease(saga_id, owner_id, row.fence), None)

    async def release(self, lease: ports.Lease, *, clean: bool = True) -> None:
        try:
            row = self._check(lease)
        except errors.LeaseLost:
            return
        row.owner = None
        row.events.append((lease.fence, Event("lease_released")))
        self.released.append(lease)

    async def status(self, saga_id: str) -> str | None:
        row = self.rows.get(saga_id)
        return row.status if row else None

    async def cancel_requested(self, saga_id: str) -> bool:
        return self.rows[saga_id].cancel_requested

    async def request_cancel(self, saga_id: str) -> str | None:
        row = self.rows.get(saga_id)
        if row is None:
            return None
        if SagaStatus(row.status) in LIVE:
            row.cancel_requested = True
        return row.status

    def take_over(self, saga_id: str, owner_id: str = "orchestrator-2") -> ports.Lease:
        """Another instance claims the saga after this one's lease expired."""
        row = self.rows[saga_id]
        row.owner, row.fence = owner_id, row.fence + 1
        return ports.Lease(saga_id, owner_id, row.fence)

    def events(self, saga_id: str) -> list[Event]:
        return [event for _, event in self.rows[saga_id].events]

    def step_moves(self, saga_id: str) -> list[tuple[str | None, str | None]]:
        return [(e.step, e.to_status) for e in self.events(saga_id) if e.kind == "step"]


# -- fixtures and helpers ------------------------------------------------------------------------------


@pytest.fixture
def repo() -> FakeRepository:
    return FakeRepository()


@pytest.fixture
def breakers(clock: FakeClock) -> Breakers:
    return Breakers(BreakerPolicy(), clock.monotonic)


@pytest.fixture
def engine(repo: FakeRepository, participants: FakeParticipants, clock: FakeClock, breakers: Breakers) -> Engine:
    return Engine(repo, participants, clock, breakers, EngineConfig(lease_ttl=TTL), rand=lambda: 0.5)  # type: ignore[arg-type]


@pytest.fixture
def service(repo: FakeRepository, clock: FakeClock) -> usecases.SagaService:
    return usecases.SagaService(repo, definitions.registry(), clock)  # type: ignore[arg-type]


async def start_saga(
    repo: FakeRepository,
    clock: FakeClock,
    definition: SagaDefinition | None = None,
    *,
    on_timeout: OnTimeout = OnTimeout.COMPENSATE,
    started: bool = True,
) -> tuple[Saga, ports.Lease]:
    """A new order saga, persisted and owned by OWNER (fence 1), as the accepting instance holds it."""
    definition = definition or definitions.order_saga()
    saga = Saga.new(str(uuid.uuid4()), definition, definition.validate(PAYLOAD), clock.now(), on_timeout=on_timeout)
    if started:
        saga.start(clock.now())
    created = await repo.create(saga, f"key-{saga.id}", "hash", OWNER, TTL)
    assert created.lease is not None
    return saga, created.lease


async def run(engine: Engine, saga: Saga, lease: ports.Lease, stopping: asyncio.Event | None = None) -> None:
    """Run as the accepting instance does: its lease was granted by the create statement just now."""
    await engine.run(saga, lease, stopping or asyncio.Event(), acquired_at=engine._clock.monotonic())


def transient(code: str = "UNAVAILABLE") -> errors.TransientStepError:
    return errors.TransientStepError(f"{code}: participant unreachable", code)


def decline() -> errors.BusinessDecline:
    return errors.BusinessDecline("FAILED_PRECONDITION: declined", "FAILED_PRECONDITION")


def permanent() -> errors.PermanentStepError:
    return errors.PermanentStepError("INVALID_ARGUMENT: malformed", "INVALID_ARGUMENT")


def statuses(saga: Saga) -> list[StepStatus]:
    return [s.status for s in saga.steps]


def short_deadline(seconds: float) -> SagaDefinition:
    definition = definitions.registry(deadline=timedelta(seconds=seconds)).latest(definitions.ORDER_SAGA)
    assert definition is not None
    return definition


# -- the happy path ------------------------------------------------------------------------------------


async def test_happy_path_calls_the_four_actions_in_order_with_deterministic_keys(
    engine: Engine, repo: FakeRepository, participants: FakeParticipants, clock: FakeClock
) -> None:
    saga, lease = await start_saga(repo, clock)
    await run(engine, saga, lease)

    assert participants.methods() == ["CreateOrder", "ProcessPayment", "ReserveStock", "ConfirmOrder"]
    assert [c.idempotency_key for c in participants.calls] == [f"{saga.id}:{name}:action" for name in STEP_NAMES]
    assert all(c.saga_id == saga.id and c.action_key is None for c in participants.calls)
    assert saga.status is SagaStatus.COMPLETED
    assert statuses(saga) == [StepStatus.SUCCEEDED] * 4
    assert [s.attempts for s in saga.steps] == [1, 1, 1, 1]
    assert saga.context == {
        "order_id": "order-1",
        "total_amount": ORDER_TOTAL,
        "payment_id": "payment-1",
        "reservation_id": "reservation-1",
    }
    assert repo.rows[saga.id].status == "COMPLETED"
    assert repo.rows[saga.id].owner is None, "a terminal save releases the saga"


async def test_requests_are_built_from_the_payload_and_earlier_outputs(
    engine: Engine, repo: FakeRepository, participants: FakeParticipants, clock: FakeClock
) -> None:
    participants.will("order", "CreateOrder", {"order": {"order_id": "order-7", "total_amount": "42.00"}})
    saga, lease = await start_saga(repo, clock)
    await run(engine, saga, lease)

    create, pay, reserve, confirm = participants.calls
    assert create.request == {"customer_id": CUSTOMER, "items": PAYLOAD["items"], "currency": "USD"}
    assert pay.request == {"customer_id": CUSTOMER, "amount": "42.00", "currency": "USD"}
    assert reserve.request == {"items": [{"sku": "SKU-1", "quantity": 2}, {"sku": "SKU-2", "quantity": 1}]}
    assert confirm.request == {"order_id": "order-7"}
    assert saga.steps[1].request == pay.request


async def test_a_pending_saga_is_started_by_its_first_run(
    engine: Engine, repo: FakeRepository, participants: FakeParticipants, clock: FakeClock
) -> None:
    saga, lease = await start_saga(repo, clock, started=False)
    assert saga.status is SagaStatus.PENDING
    await run(engine, saga, lease)
    assert saga.status is SagaStatus.COMPLETED
    assert len(participants.calls) == 4


async def test_every_move_is_saved_under_the_owner_fence_in_order(
    engine: Engine, repo: FakeRepository, clock: FakeClock
) -> None:
    saga, lease = await start_saga(repo, clock)
    await run(engine, saga, lease)

    assert {fence for fence, _ in repo.rows[saga.id].events} == {1}
    assert repo.step_moves(saga.id) == [
        ("create_order", "EXECUTING"),
        ("create_order", "SUCCEEDED"),
        ("process_payment", "EXECUTING"),
        ("process_payment", "SUCCEEDED"),
        ("reserve_inventory", "EXECUTING"),
        ("reserve_inventory", "SUCCEEDED"),
        ("confirm_order", "EXECUTING"),
        ("confirm_order", "SUCCEEDED"),
    ]
    assert [e.to_status for e in repo.events(saga.id) if e.kind == "saga"] == ["PENDING", "EXECUTING", "COMPLETED"]


# -- the retry matrix ----------------------------------------------------------------------------------

TRANSIENT_CODES = ["UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED", "INTERNAL", "UNKNOWN"]
PERMANENT_CODES = ["INVALID_ARGUMENT", "NOT_FOUND", "PERMISSION_DENIED", "UNAUTHENTICATED"]


def rpc_error(code: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        grpc.StatusCode[code],
        initial_metadata=grpc.aio.Metadata(),
        trailing_metadata=grpc.aio.Metadata(),
        details="x",
    )


@pytest.mark.parametrize("code", TRANSIENT_CODES)
def test_retryable_grpc_codes_become_transient_errors(code: str) -> None:
    error = grpc_participants.translate(rpc_error(code))
    assert type(error) is errors.TransientStepError
    assert error.code == code
    assert str(error) == f"{code}: x"


@pytest.mark.parametrize("code", PERMANENT_CODES)
def test_non_retryable_grpc_codes_become_permanent_errors(code: str) -> None:
    error = grpc_participants.translate(rpc_error(code))
    assert type(error) is errors.PermanentStepError
    assert error.code == code


def test_failed_precondition_is_a_business_decline() -> None:
    error = grpc_participants.translate(rpc_error("FAILED_PRECONDITION"))
    assert type(error) is errors.BusinessDecline
    assert error.code == "FAILED_PRECONDITION"


@pytest.mark.parametrize("code", TRANSIENT_CODES)
async def test_engine_retries_a_payment_failing_with_a_retryable_code(
    code: str, engine: Engine, repo: FakeRepository, participants: FakeParticipants, clock: FakeClock
) -> None:
    participants.will("payment", "ProcessPayment", grpc_participants.translate(rpc_error(code)))
    saga, lease = await start_saga(repo, clock)
    await run(engine, saga, lease)
    assert saga.status is SagaStatus.COMPLETED
    assert saga.steps[1].attempts == 2


@pytest.mark.parametrize("code", [*PERMANENT_CODES, "FAILED_PRECONDITION"])
async def test_engine_compensates_at_once_a_payment_failing_with_a_non_retryable_code(
    code: str, engine: Engine, repo: FakeRepository, participants: FakeParticipants, clock: FakeClock
) -> None:
    participants.will("payment", "ProcessPayment", grpc_participants.translate(rpc_error(code)))
    saga, lease = await start_saga(repo, clock)
    await run(engine, saga, lease)
    # No retry; the refused payment is tombstoned (RefundPayment) before the order is cancelled.
    assert participants.methods() == ["CreateOrder", "ProcessPayment", "RefundPayment", "CancelOrder"]
    assert saga.status is SagaStatus.COMPENSATED
    assert saga.steps[1].attempts == 1


async def test_a_transient_failure_is_retried_with_the_same_key_after_the_backoff(
    engine: Engine, repo: FakeRepository, participants: FakeParticipants, clock: FakeClock
) -> None:
    participants.will("payment", "ProcessPayment", transient())
    saga, lease = await start_saga(repo, clock)
    await run(engine, saga, lease)

    assert saga.status is SagaStatus.COMPLETED
    assert saga.steps[1].attempts == 2
    first, second = participants.calls_to("ProcessPayment")
    assert first.idempotency_key == second.idempotency_key == f"{saga.id}:process_payment:action"
    assert second.at - first.at == pytest.approx(0.1), "first retry waits 100 ms (no jitter at rand=0.5)"
    retries = [e for e in repo.events(saga.id) if e.kind == "retry_scheduled"]
    assert [(e.step, e.detail["attempt"], e.detail["compensation"]) for e in retries] == [("process_payment", 2, False)]
    assert retries[0].detail["error"] == "UNAVAILABLE: participant unreachable"


async def test_backoff_grows_between_retries(
    engine: Engine, repo: FakeRepository, participants: FakeParticipants, clock: FakeClock
) -> None:
    participants.will("payment", "ProcessPayment", transient(), transient(), transient())
    saga, lease = await start_saga(repo, clock)
    await run(engine, saga, lease)

    times = [c.at for c in participants.calls_to("ProcessPayment")]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert gaps == pytest.approx([0.1, 0.2, 0.4])
    assert saga.status is SagaStatus.COMPLETED
    assert saga.steps[1].attempts == 4


async def test_payment_unknown_after_three_retries_is_compensated_with_the_order_in_reverse_order(
    engine: Engine, repo: FakeRepository, participants: FakeParticipants, clock: FakeClock
) -> None:
    participants.will("payment", "ProcessPayment", *(transient("DEADLINE_EXCEEDED") for _ in range(4)))
    saga, lease = await start_saga(repo, clock)
    await run(engine, saga, lease)

    assert participants.methods() == ["CreateOrder", *["ProcessPayment"] * 4, "RefundPayment", "CancelOrder"]
    refund, cancel = participants.calls[-2:]
    assert (refund.idempotency_key, refund.action_key) == (
        f"{saga.id}:process_payment:compensation",
        f"{saga.id}:process_payment:action",
    )
    assert (cancel.idempotency_key, cancel.action_key) == (
        f"{saga.id}:create_order:compensation",
        f"{saga.id}:create_order:action",
    )
    assert saga.status is SagaStatus.COMPENSATED
    assert statuses(saga) == [StepStatus.COMPENSATED, StepStatus.COMPENSATED, StepStatus.PENDING, StepStatus.PENDING]
    assert saga.error == "process_payment failed: DEADLINE_EXCEEDED: participant unreachable (after 4 attempts)"


# -- failure at each position --------------------------------------------------------------------------


@pytest.mark.parametrize("position", [1, 2, 3])
@pytest.mark.parametrize("failure", [decline, permanent], ids=["declined", "permanent"])
async def test_refused_step_compensates_exactly_the_earlier_steps_in_reverse_order(
    position: int,
    failure: Callable[[], errors.StepError],
    engine: Engine,
    repo: FakeRepository,
    participants: FakeParticipants,
    clock: FakeClock,
) -> None:
    participants.will(*ACTIONS[position - 1], failure())
    saga, lease = await start_saga(repo, clock)
    await run(engine, saga, lease)

    # The refused step itself is compensated first: its tombstone refuses any delayed duplicate.
    undone = [UNDO[i] for i in reversed(range(position))]
    assert participants.methods() == [method for _, method in ACTIONS[:position]] + undone
    assert saga.status is SagaStatus.COMPENSATED
    assert statuses(saga)[:position] == [StepStatus.COMPENSATED] * position
    assert saga.steps[position - 1].error == saga.error, "the refused step keeps why it failed"
    refused = [e for e in repo.events(saga.id) if e.step == STEP_NAMES[position - 1] and e.to_status == "FAILED"]
    assert refused[0].detail["outcome"] == "refused"
    assert statuses(saga)[position:] == [StepStatus.PENDING] * (4 - position)


@pytest.mark.parametrize("position", [1, 2, 3])
async def test_step_with_unknown_outcome_is_compensated_with_the_earlier_steps(
    position: int, engine: Engine, repo: FakeRepository, participants: FakeParticipants, clock: FakeClock
) -> None:
    service, method = ACTIONS[position - 1]
    participants.will(service, method, *(transient() for _ in range(4)))
    saga, lease = await start_saga(repo, clock)
    await run(engine, saga, lease)

    earlier = [m for _, m in ACTIONS[: position - 1]]
    undone = [UNDO[i] for i in reversed(range(position))]
    assert participants.methods() == [*earlier, *[method] * 4, *undone]
    assert saga.status is SagaStatus.COMPENSATED
    assert statuses(saga)[:position] == [StepStatus.COMPENSATED] * position


async def test_payment_declined_tombstones_the_payment_and_cancels_the_order(
    engine: Engine, repo: FakeRepository, participants: FakeParticipants, clock: FakeClock
) -> None:
    participants.will("payment", "ProcessPayment", decline())
    saga, lease = await start_saga(repo, clock)
    await run(engine, saga, lease)

    (refund,) = participants.calls_to("RefundPayment")
    assert refund.action_key == f"{saga.id}:process_payment:action", "the declined key is tombstoned"
    assert participants.calls_to("ProcessPayment")[0].at == participants.calls_to("CancelOrder")[0].at
    assert saga.status is SagaStatus.COMPENSATED
    assert saga.error == "process_payment failed: FAILED_PRECONDITION: declined"


async def test_a_decline_counts_as_a_healthy_answer_for_the_breaker(
    engine: Engine, repo: FakeRepository, participants: FakeParticipants, clock: FakeClock, breakers: Breakers
) -> None:
    for _ in range(4):
        breakers["payment"].record_failure()
    participants.will("payment", "ProcessPayment", decline())
    saga, lease = await start_saga(repo, clock)
    await run(engine, saga, lease)

    breakers["payment"].record_failure()
    assert breakers["payment"].state is BreakerState.CLOSED


# -- compensation failures -----------------------------------------------------------------------------


async def test_compensation_failing_transiently_is_retried_then_the_saga_fails_naming_the_step(
    engine: Engine, repo: FakeRepository, participants: FakeParticipants, clock: FakeClock
) -> None:
    participants.will("payment", "ProcessPayment", decline())
    participants.will("order", "CancelOrder", *(transient() for _ in range(9)))
    saga, lease = await start_saga(repo, clock)
    await run(engine, saga, lease)

    cancels = participants.calls_to("CancelOrder")
    assert len(cancels) == 1 + definitions.COMPENSATION_RETRY.max_retries  # type: ignore[operator]
    assert {c.idempotency_key for c in cancels} == {f"{saga.id}:create_order:compensation"}
    assert cancels[1].at - cancels[0].at == pytest.approx(0.2), "compensations back off from 200 ms"
    assert saga.status is SagaStatus.FAILED
    assert saga.steps[0].status is StepStatus.COMPENSATION_FAILED
    assert saga.error == "compensation of create_order failed: UNAVAILABLE: participant unreachable"
    assert repo.rows[saga.id].status == "FAILED"
    retries = [e for e in repo.events(saga.id) if e.kind == "retry_scheduled"]
    assert [e.detail["attempt"] for e in retries] == list(range(2, 10))
    assert all(e.detail["compensation"] for e in retries)


async def test_permanent_compensation_failure_fails_the_saga_at_once(
    engine: Engine, repo: FakeRepository, participants: FakeParticipants, clock: FakeClock
) -> None:
    participants.will("inventory", "ReserveStock", decline())
    participants.will("payment", "RefundPayment", permanent())
    saga, lease = await start_saga(repo, clock)
    await run(engine, saga, lease)

    expected = ["CreateOrder", "ProcessPayment", "ReserveStock", "ReleaseStock", "RefundPayment"]
    assert participants.methods() == expected
    assert saga.status is SagaStatus.FAILED
    assert saga.error == "compensation of process_payment failed: INVALID_ARGUMENT: malformed"
    assert statuses(saga)[:3] == [StepStatus.SUCCEEDED, StepStatus.COMPENSATION_FAILED, StepStatus.COMPENSATED]


async def test_admin_retry_resumes_a_failed_compensation_until_compensated(
    engine: Engine,
    repo: FakeRepository,
    participants: FakeParticipants,
    clock: FakeClock,
    service: usecases.SagaService,
) -> None:
    participants.will("inventory", "ReserveStock", decline())
    participants.will("payment", "RefundPayment", permanent())
    saga, lease = await start_saga(repo, clock)
    await run(engine, saga, lease)
    assert saga.status is SagaStatus.FAILED

    claimed = await service.retry(saga.id, "orchestrator-2")
    assert claimed.lease.fence == 2
    assert repo.rows[saga.id].status == "COMPENSATING", "the retry is persisted before the run"
    await run(engine, claimed.saga, claimed.lease)

    assert participants.methods()[-3:] == ["RefundPayment", "RefundPayment", "CancelOrder"]
    assert saga.status is SagaStatus.COMPENSATED
    assert saga.steps[1].compensation_attempts == 1, "an admin retry starts a fresh compensation budget"
    assert statuses(saga)[:3] == [StepStatus.COMPENSATED] * 3
    assert {fence for fence, e in repo.rows[saga.id].events if e.kind == "saga"} == {1, 2}


async def test_admin_retry_of_a_saga_that_is_not_failed_is_refused_and_writes_nothing(
    engine: Engine, repo: FakeRepository, clock: FakeClock, service: usecases.SagaService
) -> None:
    saga, lease = await start_saga(repo, clock)
    await run(engine, saga, lease)
    fence, events = repo.rows[saga.id].fence, len(repo.rows[saga.id].events)
    with pytest.raises(errors.StateConflict, match="only FAILED"):
        await service.retry(saga.id, "orchestrator-2")
    assert repo.rows[saga.id].owner is None
    assert (repo.rows[saga.id].fence, len(repo.rows[saga.id].events)) == (fence, events)
    assert saga.status is SagaStatus.COMPLETED


async def test_admin_retry_of_a_failed_saga_someone_holds_is_refused(
    engine: Engine,
    repo: FakeRepository,
    participants: FakeParticipants,
    clock: FakeClock,
    service: usecases.SagaService,
) -> None:
    participants.will("payment", "ProcessPayment", decline())
    participants.will("order", "CancelOrder", permanent())
    saga, lease = await start_saga(repo, clock)
    await run(engine, saga, lease)
    repo.take_over(saga.id)
    with pytest.raises(errors.StateConflict, match="held by a live owner"):
        await service.retry(saga.id, "orchestrator-3")
    assert saga.status is SagaStatus.FAILED


async def test_admin_retry_of_a_saga_held_by_a_live_owner_is_refused(
    repo: FakeRepository, clock: FakeClock, service: usecases.SagaService
) -> None:
    saga, _ = await start_saga(repo, clock)
    with pytest.raises(errors.StateConflict, match="only FAILED"):
        await service.retry(saga.id, "orchestrator-2")
    with pytest.raises(errors.SagaNotFound):
        await service.retry(str(uuid.uuid4()), "orchestrator-2")


# -- the point of no return ----------------------------------------------------------------------------


async def test_confirm_order_is_retried_until_it_succeeds_even_past_the_deadline(
    engine: Engine, repo: FakeRepository, participants: FakeParticipants, clock: FakeClock
) -> None:
    participants.will("order", "ConfirmOrder", *(transient() for _ in range(30)))
    saga, lease = await start_saga(repo, clock)
    await run(engine, saga, lease)

    assert saga.status is SagaStatus.COMPLETED
    assert saga.steps[3].attempts == 31
    assert clock.now() > saga.deadline + timedelta(seconds=60)
    assert not any(c.method in UNDO for c in participants.calls)
    confirms = [c.at for c in participants.calls_to("ConfirmOrder")]
    assert max(b - a for a, b in itertools.pairwise(confirms)) == pytest.approx(30.0), (
        "the order breaker opened on the way and the step waited it out instead of giving up"
    )


async def test_cancel_after_confirm_started_is_ignored_and_the_saga_completes(
    engine: Engine, repo: FakeRepository, participants: FakeParticipants, clock: FakeClock
) -> None:
    saga, lease = await start_saga(repo, clock)

    def cancel_during(call: Invocation) -> None:
        if call.method == "ReserveStock":
            repo.rows[saga.id].cancel_requested = True

    participants.on_call = cancel_during
    await run(engine, saga, lease)
    assert saga.status is SagaStatus.COMPLETED
    assert participants.methods()[-1] == "ConfirmOrder"


# -- deadline and cancel -------------------------------------------------------------------------------


async def test_deadline_before_a_step_compensates(
    engine: Engine, repo: FakeRepository, participants: FakeParticipants, clock: FakeClock
) -> None:
    participants.latency[("order", "CreateOrder")] = 3.0
    saga, lease = await start_saga(repo, clock, short_deadline(2))
    await run(engine, saga, lease)

    assert "ProcessPayment" not in participants.methods()
    assert participants.methods() == ["CreateOrder", "RefundPayment", "CancelOrder"]
    assert saga.status is SagaStatus.COMPENSATED
    assert saga.error == "deadline exceeded"
    saga_moves = [(e.from_status, e.to_status) for e in repo.events(saga.id) if e.kind == "saga"]
    assert saga_moves[-2:] == [("EXECUTING", "COMPENSATING"), ("COMPENSATING", "COMPENSATED")]


async def test_deadline_with_on_timeout_fail_stops_without_compensating(
    engine: Engine, repo: FakeRepository, participants: FakeParticipants, clock: FakeClock
) -> None:
    participants.latency[("order", "CreateOrder")] = 3.0
    saga, lease = await start_saga(repo, clock, short_deadline(2), on_timeout=OnTimeout.FAIL)
    await run(engine, saga, lease)

    assert participants.methods() == ["CreateOrder"]
    assert saga.status is SagaStatus.FAILED
    assert saga.error == "deadline exceeded"
    assert statuses(saga)[:2] == [StepStatus.SUCCEEDED, StepStatus.EXECUTING]
    assert repo.rows[saga.id].owner is None


async def test_admin_retry_after_a_failed_deadline_compensates_what_may_have_happened(
    engine: Engine,
    repo: FakeRepository,
    participants: FakeParticipants,
    clock: FakeClock,
    service: usecases.SagaService,
) -> None:
    participants.latency[("order", "CreateOrder")] = 3.0
    saga, lease = await start_saga(repo, clock, short_deadline(2), on_timeout=OnTimeout.FAIL)
    await run(engine, saga, lease)

    claimed = await service.retry(saga.id, "orchestrator-2")
    await run(engine, claimed.saga, claimed.lease)
    assert participants.methods() == ["CreateOrder", "RefundPayment", "CancelOrder"]
    assert saga.status is SagaStatus.COMPENSATED


async def test_deadline_passing_during_a_backoff_compensates_instead_of_retrying(
    engine: Engine, repo: FakeRepository, participants: FakeParticipants, clock: FakeClock, breakers: Breakers
) -> None:
    for _ in range(5):
        breakers["payment"].record_failure()
    saga, lease = await start_saga(repo, clock, short_deadline(10))
    await run(engine, saga, lease)

    assert "ProcessPayment" not in participants.methods()
    assert saga.error == "deadline exceeded"
    assert saga.status is SagaStatus.COMPENSATED
    assert participants.calls_to("RefundPayment")[0].at >= 30.0, "the refund still waits for the open breaker"


async def test_cancel_request_compensates_at_the_next_move(
    engine: Engine,
    repo: FakeRepository,
    participants: FakeParticipants,
    clock: FakeClock,
    service: usecases.SagaService,
) -> None:
    saga, lease = await start_saga(repo, clock)
    assert await service.cancel(saga.id) == "EXECUTING"
    await run(engine, saga, lease)

    assert participants.methods() == ["CreateOrder", "RefundPayment", "CancelOrder"]
    assert saga.status is SagaStatus.COMPENSATED
    assert saga.error == "cancelled by an admin"


async def test_cancel_of_a_finished_or_missing_saga_is_refused(
    engine: Engine, repo: FakeRepository, clock: FakeClock, service: usecases.SagaService
) -> None:
    saga, lease = await start_saga(repo, clock)
    await run(engine, saga, lease)
    with pytest.raises(errors.StateConflict):
        await service.cancel(saga.id)
    with pytest.raises(errors.SagaNotFound):
        await service.cancel(str(uuid.uuid4()))


# -- the circuit breaker -------------------------------------------------------------------------------


async def test_open_breaker_delays_the_step_without_spending_its_attempts(
    engine: Engine, repo: FakeRepository, participants: FakeParticipants, clock: FakeClock, breakers: Breakers
) -> None:
    for _ in range(5):
        breakers["payment"].record_failure()
    saga, lease = await start_saga(repo, clock)
    await run(engine, saga, lease)

    (payment,) = participants.calls_to("ProcessPayment")
    assert payment.at >= 30.0
    assert saga.steps[1].attempts == 1
    assert not any(e.kind == "retry_scheduled" for e in repo.events(saga.id))
    assert max(clock.sleeps) <= 1.0, "waits are sliced so that stopping and cancels are noticed"
    assert saga.status is SagaStatus.COMPLETED


async def test_a_cancel_during_an_open_breaker_wait_compensates_without_calling_the_step(
    engine: Engine, repo: FakeRepository, clock: FakeClock, breakers: Breakers, participants: FakeParticipants
) -> None:
    for _ in range(5):
        breakers["payment"].record_failure()
    saga, lease = await start_saga(repo, clock)
    original_sleep = clock.sleep
    compensating_since: list[float] = []

    async def cancel_after_a_few_seconds(seconds: float) -> None:
        if saga.status is SagaStatus.COMPENSATING and not compensating_since:
            compensating_since.append(clock.elapsed)
        await original_sleep(seconds)
        if clock.elapsed >= 3.0:
            repo.rows[saga.id].cancel_requested = True

    clock.sleep = cancel_after_a_few_seconds  # type: ignore[method-assign]
    await run(engine, saga, lease)
    assert participants.calls_to("ProcessPayment") == [], "the step waiting on the breaker never went out"
    assert compensating_since[0] <= 4.0, "the cancel was noticed within one wait slice, not at the next save"
    assert saga.status is SagaStatus.COMPENSATED
    refund = participants.calls_to("RefundPayment")[0]
    assert refund.at >= 30.0, "the tombstoning refund still waits for the payment breaker"


async def test_transient_failures_of_one_service_open_its_breaker_only(
    engine: Engine, repo: FakeRepository, participants: FakeParticipants, clock: FakeClock, breakers: Breakers
) -> None:
    participants.will("inventory", "ReserveStock", *(transient() for _ in range(4)))
    participants.will("inventory", "ReleaseStock", transient())
    saga, lease = await start_saga(repo, clock)
    await run(engine, saga, lease)

    release = participants.calls_to("ReleaseStock")
    assert release[1].at - release[0].at >= 30.0, "the fifth failure opened the inventory breaker"
    assert breakers["inventory"].state is BreakerState.HALF_OPEN, "one probe succeeded, one more closes it"
    assert breakers["payment"].state is BreakerState.CLOSED
    refund, cancel = participants.calls_to("RefundPayment")[0], participants.calls_to("CancelOrder")[0]
    assert cancel.at == refund.at == release[1].at, "other services are not held back"
    assert saga.status is SagaStatus.COMPENSATED


# -- ownership and shutdown ----------------------------------------------------------------------------


async def test_lost_lease_stops_the_run_without_another_call_or_write(
    engine: Engine, repo: FakeRepository, participants: FakeParticipants, clock: FakeClock
) -> None:
    saga, lease = await start_saga(repo, clock)

    def taken_over_during(call: Invocation) -> None:
        if call.method == "ProcessPayment":
            repo.take_over(saga.id)

    participants.on_call = taken_over_during
    await run(engine, saga, lease)

    assert participants.methods() == ["CreateOrder", "ProcessPayment"]
    assert ("process_payment", "SUCCEEDED") not in repo.step_moves(saga.id)
    assert repo.rows[saga.id].owner == "orchestrator-2"
    assert repo.released == []


class PausingRepository(FakeRepository):
    """Counts saves and runs `after_save` after each one that committed."""

    def __init__(self) -> None:
        super().__init__()
        self.saves = 0
        self.after_save: Callable[[Saga], None] | None = None

    async def save(self, saga: Saga, lease: ports.Lease, ttl: timedelta) -> bool:
        cancel = await super().save(saga, lease, ttl)
        self.saves += 1
        if self.after_save is not None:
            self.after_save(saga)
        return cancel


@pytest.fixture
def pausing(clock: FakeClock, participants: FakeParticipants, breakers: Breakers) -> tuple[PausingRepository, Engine]:
    repository = PausingRepository()
    return repository, Engine(repository, participants, clock, breakers, EngineConfig(lease_ttl=TTL), rand=lambda: 0.5)  # type: ignore[arg-type]


async def test_an_owner_paused_past_its_lease_after_a_save_makes_no_further_call(
    pausing: tuple[PausingRepository, Engine], participants: FakeParticipants, clock: FakeClock
) -> None:
    repository, engine = pausing
    saga, lease = await start_saga(repository, clock)

    def paused_after_create_order(saved: Saga) -> None:
        if saved.steps[0].status is StepStatus.SUCCEEDED and repository.after_save is not None:
            repository.after_save = None
            clock.advance(TTL.total_seconds() + 5)  # SIGSTOP, a GC pause, starvation: the lease expired
            repository.take_over(saga.id)  # and another instance claimed the saga meanwhile

    repository.after_save = paused_after_create_order
    await run(engine, saga, lease)

    assert participants.methods() == ["CreateOrder"], "the payment call never left the paused owner"
    assert repository.rows[saga.id].owner == "orchestrator-2"


async def test_a_run_that_does_not_know_when_its_lease_was_granted_saves_before_its_first_call(
    pausing: tuple[PausingRepository, Engine], participants: FakeParticipants, clock: FakeClock
) -> None:
    repository, engine = pausing
    saga, lease = await start_saga(repository, clock)
    clock.advance(TTL.total_seconds() + 1)
    repository.take_over(saga.id)

    await engine.run(saga, lease, asyncio.Event())  # no acquired_at: the lease's age is unknown

    assert participants.calls == [], "the renewing save found the lease gone, so no call was made"
    assert repository.saves == 0


@pytest.mark.parametrize(
    ("heartbeat", "saves"),
    [(False, 6), (True, 5)],
    ids=["no renewal in the wait: one renewing save", "a heartbeat renewal in the wait: none"],
)
async def test_a_wait_longer_than_half_the_lease_renews_before_the_retry_unless_a_heartbeat_did(
    pausing: tuple[PausingRepository, Engine],
    participants: FakeParticipants,
    clock: FakeClock,
    heartbeat: bool,
    saves: int,
) -> None:
    repository, engine = pausing
    saga, lease = await start_saga(repository, clock)
    participants.will("payment", "ProcessPayment", transient())

    def long_wait(saved: Saga) -> None:
        if saved.steps[1].next_attempt_at is not None:
            repository.after_save = None
            clock.advance(TTL.total_seconds() * 0.4)
            if heartbeat:
                engine.renewed([lease], engine.monotonic())  # the worker's heartbeat renewed the lease
            clock.advance(TTL.total_seconds() * 0.35)  # the wait before the retry outlasts half the lease

    repository.after_save = long_wait
    await run(engine, saga, lease)

    assert saga.status is SagaStatus.COMPLETED
    assert participants.methods().count("ProcessPayment") == 2
    assert repository.saves == saves, "4 outcomes + the retry scheduled (+ a renewing save if the lease went stale)"


async def test_stopping_before_a_move_releases_the_lease_without_a_call(
    engine: Engine, repo: FakeRepository, participants: FakeParticipants, clock: FakeClock
) -> None:
    saga, lease = await start_saga(repo, clock)
    stopping = asyncio.Event()
    stopping.set()
    await run(engine, saga, lease, stopping)

    assert participants.calls == []
    assert repo.released == [lease]
    assert repo.rows[saga.id].owner is None
    assert repo.rows[saga.id].status == "EXECUTING"


async def test_stopping_mid_step_finishes_and_saves_the_call_before_releasing(
    engine: Engine, repo: FakeRepository, participants: FakeParticipants, clock: FakeClock
) -> None:
    saga, lease = await start_saga(repo, clock)
    stopping = asyncio.Event()
    participants.on_call = lambda call: stopping.set()
    await run(engine, saga, lease, stopping)

    assert participants.methods() == ["CreateOrder"]
    assert ("create_order", "SUCCEEDED") in repo.step_moves(saga.id)
    assert repo.released == [lease]
    assert repo.events(saga.id)[-1].kind == "lease_released"


async def test_a_successor_continues_where_the_released_run_stopped(
    engine: Engine, repo: FakeRepository, participants: FakeParticipants, clock: FakeClock
) -> None:
    saga, lease = await start_saga(repo, clock)
    stopping = asyncio.Event()
    participants.on_call = lambda call: stopping.set()
    await run(engine, saga, lease, stopping)
    participants.on_call = None

    claimed = repo.acquire(saga.id, "orchestrator-2")
    assert claimed is not None
    await run(engine, claimed.saga, claimed.lease)
    assert participants.methods() == ["CreateOrder", "ProcessPayment", "ReserveStock", "ConfirmOrder"]
    assert saga.status is SagaStatus.COMPLETED


async def test_a_resumed_saga_runs_to_completion_under_its_original_trace(
    engine: Engine, repo: FakeRepository, participants: FakeParticipants, clock: FakeClock
) -> None:
    saga, lease = await start_saga(repo, clock)
    saga.trace_context = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    await engine.run(saga, lease, asyncio.Event(), resumed=True, in_doubt=True)
    assert saga.status is SagaStatus.COMPLETED
    assert len(participants.calls) == 4


def test_carrier_captures_the_current_trace_for_a_new_saga() -> None:
    context = trace.SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, False, trace.TraceFlags(1))
    with trace.use_span(trace.NonRecordingSpan(context)):
        carried = engine_module.carrier()
    assert carried["traceparent"] == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


# -- starting a saga -----------------------------------------------------------------------------------


def start_request(
    payload: Any = None, key: str = "client-key-1", saga_type: str = "order_saga"
) -> usecases.StartRequest:
    return usecases.StartRequest(key, saga_type, copy.deepcopy(PAYLOAD) if payload is None else payload)


def with_item(**changes: Any) -> dict[str, Any]:
    payload = copy.deepcopy(PAYLOAD)
    payload["items"][0].update(changes)
    return payload


def without(field_name: str) -> dict[str, Any]:
    payload = copy.deepcopy(PAYLOAD)
    del payload[field_name]
    return payload


INVALID_PAYLOADS = {
    "missing customer_id": (without("customer_id"), "payload.customer_id"),
    "customer_id not a uuid": ({**PAYLOAD, "customer_id": "not-a-uuid"}, "payload.customer_id"),
    "customer_id not a string": ({**PAYLOAD, "customer_id": 42}, "payload.customer_id"),
    "zero quantity": (with_item(quantity=0), "payload.items[0].quantity"),
    "boolean quantity": (with_item(quantity=True), "payload.items[0].quantity"),
    "price with three decimals": (with_item(unit_price="1.234"), "payload.items[0].unit_price"),
    "negative price": (with_item(unit_price="-1"), "payload.items[0].unit_price"),
    "price not a number": (with_item(unit_price="abc"), "payload.items[0].unit_price"),
    "price as a float": (with_item(unit_price=9.99), "payload.items[0].unit_price"),
    "infinite price": (with_item(unit_price="Infinity"), "payload.items[0].unit_price"),
    "price in exponent form": (with_item(unit_price="1e2"), "payload.items[0].unit_price"),
    "negative zero price": (with_item(unit_price="-0"), "payload.items[0].unit_price"),
    "price beyond 12 digits": (with_item(unit_price="1234567890123"), "payload.items[0].unit_price"),
    "bad sku": (with_item(sku="no spaces"), "payload.items[0].sku"),
    "unknown item field": (with_item(discount="1.00"), "payload.items[0]: unknown fields ['discount']"),
    "empty items": ({**PAYLOAD, "items": []}, "payload.items"),
    "items not a list": ({**PAYLOAD, "items": "SKU-1"}, "payload.items"),
    "item not an object": ({**PAYLOAD, "items": ["SKU-1"]}, "payload.items[0]"),
    "lower-case currency": ({**PAYLOAD, "currency": "usd"}, "payload.currency"),
    "unknown field": ({**PAYLOAD, "coupon": "FREE"}, "payload: unknown fields ['coupon']"),
    "payload not an object": ([PAYLOAD], "payload"),
}


async def test_start_creates_an_owned_saga_already_executing_its_first_step(
    service: usecases.SagaService, repo: FakeRepository
) -> None:
    started = await service.start(start_request(), OWNER, {"traceparent": "00-abc-def-01"})

    assert started.created
    assert started.claimed is not None
    assert started.claimed.lease == ports.Lease(started.saga_id, OWNER, 1)
    saga = started.claimed.saga
    assert saga.id == started.saga_id
    assert saga.status is SagaStatus.EXECUTING
    assert saga.steps[0].status is StepStatus.EXECUTING
    assert saga.trace_context == {"traceparent": "00-abc-def-01"}
    assert repo.rows[saga.id].owner == OWNER
    assert repo.keys["client-key-1"] == (usecases.request_hash("order_saga", PAYLOAD), saga.id)


async def test_a_started_saga_runs_its_first_call_on_the_lease_its_create_statement_granted(
    pausing: tuple[PausingRepository, Engine], participants: FakeParticipants, clock: FakeClock
) -> None:
    repository, engine = pausing
    service = usecases.SagaService(repository, definitions.registry(), clock)  # type: ignore[arg-type]
    clock.advance(7.0)

    started = await service.start(start_request(), OWNER, {})
    assert started.claimed is not None
    assert started.claimed.acquired_at == 7.0, "the lease is counted from when the create was sent"
    await engine.run(
        started.claimed.saga, started.claimed.lease, asyncio.Event(), acquired_at=started.claimed.acquired_at
    )

    assert participants.methods()[0] == "CreateOrder"
    assert repository.saves == 4, "one save per outcome: no renewing save before the first call"


async def test_an_admin_retry_counts_its_lease_from_the_save_that_persisted_the_retry(
    pausing: tuple[PausingRepository, Engine], participants: FakeParticipants, clock: FakeClock
) -> None:
    repository, engine = pausing
    service = usecases.SagaService(repository, definitions.registry(), clock)  # type: ignore[arg-type]
    participants.will("inventory", "ReserveStock", decline())
    participants.will("payment", "RefundPayment", permanent())
    saga, lease = await start_saga(repository, clock)
    await run(engine, saga, lease)
    clock.advance(100.0)
    retried_at = clock.monotonic()

    claimed = await service.retry(saga.id, "orchestrator-2")
    saves = repository.saves
    await engine.run(claimed.saga, claimed.lease, asyncio.Event(), acquired_at=claimed.acquired_at)

    assert claimed.acquired_at == retried_at, "the lease is counted from when the retry's save was sent"
    assert saga.status is SagaStatus.COMPENSATED
    assert repository.saves - saves == 2, "refund and cancel outcomes only: no renewing save first"


async def test_start_without_an_owner_leaves_the_saga_pending_for_a_poller(
    service: usecases.SagaService, repo: FakeRepository
) -> None:
    started = await service.start(start_request(), None, {})
    assert started.created
    assert started.claimed is None
    assert repo.rows[started.saga_id].status == "PENDING"
    assert repo.rows[started.saga_id].owner is None


async def test_start_normalises_the_payload(service: usecases.SagaService, repo: FakeRepository) -> None:
    payload = {**PAYLOAD, "customer_id": CUSTOMER.upper()}
    del payload["currency"]
    started = await service.start(start_request(payload), OWNER, {})
    assert repo.rows[started.saga_id].saga.payload["customer_id"] == CUSTOMER
    assert repo.rows[started.saga_id].saga.payload["currency"] == "USD"


async def test_start_of_an_unknown_saga_type_is_refused(service: usecases.SagaService, repo: FakeRepository) -> None:
    with pytest.raises(errors.UnknownSagaType) as caught:
        await service.start(start_request(saga_type="travel_saga"), OWNER, {})
    assert caught.value.problems == ["saga_type: one of order_saga"]
    assert repo.rows == {}


@pytest.mark.parametrize(("payload", "problem"), INVALID_PAYLOADS.values(), ids=INVALID_PAYLOADS.keys())
async def test_start_with_an_invalid_payload_names_the_field_and_persists_nothing(
    payload: Any, problem: str, service: usecases.SagaService, repo: FakeRepository
) -> None:
    with pytest.raises(errors.InvalidRequest) as caught:
        await service.start(start_request(payload), OWNER, {})
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems
    assert repo.rows == {}
    assert repo.keys == {}


async def test_start_reports_every_problem_at_once(service: usecases.SagaService) -> None:
    payload = {"customer_id": "nope", "items": [{"sku": "", "quantity": 0, "unit_price": "x"}], "currency": "usd"}
    with pytest.raises(errors.InvalidRequest) as caught:
        await service.start(start_request(payload), OWNER, {})
    fields = [p.split(":")[0] for p in caught.value.problems]
    assert fields == [
        "payload.customer_id",
        "payload.currency",
        "payload.items[0].sku",
        "payload.items[0].quantity",
        "payload.items[0].unit_price",
    ]


async def test_same_key_and_body_returns_the_same_saga_without_creating_another(
    service: usecases.SagaService, repo: FakeRepository
) -> None:
    first = await service.start(start_request(), OWNER, {})
    reordered = {key: PAYLOAD[key] for key in reversed(list(PAYLOAD))}
    again = await service.start(start_request(reordered), OWNER, {})

    assert again == usecases.Started(first.saga_id, created=False, claimed=None)
    assert list(repo.rows) == [first.saga_id]


async def test_same_key_with_another_body_is_an_idempotency_conflict(
    service: usecases.SagaService, repo: FakeRepository
) -> None:
    first = await service.start(start_request(), OWNER, {})
    with pytest.raises(errors.IdempotencyConflict):
        await service.start(start_request(with_item(quantity=3)), OWNER, {})
    assert list(repo.rows) == [first.saga_id]


async def test_another_key_with_the_same_body_starts_another_saga(service: usecases.SagaService) -> None:
    first = await service.start(start_request(key="a"), OWNER, {})
    second = await service.start(start_request(key="b"), OWNER, {})
    assert second.created
    assert second.saga_id != first.saga_id


def test_request_hash_ignores_key_order_and_spacing() -> None:
    nested = {"items": [{"sku": "A", "quantity": 1}], "customer_id": "c"}
    reordered = {"customer_id": "c", "items": [{"quantity": 1, "sku": "A"}]}
    assert usecases.request_hash("order_saga", nested) == usecases.request_hash("order_saga", reordered)


def test_request_hash_tells_bodies_and_saga_types_apart() -> None:
    assert usecases.request_hash("order_saga", {"a": 1}) != usecases.request_hash("order_saga", {"a": 2})
    assert usecases.request_hash("order_saga", {"a": 1}) != usecases.request_hash("other_saga", {"a": 1})
    assert usecases.request_hash("order_saga", [1, 2]) != usecases.request_hash("order_saga", [2, 1])


# -- bugs and takeovers --------------------------------------------------------------------------------


async def test_an_unexpected_error_parks_the_saga_as_failed_with_the_reason(
    engine: Engine, repo: FakeRepository, participants: FakeParticipants, clock: FakeClock
) -> None:
    participants.will("payment", "ProcessPayment", {"payment": {}})  # no payment_id: the output cannot be read
    saga, lease = await start_saga(repo, clock)
    await run(engine, saga, lease)

    assert saga.status is SagaStatus.FAILED
    assert saga.error is not None
    assert saga.error.startswith("internal error: KeyError")
    assert repo.rows[saga.id].status == "FAILED", "parked durably, so no instance retries it blindly"
    assert repo.rows[saga.id].owner is None


async def test_a_resumed_run_counts_the_attempt_its_predecessor_may_have_made(
    engine: Engine, repo: FakeRepository, participants: FakeParticipants, clock: FakeClock
) -> None:
    saga, lease = await start_saga(repo, clock)
    await engine.run(saga, lease, asyncio.Event(), resumed=True, in_doubt=True)

    assert saga.status is SagaStatus.COMPLETED
    assert saga.steps[0].attempts == 2, "the first step's attempt before the takeover is spent"
    resumed = [e for e in repo.events(saga.id) if e.kind == "retry_scheduled"]
    assert resumed[0].detail["error"] == "resumed after a takeover"


async def test_a_saga_that_keeps_losing_its_owners_mid_call_still_runs_out_of_retries(
    engine: Engine, repo: FakeRepository, participants: FakeParticipants, clock: FakeClock
) -> None:
    saga, lease = await start_saga(repo, clock)
    saga.steps[0].attempts = 4  # three takeovers already spent the default budget of 3 retries
    await engine.run(saga, lease, asyncio.Event(), resumed=True, in_doubt=True)

    assert "CreateOrder" not in participants.methods(), "no fifth attempt"
    assert participants.methods() == ["CancelOrder"], "the unknown outcome is compensated"
    assert saga.status is SagaStatus.COMPENSATED
