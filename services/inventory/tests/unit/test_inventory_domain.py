import itertools
import uuid

import pytest

from inventory_service import domain

SAGA = uuid.UUID("11111111-1111-4111-8111-111111111111")
OTHER_SAGA = uuid.UUID("22222222-2222-4222-8222-222222222222")
Status = domain.ReservationStatus


def reserve_request(*items: tuple[str, int], key: str = "k1", saga: uuid.UUID = SAGA) -> domain.ReserveRequest:
    return domain.ReserveRequest.parse(key, str(saga), items)


def placed(*items: tuple[str, int], key: str = "k1") -> domain.Reservation:
    request = reserve_request(*items, key=key)
    return domain.Reservation.place(uuid.uuid4(), request, {sku: 10 for sku, _ in items})


def test_duplicate_skus_are_summed_and_lines_sorted_by_sku() -> None:
    lines = domain.normalize_lines([("B", 2), ("A", 1), ("B", 3)])

    assert lines == (domain.Line("A", 1), domain.Line("B", 5))


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([], "at least one item"),
        ([("", 1)], "needs a sku"),
        ([("x" * 256, 1)], "longer than"),
        ([("A", 0)], "at least 1"),
        ([("A", -3)], "at least 1"),
        ([(f"S{i}", 1) for i in range(domain.MAX_LINES + 1)], "at most"),
        ([("A", domain.MAX_QUANTITY), ("A", 1)], "exceeds"),
    ],
)
def test_malformed_items_are_invalid(items: list[tuple[str, int]], message: str) -> None:
    with pytest.raises(domain.InvalidRequest, match=message):
        domain.normalize_lines(items)


@pytest.mark.parametrize(
    ("key", "saga_id", "message"),
    [
        ("", str(SAGA), "idempotency_key is required"),
        ("k" * 256, str(SAGA), "longer than"),
        ("k", "", "saga_id is required"),
        ("k", "not-a-uuid", "must be a UUID"),
    ],
)
def test_reserve_request_needs_a_key_and_a_uuid_saga(key: str, saga_id: str, message: str) -> None:
    with pytest.raises(domain.InvalidRequest, match=message):
        domain.ReserveRequest.parse(key, saga_id, [("A", 1)])


@pytest.mark.parametrize(
    ("key", "action_key", "reason", "message"),
    [
        ("", "a", "", "idempotency_key is required"),
        ("r", "", "", "action_idempotency_key is required"),
        ("r", "a", "x" * (domain.MAX_REASON_LENGTH + 1), "reason is longer"),
    ],
)
def test_release_request_needs_both_keys_and_a_bounded_reason(
    key: str, action_key: str, reason: str, message: str
) -> None:
    with pytest.raises(domain.InvalidRequest, match=message):
        domain.ReleaseRequest.parse(key, str(SAGA), action_key, reason)


def test_reserve_request_lists_its_skus_in_lock_order() -> None:
    assert reserve_request(("B", 1), ("A", 2)).skus == ("A", "B")


def test_an_unstocked_sku_is_not_found_before_any_shortage_is_reported() -> None:
    lines = domain.normalize_lines([("A", 5), ("Z", 1)])

    with pytest.raises(domain.NotFound, match="unknown sku Z"):
        domain.check_availability(lines, {"A": 0})


def test_a_short_sku_is_out_of_stock_and_named() -> None:
    lines = domain.normalize_lines([("A", 2), ("B", 4)])

    with pytest.raises(domain.OutOfStock, match="insufficient stock for B: requested 4, available 3"):
        domain.check_availability(lines, {"A": 2, "B": 3})


def test_exactly_enough_stock_is_enough() -> None:
    domain.check_availability(domain.normalize_lines([("A", 3)]), {"A": 3})


def test_a_placed_reservation_is_reserved_with_the_canonical_lines() -> None:
    request = reserve_request(("B", 1), ("A", 2), ("B", 1))
    reservation_id = uuid.uuid4()

    reservation = domain.Reservation.place(reservation_id, request, {"A": 2, "B": 2})

    assert reservation == domain.Reservation(
        reservation_id, "k1", SAGA, (domain.Line("A", 2), domain.Line("B", 2)), Status.RESERVED
    )


