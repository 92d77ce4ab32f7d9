"""A circuit breaker per downstream service, driven by an injected monotonic clock.

closed --(failure_threshold consecutive failures)--> open --(open_for elapsed)--> half_open
half_open --(success_threshold successes)--> closed;  half_open --(any failure)--> open

While open, callers are told how long to wait instead of calling: an open breaker delays a step
without spending its retries. Only transient failures count; a business decline proves the service
is healthy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class BreakerState(StrEnum):
    """The breaker's three states; the value is also the metric's encoding order."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerPolicy:
    """Thresholds: 5 failures open it, 30 s open, 2 successes close it."""

    failure_threshold: int = 5
    open_for: float = 30.0
    success_threshold: int = 2


class CircuitBreaker:
    """Tracks one downstream service's health from the outcomes of calls to it."""

    def __init__(self, policy: BreakerPolicy, clock: Callable[[], float]) -> None:
        """`clock` returns monotonic seconds."""
        self._policy = policy
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._successes = 0
        self._opened_at = 0.0

    @property
    def state(self) -> BreakerState:
        """The current state, moving open to half_open once the open period has passed."""
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self._policy.open_for:
            self._state = BreakerState.HALF_OPEN
            self._successes = 0
        return self._state

    def wait_time(self) -> float:
        """Seconds to wait before a call is allowed; 0 when a call may go now."""
        if self.state is BreakerState.OPEN:
            return max(self._policy.open_for - (self._clock() - self._opened_at), 0.0)
        return 0.0

    def record_success(self) -> None:
        """A call succeeded (or was declined on business grounds)."""
        if self.state is BreakerState.HALF_OPEN:
            self._successes += 1
            if self._successes >= self._policy.success_threshold:
                self._state = BreakerState.CLOSED
                self._failures = 0
        else:
            self._failures = 0

    def record_failure(self) -> None:
        """A call failed transiently (unavailable, timed out, overloaded)."""
        state = self.state
        self._failures += 1
        if state is BreakerState.HALF_OPEN or self._failures >= self._policy.failure_threshold:
            self._state = BreakerState.OPEN
            self._opened_at = self._clock()
            self._failures = 0
