"""A circuit breaker per downstream service, driven by an injected monotonic clock.

closed --(failure_threshold consecutive failures)--> open --(open_for elapsed)--> half_open
half_open --(success_threshold successes)--> closed;  half_open --(any failure)--> open

While open, callers are told how long to wait instead of calling: an open breaker delays a step
without spending its retries. Half-open admits at most `half_open_probes` calls at a time; every other
caller keeps waiting (again without spending a retry), so a service that is still down sees a few
probes, not every waiting saga at once. Only transient failures count; a business decline proves the
service is healthy.
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
    """Thresholds: 5 failures open it, 30 s open, 2 probes at a time when half-open, 2 successes close it."""

    failure_threshold: int = 5
    open_for: float = 30.0
    success_threshold: int = 2
    half_open_probes: int = 2
    # How long a caller refused a probe slot waits before asking again.
    probe_wait: float = 0.2


@dataclass(frozen=True)
class Permit:
    """Leave to make one call; a probe's outcome frees its half-open slot when recorded."""

    probe: bool
    generation: int


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
        self._probes = 0  # probes in flight in the current half-open window
        self._generation = 0  # bumped when a half-open window begins: late answers of older probes free nothing

    @property
    def state(self) -> BreakerState:
        """The current state, moving open to half_open once the open period has passed."""
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self._policy.open_for:
            self._state = BreakerState.HALF_OPEN
            self._successes = 0
            self._probes = 0
            self._generation += 1
        return self._state

    def wait_time(self) -> float:
        """Seconds to wait before asking for a permit again; 0 when a call may go now."""
        state = self.state
        if state is BreakerState.OPEN:
            return max(self._policy.open_for - (self._clock() - self._opened_at), 0.0)
        if state is BreakerState.HALF_OPEN and self._probes >= self._policy.half_open_probes:
            return self._policy.probe_wait
        return 0.0

    def admit(self) -> Permit | None:
        """Leave for one call now, or None (wait `wait_time()` and ask again; no retry is spent)."""
        state = self.state
        if state is BreakerState.CLOSED:
            return Permit(probe=False, generation=self._generation)
        if state is BreakerState.HALF_OPEN and self._probes < self._policy.half_open_probes:
            self._probes += 1
            return Permit(probe=True, generation=self._generation)
        return None

    def _settle(self, permit: Permit | None) -> None:
        if permit is not None and permit.probe and permit.generation == self._generation and self._probes > 0:
            self._probes -= 1

    def record_success(self, permit: Permit | None = None) -> None:
        """A call succeeded (or was declined on business grounds)."""
        self._settle(permit)
        if self.state is BreakerState.HALF_OPEN:
            self._successes += 1
            if self._successes >= self._policy.success_threshold:
                self._state = BreakerState.CLOSED
                self._failures = 0
        else:
            self._failures = 0

    def record_failure(self, permit: Permit | None = None) -> None:
        """A call failed transiently (unavailable, timed out, overloaded)."""
        self._settle(permit)
        state = self.state
        self._failures += 1
        if state is BreakerState.HALF_OPEN or self._failures >= self._policy.failure_threshold:
            self._state = BreakerState.OPEN
            self._opened_at = self._clock()
            self._failures = 0

    def abandon(self, permit: Permit | None) -> None:
        """The permitted call never produced an outcome (cancelled): free its probe slot."""
        self._settle(permit)
