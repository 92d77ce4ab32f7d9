"""The saga types this orchestrator runs, defined as code (SPEC section 4).

`order_saga` v1: create the order, take the payment, reserve the stock, confirm the order. The total
charged is the one the order service computed (step 1's output), never a number from the client.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from decimal import Decimal
from typing import Any, Final

from orchestrator.domain import errors
from orchestrator.domain.definition import Call, Json, Registry, SagaDefinition, StepDefinition
from orchestrator.domain.retry import RetryPolicy

ORDER_SAGA: Final = "order_saga"

# The payload is refused here, with 422 and nothing written, whenever a participant would refuse it
# later: a saga accepted only to be compensated is a worse answer than a precise 422. Each limit
# names the participant rule it mirrors. Patterns are applied with `fullmatch` and spell digits as
# [0-9]: `$` also matches before a final newline, and `\d` also matches non-ASCII digits.
_MAX_ITEMS: Final = 100  # order MAX_LINES; inventory takes at most 100 distinct SKUs
_MAX_QUANTITY: Final = 1_000_000  # order MAX_QUANTITY (inventory sums duplicates: 100 x 1e6 < 2**31)
_SKU: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # stricter than order (128) and inventory (255)
_CURRENCY: Final = re.compile(r"[A-Z]{3}")  # order, payment and the orders.currency CHECK
_UUID: Final = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# The participants' money format: plain digits, at most 12 before and 2 after the point (numeric(14,2)).
_MONEY: Final = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,2})?")
# orders.total_amount and payments.amount are numeric(14,2); the order service refuses a larger total.
_MAX_TOTAL: Final = Decimal("999999999999.99")

# Forward steps: SPEC defaults (3 retries, 100 ms to 10 s, x2, 10% jitter).
ACTION_RETRY: Final = RetryPolicy()
# Compensations must eventually happen: more patience before a person is asked to help.
COMPENSATION_RETRY: Final = RetryPolicy(max_retries=8, initial=timedelta(milliseconds=200))
# A forward-only step is retried until it succeeds.
FORWARD_ONLY_RETRY: Final = RetryPolicy(max_retries=None, maximum=timedelta(seconds=5))


def validate_order_payload(payload: Any) -> Json:
    """Check an order_saga payload and return its normalised form.

    Everything the order, payment or inventory service would refuse is refused here: unknown fields,
    a customer id that is not a UUID, a currency, SKU or price that matches only loosely (a trailing
    newline, non-ASCII digits), quantities and item counts out of range, and a total the payment
    service refuses (zero) or the order service cannot store (beyond numeric(14,2)). Unit prices may
    be zero, as the order service allows, as long as the total is positive.

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
    if not isinstance(customer, str) or not _UUID.fullmatch(customer):
        problems.append("payload.customer_id: must be a UUID string such as 11111111-1111-4111-8111-111111111111")
    currency = payload.get("currency", "USD")
    if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
        problems.append("payload.currency: must be a 3-letter upper-case code such as USD")
    items = payload.get("items")
    if not isinstance(items, list) or not 1 <= len(items) <= _MAX_ITEMS:
        problems.append(f"payload.items: must be a list of 1 to {_MAX_ITEMS} items")
        items = []
    before_items = len(problems)
    lines = [_validate_item(i, item, problems) for i, item in enumerate(items)]
    if items and len(problems) == before_items:  # a total of malformed lines would only add noise
        _check_total(lines, problems)
    if problems:
        raise errors.InvalidRequest("invalid order_saga payload", problems)
    return {
        "customer_id": str(uuid.UUID(customer)),
        "items": [{"sku": sku, "quantity": quantity, "unit_price": str(price)} for sku, quantity, price in lines],
        "currency": currency,
    }


