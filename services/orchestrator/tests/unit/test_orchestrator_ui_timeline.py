"""The saga page's timeline, derived from a read model: attempts, the reverse path, takeovers, badges."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.ui import timeline

COMPENSABLE = frozenset({"create_order", "process_payment", "reserve_inventory"})
STEPS = ["create_order", "process_payment", "reserve_inventory", "confirm_order"]


def at(second: float) -> str:
    return f"2026-01-01T00:00:{second:06.3f}+00:00"


def event(kind: str, second: float, step: str | None = None, to: str | None = None, **detail: Any) -> dict[str, Any]:
    owner = detail.pop("owner", "a")
    fence = detail.pop("fence", 1)
    return {"kind": kind, "step": step, "to_status": to, "from_status": None, "detail": detail, "at": at(second),
            "owner_id": owner, "fence": fence}  # fmt: skip


def view(status: str, steps: dict[str, str], events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "status": status,
        "steps": [{"name": n, "position": i, "status": steps.get(n, "PENDING")} for i, n in enumerate(STEPS)],
        "events": events or [],
    }


def test_attempts_are_bracketed_by_their_events_with_duration_error_and_grpc_status() -> None:
    events = [
        event("step", 0.0, "create_order", "EXECUTING", attempt=1),
        event("retry_scheduled", 0.25, "create_order", attempt=2, error="UNAVAILABLE: down", at=at(0.5)),
        event("step", 0.75, "create_order", "SUCCEEDED", attempts=2),
    ]
    built = timeline.build(view("EXECUTING", {"create_order": "SUCCEEDED"}, events), COMPENSABLE)

    [phase] = built.forward
    first, second = phase.attempts
    assert (first.number, first.outcome, first.grpc_status, first.duration_ms) == (1, "retry", "UNAVAILABLE", 250)
    assert (second.number, second.outcome, second.error, second.duration_ms) == (2, "succeeded", None, 250)
    assert built.compensation == []


def test_the_compensation_path_is_drawn_in_the_order_it_ran_reverse() -> None:
    events = [
        event("step", 0, "create_order", "EXECUTING", attempt=1),
        event("step", 1, "create_order", "SUCCEEDED"),
        event("step", 1, "process_payment", "EXECUTING", attempt=1),
        event("step", 2, "process_payment", "FAILED", error="process_payment failed: FAILED_PRECONDITION: no funds"),
        event("step", 2, "process_payment", "COMPENSATING", attempt=1),
        event("step", 3, "process_payment", "COMPENSATED"),
        event("step", 3, "create_order", "COMPENSATING", attempt=1),
        event("step", 4, "create_order", "COMPENSATED"),
    ]
    steps = {"create_order": "COMPENSATED", "process_payment": "COMPENSATED"}
    built = timeline.build(view("COMPENSATED", steps, events), COMPENSABLE)

    assert [p.step for p in built.forward] == ["create_order", "process_payment"]
    assert built.forward[1].attempts[0].grpc_status == "FAILED_PRECONDITION"
    assert [p.step for p in built.compensation] == ["process_payment", "create_order"]
    assert all(p.attempts[-1].outcome == "compensated" for p in built.compensation)
    assert built.badge == timeline.Badge("rolled back", "neutral")


def test_takeovers_are_the_acquisitions_from_another_owner() -> None:
    events = [
        event("lease_acquired", 1, owner="b", fence=2, previous_owner="a"),
        event("lease_acquired", 2, owner="b", fence=3, previous_owner="b"),
        event("lease_acquired", 3, owner="c", fence=4, previous_owner=None),
    ]
    built = timeline.build(view("EXECUTING", {}, events))
    assert [(o.owner, o.fence, o.takeover) for o in built.ownership] == [("b", 2, True), ("b", 3, False),
                                                                         ("c", 4, False)]  # fmt: skip


@pytest.mark.parametrize(
    ("status", "steps", "text"),
    [
        ("COMPLETED", {}, "completed"),
        ("COMPENSATED", {}, "rolled back"),
        ("EXECUTING", {}, "running"),
        ("COMPENSATING", {}, "rolling back"),
        (
            "FAILED",
            {"create_order": "COMPENSATED", "process_payment": "COMPENSATION_FAILED", "reserve_inventory": "FAILED"},
            "rollback incomplete: payment still captured, stock maybe reserved",
        ),
        ("FAILED", {"create_order": "EXECUTING"}, "rollback incomplete: order maybe open"),
        ("FAILED", {"create_order": "COMPENSATED"}, "failed: nothing left to undo"),
        (
            "FAILED",
            {s: "SUCCEEDED" for s in STEPS[:3]} | {"confirm_order": "EXECUTING"},
            "stopped past the point of no return: confirm_order needs a retry",
        ),
    ],
)
def test_the_badge_says_what_a_person_needs_to_know(status: str, steps: dict[str, str], text: str) -> None:
    assert timeline.badge(view(status, steps), COMPENSABLE).text == text


def test_a_history_cut_short_still_shows_the_outcome() -> None:
    built = timeline.build(view("FAILED", {}, [event("step", 1, "create_order", "FAILED", error="INTERNAL: boom")]))
    [attempt] = built.forward[0].attempts
    assert (attempt.started, attempt.duration_ms, attempt.grpc_status) == (None, None, "INTERNAL")


@pytest.mark.parametrize(
    ("status", "steps", "extra", "expected"),
    [
        ("EXECUTING", {"create_order": "EXECUTING"}, {}, ["cancel"]),
        ("EXECUTING", {"create_order": "EXECUTING"}, {"cancel_requested": True}, []),
        ("COMPENSATING", {"create_order": "COMPENSATING"}, {}, []),
        ("COMPLETED", {}, {}, []),
        # Failed going forward (a deadline with on_timeout=fail): every action applies.
        (
            "FAILED",
            {"create_order": "EXECUTING"},
            {},
            ["retry", "retry-with-payload", "skip", "force-compensation", "resolve"],
        ),
        # A compensation gave up: no edited payload (what is undone was done with the old one).
        (
            "FAILED",
            {"create_order": "COMPENSATED", "process_payment": "COMPENSATION_FAILED"},
            {},
            ["retry", "skip", "force-compensation", "resolve"],
        ),
        # Past the point of no return: never compensate.
        (
            "FAILED",
            {s: "SUCCEEDED" for s in STEPS[:3]} | {"confirm_order": "EXECUTING"},
            {},
            ["retry", "retry-with-payload", "skip", "resolve"],
        ),
        ("FAILED", {"create_order": "EXECUTING"}, {"resolution": {"by": "ops", "reason": "done"}}, []),
    ],
)
def test_the_actions_offered_are_the_ones_that_apply(
    status: str, steps: dict[str, str], extra: dict[str, Any], expected: list[str]
) -> None:
    assert timeline.actions({**view(status, steps), **extra}, COMPENSABLE) == expected


def test_a_resolved_saga_says_who_resolved_it_and_why() -> None:
    resolved = {**view("FAILED", {"create_order": "EXECUTING"}), "resolution": {"by": "ops", "reason": "refunded"}}
    assert timeline.badge(resolved, COMPENSABLE) == timeline.Badge("resolved by ops: refunded", "neutral")
