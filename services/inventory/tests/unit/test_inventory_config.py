from datetime import timedelta

import grpc
import pytest

import servicekit.settings
from inventory_service import bootstrap, config, domain
from inventory_service.adapters import grpc_api


def test_defaults_match_the_documented_ports_and_database() -> None:
    settings = config.Settings()

    assert (settings.grpc_host, settings.grpc_port, settings.http_port) == ("0.0.0.0", 50053, 9103)  # noqa: S104
    assert settings.database.url.get_secret_value() == "postgresql://postgres@127.0.0.1:5432/inventory_service"


def test_environment_overrides_use_the_inventory_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGALINE_INVENTORY_GRPC_PORT", "6000")
    monkeypatch.setenv("SAGALINE_INVENTORY_DATABASE__MAX_SIZE", "3")
    monkeypatch.setenv("SAGALINE_INVENTORY_SHUTDOWN_GRACE", "250ms")

    settings = config.Settings()

    assert settings.grpc_port == 6000
    assert settings.database.max_size == 3
    assert settings.shutdown_grace == timedelta(milliseconds=250)
    assert settings.database.url.get_secret_value().endswith("/inventory_service")


def test_a_database_given_in_full_is_taken_as_is() -> None:
    settings = config.Settings(database=servicekit.settings.DatabaseSettings(url="postgresql://db.example/inv"))

    assert settings.database.url.get_secret_value() == "postgresql://db.example/inv"


def test_main_refuses_a_bad_configuration_with_exit_code_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SAGALINE_INVENTORY_HTTP_PORT", "not-a-port")

    assert bootstrap.main() == 2
    assert "http_port" in capsys.readouterr().err


def test_demo_stock_has_the_skus_the_demo_and_benchmark_need() -> None:
    assert bootstrap.DEMO_STOCK == {"SKU-WIDGET": 1_000_000_000, "SKU-GADGET": 100_000, "SKU-RARE": 0}


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (domain.InvalidRequest("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (domain.NotFound("x"), grpc.StatusCode.NOT_FOUND),
        (domain.OutOfStock("x"), grpc.StatusCode.FAILED_PRECONDITION),
        (domain.Tombstoned("x"), grpc.StatusCode.FAILED_PRECONDITION),
        (domain.Conflict("x"), grpc.StatusCode.FAILED_PRECONDITION),
        (domain.InventoryError("x"), grpc.StatusCode.INTERNAL),
    ],
)
def test_each_error_branch_has_one_status_code(error: domain.InventoryError, code: grpc.StatusCode) -> None:
    assert grpc_api.status_code(error) == code