def _validate_item(index: int, item: Any, problems: list[str]) -> tuple[str, int, Decimal]:
    """One item as (sku, quantity, unit price); on a problem, the problem is recorded and the line is junk."""
    where = f"payload.items[{index}]"
    if not isinstance(item, Mapping):
        problems.append(f"{where}: must be an object")
        return "", 0, Decimal(0)
    if set(item) - {"sku", "quantity", "unit_price"}:
        problems.append(f"{where}: unknown fields {sorted(set(item) - {'sku', 'quantity', 'unit_price'})}")
    sku, quantity, price = item.get("sku"), item.get("quantity"), item.get("unit_price")
    if not isinstance(sku, str) or not _SKU.fullmatch(sku):
        problems.append(f"{where}.sku: must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
        sku = ""
    if not isinstance(quantity, int) or isinstance(quantity, bool) or not 1 <= quantity <= _MAX_QUANTITY:
        problems.append(f"{where}.quantity: must be an integer from 1 to {_MAX_QUANTITY}")
        quantity = 0
    amount = _money(price)
    if amount is None:
        problems.append(
            f'{where}.unit_price: must be a decimal string >= 0, at most 12 digits and 2 decimals, e.g. "9.99"'
        )
    return sku, quantity, amount if amount is not None else Decimal(0)


def _check_total(lines: list[tuple[str, int, Decimal]], problems: list[str]) -> None:
    """The total the order service will compute must be one the payment service takes and both can store."""
    total = sum((quantity * price for _, quantity, price in lines), Decimal(0))
    if total <= 0:
        problems.append("payload.items: the order total must be greater than 0 (the payment service refuses 0)")
    elif total > _MAX_TOTAL:
        problems.append(f"payload.items: the order total {total} exceeds the maximum {_MAX_TOTAL}")


def _money(value: Any) -> Decimal | None:
    if not isinstance(value, str) or not _MONEY.fullmatch(value):
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


@dataclass(frozen=True)
class StepTuning:
    """An operator's overrides of one step's calls (config `steps.<name>`); what is absent keeps the definition's.

    `retry` and `compensation_retry` map `RetryPolicy` field names to values and replace only those fields.
    """

    timeout: timedelta | None = None
    retry: Mapping[str, Any] = field(default_factory=dict)
    compensation_timeout: timedelta | None = None
    compensation_retry: Mapping[str, Any] = field(default_factory=dict)


def _policy(base: RetryPolicy, *overrides: Mapping[str, Any], where: str) -> RetryPolicy:
    policy = base
    for override in overrides:
        policy = replace(policy, **override)
    if policy.initial <= timedelta(0) or policy.initial > policy.maximum:
        raise ValueError(
            f"{where}: the retry policy needs 0 < initial <= maximum, got {policy.initial} and {policy.maximum}"
        )
    return policy


def _tuned_call(call: Call, timeout: timedelta | None, *retries: Mapping[str, Any], where: str) -> Call:
    if timeout is not None and timeout <= timedelta(0):
        raise ValueError(f"{where}: the timeout must be positive")
    return replace(call, timeout=timeout or call.timeout, retry=_policy(call.retry, *retries, where=where))


def tune(
    definition: SagaDefinition, action_retry: Mapping[str, Any], steps: Mapping[str, StepTuning]
) -> SagaDefinition:
    """The definition with the operator's settings applied to its calls.

    `action_retry` replaces fields of the retry policy of every action that has a compensation (SPEC
    section 6's policy); a forward-only step keeps retrying until it succeeds unless its own entry in
    `steps` says otherwise. Entries of `steps` naming no step of this definition are ignored here
    (`registry` refuses names no definition has).

    Raises:
        ValueError: a resulting timeout or retry policy is not usable.
    """
    tuned = []
    for step in definition.steps:
        tuning = steps.get(step.name, StepTuning())
        where = f"{definition.saga_type}.{step.name}"
        shared = {} if step.forward_only else action_retry
        action = _tuned_call(step.action, tuning.timeout, shared, tuning.retry, where=where)
        compensation = step.compensation and _tuned_call(
            step.compensation, tuning.compensation_timeout, tuning.compensation_retry, where=f"{where} compensation"
        )
        tuned.append(replace(step, action=action, compensation=compensation))
    return replace(definition, steps=tuple(tuned))


def registry(
    deadline: timedelta | None = None,
    *,
    action_retry: Mapping[str, Any] | None = None,
    steps: Mapping[str, StepTuning] | None = None,
) -> Registry:
    """Every saga type this release runs, with the operator's settings applied.

    `deadline` overrides the definitions' deadline; `action_retry` and `steps` are applied by `tune`.

    Raises:
        ValueError: `steps` names a step no definition has, or a setting is not usable.
    """
    known = [order_saga()]
    unknown = set(steps or {}) - {s.name for d in known for s in d.steps}
    if unknown:
        names = sorted({s.name for d in known for s in d.steps})
        raise ValueError(f"steps: no saga has a step named {sorted(unknown)}; the steps are {names}")
    tuned = [tune(d, action_retry or {}, steps or {}) for d in known]
    if deadline is not None:
        tuned = [replace(d, deadline=deadline) for d in tuned]
    return Registry(tuned)
