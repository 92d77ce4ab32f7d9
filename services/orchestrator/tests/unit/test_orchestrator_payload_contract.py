"""The order_saga payload contract: whatever a participant would refuse, the orchestrator refuses first.

A saga accepted with 202 and then compensated because the order, payment or inventory service said
INVALID_ARGUMENT is a defect: the client should have had a 422 with the field and the reason. These
tests hold the orchestrator's validation against the participants' own rules, run for real: each
accepted payload is turned into the three step requests by the definition's own request builders,
carried through the protobuf messages the gRPC adapter fills, and parsed by each participant's domain.
"""

from __future__ import annotations

import copy
import uuid
from decimal import Decimal
from typing import Any

import pytest
from google.protobuf import json_format

from inventory_service import domain as inventory
from orchestrator import definitions
from orchestrator.domain import errors
from order_service import domain as order
from payment_service import domain as payment
from sagaline_contracts.inventory.v1 import inventory_pb2
from sagaline_contracts.order.v1 import order_pb2
from sagaline_contracts.payment.v1 import payment_pb2

CUSTOMER = "11111111-1111-4111-8111-111111111111"
SAGA = str(uuid.uuid4())


def payload(*items: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {
        "customer_id": CUSTOMER,
        "items": list(items) or [{"sku": "SKU-WIDGET", "quantity": 2, "unit_price": "9.99"}],
        "currency": "USD",
        **changes,
    }


def item(sku: str = "SKU-WIDGET", quantity: Any = 1, unit_price: Any = "1.00") -> dict[str, Any]:
    return {"sku": sku, "quantity": quantity, "unit_price": unit_price}


def participants_refusal(normalised: dict[str, Any]) -> str | None:
    """Run the saga's three forward requests through the participants' parsing; the first refusal, or None."""
    steps = definitions.order_saga().steps
    try:
        create = _message(order_pb2.CreateOrderRequest(), steps[0].action.request(normalised, {}))
        lines = tuple(order.OrderLine.parse(i.sku, i.quantity, i.unit_price, n) for n, i in enumerate(create.items))
        draft = order.OrderDraft(
            "key", uuid.UUID(SAGA), order.parse_uuid(create.customer_id, "customer_id"),
            order.parse_currency(create.currency), lines,
        )  # fmt: skip
        context = {"total_amount": order.format_money(draft.total)}
        pay = _message(payment_pb2.ProcessPaymentRequest(), steps[1].action.request(normalised, context))
        payment.CaptureCommand(
            "key", uuid.UUID(SAGA), payment.parse_uuid(pay.customer_id, "customer_id"),
            payment.parse_money(pay.amount), payment.parse_currency(pay.currency),
        )  # fmt: skip
        reserve = _message(inventory_pb2.ReserveStockRequest(), steps[2].action.request(normalised, {}))
        inventory.ReserveRequest.parse("key", SAGA, [(i.sku, i.quantity) for i in reserve.items])
    except (order.OrderError, payment.PaymentError, inventory.InventoryError, json_format.ParseError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _message(message: Any, fields: dict[str, Any]) -> Any:
    return json_format.ParseDict({**fields, "idempotency_key": "key", "saga_id": SAGA}, message)


# Payloads a participant refuses, or that a loose check (`$`, `\d`, `match`) would let through.
REFUSED = {
    "currency with a trailing newline": (payload(currency="USD\n"), "payload.currency"),
    "currency with a leading space": (payload(currency=" USD"), "payload.currency"),
    "sku with a trailing newline": (payload(item(sku="SKU-1\n")), "payload.items[0].sku"),
    "sku with a NUL": (payload(item(sku="SKU\x00")), "payload.items[0].sku"),
    "sku of 65 characters": (payload(item(sku="S" * 65)), "payload.items[0].sku"),
    "unit price with a trailing newline": (payload(item(unit_price="1.00\n")), "payload.items[0].unit_price"),
    "unit price in Arabic-Indic digits": (payload(item(unit_price="\u0661\u0662")), "payload.items[0].unit_price"),
    "unit price in full-width digits": (payload(item(unit_price="\uff11")), "payload.items[0].unit_price"),
    "unit price with a plus sign": (payload(item(unit_price="+1.00")), "payload.items[0].unit_price"),
    "unit price with 13 integer digits": (payload(item(unit_price="1" * 13)), "payload.items[0].unit_price"),
    "unit price ending in a point": (payload(item(unit_price="1.")), "payload.items[0].unit_price"),
    "customer id with a trailing newline": (payload(customer_id=CUSTOMER + "\n"), "payload.customer_id"),
    "customer id in braces": (payload(customer_id="{" + CUSTOMER + "}"), "payload.customer_id"),
    "customer id as a URN": (payload(customer_id="urn:uuid:" + CUSTOMER), "payload.customer_id"),
    "customer id with underscores": (payload(customer_id=CUSTOMER.replace("-", "_")), "payload.customer_id"),
    "all prices zero: total 0": (payload(item(unit_price="0"), item("SKU-2", 3, "0.00")), "payload.items"),
    "total beyond numeric(14,2)": (payload(item(quantity=2, unit_price="999999999999.99")), "payload.items"),
    "total beyond numeric(14,2) over many lines": (
        payload(*(item(f"SKU-{n}", 1_000_000, "10000000.00") for n in range(100))),
        "payload.items",
    ),
    "quantity over the order service's maximum": (payload(item(quantity=1_000_001)), "payload.items[0].quantity"),
    "quantity beyond int32": (payload(item(quantity=2**31)), "payload.items[0].quantity"),
    "quantity negative": (payload(item(quantity=-1)), "payload.items[0].quantity"),
    "101 items": (payload(*(item(f"SKU-{n}") for n in range(101))), "payload.items"),
}

# Payloads every participant accepts: the orchestrator must take them too.
ACCEPTED = {
    "a free line in a paid order": payload(item(unit_price="0"), item("SKU-2", 1, "0.01")),
    "the largest total the order service stores": payload(item(quantity=1, unit_price="999999999999.99")),
    "the largest quantity": payload(item(quantity=1_000_000, unit_price="0.01")),
    "a hundred lines": payload(*(item(f"SKU-{n}") for n in range(100))),
    "the same SKU on two lines (inventory sums them)": payload(item(), item()),
    "an upper-case customer id": payload(customer_id=CUSTOMER.upper()),
    "a 64-character sku": payload(item(sku="S" * 64)),
    "one decimal": payload(item(unit_price="9.9")),
}


@pytest.mark.parametrize(("hostile", "field"), REFUSED.values(), ids=REFUSED.keys())
def test_a_payload_a_participant_would_refuse_is_refused_naming_the_field(hostile: dict[str, Any], field: str) -> None:
    with pytest.raises(errors.InvalidRequest) as caught:
        definitions.validate_order_payload(copy.deepcopy(hostile))
    assert [p.split(": ", 1)[0] for p in caught.value.problems] == [field], caught.value.problems
    assert all(p.split(": ", 1)[1] for p in caught.value.problems), "every problem gives a reason"


@pytest.mark.parametrize("accepted", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_a_payload_every_participant_accepts_is_accepted(accepted: dict[str, Any]) -> None:
    normalised = definitions.validate_order_payload(copy.deepcopy(accepted))
    assert participants_refusal(normalised) is None


# Cases a participant takes but the orchestrator refuses on purpose: its contract is narrower than the
# participant's check (a SKU that is not the catalogue's shape, a UUID not in canonical form, digits a
# `\d` matches outside ASCII, a NUL the order service's own database would refuse).
STRICTER_ON_PURPOSE = {
    "sku with a trailing newline",
    "sku with a NUL",
    "sku of 65 characters",
    "unit price in Arabic-Indic digits",
    "unit price in full-width digits",
    "customer id in braces",
    "customer id as a URN",
}


@pytest.mark.parametrize("name", REFUSED.keys())
def test_each_refused_case_is_one_a_participant_refuses_or_a_deliberate_narrowing(name: str) -> None:
    """The other direction, so REFUSED stays honest and a participant that changes its rules is noticed."""
    refusal = participants_refusal(_as_the_wire_would_carry(REFUSED[name][0]))
    if name in STRICTER_ON_PURPOSE:
        assert refusal is None, f"a participant now refuses {name!r} too: {refusal}"
    else:
        assert refusal is not None, f"no participant refuses {name!r}"


def _as_the_wire_would_carry(hostile: dict[str, Any]) -> dict[str, Any]:
    """The raw payload as the step requests would carry it, had the orchestrator let it through."""
    return {
        "customer_id": hostile["customer_id"],
        "currency": hostile["currency"],
        "items": [{**i, "unit_price": str(i["unit_price"])} for i in hostile["items"]],
    }


def test_every_problem_of_a_payload_is_listed_at_once_in_field_order() -> None:
    hostile = payload(
        item(sku="SKU-1\n", quantity=0, unit_price="1.00\n"), item("SKU-2", 1, "1e2"), customer_id="x", currency="usd"
    )
    with pytest.raises(errors.InvalidRequest) as caught:
        definitions.validate_order_payload(hostile)
    assert [p.split(": ", 1)[0] for p in caught.value.problems] == [
        "payload.customer_id",
        "payload.currency",
        "payload.items[0].sku",
        "payload.items[0].quantity",
        "payload.items[0].unit_price",
        "payload.items[1].unit_price",
    ]


def test_a_zero_total_names_the_reason() -> None:
    with pytest.raises(errors.InvalidRequest) as caught:
        definitions.validate_order_payload(payload(item(unit_price="0.00")))
    assert caught.value.problems == [
        "payload.items: the order total must be greater than 0 (the payment service refuses 0)"
    ]


def test_an_oversized_total_names_the_total_and_the_limit() -> None:
    with pytest.raises(errors.InvalidRequest) as caught:
        definitions.validate_order_payload(payload(item(quantity=3, unit_price="500000000000.00")))
    assert caught.value.problems == [
        "payload.items: the order total 1500000000000.00 exceeds the maximum 999999999999.99"
    ]
    assert Decimal("999999999999.99") == order.MAX_AMOUNT, "the limit is the order service's"
