"""Named fail-points: places in the code where a fault test can crash the process, raise, or stall.

Code under test marks a point with `await failpoints.hit("engine.after_step_commit")` (or `hit_sync` where
there is no event loop). Nothing happens unless the environment variable `SAGALINE_FAILPOINTS` arms some
points, read once at import, or a test calls `configure`. Disarmed, a hit costs one module-level boolean
check: no dict lookup and no environment read, so the marks can stay in production code.

Spec grammar (whitespace around tokens is ignored; each name at most once)::

    spec     := entry (";" entry)*
    entry    := name "=" action ["@" prob] ["*" count]
    name     := [A-Za-z0-9_.:/-]+
    action   := "crash" | "error" | "sleep(" ms ")"
    prob     := a float in (0, 1]     the chance that a hit fires (default 1)
    count    := an int >= 1           the most times the point fires (default unlimited)

e.g. `payment.before_commit=crash@0.05;engine.after_claim=error*3;worker.poll=sleep(200)@0.5*10`.

Actions: `crash` flushes stdout and stderr and calls `os._exit(86)`, as a kill -9 at that line would: no
`finally`, no atexit, no graceful shutdown. `error` raises `InjectedFault`. `sleep(ms)` awaits
`asyncio.sleep`; only the async `hit` supports it, since a blocking sleep would stall the event loop.

Replay: the probability draws come from the seed in `SAGALINE_FAULT_SEED` (or `configure`'s seed); without
one a seed is drawn and logged with the spec, so any run can be repeated. Each point has its own generator,
seeded from (seed, name), so a point's firing sequence depends only on how many times that point was hit,
not on how hits of different points interleave across tasks.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import re
import secrets
import sys
import threading
from dataclasses import dataclass, field
from typing import Final, Literal

from servicekit import logging

log = logging.get_logger(__name__)

SPEC_ENV: Final = "SAGALINE_FAILPOINTS"
SEED_ENV: Final = "SAGALINE_FAULT_SEED"
CRASH_EXIT_CODE: Final = 86

Action = Literal["crash", "error", "sleep"]

_NAME: Final = re.compile(r"[A-Za-z0-9_.:/-]+")
_ACTION: Final = re.compile(r"(?P<action>crash|error|sleep\((?P<ms>\d+)\))(?:@(?P<prob>[^*]+))?(?:\*(?P<count>\d+))?")


class InjectedFault(RuntimeError):
    """Raised by a fail-point armed with `error`; `name` is the point that fired."""

    def __init__(self, name: str) -> None:
        super().__init__(f"injected fault at fail-point {name!r}")
        self.name = name


@dataclass
class _Point:
    action: Action
    delay: float  # seconds, for sleep only
    probability: float
    remaining: int | None  # fires left; None for unlimited
    rand: random.Random = field(repr=False)
    fired: int = 0


# `_armed` is the only state a disarmed hit reads. It is set last in `configure`, after `_points` is
# complete, so a hit never sees an armed flag with a half-built table.
_armed: bool = False
_points: dict[str, _Point] = {}
_seed: int | None = None
_lock: Final = threading.Lock()  # `hit_sync` may run on executor threads


async def hit(name: str) -> None:
    """Pass the fail-point `name`: crash, raise `InjectedFault`, or sleep if it is armed and fires.

    Raises:
        InjectedFault: the point is armed with `error` and fired.
    """
    if not _armed:
        return
    point = _fire(name)
    if point is None:
        return
    if point.action == "sleep":
        await asyncio.sleep(point.delay)
    else:
        _act(name, point.action)


def hit_sync(name: str) -> None:
    """Synchronous `hit` for code without an event loop; supports `crash` and `error` only.

    Raises:
        InjectedFault: the point is armed with `error` and fired.
        ValueError: the point is armed with `sleep`, which would block the caller's event loop; the
            check runs before any draw, so the misconfiguration fails the first hit deterministically.
    """
    if not _armed:
        return
    armed_point = _points.get(name)
    if armed_point is not None and armed_point.action == "sleep":
        raise ValueError(f"fail-point {name!r} has a sleep action; pass it with `await failpoints.hit`")
    point = _fire(name)
    if point is not None:
        _act(name, point.action)


def configure(spec: str | None, seed: int | None = None) -> None:
    """Arm the points in `spec` (disarm all when it is None or blank) and reset every counter.

    Args:
        spec: a fail-point spec (see the module docstring).
        seed: seeds the probability draws; None draws a seed, logged with the spec for replay.

    Raises:
        ValueError: the spec is malformed; the message quotes the bad part. The previous
            configuration is left untouched.
    """
    global _armed, _points, _seed
    points = _parse(spec or "")
    if points and seed is None:
        seed = secrets.randbits(32)
    with _lock:
        _armed = False
        _seed = seed if points else None
        # Replayable draws for fault injection, not secrets. A str seed hashes alike in every process.
        _points = {
            name: _Point(*parts, rand=random.Random(f"{seed}:{name}"))  # noqa: S311
            for name, parts in points.items()
        }
        _armed = bool(points)
    if points:
        log.warning("fail-points armed", spec=spec, seed=seed)


def armed() -> bool:
    """Whether any fail-point is armed."""
    return _armed


def seed() -> int | None:
    """The seed of the current configuration (None when disarmed), to replay a run."""
    return _seed


def fired(name: str) -> int:
    """How many times `name` fired since the last `configure` (0 for a point not armed)."""
    point = _points.get(name)
    return point.fired if point else 0


def _fire(name: str) -> _Point | None:
    # The count check comes before the draw: an exhausted point consumes no randomness.
    with _lock:
        point = _points.get(name)
        if point is None or point.remaining == 0:
            return None
        if point.probability < 1.0 and point.rand.random() >= point.probability:
            return None
        if point.remaining is not None:
            point.remaining -= 1
        point.fired += 1
        return point


def _act(name: str, action: Action) -> None:
    log.warning("fail-point fired", failpoint=name, action=action)
    if action == "error":
        raise InjectedFault(name)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(CRASH_EXIT_CODE)


def _parse(spec: str) -> dict[str, tuple[Action, float, float, int | None]]:
    points: dict[str, tuple[Action, float, float, int | None]] = {}
    if not spec.strip():
        return points
    for entry in spec.split(";"):
        name, sep, action = (part.strip() for part in entry.partition("="))
        if not sep or not _NAME.fullmatch(name):
            raise ValueError(
                f"bad fail-point entry {entry.strip()!r}: expected name=action with name [A-Za-z0-9_.:/-]+"
            )
        if name in points:
            raise ValueError(f"fail-point {name!r} is given twice")
        points[name] = _parse_action(name, action)
    return points


def _parse_action(name: str, text: str) -> tuple[Action, float, float, int | None]:
    match = _ACTION.fullmatch(text)
    if match is None:
        raise ValueError(
            f"bad action {text!r} for fail-point {name!r}: expected crash, error or sleep(<ms>), "
            "optionally followed by @<probability> and then *<count>"
        )
    probability, count = _probability(name, match["prob"]), _count(name, match["count"])
    if match["ms"] is not None:
        return "sleep", int(match["ms"]) / 1000, probability, count
    return ("crash" if match["action"] == "crash" else "error"), 0.0, probability, count


def _probability(name: str, text: str | None) -> float:
    if text is None:
        return 1.0
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 < value <= 1.0:  # also rejects nan
        raise ValueError(f"bad probability {text!r} for fail-point {name!r}: expected a number in (0, 1]")
    return value


def _count(name: str, text: str | None) -> int | None:
    if text is None:
        return None
    if int(text) < 1:
        raise ValueError(f"bad count {text!r} for fail-point {name!r}: expected an integer >= 1")
    return int(text)


def _seed_from_environment() -> int | None:
    text = os.environ.get(SEED_ENV)
    if text is None or not text.strip():
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{SEED_ENV}={text!r} is not an integer") from None


# Read once, at import: a bad spec or seed stops the process at start, not at the first hit.
configure(os.environ.get(SPEC_ENV), _seed_from_environment())
