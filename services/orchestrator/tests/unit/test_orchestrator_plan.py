"""The dry run against what the engine then does: for a failure at each position, run both and compare.

The plan is computed once from the saga type and payload; then, for each position, the engine runs a
saga whose step at that position is refused (a business decline), or answers with transient errors
until its retries are spent, and the participant calls it makes (which compensations, in which order,
how many attempts, how long between them) are compared with what the plan said.
"""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

import pytest

from orchestrator import definitions, usecases
from orchestrator.domain import errors
from orchestrator.domain.breaker import BreakerPolicy
from orchestrator.domain.model import SagaStatus
from orchestrator.engine import Breakers, Engine, EngineConfig
from services.orchestrator.tests.unit.test_orchestrator_engine import (
    PAYLOAD,
    TTL,
    FakeClock,
    FakeParticipants,
    FakeRepository,
    decline,
    run,
    start_saga,
    transient,
)

DEFINITION = definitions.order_saga()
STEPS = [(s.action.service, s.action.method) for s in DEFINITION.steps]
COMPENSATIONS = {c.method for s in DEFINITION.steps if (c := s.compensation) is not None}
# A breaker that never opens: this comparison is about retries and compensations, not the breaker.
NEVER_OPENS = BreakerPolicy(failure_threshold=10_000)


@pytest.fixture
def service() -> usecases.SagaService:
    return usecases.SagaService(FakeRepository(), definitions.registry(), FakeClock())  # type: ignore[arg-type]


@pytest.fixture
def plan(service: usecases.SagaService) -> dict[str, Any]:
    return service.plan(definitions.ORDER_SAGA, PAYLOAD)


def compensations_called(participants: FakeParticipants) -> list[str]:
    return [c.method for c in participants.calls if c.method in COMPENSATIONS]


async def engine_run(position: int, outcome: Any, rand: float = 0.5) -> tuple[FakeParticipants, FakeClock, SagaStatus]:
    clock, repo = FakeClock(), FakeRepository()
    participants = FakeParticipants(clock)
    participants.will(*STEPS[position], *outcome)
    engine = Engine(
        repo, participants, clock, Breakers(NEVER_OPENS, clock.monotonic), EngineConfig(lease_ttl=TTL),  # type: ignore[arg-type]
        rand=lambda: rand,
    )  # fmt: skip
    saga, lease = await start_saga(repo, clock)
    await run(engine, saga, lease)
    return participants, clock, saga.status


def test_the_plan_lists_the_steps_in_order_with_timeouts_and_the_spec_retry_schedule(plan: dict[str, Any]) -> None:
    assert [s["name"] for s in plan["steps"]] == [s.name for s in DEFINITION.steps]
    assert [s["action"]["timeout_seconds"] for s in plan["steps"]] == [5.0, 10.0, 5.0, 5.0]
    assert [s["compensation"]["timeout_seconds"] for s in plan["steps"][:3]] == [15.0] * 3
    assert plan["steps"][3]["compensation"] is None
    assert plan["steps"][3]["forward_only"] is True
    retry = plan["steps"][0]["action"]["retry"]
    assert (retry["max_retries"], retry["attempts"], retry["jitter"]) == (3, 4, 0.1)
    assert [(d["delay_seconds"], d["min_seconds"], d["max_seconds"]) for d in retry["schedule"]] == [
        (0.1, 0.09, 0.11),
        (0.2, 0.18, 0.22),
        (0.4, 0.36, 0.44),
    ]
    forever = plan["steps"][3]["action"]["retry"]
    assert forever["max_retries"] is None
    assert forever["then_repeats"]["delay_seconds"] == 5.0
    assert (plan["deadline_seconds"], plan["on_timeout"]) == (60.0, "compensate")


@pytest.mark.parametrize("position", range(len(STEPS)))
async def test_a_refusal_at_each_position_compensates_exactly_as_planned(plan: dict[str, Any], position: int) -> None:
    planned = plan["failures"][position]
    assert planned["step"] == DEFINITION.steps[position].name

    participants, _, status = await engine_run(position, [decline()])

    assert compensations_called(participants) == [c["method"] for c in planned["if_refused"]]
    assert status is SagaStatus.COMPENSATED


@pytest.mark.parametrize("position", range(len(STEPS) - 1))
@pytest.mark.parametrize("rand", [0.0, 0.5, 0.999])
async def test_an_unknown_outcome_at_each_position_retries_on_the_planned_schedule_then_compensates_as_planned(
    plan: dict[str, Any], position: int, rand: float
) -> None:
    planned = plan["failures"][position]
    schedule = plan["steps"][position]["action"]["retry"]["schedule"]

    participants, _, status = await engine_run(position, [transient()] * 10, rand)

    attempts = [c.at for c in participants.calls if (c.service, c.method) == STEPS[position]]
    assert len(attempts) == planned["unknown_after_attempts"]
    for gap, delay in zip(itertools.pairwise(attempts), schedule, strict=True):
        assert delay["min_seconds"] - 1e-6 <= gap[1] - gap[0] <= delay["max_seconds"] + 1e-6
    assert compensations_called(participants) == [c["method"] for c in planned["if_unknown"]]
    assert status is SagaStatus.COMPENSATED


@pytest.mark.parametrize("rand", [0.0, 0.999])
async def test_an_unknown_outcome_past_the_point_of_no_return_is_retried_on_schedule_and_never_compensated(
    plan: dict[str, Any], rand: float
) -> None:
    position = len(STEPS) - 1
    assert plan["failures"][position]["if_unknown"] is None
    retry = plan["steps"][position]["action"]["retry"]
    schedule = [*retry["schedule"], *[retry["then_repeats"]] * 4]

    participants, _, status = await engine_run(position, [transient()] * (len(schedule) - 1), rand)

    attempts = [c.at for c in participants.calls if (c.service, c.method) == STEPS[position]]
    assert len(attempts) == len(schedule)
    for gap, delay in zip(itertools.pairwise(attempts), schedule, strict=False):
        assert delay["min_seconds"] - 1e-6 <= gap[1] - gap[0] <= delay["max_seconds"] + 1e-6
    assert compensations_called(participants) == []
    assert status is SagaStatus.COMPLETED


async def test_the_plan_validates_like_a_start_and_normalises_the_same_way(service: usecases.SagaService) -> None:
    repo = FakeRepository()
    starter = usecases.SagaService(repo, definitions.registry(), FakeClock())  # type: ignore[arg-type]
    loose = {**PAYLOAD, "customer_id": PAYLOAD["customer_id"].upper()}
    started = await starter.start(usecases.StartRequest("k", definitions.ORDER_SAGA, loose), None, {})

    assert service.plan(definitions.ORDER_SAGA, loose)["payload"] == repo.rows[started.saga_id].saga.payload
    with pytest.raises(errors.InvalidRequest) as refused:
        service.plan(definitions.ORDER_SAGA, {**PAYLOAD, "items": []})
    assert refused.value.problems == ["payload.items: must be a list of 1 to 100 items"]
    with pytest.raises(errors.UnknownSagaType):
        service.plan("travel_saga", PAYLOAD)


def test_a_deadline_given_to_the_plan_replaces_the_saga_types(service: usecases.SagaService) -> None:
    assert service.plan(definitions.ORDER_SAGA, PAYLOAD, timedelta(seconds=30))["deadline_seconds"] == 30.0
