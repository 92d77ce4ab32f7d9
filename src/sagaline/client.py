"""A small Python client for Sagaline's REST API, synchronous (`Client`) and asynchronous (`AsyncClient`).

    with Client("http://127.0.0.1:8080", api_key=...) as sagaline:
        saga = sagaline.run("order_saga", payload)          # start, then wait for a terminal state
        print(saga["status"])                                # COMPLETED, COMPENSATED or FAILED

Starting a saga always sends an `Idempotency-Key` (a random one unless given) and sends the same key
again on every retry, so a start repeated after a lost answer names the same saga, never a second one.
Requests are retried on `503` (honouring `Retry-After`) and on connection errors, with exponential
backoff and jitter; a request that changes something and has no key is repeated only when it cannot
have reached the server (the connection was never made). Errors are `application/problem+json`, and
each becomes a typed exception:

    SagalineError
    ├── TransportError           the server could not be reached, after the retries
    ├── WaitTimeout              the saga was not terminal in time (`.saga` is its last state)
    └── ProblemError             an answer with a problem document: `.status`, `.type`, `.detail`, `.errors`
        ├── BadRequest (400)     malformed JSON, Idempotency-Key or cursor
        ├── Unauthenticated (401)
        ├── Forbidden (403)      the API key's role may not do this
        ├── NotFound (404)
        │   └── SagaNotFound
        ├── Conflict (409)       the saga's state forbids the action
        │   └── PointOfNoReturn  it would compensate past the point of no return
        ├── PayloadTooLarge (413), UnsupportedMediaType (415)
        ├── InvalidRequest (422)
        │   ├── InvalidPayload, UnknownSagaType, IdempotencyKeyReused
        └── Unavailable (503)    the database was unavailable, after the retries
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Final, Self

import httpx

TERMINAL: Final = frozenset({"COMPLETED", "COMPENSATED", "FAILED"})
PROBLEM_BASE: Final = "https://sagaline.dev/problems/"


class SagalineError(Exception):
    """Base of every error this client raises."""


class TransportError(SagalineError):
    """The server could not be reached (after the retries)."""


class WaitTimeout(SagalineError):
    """The saga did not reach a terminal state in time; `saga` is the last state read."""

    def __init__(self, message: str, saga: dict[str, Any]) -> None:
        super().__init__(message)
        self.saga = saga


class ProblemError(SagalineError):
    """An error answer (RFC 9457 problem document)."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status, self.problem = status, problem
        self.type = str(problem.get("type", ""))
        self.slug = self.type.removeprefix(PROBLEM_BASE)
        self.title = str(problem.get("title", ""))
        self.detail = str(problem.get("detail", self.title))
        self.errors: list[str] = list(problem.get("errors", []))
        super().__init__(f"{status} {self.slug or self.title}: {self.detail}")


class BadRequest(ProblemError):
    """400: malformed JSON, Idempotency-Key or cursor."""


class Unauthenticated(ProblemError):
    """401: no API key, or an unknown one."""


class Forbidden(ProblemError):
    """403: the API key's role may not do this."""


class NotFound(ProblemError):
    """404."""


class SagaNotFound(NotFound):
    """404: no saga has this id."""


class Conflict(ProblemError):
    """409: the saga's state forbids the action."""


class PointOfNoReturn(Conflict):
    """409: the action would compensate past the point of no return."""


class PayloadTooLarge(ProblemError):
    """413."""


class UnsupportedMediaType(ProblemError):
    """415."""


class InvalidRequest(ProblemError):
    """422: the request does not match the API."""


class InvalidPayload(InvalidRequest):
    """422: the saga payload is one a participant would refuse; `errors` names each field."""


class UnknownSagaType(InvalidRequest):
    """422: no such saga type."""


class IdempotencyKeyReused(InvalidRequest):
    """422: the Idempotency-Key was used before with another body."""


class Unavailable(ProblemError):
    """503: the database was unavailable (after the retries)."""


