"""TLS settings and the loopback test that decides what warns or refuses to start."""

from pathlib import Path
from typing import ClassVar

import pytest
from pydantic_settings import SettingsConfigDict

from servicekit import settings, tls

PREFIX = "SAGALINE_SKTLS_"


class _Settings(settings.ServiceSettings):
    model_config = SettingsConfigDict(env_prefix=PREFIX, env_nested_delimiter="__", extra="forbid")
    yaml_section: ClassVar[str | None] = None

    tls: settings.ClientTlsSettings = settings.ClientTlsSettings()


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "::1", "[::1]", "localhost", "LOCALHOST"])
def test_loopback_hosts_are_recognised(host: str) -> None:
    assert tls.is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "10.0.0.7", "order", "localhost.example.com"])  # noqa: S104
def test_every_other_host_counts_as_reachable(host: str) -> None:
    assert not tls.is_loopback(host)


def test_tls_is_off_without_files() -> None:
    assert not settings.TlsSettings().enabled


def test_tls_settings_come_from_nested_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAGALINE_CONFIG", raising=False)
    for name, value in {"CERT_FILE": "/tls/a.crt", "KEY_FILE": "/tls/a.key", "CA_FILE": "/tls/ca.crt"}.items():
        monkeypatch.setenv(f"{PREFIX}TLS__{name}", value)
    monkeypatch.setenv(f"{PREFIX}TLS__SERVER_NAME", "{service}")

    loaded = settings.load(_Settings).tls

    assert loaded.enabled
    assert (loaded.cert_file, loaded.key_file, loaded.ca_file) == (
        Path("/tls/a.crt"),
        Path("/tls/a.key"),
        Path("/tls/ca.crt"),
    )
    assert loaded.server_name == "{service}"


@pytest.mark.parametrize("given", [{"cert_file"}, {"cert_file", "key_file"}, {"ca_file"}, {"key_file", "ca_file"}])
def test_half_a_tls_configuration_is_refused_rather_than_left_plaintext(
    monkeypatch: pytest.MonkeyPatch, given: set[str]
) -> None:
    monkeypatch.delenv("SAGALINE_CONFIG", raising=False)
    for name in given:
        monkeypatch.setenv(f"{PREFIX}TLS__{name.upper()}", f"/tls/{name}")

    with pytest.raises(settings.ConfigError, match="cert_file, key_file and ca_file together"):
        settings.load(_Settings)
