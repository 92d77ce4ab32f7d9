import itertools
import uuid
from decimal import Decimal

import pytest

from order_service import domain

S = domain.OrderStatus
ALLOWED = {(S.CREATED, S.CONFIRMED), (S.CREATED, S.CANCELLED)}
ALL_PAIRS = list(itertools.product(S, S))


def _draft(*lines: domain.OrderLine, key: str = "k1") -> domain.OrderDraft:
    return domain.OrderDraft(
        idempotency_key=key,
        saga_id=uuid.UUID(int=1),
        customer_id=uuid.UUID(int=2),
        currency="USD",
        lines=lines or (domain.OrderLine("A", 1, Decimal("1.00")),),
    )


def _order(status: domain.OrderStatus) -> domain.Order:
    return domain.Order.place(uuid.UUID(int=9), _draft()).as_of(status)


def test_status_values_are_the_sql_check_list() -> None:
    assert [s.value for s in S] == ["CREATED", "CONFIRMED", "CANCELLED"]
    assert set(domain.ALLOWED_TRANSITIONS) == set(S)


@pytest.mark.parametrize(("source", "target"), sorted(ALLOWED))
def test_allowed_transitions_return_the_target(source: domain.OrderStatus, target: domain.OrderStatus) -> None:
    assert source.transition_to(target) is target


@pytest.mark.parametrize(("source", "target"), sorted(set(ALL_PAIRS) - ALLOWED))
def test_forbidden_transitions_raise(source: domain.OrderStatus, target: domain.OrderStatus) -> None:
    with pytest.raises(domain.IllegalTransitionError, match=f"{source} cannot become {target}"):
        source.transition_to(target)


def test_confirmed_and_cancelled_are_final() -> None:
    assert domain.ALLOWED_TRANSITIONS[S.CONFIRMED] == frozenset()
    assert domain.ALLOWED_TRANSITIONS[S.CANCELLED] == frozenset()


def test_confirming_or_cancelling_twice_is_a_no_op() -> None:
    confirmed = _order(S.CONFIRMED)
    cancelled = _order(S.CANCELLED)
    assert confirmed.confirm() is confirmed
    assert cancelled.cancel() is cancelled


def test_created_order_confirms_and_cancels() -> None:
    assert _order(S.CREATED).confirm().status is S.CONFIRMED
    assert _order(S.CREATED).cancel().status is S.CANCELLED


@pytest.mark.parametrize(("status", "move"), [(S.CANCELLED, "confirm"), (S.CONFIRMED, "cancel")])
def test_final_orders_refuse_the_other_outcome(status: domain.OrderStatus, move: str) -> None:
    with pytest.raises(domain.IllegalTransitionError):
        getattr(_order(status), move)()


@pytest.mark.parametrize(
    ("text", "amount"),
    [("0", "0.00"), ("12.5", "12.50"), ("12.50", "12.50"), ("0.01", "0.01"), ("999999999999.99", "999999999999.99")],
)
def test_money_parses_exact_decimals(text: str, amount: str) -> None:
    assert domain.parse_money(text, "price") == Decimal(amount)
    assert domain.format_money(domain.parse_money(text, "price")) == amount


@pytest.mark.parametrize(
    "text",
    ["", "abc", "NaN", "nan", "Infinity", "-1", "-0.01", "+1", "1.234", "1e3", "1.", ".5", " 1", "1,00",
     "1000000000000"],
)  # fmt: skip
def test_malformed_money_is_invalid(text: str) -> None:
    with pytest.raises(domain.InvalidRequestError, match="price"):
        domain.parse_money(text, "price")


def test_total_is_the_exact_sum_of_quantity_times_price() -> None:
    draft = _draft(domain.OrderLine("A", 3, Decimal("0.10")), domain.OrderLine("B", 2, Decimal("19.99")))
    order = domain.Order.place(uuid.uuid4(), draft)
    assert order.total_amount == Decimal("40.28")
    assert order.status is S.CREATED
    assert domain.format_money(order.total_amount) == "40.28"


@pytest.mark.parametrize(
    ("sku", "quantity", "price", "message"),
    [
        ("", 1, "1.00", "sku"),
        ("   ", 1, "1.00", "sku"),
        ("x" * 129, 1, "1.00", "sku"),
        ("A", 0, "1.00", "quantity"),
        ("A", -1, "1.00", "quantity"),
        ("A", 1_000_001, "1.00", "quantity"),
        ("A", 1, "1.001", "unit_price"),
    ],
)
def test_bad_lines_are_invalid(sku: str, quantity: int, price: str, message: str) -> None:
    with pytest.raises(domain.InvalidRequestError, match=rf"items\[3\]\.{message}"):
        domain.OrderLine.parse(sku, quantity, price, 3)


def test_zero_priced_lines_are_allowed() -> None:
    assert domain.OrderLine.parse("FREE", 2, "0", 0).subtotal == Decimal("0.00")


def test_an_order_needs_lines_but_not_too_many() -> None:
    with pytest.raises(domain.InvalidRequestError, match="at least one item"):
        domain.OrderDraft("k", uuid.uuid4(), uuid.uuid4(), "USD", ())
    many = tuple(domain.OrderLine(f"S{i}", 1, Decimal(1)) for i in range(domain.MAX_LINES + 1))
    with pytest.raises(domain.InvalidRequestError, match="at most"):
        _draft(*many)


def test_a_total_beyond_numeric_14_2_is_invalid() -> None:
    with pytest.raises(domain.InvalidRequestError, match="total exceeds"):
        _draft(domain.OrderLine("A", 2, domain.MAX_AMOUNT))


@pytest.mark.parametrize("value", ["", "not-a-uuid", "1234"])
def test_bad_uuids_are_invalid(value: str) -> None:
    with pytest.raises(domain.InvalidRequestError, match="saga_id"):
        domain.parse_uuid(value, "saga_id")


@pytest.mark.parametrize("value", ["", "x" * 256, "tab\there", "caf\u00e9"])
def test_bad_keys_are_invalid(value: str) -> None:
    with pytest.raises(domain.InvalidRequestError, match="idempotency_key"):
        domain.parse_key(value)


@pytest.mark.parametrize("value", ["", "usd", "US", "USDT", "U5D"])
def test_bad_currencies_are_invalid(value: str) -> None:
    with pytest.raises(domain.InvalidRequestError, match="currency"):
        domain.parse_currency(value)


def test_an_order_recognises_the_request_that_placed_it() -> None:
    draft = _draft()
    order = domain.Order.place(uuid.uuid4(), draft)
    assert order.placed_by(draft)
    assert not order.placed_by(_draft(domain.OrderLine("A", 2, Decimal("1.00"))))
    assert not order.placed_by(_draft(key="other"))


def test_receipts_replay_their_outcome_and_detect_reuse() -> None:
    saga = uuid.uuid4()
    receipt = domain.Receipt(domain.Operation.CONFIRM, "c1", saga, "target", uuid.uuid4())
    assert receipt.result_status is S.CONFIRMED
    assert domain.Receipt(domain.Operation.CANCEL, "x", saga, "t", None).result_status is S.CANCELLED
    receipt.check_replay(saga, "target")
    with pytest.raises(domain.KeyReusedError):
        receipt.check_replay(uuid.uuid4(), "target")
    with pytest.raises(domain.KeyReusedError):
        receipt.check_replay(saga, "other")