_BY_SLUG: Final[dict[str, type[ProblemError]]] = {
    "saga-not-found": SagaNotFound,
    "point-of-no-return": PointOfNoReturn,
    "invalid-payload": InvalidPayload,
    "unknown-saga-type": UnknownSagaType,
    "idempotency-key-reused": IdempotencyKeyReused,
}
_BY_STATUS: Final[dict[int, type[ProblemError]]] = {
    400: BadRequest, 401: Unauthenticated, 403: Forbidden, 404: NotFound, 409: Conflict, 413: PayloadTooLarge,
    415: UnsupportedMediaType, 422: InvalidRequest, 503: Unavailable,
}  # fmt: skip


def problem_error(response: httpx.Response) -> ProblemError:
    """The typed exception an error answer stands for."""
    try:
        problem = response.json()
    except ValueError:
        problem = {"title": response.reason_phrase, "detail": response.text[:200]}
    if not isinstance(problem, dict):
        problem = {"detail": str(problem)[:200]}
    slug = str(problem.get("type", "")).removeprefix(PROBLEM_BASE)
    kind = _BY_SLUG.get(slug) or _BY_STATUS.get(response.status_code, ProblemError)
    return kind(response.status_code, problem)


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of 503 and connection errors: `attempts` in all, exponential backoff with jitter.

    A `Retry-After` answer is honoured (up to `max_retry_after` seconds) in place of the backoff.
    """

    attempts: int = 5
    initial: float = 0.2
    maximum: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.2
    max_retry_after: float = 30.0

    def delay(self, retry: int, response: httpx.Response | None, rand: float) -> float:
        """Seconds to wait before retry number `retry` (1-based)."""
        if response is not None and (after := _retry_after(response)) is not None:
            return min(after, self.max_retry_after)
        base = min(self.initial * self.multiplier ** (retry - 1), self.maximum)
        return max(base * (1 + self.jitter * (2 * rand - 1)), 0.0)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        return max((parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds(), 0.0)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    json: Any = None
    params: dict[str, Any] | None = None
    headers: dict[str, str] | None = None
    # Safe to send again after a failure whose outcome is unknown: a read, or a start with its key.
    repeatable: bool = True


def _unsent(exc: httpx.TransportError) -> bool:
    """The request cannot have reached the server: the connection itself failed."""
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


def _result(response: httpx.Response) -> dict[str, Any]:
    if response.status_code >= 400:
        raise problem_error(response)
    body: dict[str, Any] = response.json()
    return body


def _start(saga_type: str, payload: dict[str, Any], key: str | None, deadline: str | None) -> _Request:
    body: dict[str, Any] = {"saga_type": saga_type, "payload": payload}
    if deadline is not None:
        body["deadline"] = deadline
    # One key for this call, whatever happens: every retry below sends it again.
    return _Request("POST", "/v1/sagas", body, headers={"Idempotency-Key": key or str(uuid.uuid4())})


def _action(saga_id: str, action: str, body: dict[str, Any] | None) -> _Request:
    return _Request("POST", f"/v1/sagas/{saga_id}/{action}", body, repeatable=False)


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _retryable(response: httpx.Response) -> bool:
    return response.status_code == 503


class Client:
    """The synchronous client; a context manager that closes its connections."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8080",
        *,
        api_key: str | None = None,
        timeout: float = 10.0,
        retry: RetryPolicy = RetryPolicy(),
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        """`transport` and `sleep` are for tests; `api_key` is sent as a bearer token."""
        self._http = httpx.Client(base_url=base_url, headers=_headers(api_key), timeout=timeout, transport=transport)
        self._retry, self._sleep, self._rand = retry, sleep, rand

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def _send(self, request: _Request) -> dict[str, Any]:
        for attempt in range(1, self._retry.attempts + 1):
            last = attempt == self._retry.attempts
            try:
                response = self._http.request(
                    request.method, request.path, json=request.json, params=request.params, headers=request.headers
                )
            except httpx.TransportError as exc:
                if last or not (request.repeatable or _unsent(exc)):
                    raise TransportError(f"{request.method} {request.path}: {exc!r}") from exc
                self._sleep(self._retry.delay(attempt, None, self._rand()))
                continue
            if _retryable(response) and not last:
                self._sleep(self._retry.delay(attempt, response, self._rand()))
                continue
            return _result(response)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def start(
        self,
        saga_type: str,
        payload: dict[str, Any],
        *,
        idempotency_key: str | None = None,
        deadline: str | None = None,
    ) -> dict[str, Any]:
        """Start a saga (or find the one this key started); returns it as accepted."""
        return self._send(_start(saga_type, payload, idempotency_key, deadline))

    def get(self, saga_id: str) -> dict[str, Any]:
        """One saga, its steps and its history."""
        return self._send(_Request("GET", f"/v1/sagas/{saga_id}"))

    def list(self, *, status: str | None = None, saga_type: str | None = None, limit: int = 20,
             cursor: str | None = None) -> dict[str, Any]:  # fmt: skip
        """One page of sagas, newest first: `items` and `next_cursor`."""
        params = {k: v for k, v in {"status": status, "saga_type": saga_type, "limit": limit, "cursor": cursor}.items()
                  if v is not None}  # fmt: skip
        return self._send(_Request("GET", "/v1/sagas", params=params))

    def wait(self, saga_id: str, *, within: float = 90.0, poll: float = 0.2) -> dict[str, Any]:
        """The saga once it is COMPLETED, COMPENSATED or FAILED; WaitTimeout after `within` seconds."""
        deadline = time.monotonic() + within
        while True:
            saga = self.get(saga_id)
            if saga["status"] in TERMINAL:
                return saga
            if time.monotonic() >= deadline:
                raise WaitTimeout(f"saga {saga_id} is still {saga['status']} after {within:g}s", saga)
            self._sleep(poll)

    def run(self, saga_type: str, payload: dict[str, Any], *, idempotency_key: str | None = None,
            deadline: str | None = None, within: float = 90.0) -> dict[str, Any]:  # fmt: skip
        """Start a saga and wait for its terminal state."""
        started = self.start(saga_type, payload, idempotency_key=idempotency_key, deadline=deadline)
        return self.wait(started["id"], within=within)

    def plan(self, saga_type: str, payload: dict[str, Any], *, deadline: str | None = None) -> dict[str, Any]:
        """The dry run: steps, retries and the compensations a failure at each step would run."""
        body = {"payload": payload, **({"deadline": deadline} if deadline else {})}
        return self._send(_Request("POST", f"/v1/saga-types/{saga_type}/plan", body))

    def history(self, saga_id: str) -> dict[str, Any]:
        """One saga's whole history, as `sagaline saga export` writes it."""
        return self._send(_Request("GET", f"/v1/sagas/{saga_id}/history"))

    def retry(self, saga_id: str, reason: str | None = None) -> dict[str, Any]:
        """Resume a FAILED saga (admin)."""
        return self._send(_action(saga_id, "retry", {"reason": reason} if reason else None))

    def cancel(self, saga_id: str) -> dict[str, Any]:
        """Stop a live saga going forward (admin)."""
        return self._send(_action(saga_id, "cancel", None))

    def retry_with_payload(self, saga_id: str, payload: dict[str, Any], reason: str) -> dict[str, Any]:
        """Resume a saga that failed going forward with a corrected payload (admin)."""
        return self._send(_action(saga_id, "retry-with-payload", {"payload": payload, "reason": reason}))

    def skip_step(self, saga_id: str, step: str, output: dict[str, Any], reason: str) -> dict[str, Any]:
        """Mark the stuck step done by hand with its output (admin)."""
        return self._send(_action(saga_id, "skip-step", {"step": step, "output": output, "reason": reason}))

    def compensate(self, saga_id: str, reason: str) -> dict[str, Any]:
        """Force the compensation of a FAILED saga (admin); PointOfNoReturn past the point of no return."""
        return self._send(_action(saga_id, "compensate", {"reason": reason}))

    def resolve(self, saga_id: str, reason: str) -> dict[str, Any]:
        """Mark a FAILED saga handled without acting (admin)."""
        return self._send(_action(saga_id, "resolve", {"reason": reason}))


