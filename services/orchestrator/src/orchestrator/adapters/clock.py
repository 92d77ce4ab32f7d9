"""The real clock, anchored to the database's.

Leases are decided on the database clock (`clock_timestamp()` in SQL). Deadlines, due times and the
timestamps the engine writes must be decided on the same clock, or an instance whose wall clock runs
fast declares every saga it takes over past its deadline, and a slow one retries late. So `now()` is the
database time read at the last sync, advanced by this process's monotonic clock since: the instance's
own wall clock never enters a decision once the first sync has happened.

The error is bounded by half the round trip of the reading plus the monotonic drift since (negligible
at one reading every few seconds). Until the first reading, `now()` is the wall clock; the composition
root syncs before the worker starts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta


class SystemClock:
    """Database-anchored wall time in UTC, monotonic time, and asyncio's sleep.

    `wall` is the instance's own clock (injectable, so a test can skew it as a faulty host would).
    """

    def __init__(self, wall: Callable[[], datetime] | None = None) -> None:
        self._wall = wall or (lambda: datetime.now(UTC))
        self._anchor: tuple[datetime, float] | None = None

    def now(self) -> datetime:
        if self._anchor is None:
            return self._wall()
        at, mono = self._anchor
        return at + timedelta(seconds=time.monotonic() - mono)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def sync(self, database_time: Callable[[], Awaitable[datetime]]) -> timedelta:
        """Read the database clock and anchor to it; returns database minus wall clock (for a gauge)."""
        sent = time.monotonic()
        at = await database_time()
        received = time.monotonic()
        # The reading happened somewhere in the round trip: the midpoint halves the worst-case error.
        self._anchor = (at, (sent + received) / 2)
        return at - self._wall()
