"""The dry run: what a saga of a given type and payload would do, without persisting or calling anything.

A plan lists the steps in order with their per-attempt timeouts and retry schedules (each delay with
its jitter bounds), and, for a failure at each position, the compensations that would run, in order.
The compensations are not derived by a second set of rules: the plan walks a throwaway `Saga` through
the same moves the engine makes (`step_succeeded` up to the failing step, `begin_compensation`, then
`compensation_succeeded` until it is COMPENSATED), so the plan and the engine cannot disagree.

Two failures are told apart, as the engine tells them apart: a refusal (a permanent error or a business
decline) compensates at once; an unknown outcome compensates once the step's retries are spent, or
never, for a step retried until it succeeds (the point of no return).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Final

from orchestrator.domain.definition import Call, SagaDefinition
from orchestrator.domain.model import OnTimeout, Saga, SagaStatus
from orchestrator.domain.retry import RetryPolicy

# The plan's throwaway saga lives at a fixed instant: no time rule is decided by it.
_EPOCH: Final = datetime(2000, 1, 1, tzinfo=UTC)
# An unlimited retry schedule is listed until its delay reaches the cap (then it stays there), at most this long.
_MAX_LISTED: Final = 30


def _seconds(value: timedelta) -> float:
    return round(value.total_seconds(), 6)


def retry_schedule(policy: RetryPolicy) -> dict[str, Any]:
    """Each retry's delay (no jitter) and its bounds (the most jitter either way).

    For an unlimited policy, the delays up to the cap, and the capped delay that repeats after them.
    """
    schedule: list[dict[str, Any]] = []
    retry = 1
    while policy.max_retries is None or retry <= policy.max_retries:
        delay = policy.delay(retry, 0.5)
        schedule.append(
            {
                "retry": retry,
                "delay_seconds": _seconds(delay),
                "min_seconds": _seconds(policy.delay(retry, 0.0)),
                "max_seconds": _seconds(policy.delay(retry, 1.0)),
            }
        )
        if policy.max_retries is None and (delay >= policy.maximum or retry >= _MAX_LISTED):
            break
        retry += 1
    return {
        "max_retries": policy.max_retries,
        "attempts": None if policy.max_retries is None else policy.max_retries + 1,
        "jitter": policy.jitter,
        "schedule": schedule,
        "then_repeats": schedule[-1] if policy.max_retries is None else None,
    }


def _call(call: Call) -> dict[str, Any]:
    return {
        "service": call.service,
        "method": call.method,
        "timeout_seconds": _seconds(call.timeout),
        "retry": retry_schedule(call.retry),
    }


def compensations_after_failure(definition: SagaDefinition, payload: dict[str, Any], position: int) -> list[str]:
    """The steps whose compensation runs, in order, when the step at `position` fails (refused or unknown)."""
    saga = Saga.new("plan", definition, payload, _EPOCH)
    saga.start(_EPOCH)
    for step in saga.steps[:position]:
        saga.step_succeeded(step, {}, {}, _EPOCH)
    saga.begin_compensation("plan", _EPOCH, saga.steps[position], unknown=True)
    order: list[str] = []
    while saga.status is SagaStatus.COMPENSATING:
        compensating = saga.compensating
        assert compensating is not None  # noqa: S101 - a COMPENSATING saga always has a step compensating
        order.append(compensating.name)
        saga.compensation_succeeded(compensating, {}, _EPOCH)
    return order


def plan(
    definition: SagaDefinition, payload: dict[str, Any], deadline: timedelta | None, on_timeout: OnTimeout
) -> dict[str, Any]:
    """The dry run of a saga of `definition` with an already validated `payload`, as plain data."""
    steps, failures = [], []
    for position, step in enumerate(definition.steps):
        steps.append(
            {
                "position": position,
                "name": step.name,
                "forward_only": step.forward_only,
                "action": _call(step.action),
                "compensation": _call(step.compensation) if step.compensation else None,
            }
        )
        undo = [
            {"step": name, "service": c.service, "method": c.method}
            for name in compensations_after_failure(definition, payload, position)
            if (c := definition.steps[_position(definition, name)].compensation) is not None
        ]
        retries = step.action.retry
        failures.append(
            {
                "position": position,
                "step": step.name,
                "if_refused": undo,
                "if_unknown": None if retries.max_retries is None else undo,
                "unknown_after_attempts": None if retries.max_retries is None else retries.max_retries + 1,
            }
        )
    return {
        "saga_type": definition.saga_type,
        "definition_version": definition.version,
        "payload": payload,
        "deadline_seconds": _seconds(deadline if deadline is not None else definition.deadline),
        "on_timeout": on_timeout.value,
        "steps": steps,
        "failures": failures,
    }


def _position(definition: SagaDefinition, name: str) -> int:
    return next(i for i, s in enumerate(definition.steps) if s.name == name)