class AsyncClient:
    """The asynchronous client (the same methods, awaited); an async context manager."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8080",
        *,
        api_key: str | None = None,
        timeout: float = 10.0,
        retry: RetryPolicy = RetryPolicy(),
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        """`transport` and `sleep` are for tests; `api_key` is sent as a bearer token."""
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=_headers(api_key), timeout=timeout, transport=transport
        )
        self._retry, self._sleep, self._rand = retry, sleep, rand

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def _send(self, request: _Request) -> dict[str, Any]:
        for attempt in range(1, self._retry.attempts + 1):
            last = attempt == self._retry.attempts
            try:
                response = await self._http.request(
                    request.method, request.path, json=request.json, params=request.params, headers=request.headers
                )
            except httpx.TransportError as exc:
                if last or not (request.repeatable or _unsent(exc)):
                    raise TransportError(f"{request.method} {request.path}: {exc!r}") from exc
                await self._sleep(self._retry.delay(attempt, None, self._rand()))
                continue
            if _retryable(response) and not last:
                await self._sleep(self._retry.delay(attempt, response, self._rand()))
                continue
            return _result(response)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    async def start(
        self,
        saga_type: str,
        payload: dict[str, Any],
        *,
        idempotency_key: str | None = None,
        deadline: str | None = None,
    ) -> dict[str, Any]:
        """Start a saga (or find the one this key started); returns it as accepted."""
        return await self._send(_start(saga_type, payload, idempotency_key, deadline))

    async def get(self, saga_id: str) -> dict[str, Any]:
        """One saga, its steps and its history."""
        return await self._send(_Request("GET", f"/v1/sagas/{saga_id}"))

    async def wait(self, saga_id: str, *, within: float = 90.0, poll: float = 0.2) -> dict[str, Any]:
        """The saga once it is COMPLETED, COMPENSATED or FAILED; WaitTimeout after `within` seconds."""
        deadline = time.monotonic() + within
        while True:
            saga = await self.get(saga_id)
            if saga["status"] in TERMINAL:
                return saga
            if time.monotonic() >= deadline:
                raise WaitTimeout(f"saga {saga_id} is still {saga['status']} after {within:g}s", saga)
            await self._sleep(poll)

    async def run(self, saga_type: str, payload: dict[str, Any], *, idempotency_key: str | None = None,
                  deadline: str | None = None, within: float = 90.0) -> dict[str, Any]:  # fmt: skip
        """Start a saga and wait for its terminal state."""
        started = await self.start(saga_type, payload, idempotency_key=idempotency_key, deadline=deadline)
        return await self.wait(started["id"], within=within)

    async def plan(self, saga_type: str, payload: dict[str, Any], *, deadline: str | None = None) -> dict[str, Any]:
        """The dry run: steps, retries and the compensations a failure at each step would run."""
        body = {"payload": payload, **({"deadline": deadline} if deadline else {})}
        return await self._send(_Request("POST", f"/v1/saga-types/{saga_type}/plan", body))

    async def retry(self, saga_id: str, reason: str | None = None) -> dict[str, Any]:
        """Resume a FAILED saga (admin)."""
        return await self._send(_action(saga_id, "retry", {"reason": reason} if reason else None))

    async def compensate(self, saga_id: str, reason: str) -> dict[str, Any]:
        """Force the compensation of a FAILED saga (admin); PointOfNoReturn past the point of no return."""
        return await self._send(_action(saga_id, "compensate", {"reason": reason}))

    async def resolve(self, saga_id: str, reason: str) -> dict[str, Any]:
        """Mark a FAILED saga handled without acting (admin)."""
        return await self._send(_action(saga_id, "resolve", {"reason": reason}))
