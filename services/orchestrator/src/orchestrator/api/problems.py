"""Errors as `application/problem+json` (RFC 9457), and the one mapping from failures to problems.

Every problem this API answers with has a stable `type` URI, a status and a title in `PROBLEM_TYPES`;
the handlers and the OpenAPI document both read that table, so the two say the same. A domain error
becomes a problem in `_DOMAIN_ERRORS`, Starlette's and FastAPI's HTTP errors in `_HTTP_ERRORS` (a 405
with the `Allow` header RFC 9110 asks for), and this module installs the handlers that do it. Bad input
gets a 4xx; a 5xx is a bug, except 503 with Retry-After while the database is unreachable or answers
with a transient error.
"""

import contextlib
from collections.abc import Mapping
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from opentelemetry import trace
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from orchestrator.domain import errors
from servicekit import logging

log = logging.get_logger(__name__)

PROBLEM: Final = "application/problem+json"
TYPE_BASE: Final = "https://sagaline.dev/problems/"
# The most problems one answer lists: a body of 10,000 bad strings gets 20 lines, not 10,000.
MAX_PROBLEMS: Final = 20

# Every problem this API answers with: slug -> (status, title, a typical detail). The handlers take
# status and title from here, and the OpenAPI document its examples, so the two say the same.
PROBLEM_TYPES: Final[dict[str, tuple[int, str, str]]] = {
    "invalid-characters": (400, "Invalid characters", "the path and query must be UTF-8 without control characters"),
    "missing-idempotency-key": (400, "Missing Idempotency-Key", "send an Idempotency-Key header"),
    "malformed-idempotency-key": (
        400, "Malformed Idempotency-Key", "the key must be 1-255 printable ASCII characters, not only spaces"
    ),
    "malformed-json": (400, "Malformed JSON", "the body is not valid JSON"),
    "malformed-cursor": (400, "Malformed cursor", "the cursor is not one this API issued"),
    "unauthenticated": (401, "Unauthenticated", "unknown API key"),
    "forbidden": (403, "Forbidden", "this operation needs the admin role"),
    "saga-not-found": (404, "Saga not found", "no saga 7b0f4a8e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"),
    "not-found": (404, "Not Found", "Not Found"),
    "method-not-allowed": (405, "Method Not Allowed", "Method Not Allowed"),
    "state-conflict": (
        409, "The saga's state forbids this", "saga 7b0f4a8e-1c2d-4e5f-8a9b-0c1d2e3f4a5b is COMPLETED; only FAILED "
        "sagas can be retried"
    ),
    "point-of-no-return": (
        409, "Past the point of no return",
        "saga 7b0f4a8e-1c2d-4e5f-8a9b-0c1d2e3f4a5b stopped while confirm_order was executing, past the point of no "
        "return: it may already be final, and compensating would take back what it needs",
    ),
    "saga-type-not-found": (404, "Saga type not found", "no saga type 'travel_saga'; one of order_saga"),
    "payload-too-large": (413, "Payload too large", "the limit is 65536 bytes"),
    "unsupported-media-type": (
        415, "Unsupported media type", "send the body as application/json in UTF-8, without content coding"
    ),
    "invalid-request": (422, "Invalid request", "the request does not match the API"),
    "unknown-saga-type": (422, "Unknown saga type", "unknown saga type 'travel_saga'"),
    "invalid-payload": (422, "Invalid payload", "invalid order_saga payload"),
    "invalid-deadline": (
        422, "Invalid deadline", "the deadline must be a whole number of ms, s, m or h from 1ms to 24h, such as 30s"
    ),
    "idempotency-key-reused": (
        422, "Idempotency-Key reused with another body",
        "Idempotency-Key was already used with a different request body",
    ),
    "database-unavailable": (503, "Database unavailable", "try again shortly"),
    "internal-error": (500, "Internal error", "an unexpected error occurred"),
}  # fmt: skip


class Problem(Exception):
    """An HTTP error rendered as problem+json; `headers` go on the response (WWW-Authenticate, Allow).

    `kind` is a slug of `PROBLEM_TYPES`, which gives the status and title; only `http-error` (an HTTP
    error the framework raised, with no slug of its own) passes them.
    """

    def __init__(
        self, kind: str, detail: str = "", *, status: int | None = None, title: str | None = None,
        headers: Mapping[str, str] | None = None, **extra: Any,
    ) -> None:  # fmt: skip
        known_status, known_title, _ = PROBLEM_TYPES.get(kind, (500, "Internal error", ""))
        self.status, self.title = status or known_status, title or known_title
        super().__init__(detail or self.title)
        self.kind, self.detail, self.extra = kind, detail, extra
        self.headers = dict(headers or {})


