"""Settings from the environment: durations, `${VAR:default}` expansion, `__` nesting, secrets, loud failures.

File-based sources (the YAML file, `*_FILE` secrets) are covered in the integration suite.
"""

import os
from datetime import timedelta
from typing import ClassVar

import pytest
from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from servicekit import settings

PREFIX = "SAGALINE_SKUNIT_"


class _Settings(settings.ServiceSettings):
    model_config = SettingsConfigDict(env_prefix=PREFIX)
    yaml_section: ClassVar[str | None] = "skunit"

    api_token: SecretStr = SecretStr("")
    poll_interval: settings.Duration = timedelta(seconds=1)
    batch_size: int = 10


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAGALINE_CONFIG", raising=False)
    for name in os.environ:
        if name.startswith(PREFIX):
            monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("100ms", 0.1), ("1m30s", 90), ("1.5h", 5400), ("2", 2), (5, 5), ("250us", 0.00025)],
)
def test_durations_parse_go_style_strings_and_numbers(text: object, seconds: float) -> None:
    assert settings.parse_duration(text) == timedelta(seconds=seconds)


def test_a_timedelta_is_accepted_as_a_duration() -> None:
    assert settings.parse_duration(timedelta(minutes=2)) == timedelta(minutes=2)


@pytest.mark.parametrize(
    "bad", ["abc", "10 parsecs", "-1s", "1s2x", "", True, None, -3, "inf", "nan", 1e300, "99999999999999999h"]
)
def test_bad_durations_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        settings.parse_duration(bad)


def test_durations_serialise_back_to_go_style_strings() -> None:
    dumped = settings.load(_Settings, poll_interval="1m30s").model_dump(mode="json")

    assert dumped["poll_interval"] == "90s"
    assert dumped["database"]["command_timeout"] == "10s"


def test_expand_env_substitutes_set_variables_and_defaults() -> None:
    environ = {"HOST": "db.internal", "EMPTY": ""}

    text = "url: ${HOST}:${PORT:5432} empty=[${EMPTY:fallback}] blank=[${UNSET:}]"

    assert settings.expand_env(text, environ) == "url: db.internal:5432 empty=[] blank=[]"


def test_expand_env_refuses_a_missing_variable_without_default() -> None:
    with pytest.raises(settings.ConfigError, match=r"\$\{DB_PASSWORD\}"):
        settings.expand_env("password: ${DB_PASSWORD}", {})


def test_expand_env_reads_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKUNIT_REGION", "eu-west")

    assert settings.expand_env("${SKUNIT_REGION}") == "eu-west"


def test_defaults_apply_without_any_configuration() -> None:
    loaded = settings.load(_Settings)

    assert loaded.database.max_size == 10
    assert loaded.shutdown_grace == timedelta(seconds=10)
    assert loaded.log.format == "json"


def test_environment_sets_fields_with_the_prefix_and_parses_durations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"{PREFIX}BATCH_SIZE", "25")
    monkeypatch.setenv(f"{PREFIX}POLL_INTERVAL", "250ms")
    monkeypatch.setenv(f"{PREFIX}SHUTDOWN_GRACE", "1m")

    loaded = settings.load(_Settings)

    assert loaded.batch_size == 25
    assert loaded.poll_interval == timedelta(milliseconds=250)
    assert loaded.shutdown_grace == timedelta(minutes=1)


def test_double_underscore_reaches_nested_fields_and_keeps_their_siblings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"{PREFIX}DATABASE__MAX_SIZE", "3")
    monkeypatch.setenv(f"{PREFIX}DATABASE__COMMAND_TIMEOUT", "1500ms")
    monkeypatch.setenv(f"{PREFIX}LOG__LEVEL", "debug")

    loaded = settings.load(_Settings)

    assert loaded.database.max_size == 3
    assert loaded.database.command_timeout == timedelta(seconds=1.5)
    assert loaded.database.min_size == 2
    assert loaded.log.level == "debug"
    assert loaded.log.format == "json"


def test_init_arguments_beat_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"{PREFIX}BATCH_SIZE", "25")

    assert settings.load(_Settings, batch_size=7).batch_size == 7


def test_another_prefix_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGALINE_BATCH_SIZE", "99")

    assert settings.load(_Settings).batch_size == 10


def test_secrets_are_hidden_in_repr_and_str(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"{PREFIX}API_TOKEN", "tok-hunter2")
    monkeypatch.setenv(f"{PREFIX}DATABASE__URL", "postgresql://app:pg-hunter2@db/app")

    loaded = settings.load(_Settings)

    assert "hunter2" not in repr(loaded)
    assert "hunter2" not in str(loaded)
    assert loaded.api_token.get_secret_value() == "tok-hunter2"
    assert loaded.database.url.get_secret_value() == "postgresql://app:pg-hunter2@db/app"


def test_a_bad_value_raises_one_config_error_naming_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"{PREFIX}POLL_INTERVAL", "soon")

    with pytest.raises(settings.ConfigError, match="poll_interval") as info:
        settings.load(_Settings)

    assert "_Settings" in str(info.value)
    assert "soon" in str(info.value)


def test_every_bad_field_is_named_in_the_same_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"{PREFIX}DATABASE__MAX_SIZE", "0")
    monkeypatch.setenv(f"{PREFIX}LOG__LEVEL", "chatty")
    monkeypatch.setenv(f"{PREFIX}SHUTDOWN_GRACE", "inf")

    with pytest.raises(settings.ConfigError) as info:
        settings.load(_Settings)

    message = str(info.value)
    assert "database.max_size" in message
    assert "log.level" in message
    assert "shutdown_grace" in message


def test_unknown_init_arguments_are_refused() -> None:
    with pytest.raises(settings.ConfigError, match="batch_sise"):
        settings.load(_Settings, batch_sise=3)


class _OwnsADatabase(settings.ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SAGALINE_OWNS_", env_nested_delimiter="__", extra="forbid")
    default_database_url: ClassVar[str] = "postgresql://postgres@127.0.0.1:5432/owned"


def test_a_partial_database_override_keeps_the_services_own_database(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _OwnsADatabase().database.url.get_secret_value().endswith("/owned")
    monkeypatch.setenv("SAGALINE_OWNS_DATABASE__MAX_SIZE", "20")
    loaded = _OwnsADatabase()
    assert loaded.database.max_size == 20
    assert loaded.database.url.get_secret_value().endswith("/owned")
    monkeypatch.setenv("SAGALINE_OWNS_DATABASE__URL", "postgresql://x@db:5432/other")
    assert _OwnsADatabase().database.url.get_secret_value().endswith("/other")
