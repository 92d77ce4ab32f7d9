"""The inventory domain: stock reserved for sagas, released by their compensations, and the rules both obey.

A reservation moves quantities of one or more SKUs from `available` to `reserved`, all or nothing; its
release moves them back, exactly once. A release that finds no reservation for its action key leaves a
tombstone instead, and a reservation asked for later with that key is refused: a compensation that
overtakes its action (a timeout, a retry by another orchestrator) can never be followed by a stock hold
nobody will ever release.

Errors form one hierarchy; the gRPC adapter maps each branch to one status code:

    InventoryError
    ├── InvalidRequest       malformed input                                  INVALID_ARGUMENT
    ├── NotFound             unknown SKU or reservation                       NOT_FOUND
    └── Refused              well-formed, but the current state forbids it    FAILED_PRECONDITION
        ├── OutOfStock       a SKU has less available than asked (a business decline)
        ├── Tombstoned       the key was compensated before anything was reserved with it
        └── Conflict         a key reused for another request, or a forbidden status transition
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

MAX_KEY_LENGTH: Final = 255
MAX_SKU_LENGTH: Final = 255
MAX_LINES: Final = 100
MAX_REASON_LENGTH: Final = 1000
# Quantities and stock levels are PostgreSQL `integer`s (and int32 on the wire).
MAX_QUANTITY: Final = 2**31 - 1


class InventoryError(Exception):
    """Base of every error the inventory reports to its callers."""


class InvalidRequest(InventoryError):
    """The request is malformed; retrying it unchanged can never succeed."""


class NotFound(InventoryError):
    """A SKU or reservation the request names does not exist."""


class Refused(InventoryError):
    """The request is well-formed but the current state forbids it."""


class OutOfStock(Refused):
    """A SKU has less available than asked; nothing was reserved."""


class Tombstoned(Refused):
    """The idempotency key was compensated before anything was reserved with it."""


class Conflict(Refused):
    """An idempotency key was reused for a different request, or a status transition is forbidden."""


class ReservationStatus(StrEnum):
    """Where a reservation is in its life; the values equal the SQL CHECK list of `reservations.status`."""

    RESERVED = "RESERVED"
    RELEASED = "RELEASED"


# Every reservation is born RESERVED; RELEASED is final.
_ALLOWED_TRANSITIONS: Final[Mapping[ReservationStatus, frozenset[ReservationStatus]]] = {
    ReservationStatus.RESERVED: frozenset({ReservationStatus.RELEASED}),
    ReservationStatus.RELEASED: frozenset(),
}


@dataclass(frozen=True, order=True)
class Line:
    """A quantity of one SKU."""

    sku: str
    quantity: int


def parse_uuid(text: str, field: str) -> uuid.UUID:
    """Parse a UUID given in its canonical text form.

    Raises:
        InvalidRequest: text is empty or not a UUID.
    """
    if not text:
        raise InvalidRequest(f"{field} is required")
    try:
        return uuid.UUID(text)
    except ValueError as exc:
        raise InvalidRequest(f"{field} must be a UUID, got {text[:64]!r}") from exc


def parse_key(text: str, field: str) -> str:
    """Check an idempotency key: 1 to MAX_KEY_LENGTH characters.

    Raises:
        InvalidRequest: the key is missing or too long.
    """
    if not text:
        raise InvalidRequest(f"{field} is required")
    if len(text) > MAX_KEY_LENGTH:
        raise InvalidRequest(f"{field} is longer than {MAX_KEY_LENGTH} characters")
    return text


def normalize_lines(items: Iterable[tuple[str, int]]) -> tuple[Line, ...]:
    """Validate requested (sku, quantity) pairs, sum duplicate SKUs, and sort by SKU.

    The sorted form is the reservation's canonical shape: it is what is stored, what is answered, and
    the order in which stock rows are locked, so two reservations can never wait on each other.

    Raises:
        InvalidRequest: no items, an empty or over-long SKU, a quantity below 1, or too large a total.
    """
    totals: dict[str, int] = {}
    for sku, quantity in items:
        _check_item(sku, quantity)
        totals[sku] = totals.get(sku, 0) + quantity
    if not totals:
        raise InvalidRequest("at least one item is required")
    if len(totals) > MAX_LINES:
        raise InvalidRequest(f"at most {MAX_LINES} distinct SKUs may be reserved at once")
    if over := sorted(sku for sku, total in totals.items() if total > MAX_QUANTITY):
        raise InvalidRequest(f"total quantity for {over[0]} exceeds {MAX_QUANTITY}")
    return tuple(Line(sku, totals[sku]) for sku in sorted(totals))


def _check_item(sku: str, quantity: int) -> None:
    if not sku:
        raise InvalidRequest("every item needs a sku")
    if len(sku) > MAX_SKU_LENGTH:
        raise InvalidRequest(f"sku is longer than {MAX_SKU_LENGTH} characters")
    if quantity < 1:
        raise InvalidRequest(f"quantity for {sku} must be at least 1, got {quantity}")


@dataclass(frozen=True)
class ReserveRequest:
    """A validated ReserveStock: the key, the saga, and the canonical lines."""

    idempotency_key: str
    saga_id: uuid.UUID
    lines: tuple[Line, ...]

    @classmethod
    def parse(cls, idempotency_key: str, saga_id: str, items: Iterable[tuple[str, int]]) -> ReserveRequest:
        """Validate raw request fields.

        Raises:
            InvalidRequest: any field is missing or malformed.
        """
        return cls(
            idempotency_key=parse_key(idempotency_key, "idempotency_key"),
            saga_id=parse_uuid(saga_id, "saga_id"),
            lines=normalize_lines(items),
        )

    @property
    def skus(self) -> tuple[str, ...]:
        """The requested SKUs, sorted."""
        return tuple(line.sku for line in self.lines)


@dataclass(frozen=True)
class ReleaseRequest:
    """A validated ReleaseStock: its own key, the saga, and the key of the ReserveStock it undoes."""

    idempotency_key: str
    saga_id: uuid.UUID
    action_idempotency_key: str
    reason: str = ""

    @classmethod
    def parse(cls, idempotency_key: str, saga_id: str, action_idempotency_key: str, reason: str) -> ReleaseRequest:
        """Validate raw request fields.

        Raises:
            InvalidRequest: any field is missing or malformed.
        """
        if len(reason) > MAX_REASON_LENGTH:
            raise InvalidRequest(f"reason is longer than {MAX_REASON_LENGTH} characters")
        return cls(
            idempotency_key=parse_key(idempotency_key, "idempotency_key"),
            saga_id=parse_uuid(saga_id, "saga_id"),
            action_idempotency_key=parse_key(action_idempotency_key, "action_idempotency_key"),
            reason=reason,
        )


def check_availability(lines: Iterable[Line], available: Mapping[str, int]) -> None:
    """Check that every line can be taken from `available` (SKU to units available).

    Raises:
        NotFound: a SKU is not stocked at all (the first one, in SKU order).
        OutOfStock: a SKU has fewer units available than its line asks for (the first one, in SKU order).
    """
    ordered = sorted(lines)
    if missing := [line.sku for line in ordered if line.sku not in available]:
        raise NotFound(f"unknown sku {missing[0]}")
    for line in ordered:
        if available[line.sku] < line.quantity:
            raise OutOfStock(
                f"insufficient stock for {line.sku}: requested {line.quantity}, available {available[line.sku]}"
            )


@dataclass(frozen=True)
class Reservation:
    """Units of stock held for one saga under one idempotency key."""

    id: uuid.UUID
    idempotency_key: str
    saga_id: uuid.UUID
    lines: tuple[Line, ...]
    status: ReservationStatus = ReservationStatus.RESERVED

    @classmethod
    def place(cls, reservation_id: uuid.UUID, request: ReserveRequest, available: Mapping[str, int]) -> Reservation:
        """Reserve the request's lines out of `available`, all or nothing.

        Raises:
            NotFound: a requested SKU is not stocked.
            OutOfStock: a requested SKU is short.
        """
        check_availability(request.lines, available)
        return cls(reservation_id, request.idempotency_key, request.saga_id, request.lines)

    def answers(self, request: ReserveRequest) -> Reservation:
        """The original answer to a repeated ReserveStock: this reservation as it was placed.

        A repeated key must get byte for byte the response of the first call, whatever happened since,
        so the status is the one every reservation is born with.

        Raises:
            Conflict: the key was first used by another saga or for other items.
        """
        if request.saga_id != self.saga_id or request.lines != self.lines:
            raise Conflict(f"idempotency_key {self.idempotency_key} was already used for a different reservation")
        return dataclasses.replace(self, status=ReservationStatus.RESERVED)

    def transition_to(self, target: ReservationStatus) -> Reservation:
        """The reservation in status target; the one place the allowed transitions are enforced.

        Raises:
            Conflict: the transition is not allowed.
        """
        if target not in _ALLOWED_TRANSITIONS[self.status]:
            raise Conflict(f"reservation {self.id} cannot go from {self.status} to {target}")
        return dataclasses.replace(self, status=target)


@dataclass(frozen=True)
class Release:
    """The record of a compensation: the reservation it released, or a tombstone when there was none."""

    action_idempotency_key: str
    idempotency_key: str
    saga_id: uuid.UUID
    reservation_id: uuid.UUID | None
    reason: str = ""

    @classmethod
    def of(cls, request: ReleaseRequest, reservation: Reservation | None) -> Release:
        """Record releasing reservation (None leaves a tombstone) on behalf of request.

        Raises:
            Conflict: the reservation belongs to another saga.
        """
        if reservation is not None and reservation.saga_id != request.saga_id:
            raise Conflict(f"reservation for {request.action_idempotency_key} belongs to another saga")
        return cls(
            action_idempotency_key=request.action_idempotency_key,
            idempotency_key=request.idempotency_key,
            saga_id=request.saga_id,
            reservation_id=None if reservation is None else reservation.id,
            reason=request.reason,
        )

    @property
    def is_tombstone(self) -> bool:
        """True when nothing had been reserved: the action key is now refused."""
        return self.reservation_id is None

    @property
    def status(self) -> ReservationStatus:
        """After a release, nothing is held for the action key, whether or not it ever was."""
        return ReservationStatus.RELEASED

    def answers(self, request: ReleaseRequest) -> Release:
        """The original outcome for a repeated release of the same action key.

        Raises:
            Conflict: the action key was released on behalf of another saga.
        """
        if request.saga_id != self.saga_id:
            raise Conflict(f"{request.action_idempotency_key} was already released for another saga")
        return self