def problem_response(problem: Problem, instance: str) -> JSONResponse:
    """Render a Problem as an RFC 9457 document, with the request's trace id when it is traced."""
    body = {"type": TYPE_BASE + problem.kind, "title": problem.title, "status": problem.status,
            "detail": problem.detail or problem.title, "instance": instance, **problem.extra}  # fmt: skip
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        body["trace_id"] = format(span.trace_id, "032x")
    headers = {"Retry-After": "1"} if problem.status == 503 else {}
    return JSONResponse(body, status_code=problem.status, media_type=PROBLEM, headers=headers | problem.headers)


_DOMAIN_ERRORS: Final[list[tuple[type[Exception], str]]] = [
    (errors.UnknownSagaType, "unknown-saga-type"),
    (errors.InvalidRequest, "invalid-payload"),
    (errors.IdempotencyConflict, "idempotency-key-reused"),
    (errors.MalformedCursor, "malformed-cursor"),
    (errors.SagaNotFound, "saga-not-found"),
    (errors.PastPointOfNoReturn, "point-of-no-return"),  # before StateConflict, its base
    (errors.StateConflict, "state-conflict"),
]

_HTTP_ERRORS: Final = {404: "not-found", 405: "method-not-allowed", 413: "payload-too-large"}


def _domain_problem(exc: errors.OrchestratorError) -> Problem:
    """The problem a domain error means for the caller; an error the table does not name is a bug."""
    for kind, slug in _DOMAIN_ERRORS:
        if isinstance(exc, kind):
            extra: dict[str, Any] = {}
            if isinstance(exc, errors.InvalidRequest):
                extra["errors"] = exc.problems[:MAX_PROBLEMS]
            return Problem(slug, str(exc), **extra)
    raise exc


def _http_problem(request: Request | None, exc: StarletteHTTPException) -> Problem:
    """Starlette's and FastAPI's HTTP errors as problems, keeping their headers (a 405 needs the request)."""
    headers = dict(exc.headers or {})
    if exc.status_code == 405 and request is not None:  # RFC 9110 section 15.5.6: a 405 lists what the path does allow
        headers["Allow"] = _allowed(request)
    kind = _HTTP_ERRORS.get(exc.status_code)
    if kind is None:
        return Problem("http-error", str(exc.detail), status=exc.status_code, title=str(exc.detail), headers=headers)
    return Problem(kind, str(exc.detail), headers=headers)


def _allowed(request: Request) -> str:
    """The methods of every route on the request's path, for the `Allow` header of a 405.

    Starlette names only the first route that matched the path; `/v1/sagas` is two routes (GET, POST).
    """
    methods: set[str] = set()
    for route in request.app.router.routes:
        route_methods = getattr(route, "methods", None)
        if route_methods and route.matches(request.scope)[0] is not Match.NONE:
            methods |= route_methods
    return ", ".join(sorted(methods))


def problem_for(exc: Exception, path: str) -> Problem:
    """The problem an error raised while answering a request on path means: its own, the domain's, a bug.

    The one mapping for the error handlers of the app and for the route served outside FastAPI's
    routing (`POST /v1/sagas`, see `orchestrator.api.app`).
    """
    # The repository translates every transient database error (unreachable, cancelled, terminated,
    # too many connections, deadlock, serialization failure, read-only) into StoreUnavailable, once.
    if isinstance(exc, errors.StoreUnavailable):
        log.warning("database unavailable during request", path=path, error=repr(exc))
        return Problem("database-unavailable", "try again shortly")
    if isinstance(exc, Problem):
        return exc
    if isinstance(exc, errors.OrchestratorError):
        with contextlib.suppress(errors.OrchestratorError):
            return _domain_problem(exc)
    if isinstance(exc, StarletteHTTPException) and exc.status_code != 405:
        return _http_problem(None, exc)
    log.error("unhandled error in request", path=path, exc_info=exc)
    return Problem("internal-error", "an unexpected error occurred")


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error `app` raises as a problem: its own, the domain's, the framework's and bugs."""

    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        return problem_response(problem_for(exc, request.url.path), request.url.path)

    # Each kind by name: Starlette answers an `Exception` handler's errors only after a re-raise (logged
    # as a crash by the server), so the expected ones are handled before that.
    for kind in (Problem, errors.OrchestratorError, errors.StoreUnavailable, Exception):
        app.add_exception_handler(kind, on_error)

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()][:MAX_PROBLEMS]
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            bad = Problem("malformed-json", "the body is not valid JSON", errors=problems)
        else:
            bad = Problem("invalid-request", "the request does not match the API", errors=problems)
        return problem_response(bad, request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem_response(_http_problem(request, exc), request.url.path)
