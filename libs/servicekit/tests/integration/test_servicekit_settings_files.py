"""Settings from files: the YAML file named by SAGALINE_CONFIG and `*_FILE` secrets, and how they rank."""

import os
from datetime import timedelta
from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from servicekit import settings

PREFIX = "SAGALINE_SKFILES_"


class _Settings(settings.ServiceSettings):
    model_config = SettingsConfigDict(env_prefix=PREFIX)
    yaml_section: ClassVar[str | None] = "skfiles"

    api_token: SecretStr = SecretStr("")
    poll_interval: settings.Duration = timedelta(seconds=1)
    batch_size: int = 10


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAGALINE_CONFIG", raising=False)
    for name in os.environ:
        if name.startswith(PREFIX):
            monkeypatch.delenv(name)


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "sagaline.yaml"
    monkeypatch.setenv("SAGALINE_CONFIG", str(path))
    return path


YAML = """
other_service:
  batch_size: 999
skfiles:
  batch_size: 50
  poll_interval: 2s
  http_host: ${SKFILES_HOST:127.0.0.1}
  database:
    url: postgresql://app:${SKFILES_DB_PASSWORD}@db:5432/app
    max_size: 4
    connect_timeout: 750ms
"""


def test_yaml_section_is_loaded_with_env_expansion(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config_file.write_text(YAML)
    monkeypatch.setenv("SKFILES_DB_PASSWORD", "s3cret")

    loaded = settings.load(_Settings)

    assert loaded.batch_size == 50
    assert loaded.poll_interval == timedelta(seconds=2)
    assert loaded.http_host == "127.0.0.1"
    assert loaded.database.url.get_secret_value() == "postgresql://app:s3cret@db:5432/app"
    assert loaded.database.max_size == 4
    assert loaded.database.connect_timeout == timedelta(milliseconds=750)


def test_yaml_reference_to_an_unset_variable_fails_at_load(config_file: Path) -> None:
    config_file.write_text(YAML)

    with pytest.raises(settings.ConfigError, match="SKFILES_DB_PASSWORD"):
        settings.load(_Settings)


def test_environment_overrides_yaml_field_by_field(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config_file.write_text(YAML)
    monkeypatch.setenv("SKFILES_DB_PASSWORD", "s3cret")
    monkeypatch.setenv(f"{PREFIX}BATCH_SIZE", "7")
    monkeypatch.setenv(f"{PREFIX}DATABASE__MAX_SIZE", "9")

    loaded = settings.load(_Settings)

    assert loaded.batch_size == 7
    assert loaded.database.max_size == 9
    assert loaded.database.connect_timeout == timedelta(milliseconds=750)
    assert loaded.database.url.get_secret_value() == "postgresql://app:s3cret@db:5432/app"
    assert loaded.poll_interval == timedelta(seconds=2)


def test_without_a_section_the_whole_file_is_read(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config_file.write_text("shutdown_grace: 45s\nlog:\n  format: console\n")

    loaded = settings.load(settings.ServiceSettings)

    assert loaded.shutdown_grace == timedelta(seconds=45)
    assert loaded.log.format == "console"


@pytest.mark.parametrize("text", ["", "other_service:\n  batch_size: 1\n", "skfiles:\n  # batch_size: 3\n"])
def test_an_empty_file_or_section_means_defaults(config_file: Path, text: str) -> None:
    config_file.write_text(text)

    assert settings.load(_Settings).batch_size == 10


def test_a_bad_yaml_value_names_the_field(config_file: Path) -> None:
    config_file.write_text("skfiles:\n  database:\n    max_size: lots\n")

    with pytest.raises(settings.ConfigError, match=r"database\.max_size"):
        settings.load(_Settings)


def test_an_unknown_yaml_key_is_refused(config_file: Path) -> None:
    config_file.write_text("skfiles:\n  bach_size: 3\n")

    with pytest.raises(settings.ConfigError, match="bach_size"):
        settings.load(_Settings)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("skfiles: [unclosed\n", "not valid YAML"),
        ("- a\n- b\n", "mapping at the top level"),
        ("skfiles: 3\n", "must hold a mapping"),
    ],
)
def test_a_malformed_file_is_a_config_error(config_file: Path, text: str, problem: str) -> None:
    config_file.write_text(text)

    with pytest.raises(settings.ConfigError, match=problem):
        settings.load(_Settings)


def test_a_missing_config_file_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGALINE_CONFIG", str(tmp_path / "absent.yaml"))

    with pytest.raises(settings.ConfigError, match=r"cannot read config file .*absent\.yaml"):
        settings.load(_Settings)


def test_secret_files_set_top_level_and_nested_fields(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "token").write_text("tok-from-file\n")
    (tmp_path / "db_url").write_text("postgresql://app:file-pw@db/app\n")
    monkeypatch.setenv(f"{PREFIX}API_TOKEN_FILE", str(tmp_path / "token"))
    monkeypatch.setenv(f"{PREFIX}DATABASE__URL_FILE", str(tmp_path / "db_url"))
    monkeypatch.setenv(f"{PREFIX}DATABASE__MAX_SIZE", "5")

    loaded = settings.load(_Settings)

    assert loaded.api_token.get_secret_value() == "tok-from-file"
    assert loaded.database.url.get_secret_value() == "postgresql://app:file-pw@db/app"
    assert loaded.database.max_size == 5
    assert "file-pw" not in repr(loaded)


def test_secret_files_rank_below_the_environment_and_above_yaml(
    tmp_path: Path, config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_file.write_text("skfiles:\n  api_token: from-yaml\n  batch_size: 3\n")
    (tmp_path / "token").write_text("from-file")
    (tmp_path / "size").write_text("4")
    monkeypatch.setenv(f"{PREFIX}API_TOKEN_FILE", str(tmp_path / "token"))
    monkeypatch.setenv(f"{PREFIX}BATCH_SIZE_FILE", str(tmp_path / "size"))

    assert settings.load(_Settings).api_token.get_secret_value() == "from-file"
    assert settings.load(_Settings).batch_size == 4

    monkeypatch.setenv(f"{PREFIX}API_TOKEN", "from-env")
    assert settings.load(_Settings).api_token.get_secret_value() == "from-env"


def test_an_unreadable_secret_file_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"{PREFIX}DATABASE__URL_FILE", str(tmp_path / "missing"))

    with pytest.raises(settings.ConfigError, match=r"secret file for database\.url"):
        settings.load(_Settings)


def test_references_in_yaml_comments_are_not_expanded(config_file: Path) -> None:
    config_file.write_text(
        "skfiles:\n  # for example: batch_size: ${SKFILES_NOT_SET}\n  batch_size: ${SKFILES_SIZE:7}\n"
    )
    assert settings.load(_Settings).batch_size == 7
