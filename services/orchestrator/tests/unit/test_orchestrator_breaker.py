"""The circuit breaker: closed, open, half-open, on an injected monotonic clock."""

import pytest

from orchestrator.domain.breaker import BreakerPolicy, BreakerState, CircuitBreaker


class Ticker:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def ticker() -> Ticker:
    return Ticker()


@pytest.fixture
def breaker(ticker: Ticker) -> CircuitBreaker:
    return CircuitBreaker(BreakerPolicy(), ticker)


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        breaker.record_failure()


def test_four_failures_keep_the_breaker_closed(breaker: CircuitBreaker) -> None:
    fail(breaker, 4)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.wait_time() == 0.0


def test_five_failures_open_the_breaker_for_30_seconds(breaker: CircuitBreaker) -> None:
    fail(breaker, 5)
    assert breaker.state is BreakerState.OPEN
    assert breaker.wait_time() == 30.0


def test_wait_time_counts_down_while_open(breaker: CircuitBreaker, ticker: Ticker) -> None:
    fail(breaker, 5)
    ticker.now += 12.5
    assert breaker.state is BreakerState.OPEN
    assert breaker.wait_time() == pytest.approx(17.5)


def test_breaker_is_half_open_once_30_seconds_have_passed(breaker: CircuitBreaker, ticker: Ticker) -> None:
    fail(breaker, 5)
    ticker.now += 29.999
    assert breaker.state is BreakerState.OPEN
    ticker.now += 0.001
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.wait_time() == 0.0


def test_two_successes_in_half_open_close_the_breaker(breaker: CircuitBreaker, ticker: Ticker) -> None:
    fail(breaker, 5)
    ticker.now += 30
    breaker.record_success()
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    fail(breaker, 4)
    assert breaker.state is BreakerState.CLOSED


def test_a_failure_in_half_open_reopens_for_another_30_seconds(breaker: CircuitBreaker, ticker: Ticker) -> None:
    fail(breaker, 5)
    ticker.now += 30
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert breaker.wait_time() == 30.0
    ticker.now += 30
    assert breaker.state is BreakerState.HALF_OPEN


def test_half_open_needs_two_fresh_successes_after_reopening(breaker: CircuitBreaker, ticker: Ticker) -> None:
    fail(breaker, 5)
    ticker.now += 30
    breaker.record_success()
    breaker.record_failure()
    ticker.now += 30
    breaker.record_success()
    assert breaker.state is BreakerState.HALF_OPEN


def test_a_success_resets_the_failure_count_while_closed(breaker: CircuitBreaker) -> None:
    fail(breaker, 4)
    breaker.record_success()
    fail(breaker, 4)
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN


def test_a_late_success_while_open_does_not_close_it(breaker: CircuitBreaker, ticker: Ticker) -> None:
    fail(breaker, 5)
    breaker.record_success()
    ticker.now += 10
    assert breaker.state is BreakerState.OPEN
    assert breaker.wait_time() == pytest.approx(20.0)


def test_thresholds_come_from_the_policy(ticker: Ticker) -> None:
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=2, open_for=5.0, success_threshold=1), ticker)
    fail(breaker, 2)
    assert breaker.wait_time() == 5.0
    ticker.now += 5
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED


def _half_open(breaker: CircuitBreaker, ticker: Ticker) -> None:
    fail(breaker, 5)
    ticker.now += 30.0
    assert breaker.state is BreakerState.HALF_OPEN


def test_half_open_admits_a_bounded_number_of_probes(breaker: CircuitBreaker, ticker: Ticker) -> None:
    _half_open(breaker, ticker)

    permits = [breaker.admit() for _ in range(100)]

    assert sum(p is not None for p in permits) == BreakerPolicy().half_open_probes
    assert breaker.wait_time() == BreakerPolicy().probe_wait


def test_a_probe_outcome_frees_its_slot(breaker: CircuitBreaker, ticker: Ticker) -> None:
    _half_open(breaker, ticker)
    first, second = breaker.admit(), breaker.admit()
    assert breaker.admit() is None

    breaker.record_success(first)

    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.admit() is not None
    breaker.abandon(second)
    assert breaker.admit() is not None


def test_a_failed_probe_reopens_and_stale_answers_free_no_new_slot(breaker: CircuitBreaker, ticker: Ticker) -> None:
    _half_open(breaker, ticker)
    first, second = breaker.admit(), breaker.admit()
    breaker.record_failure(first)
    assert breaker.state is BreakerState.OPEN
    assert breaker.admit() is None
    ticker.now += 30.0
    held = [breaker.admit(), breaker.admit()]

    breaker.record_failure(second)  # an answer from the previous window: it must not free a slot of this one

    assert breaker.state is BreakerState.OPEN
    ticker.now += 30.0
    assert all(p is not None for p in held)
    assert sum(breaker.admit() is not None for _ in range(10)) == 2


def test_a_closed_breaker_admits_everyone(breaker: CircuitBreaker) -> None:
    assert all(breaker.admit() is not None for _ in range(1000))
