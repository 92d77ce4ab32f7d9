"""Fixtures the engine's unit tests share: the fake clock and the fake participants (see test_orchestrator_engine)."""

import pytest

from services.orchestrator.tests.unit.test_orchestrator_engine import FakeClock, FakeParticipants


@pytest.fixture
def clock() -> FakeClock:
    """A clock that moves only when the test (or a fake sleep) moves it."""
    return FakeClock()


@pytest.fixture
def participants(clock: FakeClock) -> FakeParticipants:
    """Participants that answer from a script, on the fake clock."""
    return FakeParticipants(clock)
