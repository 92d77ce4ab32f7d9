"""Faults the engine must ride out: unconfirmed saves, clean handovers, half-open breakers, admin retries.

Each test pins one finding from runs against a live stack (a blip that parked healthy sagas or stalled
them for a lease, a release that spent an attempt, a breaker that let every saga probe at once, an admin
retry that compensated past the point of no return). The fakes are those of the engine's own tests.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from orchestrator import definitions, ports, usecases
from orchestrator.domain import errors
from orchestrator.domain.breaker import BreakerPolicy, BreakerState
from orchestrator.domain.model import Saga, SagaStatus, StepStatus
from orchestrator.engine import Breakers, Engine, EngineConfig
from services.orchestrator.tests.unit.test_orchestrator_engine import (
    TTL,
    FakeClock,
    FakeParticipants,
    FakeRepository,
    Invocation,
    run,
    start_saga,
    transient,
)


class FlakyRepository(FakeRepository):
    """The first `failures` saves raise StoreUnavailable; `committed` says whether each one landed first.

    A save that lands and then raises is the connection breaking around the commit: the write is durable
    but the owner never heard so.
    """

    def __init__(self, failures: int, *, committed: bool) -> None:
        super().__init__()
        self.failures, self.committed, self.attempts = failures, committed, 0

    async def save(self, saga: Saga, lease: ports.Lease, ttl: timedelta) -> bool:
        self.attempts += 1
        if self.failures > 0:
            self.failures -= 1
            if self.committed:
                await super().save(saga, lease, ttl)
            raise errors.StoreUnavailable("checkpoint not confirmed: QueryCanceledError('canceling statement')")
        return await super().save(saga, lease, ttl)


def make_engine(repo: FakeRepository, participants: FakeParticipants, clock: FakeClock) -> Engine:
    breakers = Breakers(BreakerPolicy(), clock.monotonic)
    return Engine(repo, participants, clock, breakers, EngineConfig(lease_ttl=TTL), rand=lambda: 0.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("committed", [False, True], ids=["save lost", "answer lost after the commit"])
async def test_an_unconfirmed_save_is_repeated_until_it_lands_and_the_saga_goes_on(
    participants: FakeParticipants, clock: FakeClock, committed: bool
) -> None:
    repo = FlakyRepository(failures=6, committed=committed)
    engine = make_engine(repo, participants, clock)
    saga, lease = await start_saga(repo, clock)

    await run(engine, saga, lease)

    assert saga.status is SagaStatus.COMPLETED, "a database blip is not a reason to park or abandon a saga"
    assert repo.rows[saga.id].status == "COMPLETED"
    assert participants.methods() == ["CreateOrder", "ProcessPayment", "ReserveStock", "ConfirmOrder"]
    assert sum(clock.sleeps) < 5.0, "it moved again as soon as the database answered, not after a lease"
    assert max(clock.sleeps) <= EngineConfig().save_retry_max


async def test_an_unconfirmed_save_ends_only_when_the_lease_is_reported_lost(
    participants: FakeParticipants, clock: FakeClock
) -> None:
    repo = FlakyRepository(failures=3, committed=False)
    engine = make_engine(repo, participants, clock)
    saga, lease = await start_saga(repo, clock)
    participants.on_call = lambda _: repo.take_over(saga.id)  # the lease is gone while the database is out

    await run(engine, saga, lease)

    assert participants.methods() == ["CreateOrder"], "no call after the lease was lost"
    assert repo.rows[saga.id].owner == "orchestrator-2"


async def test_a_clean_handover_spends_no_attempt_but_a_crash_does(
    participants: FakeParticipants, clock: FakeClock
) -> None:
    repo = FakeRepository()
    engine = make_engine(repo, participants, clock)
    clean, clean_lease = await start_saga(repo, clock)
    crashed, crashed_lease = await start_saga(repo, clock)

    await engine.run(clean, clean_lease, asyncio.Event(), resumed=True, in_doubt=False)
    await engine.run(crashed, crashed_lease, asyncio.Event(), resumed=True, in_doubt=True)

    assert clean.steps[0].attempts == 1, "a released lease is not a crash"
    assert crashed.steps[0].attempts == 2, "an owner lost mid-call may have made its call"
    assert [s.status for s in clean.steps] == [StepStatus.SUCCEEDED] * 4


async def test_four_rolling_restarts_do_not_exhaust_a_step(participants: FakeParticipants, clock: FakeClock) -> None:
    repo = FakeRepository()
    engine = make_engine(repo, participants, clock)
    saga, lease = await start_saga(repo, clock)
    participants.will("payment", "ProcessPayment", transient(), transient(), transient())
    for restart in range(4):  # SIGTERM while a call is in flight, then a clean handover, four times
        stopping = asyncio.Event()
        participants.on_call = lambda _, stop=stopping: stop.set()  # type: ignore[misc]
        await engine.run(saga, lease, stopping, resumed=restart > 0, acquired_at=clock.monotonic())
        claimed = repo.acquire(saga.id, f"orchestrator-{restart + 2}")
        assert claimed is not None
        saga, lease = claimed.saga, claimed.lease
    participants.on_call = None
    await engine.run(saga, lease, asyncio.Event(), resumed=True)

    assert saga.status is SagaStatus.COMPLETED
    assert saga.steps[1].attempts == 4, "three transient failures and the success; the restarts spent nothing"


async def test_half_open_lets_only_its_probes_call_and_the_others_wait_without_spending_retries(
    participants: FakeParticipants, clock: FakeClock
) -> None:
    repo = FakeRepository()
    engine = make_engine(repo, participants, clock)
    breaker = engine._breakers["payment"]
    for _ in range(BreakerPolicy().failure_threshold):
        breaker.record_failure()
    clock.advance(BreakerPolicy().open_for)
    assert breaker.state is BreakerState.HALF_OPEN
    held = [breaker.admit(), breaker.admit()]  # two probes of other sagas are in flight
    waits_before_call: list[int] = []

    def settle_after_waiting(invocation: Invocation) -> None:
        if invocation.method == "ProcessPayment":
            waits_before_call.append(len(clock.sleeps))

    real_sleep = clock.sleep

    async def sleep(seconds: float) -> None:
        await real_sleep(seconds)
        if len(clock.sleeps) == 5:  # the probes answer: the service is back, the breaker closes
            for permit in held:
                breaker.record_success(permit)

    clock.sleep = sleep  # type: ignore[method-assign]
    participants.on_call = settle_after_waiting
    saga, lease = await start_saga(repo, clock)

    await run(engine, saga, lease)

    assert waits_before_call == [5], "the payment call waited for a probe slot"
    assert saga.steps[1].attempts == 1, "waiting for the breaker spent no retry"
    assert saga.status is SagaStatus.COMPLETED


async def test_an_admin_retry_past_the_point_of_no_return_only_goes_forward(
    participants: FakeParticipants, clock: FakeClock
) -> None:
    repo = FakeRepository()
    engine = make_engine(repo, participants, clock)
    saga, lease = await start_saga(repo, clock)

    def bug_in_confirm(invocation: Invocation) -> None:
        if invocation.method == "ConfirmOrder":
            participants.on_call = None
            raise RuntimeError("a bug while confirming")

    participants.on_call = bug_in_confirm
    await run(engine, saga, lease)
    assert saga.status is SagaStatus.FAILED, "parked while the point of no return was executing"

    service = usecases.SagaService(repo, definitions.registry(), clock)  # type: ignore[arg-type]
    claimed = await service.retry(saga.id, "orchestrator-9")
    await engine.run(claimed.saga, claimed.lease, asyncio.Event(), acquired_at=claimed.acquired_at)

    assert claimed.saga.status is SagaStatus.COMPLETED
    undo = {"CancelOrder", "RefundPayment", "ReleaseStock"}
    assert not undo & set(participants.methods()), "nothing a confirmed order needs was refunded or released"
    assert participants.methods()[-2:] == ["ConfirmOrder", "ConfirmOrder"]
