import pytest

from order_service import config


def test_defaults_are_the_documented_ports_and_database() -> None:
    settings = config.Settings()
    assert (settings.grpc_port, settings.http_port) == (50051, 9101)
    assert settings.database.url.get_secret_value().endswith("/order_service")


def test_environment_overrides_use_the_order_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGALINE_ORDER_GRPC_PORT", "6000")
    monkeypatch.setenv("SAGALINE_ORDER_SHUTDOWN_GRACE", "250ms")
    settings = config.Settings()
    assert settings.grpc_port == 6000
    assert settings.shutdown_grace.total_seconds() == 0.25


def test_overriding_one_database_field_keeps_the_order_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGALINE_ORDER_DATABASE__MAX_SIZE", "20")
    settings = config.Settings()
    assert settings.database.max_size == 20
    assert settings.database.url.get_secret_value() == config.DATABASE_URL


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValueError, match="extra"):
        config.Settings(grpc_prot=1)  # type: ignore[call-arg]
