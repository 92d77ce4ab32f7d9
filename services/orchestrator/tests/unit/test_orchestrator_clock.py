"""The clock every time rule is decided on is the database's, whatever the host's wall clock says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from orchestrator.adapters.clock import SystemClock

DATABASE_NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


async def _database_time() -> datetime:
    return DATABASE_NOW


async def test_after_a_sync_a_host_clock_90_seconds_fast_changes_nothing() -> None:
    clock = SystemClock(wall=lambda: datetime.now(UTC) + timedelta(seconds=90))

    await clock.sync(_database_time)

    assert abs(clock.now() - DATABASE_NOW) < timedelta(seconds=1)


async def test_sync_reports_how_far_the_host_clock_is_from_the_database() -> None:
    host = DATABASE_NOW + timedelta(seconds=90)
    clock = SystemClock(wall=lambda: host)

    offset = await clock.sync(_database_time)

    assert offset == timedelta(seconds=-90)


def test_before_the_first_sync_the_host_clock_is_all_there_is() -> None:
    host = datetime(2030, 5, 5, tzinfo=UTC)

    assert SystemClock(wall=lambda: host).now() == host


async def test_the_anchored_clock_advances_with_monotonic_time() -> None:
    clock = SystemClock()
    await clock.sync(_database_time)
    first = clock.now()
    await clock.sleep(0.02)

    assert timedelta(seconds=0.015) <= clock.now() - first < timedelta(seconds=1)
