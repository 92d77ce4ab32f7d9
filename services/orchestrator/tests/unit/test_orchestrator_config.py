"""Operator settings of the engine: retry policies, per-step timeouts, breakers and HTTP limits (SPEC section 6).

Loaded from SAGALINE_* variables the way a process loads them, validated at startup, and applied to the
saga definitions the engine runs. The YAML file and its merging with variables are covered in
tests/integration/test_orchestrator_it_config.py (they read a file).
"""

import os
from datetime import timedelta

import pytest

from orchestrator import bootstrap, config, definitions, engine
from orchestrator.domain.breaker import BreakerPolicy
from orchestrator.domain.definition import StepDefinition
from orchestrator.domain.retry import RetryPolicy
from servicekit import settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("SAGALINE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("SAGALINE_AUTH", "off")


def load(monkeypatch: pytest.MonkeyPatch, **env: str) -> config.Settings:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return settings.load(config.Settings)


def steps_of(cfg: config.Settings) -> dict[str, StepDefinition]:
    definition = bootstrap.saga_registry(cfg).latest(definitions.ORDER_SAGA)
    assert definition is not None
    return {step.name: step for step in definition.steps}


def test_without_settings_the_definitions_keep_spec_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load(monkeypatch)
    steps = steps_of(cfg)
    assert steps["create_order"].action.retry == RetryPolicy()
    assert RetryPolicy() == RetryPolicy(3, timedelta(milliseconds=100), timedelta(seconds=10), 2.0, 0.1)
    assert [s.action.timeout.total_seconds() for s in steps.values()] == [5.0, 10.0, 5.0, 5.0]
    assert steps["confirm_order"].action.retry.max_retries is None  # forward-only: until it succeeds
    assert cfg.breaker.policy() == BreakerPolicy(5, 30.0, 2)
    assert cfg.http_timeouts == config.HttpTimeoutSettings(
        read=timedelta(seconds=30), write=timedelta(seconds=30), keep_alive=timedelta(seconds=5)
    )
    assert (cfg.database.min_size, cfg.database.max_size) == (2, 10)


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"SAGALINE_STEPS__CREATE_ORDER__TIMEOUT": "0s"}, "steps.create_order"),
        ({"SAGALINE_STEPS__CREATE_ORDER__TIMEOUT": "soon"}, "steps.create_order.timeout"),
        ({"SAGALINE_STEPS__CREATE_ORDER__TIMOUT": "1s"}, "steps.create_order.timout"),
        ({"SAGALINE_RETRY__MAX_RETRIES": "-1"}, "retry.max_retries"),
        ({"SAGALINE_RETRY__JITTER": "1.5"}, "retry.jitter"),
        ({"SAGALINE_RETRY__MULTIPLIER": "0.5"}, "retry.multiplier"),
        ({"SAGALINE_RETRY__INITIAL": "5s", "SAGALINE_RETRY__MAXIMUM": "1s"}, "retry"),
        ({"SAGALINE_BREAKER__SERVICES__SHIPPING__OPEN_FOR": "1s"}, "breaker"),
        ({"SAGALINE_BREAKER__SERVICES__PAYMENT__FAILURE_THRESHOLD": "0"}, "breaker.services.payment"),
        ({"SAGALINE_HTTP_TIMEOUTS__READ": "0s"}, "http_timeouts"),
        ({"SAGALINE_DATABASE__MAX_SIZE": "0"}, "database.max_size"),
    ],
)
def test_a_bad_value_is_refused_at_startup_naming_its_field(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], field: str
) -> None:
    with pytest.raises(settings.ConfigError, match=field.replace(".", r"\.")):
        load(monkeypatch, **env)


