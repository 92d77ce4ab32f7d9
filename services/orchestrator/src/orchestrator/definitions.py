"""The saga types this orchestrator runs, defined as code (SPEC section 4).

`order_saga` v1: create the order, take the payment, reserve the stock, confirm the order. The total
charged is the one the order service computed (step 1's output), never a number from the client.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from datetime import timedelta
from decimal import Decimal
from typing import Any, Final

from orchestrator.domain import errors
from orchestrator.domain.definition import Call, Json, Registry, SagaDefinition, StepDefinition
from orchestrator.domain.retry import RetryPolicy

ORDER_SAGA: Final = "order_saga"
_MAX_ITEMS: Final = 100
_SKU: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_CURRENCY: Final = re.compile(r"^[A-Z]{3}$")
# The participants' money format: plain digits, at most 12 before and 2 after the point.
_MONEY: Final = re.compile(r"^\d{1,12}(\.\d{1,2})?$")

# Forward steps: SPEC defaults (3 retries, 100 ms to 10 s, x2, 10% jitter).
ACTION_RETRY: Final = RetryPolicy()
# Compensations must eventually happen: more patience before a person is asked to help.
COMPENSATION_RETRY: Final = RetryPolicy(max_retries=8, initial=timedelta(milliseconds=200))
# A forward-only step is retried until it succeeds.
FORWARD_ONLY_RETRY: Final = RetryPolicy(max_retries=None, maximum=timedelta(seconds=5))


def validate_order_payload(payload: Any) -> Json:
    """Check an order_saga payload and return its normalised form.

    Raises:
        errors.InvalidRequest: with every problem found, each naming its field.
    """
    if not isinstance(payload, Mapping):
        raise errors.InvalidRequest("payload must be an object", ["payload: must be an object"])
    problems: list[str] = []
    unknown = set(payload) - {"customer_id", "items", "currency"}
    if unknown:
        problems.append(f"payload: unknown fields {sorted(unknown)}")
    customer = payload.get("customer_id")
    try:
        customer = str(uuid.UUID(str(customer))) if isinstance(customer, str) else None
    except ValueError:
        customer = None
    if customer is None:
        problems.append("payload.customer_id: must be a UUID string")
    currency = payload.get("currency", "USD")
    if not isinstance(currency, str) or not _CURRENCY.match(currency):
        problems.append("payload.currency: must be a 3-letter upper-case code such as USD")
    items = payload.get("items")
    if not isinstance(items, list) or not 1 <= len(items) <= _MAX_ITEMS:
        problems.append(f"payload.items: must be a list of 1 to {_MAX_ITEMS} items")
        items = []
    clean_items = [_validate_item(i, item, problems) for i, item in enumerate(items)]
    if problems:
        raise errors.InvalidRequest("invalid order_saga payload", problems)
    return {"customer_id": customer, "items": clean_items, "currency": currency}


def _validate_item(index: int, item: Any, problems: list[str]) -> Json:
    where = f"payload.items[{index}]"
    if not isinstance(item, Mapping):
        problems.append(f"{where}: must be an object")
        return {}
    if set(item) - {"sku", "quantity", "unit_price"}:
        problems.append(f"{where}: unknown fields {sorted(set(item) - {'sku', 'quantity', 'unit_price'})}")
    sku, quantity, price = item.get("sku"), item.get("quantity"), item.get("unit_price")
    if not isinstance(sku, str) or not _SKU.match(sku):
        problems.append(f"{where}.sku: must be 1-64 letters, digits, '.', '_' or '-'")
    if not isinstance(quantity, int) or isinstance(quantity, bool) or not 1 <= quantity <= 1_000_000:
        problems.append(f"{where}.quantity: must be an integer from 1 to 1000000")
    amount = _money(price)
    if amount is None:
        problems.append(f'{where}.unit_price: must be a decimal string >= 0 with at most 2 decimals, e.g. "9.99"')
    return {"sku": sku, "quantity": quantity, "unit_price": str(amount) if amount is not None else price}


def _money(value: Any) -> Decimal | None:
    if not isinstance(value, str) or not _MONEY.match(value):
        return None
    return Decimal(value)


def _create_order(payload: Mapping[str, Any], _: Mapping[str, Any]) -> Json:
    return {"customer_id": payload["customer_id"], "items": payload["items"], "currency": payload["currency"]}


def _order_output(response: Mapping[str, Any]) -> Json:
    order = response["order"]
    return {"order_id": order["order_id"], "total_amount": order["total_amount"]}


def _process_payment(payload: Mapping[str, Any], context: Mapping[str, Any]) -> Json:
    return {"customer_id": payload["customer_id"], "amount": context["total_amount"], "currency": payload["currency"]}


def _payment_output(response: Mapping[str, Any]) -> Json:
    return {"payment_id": response["payment"]["payment_id"]}


def _reserve_stock(payload: Mapping[str, Any], _: Mapping[str, Any]) -> Json:
    return {"items": [{"sku": i["sku"], "quantity": i["quantity"]} for i in payload["items"]]}


def _reservation_output(response: Mapping[str, Any]) -> Json:
    return {"reservation_id": response["reservation"]["reservation_id"]}


def _confirm_order(_: Mapping[str, Any], context: Mapping[str, Any]) -> Json:
    return {"order_id": context["order_id"]}


def _compensation(reason: str) -> Any:
    def build(_: Mapping[str, Any], __: Mapping[str, Any]) -> Json:
        return {"reason": reason}

    return build


def order_saga(compensation_timeout: timedelta = timedelta(seconds=15)) -> SagaDefinition:
    """`order_saga` v1 as SPEC section 4 lists it."""

    def undo(service: str, method: str) -> Call:
        return Call(service, method, _compensation("saga compensation"), compensation_timeout, COMPENSATION_RETRY)

    seconds = timedelta(seconds=1)
    steps = (
        StepDefinition(
            "create_order",
            Call("order", "CreateOrder", _create_order, 5 * seconds, ACTION_RETRY, _order_output),
            undo("order", "CancelOrder"),
        ),
        StepDefinition(
            "process_payment",
            Call("payment", "ProcessPayment", _process_payment, 10 * seconds, ACTION_RETRY, _payment_output),
            undo("payment", "RefundPayment"),
        ),
        StepDefinition(
            "reserve_inventory",
            Call("inventory", "ReserveStock", _reserve_stock, 5 * seconds, ACTION_RETRY, _reservation_output),
            undo("inventory", "ReleaseStock"),
        ),
        StepDefinition("confirm_order", Call("order", "ConfirmOrder", _confirm_order, 5 * seconds, FORWARD_ONLY_RETRY)),
    )
    return SagaDefinition(ORDER_SAGA, 1, steps, 60 * seconds, validate_order_payload, compensation_timeout)


def registry(deadline: timedelta | None = None) -> Registry:
    """Every saga type this release runs; `deadline` overrides the definitions' deadline (tests, tuning)."""
    definition = order_saga()
    if deadline is not None:
        definition = SagaDefinition(
            definition.saga_type, definition.version, definition.steps, deadline, definition.validate
        )
    return Registry([definition])
