"""What the saga page shows, derived from one saga's read model (`ports.SagaViews.get_view`): pure, no I/O.

The history is the source: every attempt of an action or a compensation is bracketed by events. An
attempt opens when its step moves into EXECUTING or COMPENSATING (attempt 1) or when a retry is
scheduled (attempt n opens at the time it was scheduled for); it closes at the next retry (with that
retry's error) or when the step leaves the state (succeeded, failed, compensated, compensation failed).
Event times are the database's `clock_timestamp()` at each checkpoint, so a duration is the call plus
the checkpoint that recorded it.

Owner and fence changes come from the `lease_acquired` events: a `previous_owner` that is not the new
owner is a takeover. The badge says what a person needs to know; for a FAILED saga that is what the
participants still hold: every step with a compensation whose effect was not undone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

# The gRPC status names the participants adapter writes at the start of an error ("UNAVAILABLE: ...").
_GRPC_CODES: Final = (
    "CANCELLED|UNKNOWN|INVALID_ARGUMENT|DEADLINE_EXCEEDED|NOT_FOUND|ALREADY_EXISTS|PERMISSION_DENIED|"
    "RESOURCE_EXHAUSTED|FAILED_PRECONDITION|ABORTED|OUT_OF_RANGE|UNIMPLEMENTED|INTERNAL|UNAVAILABLE|"
    "DATA_LOSS|UNAUTHENTICATED"
)
_GRPC_STATUS: Final = re.compile(rf"\b({_GRPC_CODES}): ")

# What a participant still holds while a step's effect is not undone, in the words an operator uses.
HELD: Final = {
    "create_order": "order still open",
    "process_payment": "payment still captured",
    "reserve_inventory": "stock still reserved",
}
# Step states in which the action's effect is, or may be, in place and not compensated.
_EFFECT_IN_PLACE: Final = frozenset({"SUCCEEDED", "COMPENSATING", "COMPENSATION_FAILED"})
_EFFECT_MAYBE: Final = frozenset({"EXECUTING", "FAILED"})
_OPENS: Final = {"EXECUTING": "action", "COMPENSATING": "compensation"}
_CLOSES: Final = {
    "SUCCEEDED": "action",
    "FAILED": "action",
    "COMPENSATED": "compensation",
    "COMPENSATION_FAILED": "compensation",
}


@dataclass
class Attempt:
    """One call of an action or a compensation."""

    number: int
    started: datetime | None
    ended: datetime | None = None
    outcome: str = "in flight"
    error: str | None = None
    owner: str | None = None
    fence: int | None = None

    @property
    def duration_ms(self) -> float | None:
        """Milliseconds from start to end; None while the attempt is open."""
        if self.started is None or self.ended is None:
            return None
        return max((self.ended - self.started).total_seconds() * 1000, 0.0)

    @property
    def grpc_status(self) -> str | None:
        """The gRPC status name the error starts with (a participant's answer), if any."""
        match = _GRPC_STATUS.search(self.error or "")
        return match.group(1) if match else None


@dataclass
class Phase:
    """One step's action or its compensation, with its attempts in order."""

    step: str
    position: int
    kind: str
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def started(self) -> datetime | None:
        """When the first attempt opened."""
        return self.attempts[0].started if self.attempts else None


@dataclass(frozen=True)
class Ownership:
    """A lease acquisition: who took the saga, with which fence, and from whom."""

    at: datetime | None
    owner: str | None
    fence: int
    previous: str | None

    @property
    def takeover(self) -> bool:
        """Another owner held the saga (crashed, paused or lost its lease) and this one took it over."""
        return self.previous is not None and self.previous != self.owner


@dataclass(frozen=True)
class Badge:
    """A status in words, and a tone for its colour."""

    text: str
    tone: str


@dataclass
class Timeline:
    """The saga page: forward phases in step order, compensations in the order they ran (reverse)."""

    forward: list[Phase]
    compensation: list[Phase]
    ownership: list[Ownership]
    badge: Badge


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class _Builder:
    """Walks the events once, opening and closing attempts per (step, phase)."""

    def __init__(self, steps: list[Mapping[str, Any]]) -> None:
        self.positions = {s["name"]: s["position"] for s in steps}
        self.phases: dict[tuple[str, str], Phase] = {}

    def phase(self, step: str, kind: str) -> Phase:
        key = (step, kind)
        if key not in self.phases:
            self.phases[key] = Phase(step, self.positions.get(step, -1), kind)
        return self.phases[key]

    def open(self, phase: Phase, number: int, at: datetime | None, event: Mapping[str, Any]) -> None:
        phase.attempts.append(Attempt(number, at, owner=event.get("owner_id"), fence=event.get("fence")))

    def close(self, phase: Phase, at: datetime | None, outcome: str, error: str | None) -> None:
        if not phase.attempts or phase.attempts[-1].ended is not None:
            # No opening event was recorded (a history cut short): show the outcome on its own.
            phase.attempts.append(Attempt(len(phase.attempts) + 1, None))
        attempt = phase.attempts[-1]
        attempt.ended, attempt.outcome, attempt.error = at, outcome, error

    def step_event(self, event: Mapping[str, Any], at: datetime | None) -> None:
        step, to, detail = event["step"], event["to_status"], event.get("detail") or {}
        if to in _CLOSES:
            error = detail.get("error") if to in ("FAILED", "COMPENSATION_FAILED") else None
            self.close(self.phase(step, _CLOSES[to]), at, to.lower(), error)
        if to in _OPENS:
            self.open(self.phase(step, _OPENS[to]), int(detail.get("attempt", 1)), at, event)

    def retry_event(self, event: Mapping[str, Any], at: datetime | None) -> None:
        detail = event.get("detail") or {}
        phase = self.phase(event["step"], "compensation" if detail.get("compensation") else "action")
        self.close(phase, at, "retry", detail.get("error"))
        self.open(phase, int(detail.get("attempt", len(phase.attempts) + 1)), _time(detail.get("at")) or at, event)


def build(view: Mapping[str, Any], compensable: frozenset[str] | None = None) -> Timeline:
    """The timeline of one saga from its read model (steps and events); `compensable` as for `held`."""
    builder = _Builder(view.get("steps", []))
    ownership = []
    for event in view.get("events", []):
        at, kind = _time(event.get("at")), event["kind"]
        if kind == "step" and event.get("step"):
            builder.step_event(event, at)
        elif kind == "retry_scheduled" and event.get("step"):
            builder.retry_event(event, at)
        elif kind == "lease_acquired":
            previous = (event.get("detail") or {}).get("previous_owner")
            ownership.append(Ownership(at, event.get("owner_id"), int(event.get("fence") or 0), previous))
    phases = builder.phases.values()
    forward = sorted((p for p in phases if p.kind == "action"), key=lambda p: p.position)
    # In the order they ran, which is reverse step order; by position where a start time is missing.
    backward = sorted((p for p in phases if p.kind == "compensation"), key=lambda p: -p.position)
    return Timeline(forward, backward, ownership, badge(view, compensable))


def held(steps: Iterable[Mapping[str, Any]], compensable: frozenset[str] | None = None) -> tuple[list[str], list[str]]:
    """What participants still hold (effect in place) and may hold (outcome unknown), in words.

    `compensable` names the steps with a compensation; None means the steps `HELD` knows.
    """
    known = compensable if compensable is not None else frozenset(HELD)
    certain, maybe = [], []
    for step in steps:
        if step["name"] not in known:
            continue
        words = HELD.get(step["name"], f"{step['name']} not undone")
        if step["status"] in _EFFECT_IN_PLACE:
            certain.append(words)
        elif step["status"] in _EFFECT_MAYBE:
            maybe.append(words.replace("still ", "maybe "))
    return certain, maybe


def stuck_step(steps: Iterable[Mapping[str, Any]]) -> str | None:
    """The step a FAILED saga stopped at: a compensation that failed, else the action that was executing."""
    ordered = list(steps)
    backward = next((s for s in reversed(ordered) if s["status"] in ("COMPENSATION_FAILED", "COMPENSATING")), None)
    found = backward or next((s for s in ordered if s["status"] == "EXECUTING"), None)
    return found["name"] if found else None


def actions(view: Mapping[str, Any], compensable: frozenset[str] | None = None) -> list[str]:
    """The admin actions that make sense for the saga now (the use cases refuse the others anyway).

    A live saga going forward can be cancelled. A FAILED saga nobody resolved can be retried, resolved,
    and, where it applies: retried with an edited payload (it failed going forward, nothing undone yet),
    have its stuck step skipped, or be compensated by force (not past the point of no return).
    """
    status, steps = view["status"], view.get("steps", [])
    if status in ("PENDING", "EXECUTING"):
        return [] if view.get("cancel_requested") else ["cancel"]
    if status != "FAILED" or view.get("resolution"):
        return []
    known = compensable if compensable is not None else frozenset(HELD)
    executing = next((s for s in steps if s["status"] == "EXECUTING"), None)
    begun = any(s["status"] in ("COMPENSATING", "COMPENSATED", "COMPENSATION_FAILED") for s in steps)
    found = ["retry"]
    if executing is not None and not begun:
        found.append("retry-with-payload")
    if stuck_step(steps) is not None:
        found.append("skip")
    if executing is None or executing["name"] in known:
        found.append("force-compensation")
    return [*found, "resolve"]


def badge(view: Mapping[str, Any], compensable: frozenset[str] | None = None) -> Badge:
    """The saga's state in the words a person needs: completed, rolled back, or what a rollback left behind."""
    status = view["status"]
    simple = {
        "COMPLETED": Badge("completed", "ok"),
        "COMPENSATED": Badge("rolled back", "neutral"),
        "PENDING": Badge("pending", "live"),
        "EXECUTING": Badge("running", "live"),
        "COMPENSATING": Badge("rolling back", "live"),
    }
    if status in simple:
        return simple[status]
    resolution = view.get("resolution")
    if resolution:
        return Badge(f"resolved by {resolution.get('by')}: {resolution.get('reason')}", "neutral")
    steps = view.get("steps", [])
    known = compensable if compensable is not None else frozenset(HELD)
    parked = next((s["name"] for s in steps if s["status"] == "EXECUTING" and s["name"] not in known), None)
    if parked is not None:
        return Badge(f"stopped past the point of no return: {parked} needs a retry", "bad")
    certain, maybe = held(steps, compensable)
    if certain or maybe:
        return Badge("rollback incomplete: " + ", ".join(certain + maybe), "bad")
    return Badge("failed: nothing left to undo", "bad")
