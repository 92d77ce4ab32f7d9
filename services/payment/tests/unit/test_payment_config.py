import pytest

from payment_service import config
from servicekit import settings


def test_defaults_name_the_payment_ports_and_database() -> None:
    loaded = config.Settings()
    assert (loaded.grpc_port, loaded.http_port) == (50052, 9102)
    assert loaded.database.url.get_secret_value().endswith("/payment_service")


def test_environment_overrides_with_the_payment_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGALINE_PAYMENT_GRPC_PORT", "60052")
    monkeypatch.setenv("SAGALINE_PAYMENT_DATABASE__MAX_SIZE", "3")
    loaded = config.Settings()
    assert loaded.grpc_port == 60052
    assert loaded.database.max_size == 3


def test_a_bad_port_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGALINE_PAYMENT_HTTP_PORT", "70000")
    with pytest.raises(settings.ConfigError, match="http_port"):
        settings.load(config.Settings)
