"""Saga definitions as code: the order saga as SPEC section 4 lists it, and the registry of types."""

from datetime import timedelta

import pytest

from orchestrator import definitions
from orchestrator.domain.definition import Call, Registry, SagaDefinition, StepDefinition
from orchestrator.domain.retry import RetryPolicy


def call(service: str = "svc", method: str = "Do") -> Call:
    return Call(service, method, lambda payload, context: {}, timedelta(seconds=1), RetryPolicy())


def definition(saga_type: str = "demo", version: int = 1, names: tuple[str, ...] = ("a",)) -> SagaDefinition:
    steps = tuple(StepDefinition(name, call(), call(method="Undo")) for name in names)
    return SagaDefinition(saga_type, version, steps, timedelta(seconds=5), lambda payload: dict(payload))


def test_order_saga_lists_the_four_steps_with_their_calls_and_timeouts() -> None:
    saga = definitions.order_saga()
    assert saga.saga_type == "order_saga"
    assert saga.version == 1
    assert saga.deadline == timedelta(seconds=60)
    rows = [
        (
            s.name,
            f"{s.action.service}.{s.action.method}",
            f"{s.compensation.service}.{s.compensation.method}" if s.compensation else None,
            s.action.timeout.total_seconds(),
        )
        for s in saga.steps
    ]
    assert rows == [
        ("create_order", "order.CreateOrder", "order.CancelOrder", 5.0),
        ("process_payment", "payment.ProcessPayment", "payment.RefundPayment", 10.0),
        ("reserve_inventory", "inventory.ReserveStock", "inventory.ReleaseStock", 5.0),
        ("confirm_order", "order.ConfirmOrder", None, 5.0),
    ]
    assert all(s.compensation.timeout == timedelta(seconds=15) for s in saga.steps if s.compensation)
    assert saga.services == {"order", "payment", "inventory"}


def test_only_confirm_order_is_forward_only() -> None:
    assert [s.forward_only for s in definitions.order_saga().steps] == [False, False, False, True]


def test_a_definition_needs_steps_with_unique_names() -> None:
    with pytest.raises(ValueError, match="unique step names"):
        definition(names=())
    with pytest.raises(ValueError, match="unique step names"):
        definition(names=("a", "a"))


def test_registry_starts_new_sagas_on_the_latest_version_and_keeps_the_old_ones() -> None:
    v1, v2 = definition(version=1), definition(version=2, names=("a", "b"))
    registry = Registry([v2, v1, definition("other")])
    assert registry.latest("demo") is v2
    assert registry.get("demo", 1) is v1
    assert registry.latest("unknown") is None
    assert registry.types == ["demo", "other"]
    assert registry.services == {"svc"}


def test_registry_refuses_two_definitions_of_the_same_version() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        Registry([definition(), definition()])


def test_registry_deadline_override_keeps_the_steps() -> None:
    registry = definitions.registry(deadline=timedelta(seconds=7))
    saga = registry.latest("order_saga")
    assert saga is not None
    assert saga.deadline == timedelta(seconds=7)
    assert [s.name for s in saga.steps] == [s.name for s in definitions.order_saga().steps]
    assert definitions.registry().latest("order_saga").deadline == timedelta(seconds=60)  # type: ignore[union-attr]


def test_valid_order_payload_is_normalised() -> None:
    payload = {
        "customer_id": "3F1B6C9E-7D2A-4E8B-9C1D-2A3B4C5D6E7F",
        "items": [
            {"sku": "SKU-1", "quantity": 3, "unit_price": "0"},
            {"sku": "a.b_c", "quantity": 1, "unit_price": "9.9"},
        ],
    }
    assert definitions.validate_order_payload(payload) == {
        "customer_id": "3f1b6c9e-7d2a-4e8b-9c1d-2a3b4c5d6e7f",
        "items": [
            {"sku": "SKU-1", "quantity": 3, "unit_price": "0"},
            {"sku": "a.b_c", "quantity": 1, "unit_price": "9.9"},
        ],
        "currency": "USD",
    }


@pytest.mark.parametrize("count", [0, 101])
def test_order_payload_takes_one_to_a_hundred_items(count: int) -> None:
    items = [{"sku": f"S{i}", "quantity": 1, "unit_price": "1.00"} for i in range(count)]
    with pytest.raises(definitions.errors.InvalidRequest) as caught:
        definitions.validate_order_payload({"customer_id": "3f1b6c9e-7d2a-4e8b-9c1d-2a3b4c5d6e7f", "items": items})
    assert caught.value.problems == ["payload.items: must be a list of 1 to 100 items"]
