"""The retry policy: exponential backoff with jitter, as a pure function of the attempt and a random number."""

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator import definitions
from orchestrator.domain.retry import RetryPolicy

NO_JITTER = 0.5  # rand=0.5 puts the spread at exactly zero
ALMOST_ONE = 1.0 - 1e-12


def seconds(delay: timedelta) -> float:
    return delay.total_seconds()


@pytest.mark.parametrize(
    ("retry", "expected"),
    [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.6), (6, 3.2), (7, 6.4), (8, 10.0), (9, 10.0), (40, 10.0)],
)
def test_delay_doubles_from_100ms_and_is_capped_at_10s(retry: int, expected: float) -> None:
    assert seconds(RetryPolicy().delay(retry, NO_JITTER)) == pytest.approx(expected)


def test_defaults_are_the_spec_defaults() -> None:
    policy = RetryPolicy()
    assert policy.max_retries == 3
    assert policy.initial == timedelta(milliseconds=100)
    assert policy.maximum == timedelta(seconds=10)
    assert policy.multiplier == 2.0
    assert policy.jitter == 0.1


@pytest.mark.parametrize("retry", [1, 2, 3, 8, 20])
def test_jitter_spreads_the_delay_by_ten_percent_either_way(retry: int) -> None:
    policy = RetryPolicy()
    base = seconds(policy.delay(retry, NO_JITTER))
    assert seconds(policy.delay(retry, 0.0)) == pytest.approx(0.9 * base)
    assert seconds(policy.delay(retry, ALMOST_ONE)) == pytest.approx(1.1 * base)
    assert seconds(policy.delay(retry, 0.25)) == pytest.approx(0.95 * base)


@settings(database=None)
@given(retry=st.integers(min_value=1, max_value=100), rand=st.floats(min_value=0.0, max_value=1.0, exclude_max=True))
def test_delay_always_stays_within_the_jitter_band_of_the_capped_base(retry: int, rand: float) -> None:
    delay = seconds(RetryPolicy().delay(retry, rand))
    base = min(0.1 * 2 ** (retry - 1), 10.0)
    assert 0.9 * base - 1e-6 <= delay <= 1.1 * base + 1e-6


def test_delay_is_never_negative_even_with_full_jitter() -> None:
    assert RetryPolicy(jitter=1.0).delay(1, 0.0) == timedelta(0)


def test_three_retries_allow_four_attempts() -> None:
    policy = RetryPolicy()
    assert [policy.exhausted(attempts) for attempts in range(1, 6)] == [False, False, False, True, True]


def test_no_retries_is_exhausted_after_the_first_attempt() -> None:
    assert RetryPolicy(max_retries=0).exhausted(1)


def test_unlimited_policy_is_never_exhausted() -> None:
    policy = RetryPolicy(max_retries=None)
    assert not any(policy.exhausted(attempts) for attempts in (1, 4, 1_000, 10**9))


def test_order_saga_policies_suit_their_steps() -> None:
    definition = definitions.order_saga()
    assert all(step.action.retry == RetryPolicy() for step in definition.steps[:3])
    confirm = definition.step(3)
    assert confirm.forward_only
    assert confirm.action.retry.max_retries is None
    assert seconds(confirm.action.retry.delay(40, NO_JITTER)) == pytest.approx(5.0)
    compensations = [step.compensation for step in definition.steps if step.compensation]
    assert all(c.retry.max_retries == 8 for c in compensations)


def test_an_unlimited_policy_far_past_the_cap_still_waits_the_maximum() -> None:
    assert RetryPolicy(max_retries=None).delay(2000, 0.5) == timedelta(seconds=10)
