"""Retry policy: exponential backoff with jitter, as a pure value."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a step is retried.

    `max_retries` counts retries after the first attempt (None: retry until something else stops the
    saga, such as the deadline). The delay before retry n (1-based) is
    `min(initial * multiplier**(n-1), maximum)`, spread by +-`jitter` (a fraction) so that many sagas
    failing together do not retry together.
    """

    max_retries: int | None = 3
    initial: timedelta = timedelta(milliseconds=100)
    maximum: timedelta = timedelta(seconds=10)
    multiplier: float = 2.0
    jitter: float = 0.1

    def exhausted(self, attempts: int) -> bool:
        """True when `attempts` attempts already used the whole budget."""
        return self.max_retries is not None and attempts > self.max_retries

    def delay(self, retry: int, rand: float) -> timedelta:
        """Delay before retry number `retry` (1-based); `rand` is uniform in [0, 1)."""
        try:
            grown = self.initial.total_seconds() * self.multiplier ** max(retry - 1, 0)
        except OverflowError:  # an unlimited policy's thousandth retry: far past the cap anyway
            grown = float("inf")
        base = min(grown, self.maximum.total_seconds())
        spread = base * self.jitter * (2.0 * rand - 1.0)
        return timedelta(seconds=max(base + spread, 0.0))
