"""Errors of the orchestrator's domain.

    OrchestratorError
    ├── IllegalTransition        a state change the tables forbid (a bug, never a user error)
    ├── InvalidRequest           the client's saga request is malformed (422)
    │   └── UnknownSagaType
    ├── MalformedCursor          a list cursor this API did not issue (400)
    ├── SagaNotFound             (404)
    ├── StateConflict            the saga's state forbids the operation (409)
    │   └── PastPointOfNoReturn  the operation would compensate past the point of no return (409)
    ├── IdempotencyConflict      same Idempotency-Key, different body (422)
    ├── LeaseLost                a fenced write matched no row: another owner holds the saga
    ├── StoreUnavailable         the database could not be reached; the outcome of the write is unknown
    ├── ExportFailed             retention could not write its export; nothing was deleted
    └── StepError                the outcome of one participant call
        ├── TransientStepError   worth retrying with the same idempotency key; outcome unknown
        └── PermanentStepError   retrying cannot help; the participant applied nothing
            └── BusinessDecline  the participant said no (insufficient funds, out of stock)

Transient versus permanent is the type, decided once where the participant's status code is translated.
"""

from __future__ import annotations


class OrchestratorError(Exception):
    """Base of every orchestrator error."""


class IllegalTransition(OrchestratorError):
    """A state change the transition tables forbid."""


class InvalidRequest(OrchestratorError):
    """The client's saga request is malformed; `problems` says where."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class UnknownSagaType(InvalidRequest):
    """No definition exists for the requested saga type."""


class MalformedCursor(OrchestratorError):
    """A list cursor this API did not issue."""


class SagaNotFound(OrchestratorError):
    """No saga has this id."""


class StateConflict(OrchestratorError):
    """The saga's current state forbids the requested operation."""


class PastPointOfNoReturn(StateConflict):
    """The operation would compensate a saga whose forward-only step may already be final."""


class IdempotencyConflict(OrchestratorError):
    """The Idempotency-Key was already used with a different request body."""


class LeaseLost(OrchestratorError):
    """A fenced write matched no row: the lease expired or another instance took the saga."""


class StoreUnavailable(OrchestratorError):
    """The database could not be reached; a write may or may not have committed."""


class ExportFailed(OrchestratorError):
    """Retention could not write its export (a full disk, a missing directory); that batch deleted nothing."""


class StepError(OrchestratorError):
    """The outcome of one failed participant call."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class TransientStepError(StepError):
    """Worth retrying with the same idempotency key; whether the effect happened is unknown."""


class PermanentStepError(StepError):
    """Retrying cannot help; the participant applied nothing."""


class BusinessDecline(PermanentStepError):
    """The participant declined on business grounds (insufficient funds, out of stock)."""