def test_a_step_no_saga_has_is_refused_at_startup(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load(monkeypatch, SAGALINE_STEPS__SHIP_PARCEL__TIMEOUT="5s")
    with pytest.raises(settings.ConfigError, match=r"ship_parcel.*create_order"):
        bootstrap.saga_registry(cfg)


def test_a_policy_whose_initial_delay_passes_the_definitions_maximum_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each field is valid alone; with confirm_order's own 5 s maximum the policy is not.
    cfg = load(monkeypatch, SAGALINE_STEPS__CONFIRM_ORDER__RETRY__INITIAL="10s")
    with pytest.raises(settings.ConfigError, match=r"confirm_order.*initial <= maximum"):
        bootstrap.saga_registry(cfg)


def test_the_deadline_override_keeps_the_tuned_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load(monkeypatch, SAGALINE_SAGA__DEADLINE="2m", SAGALINE_STEPS__CREATE_ORDER__TIMEOUT="2s")
    definition = bootstrap.saga_registry(cfg).latest(definitions.ORDER_SAGA)
    assert definition is not None
    assert definition.deadline == timedelta(minutes=2)
    assert definition.steps[0].action.timeout == timedelta(seconds=2)


def test_breakers_use_the_policy_of_their_service() -> None:
    now = [0.0]
    breakers = engine.Breakers(BreakerPolicy(5, 30.0, 2), lambda: now[0], {"payment": BreakerPolicy(1, 5.0, 1)})
    breakers["payment"].record_failure()
    breakers["order"].record_failure()
    assert breakers["payment"].state.value == "open"  # one failure is its threshold
    assert breakers["order"].state.value == "closed"  # the shared threshold is five
    now[0] = 5.0
    assert breakers["payment"].state.value == "half_open"  # its own 5 s open window


def test_variables_set_each_steps_timeout_and_retry_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load(
        monkeypatch,
        SAGALINE_RETRY__MAX_RETRIES="5",
        SAGALINE_RETRY__INITIAL="200ms",
        SAGALINE_STEPS__PROCESS_PAYMENT__TIMEOUT="20s",
        SAGALINE_STEPS__PROCESS_PAYMENT__RETRY__MAX_RETRIES="1",
        SAGALINE_STEPS__PROCESS_PAYMENT__COMPENSATION_TIMEOUT="30s",
        SAGALINE_STEPS__PROCESS_PAYMENT__COMPENSATION_RETRY__MAX_RETRIES="12",
        SAGALINE_STEPS__CONFIRM_ORDER__RETRY__MAXIMUM="1m",
    )
    steps = steps_of(cfg)
    shared = RetryPolicy(5, timedelta(milliseconds=200))
    assert steps["create_order"].action.retry == shared
    assert steps["reserve_inventory"].action.retry == shared
    payment = steps["process_payment"]
    assert payment.action.timeout == timedelta(seconds=20)
    assert payment.action.retry == RetryPolicy(1, timedelta(milliseconds=200))  # its own field over the shared
    assert payment.compensation is not None
    assert payment.compensation.timeout == timedelta(seconds=30)
    assert payment.compensation.retry.max_retries == 12
    # The shared policy is for steps that can be undone: the point of no return keeps retrying.
    confirm = steps["confirm_order"].action.retry
    assert (confirm.max_retries, confirm.maximum) == (None, timedelta(minutes=1))


def test_a_whole_section_may_come_as_one_json_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load(
        monkeypatch,
        SAGALINE_STEPS='{"reserve_inventory": {"timeout": "1500ms", "retry": {"max_retries": 4}}}',
        SAGALINE_BREAKER__SERVICES='{"payment": {"open_for": "5s"}}',
        SAGALINE_BREAKER__SERVICES__INVENTORY__FAILURE_THRESHOLD="10",
    )
    steps = steps_of(cfg)
    assert steps["reserve_inventory"].action.timeout == timedelta(milliseconds=1500)
    assert steps["reserve_inventory"].action.retry.max_retries == 4
    assert cfg.breaker.policy("payment") == BreakerPolicy(5, 5.0, 2)
    assert cfg.breaker.policy("inventory") == BreakerPolicy(10, 30.0, 2)
    assert cfg.breaker.policy("order") == BreakerPolicy(5, 30.0, 2)