def test_placing_a_reservation_refuses_a_shortage() -> None:
    with pytest.raises(domain.OutOfStock):
        domain.Reservation.place(uuid.uuid4(), reserve_request(("A", 3)), {"A": 2})


ALLOWED = {(Status.RESERVED, Status.RELEASED)}


@pytest.mark.parametrize(("current", "target"), sorted(ALLOWED))
def test_allowed_transitions(current: domain.ReservationStatus, target: domain.ReservationStatus) -> None:
    reservation = domain.Reservation(uuid.uuid4(), "k", SAGA, (domain.Line("A", 1),), current)

    assert reservation.transition_to(target).status is target


@pytest.mark.parametrize(("current", "target"), sorted(set(itertools.product(Status, repeat=2)) - ALLOWED))
def test_forbidden_transitions_conflict(current: domain.ReservationStatus, target: domain.ReservationStatus) -> None:
    reservation = domain.Reservation(uuid.uuid4(), "k", SAGA, (domain.Line("A", 1),), current)

    with pytest.raises(domain.Conflict, match=f"cannot go from {current} to {target}"):
        reservation.transition_to(target)


def test_status_values_are_their_names() -> None:
    assert [status.value for status in Status] == ["RESERVED", "RELEASED"]


def test_a_repeated_reserve_is_answered_with_the_reservation_as_placed_even_after_release() -> None:
    reservation = placed(("A", 1))
    released = reservation.transition_to(Status.RELEASED)

    assert released.answers(reserve_request(("A", 1))) == reservation


@pytest.mark.parametrize(
    "request_",
    [reserve_request(("A", 2)), reserve_request(("A", 1), ("B", 1)), reserve_request(("A", 1), saga=OTHER_SAGA)],
)
def test_a_key_reused_for_another_reservation_conflicts(request_: domain.ReserveRequest) -> None:
    with pytest.raises(domain.Conflict, match="already used"):
        placed(("A", 1)).answers(request_)


def release_request(saga: uuid.UUID = SAGA, key: str = "r1", action_key: str = "k1") -> domain.ReleaseRequest:
    return domain.ReleaseRequest.parse(key, str(saga), action_key, "payment declined")


def test_a_release_without_a_reservation_is_a_tombstone() -> None:
    release = domain.Release.of(release_request(), None)

    assert release.is_tombstone
    assert release.status is Status.RELEASED
    assert release == domain.Release("k1", "r1", SAGA, None, "payment declined")


def test_a_release_of_a_reservation_names_it() -> None:
    reservation = placed(("A", 1))

    release = domain.Release.of(release_request(), reservation)

    assert not release.is_tombstone
    assert release.reservation_id == reservation.id


def test_releasing_another_sagas_reservation_conflicts() -> None:
    with pytest.raises(domain.Conflict, match="another saga"):
        domain.Release.of(release_request(saga=OTHER_SAGA), placed(("A", 1)))


def test_a_repeated_release_is_answered_with_the_first_outcome_whatever_its_own_key() -> None:
    release = domain.Release.of(release_request(key="r1"), None)

    assert release.answers(release_request(key="r2")) is release


def test_a_repeated_release_from_another_saga_conflicts() -> None:
    release = domain.Release.of(release_request(), None)

    with pytest.raises(domain.Conflict, match="another saga"):
        release.answers(release_request(saga=OTHER_SAGA))


@pytest.mark.parametrize(
    ("text", "error"),
    [("", "reservation_id is required"), ("xyz", "must be a UUID")],
)
def test_uuids_are_parsed_strictly(text: str, error: str) -> None:
    with pytest.raises(domain.InvalidRequest, match=error):
        domain.parse_uuid(text, "reservation_id")


@pytest.mark.parametrize(
    ("error", "branch"),
    [
        (domain.OutOfStock, domain.Refused),
        (domain.Tombstoned, domain.Refused),
        (domain.Conflict, domain.Refused),
        (domain.InvalidRequest, domain.InventoryError),
        (domain.NotFound, domain.InventoryError),
    ],
)
def test_errors_form_one_hierarchy(error: type[Exception], branch: type[Exception]) -> None:
    assert issubclass(error, branch)
