import itertools
import uuid
from decimal import Decimal

import pytest

from payment_service import domain

CUSTOMER = uuid.UUID("33333333-3333-4333-8333-333333333333")
SAGA = uuid.UUID("99999999-9999-4999-8999-999999999999")

ALLOWED = {(domain.PaymentStatus.CAPTURED, domain.PaymentStatus.REFUNDED)}
ALL_PAIRS = list(itertools.product(domain.PaymentStatus, repeat=2))


def capture_command(**overrides: object) -> domain.CaptureCommand:
    fields: dict[str, object] = {
        "idempotency_key": "saga-1:process_payment:action",
        "saga_id": SAGA,
        "customer_id": CUSTOMER,
        "amount": Decimal("12.50"),
        "currency": "USD",
    }
    fields.update(overrides)
    return domain.CaptureCommand(**fields)


def test_status_values_equal_the_sql_check_list() -> None:
    assert [s.value for s in domain.PaymentStatus] == ["CAPTURED", "REFUNDED"]


@pytest.mark.parametrize(("current", "target"), sorted(ALLOWED))
def test_allowed_transitions_are_accepted(current: domain.PaymentStatus, target: domain.PaymentStatus) -> None:
    assert domain.transition(current, target) is target


@pytest.mark.parametrize(("current", "target"), [pair for pair in ALL_PAIRS if pair not in ALLOWED])
def test_forbidden_transitions_are_refused(current: domain.PaymentStatus, target: domain.PaymentStatus) -> None:
    with pytest.raises(domain.IllegalTransition):
        domain.transition(current, target)


@pytest.mark.parametrize(
    ("text", "amount"),
    [("12.50", "12.50"), ("12.5", "12.50"), ("7", "7.00"), ("0.01", "0.01"), ("0", "0.00"), ("999999999999.99", None)],
)
def test_money_parses_exact_decimals_with_two_digits(text: str, amount: str | None) -> None:
    parsed = domain.parse_money(text)
    assert parsed == Decimal(amount or text)
    assert parsed.as_tuple().exponent == -2


@pytest.mark.parametrize(
    "text",
    [
        "",
        "-1.00",
        "+1",
        "1.001",
        "NaN",
        "Infinity",
        "1e3",
        "1,00",
        " 1",
        "1\n",
        ".5",
        "1.",
        "abc",
        "١٢",
        "1000000000000",
    ],
)
def test_malformed_money_is_an_invalid_request(text: str) -> None:
    with pytest.raises(domain.InvalidRequest, match="amount"):
        domain.parse_money(text)


def test_money_is_written_with_two_decimals() -> None:
    assert domain.format_money(Decimal("5")) == "5.00"
    assert domain.format_money(Decimal("1000000000.1")) == "1000000000.10"


def test_uuid_parsing_names_the_field() -> None:
    assert domain.parse_uuid(str(SAGA), "saga_id") == SAGA
    with pytest.raises(domain.InvalidRequest, match="saga_id"):
        domain.parse_uuid("not-a-uuid", "saga_id")


@pytest.mark.parametrize("key", ["", "k" * 256])
def test_missing_or_oversized_keys_are_refused(key: str) -> None:
    with pytest.raises(domain.InvalidRequest, match="idempotency_key"):
        domain.parse_key(key)


def test_a_key_of_255_characters_is_accepted() -> None:
    assert domain.parse_key("k" * 255) == "k" * 255


@pytest.mark.parametrize("currency", ["", "usd", "US", "USDT", "U$D"])
def test_currency_must_be_an_iso_code(currency: str) -> None:
    with pytest.raises(domain.InvalidRequest, match="currency"):
        domain.parse_currency(currency)


def test_zero_amount_payment_is_an_invalid_request() -> None:
    with pytest.raises(domain.InvalidRequest, match="greater than zero"):
        capture_command(amount=Decimal("0.00"))


def test_debit_lowers_the_balance_down_to_exactly_zero() -> None:
    account = domain.Account(CUSTOMER, "carol", Decimal("12.50"))
    assert account.debit(Decimal("12.50"), "USD").balance == Decimal("0.00")


def test_debit_beyond_the_balance_is_declined() -> None:
    account = domain.Account(CUSTOMER, "carol", Decimal("12.49"))
    with pytest.raises(domain.Declined, match="insufficient funds"):
        account.debit(Decimal("12.50"), "USD")


def test_debit_in_another_currency_is_declined() -> None:
    account = domain.Account(CUSTOMER, "carol", Decimal("100.00"))
    with pytest.raises(domain.Declined, match="USD"):
        account.debit(Decimal("1.00"), "EUR")


def test_refunding_a_refunded_payment_is_an_illegal_transition() -> None:
    payment = domain.Payment.capture(uuid.uuid4(), capture_command()).refunded()
    assert payment.status is domain.PaymentStatus.REFUNDED
    with pytest.raises(domain.IllegalTransition):
        payment.refunded()


def test_replay_answers_the_original_capture_even_after_a_refund() -> None:
    payment = domain.Payment.capture(uuid.uuid4(), capture_command())
    assert payment.refunded().replay(capture_command(amount=Decimal("12.5"))) == payment


@pytest.mark.parametrize(
    "change",
    [{"amount": Decimal("13.00")}, {"customer_id": uuid.uuid4()}, {"saga_id": uuid.uuid4()}, {"currency": "EUR"}],
)
def test_replay_with_a_different_request_is_a_reused_key(change: dict[str, object]) -> None:
    payment = domain.Payment.capture(uuid.uuid4(), capture_command())
    with pytest.raises(domain.KeyReused):
        payment.replay(capture_command(**change))


def test_refund_outcome_is_zero_without_a_payment_and_the_amount_with_one() -> None:
    payment = domain.Payment.capture(uuid.uuid4(), capture_command())
    assert domain.RefundOutcome.of(None) == domain.RefundOutcome(None, Decimal("0.00"))
    assert domain.RefundOutcome.of(payment) == domain.RefundOutcome(payment.id, Decimal("12.50"))


def test_stored_refund_replays_only_for_the_same_action() -> None:
    outcome = domain.RefundOutcome(None, domain.ZERO)
    stored = domain.StoredRefund("action-1", outcome)
    assert stored.replay(domain.RefundCommand("refund-1", SAGA, "action-1", "")) == outcome
    with pytest.raises(domain.KeyReused):
        stored.replay(domain.RefundCommand("refund-1", SAGA, "action-2", ""))


@pytest.mark.parametrize(
    ("error", "parent"),
    [
        (domain.Declined, domain.Rejected),
        (domain.Tombstoned, domain.Rejected),
        (domain.KeyReused, domain.Rejected),
        (domain.IllegalTransition, domain.Rejected),
        (domain.InvalidRequest, domain.PaymentError),
        (domain.NotFound, domain.PaymentError),
    ],
)
def test_errors_form_one_hierarchy(error: type[Exception], parent: type[Exception]) -> None:
    assert issubclass(error, parent)
    assert issubclass(parent, domain.PaymentError)
