"""The REST API (SPEC section 3): FastAPI routes behind plain ASGI middleware, and its OpenAPI document.

Errors are `application/problem+json` (RFC 9457) with a stable `type` URI per error. Bad input gets a
4xx and persists nothing; a 5xx is a bug, except 503 with Retry-After while the database is unreachable
or answers with a transient error. The middleware answers probes and `/metrics` before FastAPI sees
them, enforces the body size limit, and times requests by route template, all without per-message
overhead.

Hostile input stops here, before the use cases and the database see it: a path or query that is not
UTF-8 or holds a control character (PostgreSQL cannot store NUL in text) is a 400; the body of
`POST /v1/sagas` is parsed by this module, not by FastAPI, so that only I-JSON (RFC 7493: UTF-8, unique
member names, numbers a double holds exactly) in `application/json` gets through, with no control
characters or unpaired surrogates in any string and bounded nesting. The saga definition then refuses,
with 422, every payload a participant would refuse.

The OpenAPI document (`/openapi.json`) is the contract, so it is written to be true, not generated to
look plausible. It lists every status, header and media type each route answers with; every error has
the one `ProblemDetails` schema; the start body is described down to each saga type's payload rules,
with unknown members refused (`additionalProperties: false`) as the server refuses them. Where a rule is
a pattern, the document and the server use the same one (here with `fullmatch`, so a `$` never lets a
trailing newline through): a value the document admits is accepted, and any other gets a documented 4xx.
The one rule no schema can state, that an order's total is above zero and fits numeric(14,2), is
described in the document and answered with 422 `invalid-payload`. `tests/e2e/test_e2e_contract.py`
fuzzes a live stack against the document, statefully too, to keep both honest.
"""

import base64
import hashlib
import hmac
import json
import math
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, Literal
from urllib.parse import unquote_to_bytes

from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from opentelemetry import propagate, trace
from prometheus_client import Histogram
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from swagger_ui_bundle import swagger_ui_path

from orchestrator import definitions, engine, ports, usecases
from orchestrator.domain import errors
from orchestrator.domain.model import OnTimeout, SagaStatus, StepStatus
from orchestrator.metrics import SAGA_STARTED
from orchestrator.worker import Worker
from servicekit import health, logging

log = logging.get_logger(__name__)
tracer = trace.get_tracer("sagaline.orchestrator.api")

PROBLEM: Final = "application/problem+json"
_TYPE_BASE: Final = "https://sagaline.dev/problems/"
# Text no input may carry: C0 controls and DEL (PostgreSQL cannot store NUL; the others only hide
# things, such as a newline a `$` anchor lets through) and unpaired surrogates, which a JSON `\ud800`
# escape decodes to and which no UTF-8 encoder (asyncpg's included) accepts.
_BAD_TEXT: Final = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")
# A saga body is four levels deep; anything past this is an attack, not an order.
_MAX_DEPTH: Final = 32
# I-JSON (RFC 7493): integers beyond this are not exact in the double most JSON parsers use.
_MAX_SAFE_INTEGER: Final = 2**53 - 1
# The most problems one answer lists: a body of 10,000 bad strings gets 20 lines, not 10,000.
_MAX_PROBLEMS: Final = 20
# Metric labels and span names take the method from this closed set: any token is a valid HTTP
# method, and a label per invented method would grow /metrics without bound.
_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# What `health.probe` answers, before FastAPI and without authentication, for GET and HEAD only.
_PROBES: Final = frozenset({"/livez", "/health", "/readyz", "/ready", "/metrics"})

# Patterns shared by the OpenAPI document (ECMA-262, where `$` is the end of the text) and the server
# (`fullmatch`, for the same meaning in Python): one spelling, so the two cannot drift apart. Digits
# are [0-9]: `\d` also matches non-ASCII digits in Python.
UUID_PATTERN: Final = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
# SPEC section 3: 1-255 printable ASCII characters; not only spaces, which HTTP would strip to nothing.
KEY_PATTERN: Final = r"^[\x20-\x7E]*[\x21-\x7E][\x20-\x7E]*$"
# A whole number of one unit, from 1ms to 24h: the range is in the pattern, so the document can say it.
DEADLINE_PATTERN: Final = (
    r"^(?:(?:[1-9][0-9]{0,6}|[1-7][0-9]{7}|8[0-5][0-9]{6}|86[0-3][0-9]{5}|86400000)ms"
    r"|(?:[1-9][0-9]{0,3}|[1-7][0-9]{4}|8[0-5][0-9]{3}|86[0-3][0-9]{2}|86400)s"
    r"|(?:[1-9][0-9]{0,2}|1[0-3][0-9]{2}|14[0-3][0-9]|1440)m"
    r"|(?:[1-9]|1[0-9]|2[0-4])h)$"
)
# `<microseconds since 1970-01-01 UTC>.<saga id as 32 hex digits>`. Every value of this shape is one the
# server can use (17 digits stay below the year 9999), so no cursor the document admits is refused.
CURSOR_PATTERN: Final = r"^([0-9]{1,17})\.([0-9a-f]{32})$"
# A query value the middleware lets through: no C0 control character and no DEL.
TEXT_PATTERN: Final = r"^[^\x00-\x1F\x7F]*$"
_KEY: Final = re.compile(KEY_PATTERN)
_DEADLINE: Final = re.compile(DEADLINE_PATTERN)
_CURSOR: Final = re.compile(CURSOR_PATTERN)
_DEADLINE_UNITS: Final = {"ms": "milliseconds", "s": "seconds", "m": "minutes", "h": "hours"}
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)

HTTP_DURATION: Final = Histogram(
    "http_request_duration_seconds", "REST request duration by route template.", ["method", "route", "status"]
)

# Every problem this API answers with: slug -> (status, title, a typical detail). The handlers take
# status and title from here, and the OpenAPI document its examples, so the two say the same.
_PROBLEM_TYPES: Final[dict[str, tuple[int, str, str]]] = {
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
_EXAMPLE_ERRORS: Final = {
    "invalid-request": ["saga_type: Field required", "limit: Input should be less than or equal to 100"],
    "unknown-saga-type": ["saga_type: one of ['order_saga']"],
    "invalid-payload": [
        "payload.customer_id: must be a UUID string such as 11111111-1111-4111-8111-111111111111",
        "payload.items: the order total 0.00 must be greater than 0 (the payment service refuses 0)",
    ],
}


class StartSagaBody(BaseModel):
    """Body of `POST /v1/sagas`; an unknown member is refused rather than silently dropped (a typo'd deadline)."""

    model_config = ConfigDict(extra="forbid")

    saga_type: str = Field(min_length=1, max_length=100)
    deadline: str | None = None
    payload: dict[str, Any]


# -- the documents this API answers with, as schemas for /openapi.json --------------------------------------
# The handlers return the views' plain dicts; these models only describe them. Unknown members are
# forbidden, so a field added to a view without a word here fails the contract test rather than
# reaching clients undocumented.

_UUID: Final = Field(pattern=UUID_PATTERN, json_schema_extra={"format": "uuid"})
_TRACE_ID: Final = r"^[0-9a-f]{32}$"


def _optional_members(schema: dict[str, Any]) -> None:
    """Drop the `default` of members that are absent rather than defaulted (pydantic needs one to say optional)."""
    for member in schema.get("properties", {}).values():
        member.pop("default", None)


class ProblemDetails(BaseModel):
    """An error (RFC 9457); `type` is stable per error, `errors` names every bad field of a 422."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_optional_members)

    type: str = Field(json_schema_extra={"format": "uri"}, examples=[_TYPE_BASE + "malformed-cursor"])
    title: str
    status: int = Field(ge=400, le=599)
    detail: str
    instance: str = Field(description="The request's path.")
    errors: list[str] = Field(
        default_factory=list, max_length=_MAX_PROBLEMS, description="One line per problem: `field.path: reason`."
    )
    trace_id: str = Field(
        default="", pattern=_TRACE_ID, description="The request's trace, when it was traced (every routed request)."
    )


class StepView(BaseModel):
    """One step of a saga: its state, attempts, timings, last error and last participant answer."""

    model_config = ConfigDict(extra="forbid")

    position: int = Field(ge=0)
    name: str
    status: StepStatus
    attempts: int = Field(ge=0)
    compensation_attempts: int = Field(ge=0)
    next_attempt_at: datetime | None
    last_error: str | None
    started_at: datetime | None
    finished_at: datetime | None
    response: dict[str, Any] | None = Field(description="The participant's last answer, action or compensation.")


class EventView(BaseModel):
    """One entry of a saga's history, with the fence and owner of the instance that wrote it."""

    model_config = ConfigDict(extra="forbid")

    id: int = Field(ge=1)
    kind: str = Field(
        description="`saga` or `step` (a transition), `retry_scheduled`, `lease_acquired`, `lease_released`, "
        "`cancel_requested`."
    )
    step: str | None
    from_status: str | None
    to_status: str | None
    fence: int = Field(ge=0)
    owner_id: str | None
    detail: dict[str, Any]
    at: datetime


class SagaSummaryView(BaseModel):
    """A saga without its steps and history, as the list returns it."""

    model_config = ConfigDict(extra="forbid")

    id: Annotated[str, _UUID]
    saga_type: str
    definition_version: int = Field(ge=1)
    status: SagaStatus
    payload: dict[str, Any] = Field(description="The client's payload, normalised.")
    context: dict[str, Any] = Field(description="What finished steps returned for later steps.")
    error: str | None = Field(description="Why the saga stopped going forward, or why it is FAILED.")
    deadline: datetime
    on_timeout: OnTimeout
    cancel_requested: bool
    trace_id: Annotated[str, Field(pattern=_TRACE_ID)] | None
    fence: int = Field(ge=0)
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class SagaView(SagaSummaryView):
    """A saga, its steps and its event history."""

    steps: list[StepView]
    events: list[EventView]


class SagaPage(BaseModel):
    """One page of the list, newest first; `next_cursor` is null on the last page."""

    model_config = ConfigDict(extra="forbid")

    items: list[SagaSummaryView]
    next_cursor: Annotated[str, Field(pattern=CURSOR_PATTERN)] | None


class Liveness(BaseModel):
    """`/livez`: the event loop answers."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["ok"]


class Readiness(BaseModel):
    """`/readyz`: ready with this instance's owner id, or not ready with the reason."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_optional_members)

    status: Literal["ready", "not ready"]
    owner_id: str = ""
    reason: str = ""


class Problem(Exception):
    """An HTTP error rendered as problem+json; `headers` go on the response (WWW-Authenticate, Allow).

    `kind` is a slug of `_PROBLEM_TYPES`, which gives the status and title; only `http-error` (an HTTP
    error the framework raised, with no slug of its own) passes them.
    """

    def __init__(
        self, kind: str, detail: str = "", *, status: int | None = None, title: str | None = None,
        headers: Mapping[str, str] | None = None, **extra: Any,
    ) -> None:  # fmt: skip
        known_status, known_title, _ = _PROBLEM_TYPES.get(kind, (500, "Internal error", ""))
        self.status, self.title = status or known_status, title or known_title
        super().__init__(detail or self.title)
        self.kind, self.detail, self.extra = kind, detail, extra
        self.headers = dict(headers or {})


def problem_response(problem: Problem, instance: str) -> JSONResponse:
    """Render a Problem as an RFC 9457 document, with the request's trace id when it is traced."""
    body = {"type": _TYPE_BASE + problem.kind, "title": problem.title, "status": problem.status,
            "detail": problem.detail or problem.title, "instance": instance, **problem.extra}  # fmt: skip
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        body["trace_id"] = format(span.trace_id, "032x")
    headers = {"Retry-After": "1"} if problem.status == 503 else {}
    return JSONResponse(body, status_code=problem.status, media_type=PROBLEM, headers=headers | problem.headers)


@dataclass(frozen=True)
class Principal:
    """Who is calling, and in which role; `authenticated` is False only for the anonymous caller of auth off."""

    name: str
    role: str
    authenticated: bool = True

    def scope(self, idempotency_key: str) -> str:
        """The key as stored: `<principal name>:<key>`, so two callers' keys never name the same saga.

        With auth off there is one anonymous caller and keys stay as sent (the namespace sagas started
        before scoping were stored in). A `%` or `:` in the configured name is escaped, so no name and
        key can be spelled as another name and key.
        """
        if not self.authenticated:
            return idempotency_key
        return f"{self.name.replace('%', '%25').replace(':', '%3A')}:{idempotency_key}"


class Authenticator:
    """API keys compared as SHA-256 digests in constant time; `None` keys means auth is off."""

    def __init__(self, keys: list[tuple[str, str, bytes]] | None) -> None:
        """`keys` holds (name, role, sha256 digest) triples."""
        self._keys = keys

    @property
    def enabled(self) -> bool:
        """Whether callers must present a key (the OpenAPI document declares the scheme only then)."""
        return self._keys is not None

    def __call__(self, authorization: str | None) -> Principal:
        """Identify the caller from an `Authorization: Bearer <key>` header."""
        if self._keys is None:
            return Principal("anonymous", "admin", authenticated=False)
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            # RFC 9110 section 11.6.1 and RFC 6750 section 3: a 401 names the scheme it wants.
            raise Problem("unauthenticated", "send Authorization: Bearer <api key>",
                          headers={"WWW-Authenticate": 'Bearer realm="sagaline"'})  # fmt: skip
        digest = hashlib.sha256(token.strip().encode()).digest()
        match = None
        for name, role, expected in self._keys:  # every key is compared, so timing reveals nothing
            if hmac.compare_digest(digest, expected):
                match = Principal(name, role)
        if match is None:
            raise Problem("unauthenticated", "unknown API key",
                          headers={"WWW-Authenticate": 'Bearer realm="sagaline", error="invalid_token"'})  # fmt: skip
        return match


class Middleware:
    """Probes, metrics, authentication, the path and query check, body limit and request timing, as plain ASGI.

    Authentication happens here, before any body is read, so an unauthenticated caller learns nothing
    about its input; the routes read the caller from the request state. A path or query with a control
    character or bytes that are not UTF-8 is refused here too, once for every route.
    """

    def __init__(self, app: Any, readiness: health.Readiness, max_body: int, authenticate: Authenticator) -> None:
        self._app, self._readiness, self._max_body = app, readiness, max_body
        self._authenticate = authenticate

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """ASGI entry point."""
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        if scope["path"] in _PROBES:
            await self._probe(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is not None:
            await problem_response(refusal, _printable(scope["path"]))(scope, receive, send)
            return
        await self._observed(scope, receive, send)

    async def _probe(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Probes and metrics read nothing, so they answer GET and HEAD; anything else is a 405 (RFC 9110)."""
        if scope["method"] in ("GET", "HEAD"):
            await health.probe(scope["path"], send, self._readiness)
            return
        wrong = Problem("method-not-allowed", headers={"Allow": "GET, HEAD"})
        await problem_response(wrong, scope["path"])(scope, receive, send)

    def _refusal(self, scope: dict[str, Any]) -> Problem | None:
        """The problem that stops a request before routing (401, 400, 413), or None; records the caller."""
        headers = dict(scope["headers"])
        if scope["path"].startswith("/v1/"):
            authorization = headers.get(b"authorization")
            try:
                principal = self._authenticate(authorization.decode("latin-1") if authorization else None)
            except Problem as problem:
                return problem
            scope.setdefault("state", {})["principal"] = principal
        if not _clean_target(scope):
            return Problem("invalid-characters", "the path and query must be UTF-8 without control characters")
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self._max_body):
            return Problem("payload-too-large", f"the limit is {self._max_body} bytes")
        return None

    async def _observed(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Run the app inside one server span, timing it by route template."""
        started, status = time.perf_counter(), 500

        async def observed_send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        # One server span per request (not per ASGI message); a caller's traceparent is honoured. Span
        # name and labels use the route template and a known method, never what the caller invented.
        method = scope["method"] if scope["method"] in _METHODS else "other"
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        with tracer.start_as_current_span(
            f"{method} unmatched", context=propagate.extract(carrier), kind=trace.SpanKind.SERVER
        ) as span:
            try:
                await self._app(scope, self._limited(receive), observed_send)
            finally:
                route = getattr(scope.get("route"), "path", "unmatched")
                span.update_name(f"{method} {route}")
                span.set_attribute("http.request.method", method)
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                HTTP_DURATION.labels(method, route, str(status)).observe(time.perf_counter() - started)

    def _limited(self, receive: Any) -> Callable[[], Awaitable[dict[str, Any]]]:
        seen = 0

        async def wrapped() -> dict[str, Any]:
            nonlocal seen
            message: dict[str, Any] = await receive()
            seen += len(message.get("body", b""))
            if seen > self._max_body:
                # Raised while FastAPI reads the body: only an HTTPException survives its body parsing.
                raise StarletteHTTPException(413, f"the limit is {self._max_body} bytes")
            return message

        return wrapped


def _clean_target(scope: Mapping[str, Any]) -> bool:
    """True when the percent-decoded path and query are UTF-8 without control characters.

    The raw bytes are checked, not the server's decoded `path`, which replaces bad UTF-8 silently.
    """
    raw_path = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogatepass")
    for part in (raw_path, scope.get("query_string") or b""):
        try:
            text = unquote_to_bytes(part).decode("utf-8")
        except UnicodeDecodeError:
            return False
        if _BAD_TEXT.search(text):
            return False
    return True


def _printable(text: str) -> str:
    """Text with its control characters and unpaired surrogates spelled as backslash-u escapes, for messages."""
    return _BAD_TEXT.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


def _idempotency_key(value: str | None) -> str:
    if value is None:
        raise Problem("missing-idempotency-key", "send an Idempotency-Key header")
    if len(value) > 255 or not _KEY.fullmatch(value):
        raise Problem("malformed-idempotency-key", "the key must be 1-255 printable ASCII characters, not only spaces")
    return value


def _deadline(value: str | None) -> timedelta | None:
    """The optional deadline override: a whole number of ms, s, m or h, from 1ms to 24h (`DEADLINE_PATTERN`)."""
    if value is None:
        return None
    if not _DEADLINE.fullmatch(value):
        raise Problem("invalid-deadline", _PROBLEM_TYPES["invalid-deadline"][2])
    number = value.rstrip("msh")
    return timedelta(**{_DEADLINE_UNITS[value[len(number) :]]: int(number)})


def _repository_cursor(value: str | None) -> str | None:
    """This API's cursor (`CURSOR_PATTERN`) as the repository's keyset cursor, `base64(<isoformat>|<uuid>)`.

    The API spells the cursor itself rather than passing the repository's on: every string of the
    documented shape is a position the repository can use, so none is refused as forged, while the
    repository's base64 text would admit many strings it cannot parse (and some that failed only in
    the driver, as a 500). A string of another shape is a 400.
    """
    if value is None:
        return None
    match = _CURSOR.fullmatch(value)
    if match is None:
        raise Problem("malformed-cursor", "a cursor is the next_cursor of an earlier page")
    at = _EPOCH + int(match[1]) * _MICROSECOND
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{uuid.UUID(match[2])}".encode()).decode()


def _api_cursor(value: str | None) -> str | None:
    """The repository's next-page cursor as this API spells it (see `_repository_cursor`)."""
    if value is None:
        return None
    at, _, saga_id = base64.urlsafe_b64decode(value).decode().partition("|")
    return f"{(datetime.fromisoformat(at) - _EPOCH) // _MICROSECOND}.{uuid.UUID(saga_id).hex}"


class _NotIJson(ValueError):
    """Valid JSON text that is not I-JSON (RFC 7493): ambiguous or inexact wherever it is read."""


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object hook that refuses a repeated member name: parsers disagree on which one wins."""
    members: dict[str, Any] = {}
    for name, value in pairs:
        if name in members:
            raise _NotIJson(f"the member name {_printable(name[:64])!r} appears twice in one object")
        members[name] = value
    return members


def _exact_integer(text: str) -> int:
    """Integers a double holds exactly; the length check comes first, so a 60,000-digit literal costs nothing."""
    if len(text) > 17 or abs(value := int(text)) > _MAX_SAFE_INTEGER:
        raise _NotIJson(f"the number {text[:20]}{'...' if len(text) > 20 else ''} is beyond +/-(2**53 - 1)")
    return value


def _finite_float(text: str) -> float | int:
    """Floats that stay finite (1e400 would become infinity, which JSON cannot even spell).

    JSON has one number type (RFC 8259 section 6): `2.0` and `2e0` are the integer 2, as JSON Schema's
    `integer` says, so they are read as 2 wherever a double holds them exactly.
    """
    value = float(text)
    if not math.isfinite(value):
        raise _NotIJson(f"the number {text[:20]} is out of range")
    return int(value) if value.is_integer() and abs(value) <= _MAX_SAFE_INTEGER else value


def _no_constant(name: str) -> Any:
    """NaN and Infinity are Python's extension, not JSON."""
    raise _NotIJson(f"{name} is not JSON")


def _json_document(raw: bytes) -> Any:
    """Parse a body as I-JSON.

    Raises:
        Problem: 400 for text that is not UTF-8, not JSON or not I-JSON; 422 for nesting so deep the
            parser gives up (bounded nesting is checked again, with a path, by `_text_problems`).
    """
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_members, parse_int=_exact_integer,
                          parse_float=_finite_float, parse_constant=_no_constant)  # fmt: skip
    except UnicodeDecodeError as exc:
        raise Problem("malformed-json", "the body is not valid UTF-8") from exc
    except json.JSONDecodeError as exc:
        raise Problem("malformed-json", "the body is not valid JSON",
                      errors=[f"body: {exc.msg} at character {exc.pos}"]) from exc  # fmt: skip
    except _NotIJson as exc:
        raise Problem("malformed-json", str(exc)) from exc
    except RecursionError as exc:
        raise Problem("invalid-request", "the body is nested too deeply",
                      errors=[f"body: nested deeper than {_MAX_DEPTH} levels"]) from exc  # fmt: skip


def _text_problems(value: Any, path: str = "", depth: int = 1) -> list[str]:
    """What no body may hold, as `path: reason` lines in document order.

    That is every string (member names too) with a control character or an unpaired surrogate, and
    every container nested deeper than `_MAX_DEPTH`. The recursion stops at that depth, so it is bounded.
    """
    problems: list[str] = []
    if isinstance(value, str):
        if found := _BAD_TEXT.search(value):
            problems.append(f"{path or 'body'}: must not contain control characters or unpaired surrogates "
                            f"(found U+{ord(found.group()):04X})")  # fmt: skip
    elif isinstance(value, dict | list) and depth > _MAX_DEPTH:
        problems.append(f"{path or 'body'}: nested deeper than {_MAX_DEPTH} levels")
    elif isinstance(value, dict):
        for name, member in value.items():
            where = f"{path}.{_printable(name[:64])}" if path else _printable(name[:64])
            problems += _text_problems(name, f"{where} (member name)", depth)
            problems += _text_problems(member, where, depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            problems += _text_problems(item, f"{path}[{index}]", depth + 1)
    return problems[:_MAX_PROBLEMS]


def _start_body(content_type: str | None, content_encoding: str | None, raw: bytes) -> StartSagaBody:
    """The body of `POST /v1/sagas`: JSON, I-JSON, clean text, then the model.

    Only `application/json` is taken (the one media type the OpenAPI document declares), in UTF-8, the
    only charset JSON has (RFC 8259 section 8.1), and without content coding.

    Raises:
        Problem: 415 for another media type, charset or coding; 400 for malformed JSON; 422 for bad
            text, deep nesting or a body the model refuses.
    """
    if not raw:
        raise Problem("invalid-request", "the request needs a JSON body",
                      errors=["body: a JSON object with saga_type and payload is required"])  # fmt: skip
    media, *params = [part.strip().lower() for part in (content_type or "").split(";")]
    charsets = {p.partition("=")[2].strip('"') for p in params if p.startswith("charset=")}
    if (
        media != "application/json"
        or not charsets <= {"utf-8"}
        or (content_encoding or "identity").lower() != "identity"
    ):
        raise Problem("unsupported-media-type", _PROBLEM_TYPES["unsupported-media-type"][2])
    document = _json_document(raw)
    if problems := _text_problems(document):
        inside_payload = all(p.startswith("payload") for p in problems)
        kind = "invalid-payload" if inside_payload else "invalid-request"
        raise Problem(kind, "the body holds text this API does not accept", errors=problems)
    try:
        return StartSagaBody.model_validate(document)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()]
        raise Problem("invalid-request", "the request does not match the API", errors=problems[:_MAX_PROBLEMS]) from exc


def _http_problem(request: Request, exc: StarletteHTTPException) -> Problem:
    """Starlette's and FastAPI's HTTP errors as problems, keeping their headers."""
    headers = dict(exc.headers or {})
    if exc.status_code == 405:  # RFC 9110 section 15.5.6: a 405 lists what the path does allow
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


# A saga id in a path, its pattern checked by FastAPI (a 422 otherwise).
SagaId = Annotated[str, Path(pattern=UUID_PATTERN, json_schema_extra={"format": "uuid"}, description="The saga's id.")]


class _Api(FastAPI):
    """FastAPI with the OpenAPI document of this module (see `_document`), built once."""

    auth_enabled = True

    def openapi(self) -> dict[str, Any]:
        """The document FastAPI derives from the routes, completed into the contract."""
        if self.openapi_schema is None:
            self.openapi_schema = _document(self, self.auth_enabled)
        return self.openapi_schema


def create_app(  # noqa: C901 - a flat list of route declarations
    service: usecases.SagaService,
    views: ports.SagaViews,
    worker: Worker,
    authenticate: Authenticator,
    readiness: health.Readiness,
    max_body: int,
) -> Any:
    """The REST application for one instance."""
    # FastAPI's built-in telemetry would add a second server span and spans per dependency and endpoint
    # to every request; the middleware below already makes the one server span and the HTTP metrics.
    # No slash redirects: `/v1/sagas/` is a 404 like any unknown path, not a 307 the document cannot list.
    app = _Api(title="Sagaline", version="1.0.0", docs_url=None, redoc_url=None, redirect_slashes=False,
               description=_DESCRIPTION,
               telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False})  # fmt: skip
    app.auth_enabled = authenticate.enabled
    app.mount("/static/swagger", StaticFiles(directory=str(swagger_ui_path)), name="swagger")
    _install_error_handlers(app)
    auth = authenticate.enabled

    # Async dependencies run on the event loop; plain `def` ones would each hop through a thread pool.
    async def caller(request: Request) -> Principal:
        # The middleware authenticated the request already; the document declares the bearer scheme.
        principal: Principal = request.state.principal
        return principal

    async def admin(principal: Annotated[Principal, Depends(caller)]) -> Principal:
        if principal.role != "admin":
            raise Problem("forbidden", "this operation needs the admin role")
        return principal

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="Sagaline API",
                                   swagger_js_url="/static/swagger/swagger-ui-bundle.js",
                                   swagger_css_url="/static/swagger/swagger-ui.css",
                                   swagger_favicon_url="/static/swagger/favicon-32x32.png")  # fmt: skip

    async def start_body(request: Request) -> StartSagaBody:
        raw = await request.body()  # bounded by the middleware's body limit
        return _start_body(request.headers.get("content-type"), request.headers.get("content-encoding"), raw)

    @app.post("/v1/sagas", status_code=202, operation_id="startSaga", summary="Start a saga",
              responses=_responses("startSaga", auth), openapi_extra=_START_EXTRA)  # fmt: skip
    async def start_saga(
        body: Annotated[StartSagaBody, Depends(start_body)],
        principal: Annotated[Principal, Depends(caller)],
        # Declared in the document by `_START_EXTRA`: a bad key is a 400 here, not FastAPI's 422.
        idempotency_key: Annotated[str | None, Header(include_in_schema=False)] = None,
    ) -> JSONResponse:
        key = _idempotency_key(idempotency_key)
        deadline = _deadline(body.deadline)
        owner = worker.owner_id if worker.has_capacity() else None
        # Scoped to the caller, so one client's key can neither find nor block another client's saga.
        # The scoped form stays inside: the answer carries the saga, never the stored key.
        request = usecases.StartRequest(principal.scope(key), body.saga_type, body.payload, deadline)
        started = await service.start(request, owner, dict(engine.carrier()))
        if started.created:
            SAGA_STARTED.labels(body.saga_type).inc()
        if started.claimed is not None:
            worker.adopt(started.claimed)
        view = await views.get_view(started.saga_id)
        location = f"/v1/sagas/{started.saga_id}"
        return JSONResponse(view, status_code=202 if started.created else 200, headers={"Location": location})

    @app.get("/v1/sagas/{saga_id}", operation_id="getSaga", summary="One saga, its steps and its history",
             responses=_responses("getSaga", auth))  # fmt: skip
    async def get_saga(saga_id: SagaId, _: Annotated[Principal, Depends(caller)]) -> JSONResponse:
        view = await views.get_view(saga_id)
        if view is None:
            raise Problem("saga-not-found", f"no saga {saga_id}")
        return JSONResponse(view)

    @app.get("/v1/sagas", operation_id="listSagas", summary="List sagas, newest first",
             responses=_responses("listSagas", auth))  # fmt: skip
    async def list_sagas(
        _: Annotated[Principal, Depends(caller)],
        status: Annotated[SagaStatus | None, Query(description="Only sagas in this status.")] = None,
        saga_type: Annotated[
            str | None, Query(max_length=100, pattern=TEXT_PATTERN, description="Only sagas of this type.")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=100, description="The most sagas on one page.")] = 20,
        # Checked by `_repository_cursor`, so a cursor of another shape is a 400, not FastAPI's 422.
        cursor: Annotated[
            str | None,
            Query(json_schema_extra={"pattern": CURSOR_PATTERN}, description="The `next_cursor` of the page before."),
        ] = None,
    ) -> JSONResponse:
        after = _repository_cursor(cursor)
        items, following = await views.list_view(status.value if status else None, saga_type, limit, after)
        return JSONResponse({"items": items, "next_cursor": _api_cursor(following)})

    @app.post("/v1/sagas/{saga_id}/retry", status_code=202, operation_id="retrySaga",
              summary="Resume a FAILED saga (admin)", responses=_responses("retrySaga", auth))  # fmt: skip
    async def retry_saga(saga_id: SagaId, _: Annotated[Principal, Depends(admin)]) -> JSONResponse:
        claimed = await service.retry(saga_id, worker.owner_id)
        worker.adopt(claimed)
        return JSONResponse(await views.get_view(saga_id), status_code=202)

    @app.post("/v1/sagas/{saga_id}/cancel", status_code=202, operation_id="cancelSaga",
              summary="Stop a saga going forward (admin)", responses=_responses("cancelSaga", auth))  # fmt: skip
    async def cancel_saga(saga_id: SagaId, _: Annotated[Principal, Depends(admin)]) -> JSONResponse:
        await service.cancel(saga_id)
        return JSONResponse(await views.get_view(saga_id), status_code=202)

    return Middleware(app, readiness, max_body, authenticate)


_DOMAIN_ERRORS: Final[list[tuple[type[Exception], str]]] = [
    (errors.UnknownSagaType, "unknown-saga-type"),
    (errors.InvalidRequest, "invalid-payload"),
    (errors.IdempotencyConflict, "idempotency-key-reused"),
    (errors.MalformedCursor, "malformed-cursor"),
    (errors.SagaNotFound, "saga-not-found"),
    (errors.StateConflict, "state-conflict"),
]

_HTTP_ERRORS: Final = {404: "not-found", 405: "method-not-allowed", 413: "payload-too-large"}


def _domain_problem(exc: errors.OrchestratorError) -> Problem:
    """The problem a domain error means for the caller; an error the table does not name is a bug."""
    for kind, slug in _DOMAIN_ERRORS:
        if isinstance(exc, kind):
            extra: dict[str, Any] = {}
            if isinstance(exc, errors.InvalidRequest):
                extra["errors"] = exc.problems[:_MAX_PROBLEMS]
            return Problem(slug, str(exc), **extra)
    raise exc


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def on_problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc, request.url.path)

    @app.exception_handler(errors.OrchestratorError)
    async def on_domain(request: Request, exc: errors.OrchestratorError) -> JSONResponse:
        return problem_response(_domain_problem(exc), request.url.path)

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()][:_MAX_PROBLEMS]
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            bad = Problem("malformed-json", "the body is not valid JSON", errors=problems)
        else:
            bad = Problem("invalid-request", "the request does not match the API", errors=problems)
        return problem_response(bad, request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem_response(_http_problem(request, exc), request.url.path)

    # The repository translates every transient database error (unreachable, cancelled, terminated,
    # too many connections, deadlock, serialization failure, read-only) into StoreUnavailable, once.
    @app.exception_handler(errors.StoreUnavailable)
    async def on_database_down(request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable during request", path=request.url.path, error=repr(exc))
        return problem_response(Problem("database-unavailable", "try again shortly"), request.url.path)

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in request", path=request.url.path)
        return problem_response(Problem("internal-error", "an unexpected error occurred"), request.url.path)


# -- the OpenAPI document ------------------------------------------------------------------------------------

_DESCRIPTION: Final = """Start, follow, retry and cancel sagas.

Every error is `application/problem+json` (RFC 9457, schema `ProblemDetails`) with a stable `type` per
error. Besides the answers each operation lists, any path answers `404 not-found` when no route has it
(`components/responses/NotFound`) and `405 method-not-allowed` with `Allow` for a method it does not
take (`components/responses/MethodNotAllowed`). A `500 internal-error` (`components/responses/
InternalError`) is a bug, never part of the contract. Bad input gets a 4xx and persists nothing."""

_PROBLEM_REF: Final = {"$ref": "#/components/schemas/ProblemDetails"}
_SAGA_REF: Final = {"$ref": "#/components/schemas/SagaView"}
_HEADERS: Final[dict[str, dict[str, Any]]] = {
    "Location": {"description": "The saga's URL.", "required": True,
                 "schema": {"type": "string", "pattern": r"^/v1/sagas/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-"
                            r"[0-9a-f]{4}-[0-9a-f]{12}$"}},
    "Retry-After": {"description": "Seconds to wait before trying again.", "required": True,
                    "schema": {"type": "integer", "minimum": 0}},
    "WWW-Authenticate": {"description": "`Bearer`, the scheme this API takes (RFC 6750).", "required": True,
                         "schema": {"type": "string", "pattern": "^Bearer "}},
    "Allow": {"description": "The methods the path takes.", "required": True, "schema": {"type": "string"}},
}  # fmt: skip
_STATUS_HEADERS: Final = {401: "WWW-Authenticate", 405: "Allow", 503: "Retry-After"}


def _link(operation: str, description: str) -> dict[str, Any]:
    return {"operationId": operation, "parameters": {"saga_id": "$response.body#/id"}, "description": description}


_SAGA_LINKS: Final = {
    "GetSaga": _link("getSaga", "Follow the saga."),
    "CancelSaga": _link("cancelSaga", "Cancel the saga."),
    "RetrySaga": _link("retrySaga", "Retry the saga once it is FAILED."),
}

# The answers of each operation: success (status -> description, with the Location header or not) and
# the problem types of each error status. 401 and 403 are listed only when authentication is on.
_ROUTE_SUCCESS: Final[dict[str, dict[int, tuple[str, bool]]]] = {
    "startSaga": {
        202: ("The saga was created; `Location` names it.", True),
        200: ("A replay: the same key and body as an earlier request, answered with that saga as it is now.", True),
    },
    "getSaga": {200: ("The saga, its steps and its history.", False)},
    "listSagas": {200: ("A page of sagas, newest first.", False)},
    "retrySaga": {202: ("Retried: the saga as it is now, usually COMPENSATING (or EXECUTING past the point of no "
                        "return).", False)},
    "cancelSaga": {202: ("The cancellation was requested: the saga, with `cancel_requested: true`.", False)},
}  # fmt: skip
_ADMIN: Final = {403: ("forbidden",), 404: ("saga-not-found", "not-found"), 409: ("state-conflict",)}
_ROUTE_PROBLEMS: Final[dict[str, dict[int, tuple[str, ...]]]] = {
    "startSaga": {
        400: ("missing-idempotency-key", "malformed-idempotency-key", "malformed-json", "invalid-characters"),
        415: ("unsupported-media-type",),
        422: ("invalid-request", "unknown-saga-type", "invalid-payload", "invalid-deadline", "idempotency-key-reused"),
    },
    "getSaga": {400: ("invalid-characters",), 404: ("saga-not-found", "not-found"), 422: ("invalid-request",)},
    "listSagas": {400: ("malformed-cursor", "invalid-characters"), 422: ("invalid-request",)},
    "retrySaga": {400: ("invalid-characters",), **_ADMIN, 422: ("invalid-request",)},
    "cancelSaga": {400: ("invalid-characters",), **_ADMIN, 422: ("invalid-request",)},
}
# What every /v1 operation may answer besides its own problems.
_EVERY_ROUTE: Final = {401: ("unauthenticated",), 413: ("payload-too-large",), 503: ("database-unavailable",)}


def _responses(operation: str, auth: bool) -> dict[int | str, dict[str, Any]]:
    """The `responses` of one operation: its successes and its problems, with their headers and examples."""
    answers: dict[int | str, dict[str, Any]] = {}
    for status, (description, located) in _ROUTE_SUCCESS[operation].items():
        answer: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": _SAGA_REF}}}
        if operation == "listSagas":
            answer["content"]["application/json"]["schema"] = {"$ref": "#/components/schemas/SagaPage"}
        if located:
            answer["headers"] = {"Location": _HEADERS["Location"]}
        if operation == "startSaga":
            answer["links"] = _SAGA_LINKS
        elif operation in ("retrySaga", "cancelSaga"):
            answer["links"] = {"GetSaga": _SAGA_LINKS["GetSaga"]}
        answers[status] = answer
    problems = {**_ROUTE_PROBLEMS[operation], **_EVERY_ROUTE}
    for status in sorted(problems):
        if auth or status not in (401, 403):
            answers[status] = _problem_answer(problems[status])
    return answers


def _problem_answer(kinds: tuple[str, ...]) -> dict[str, Any]:
    """One error status of an operation: the problem types it stands for, each with an example."""
    status = _PROBLEM_TYPES[kinds[0]][0]
    titles = [f"`{kind}` ({_PROBLEM_TYPES[kind][1]})" for kind in kinds]
    examples = {kind: {"summary": _PROBLEM_TYPES[kind][1], "value": _example(kind)} for kind in kinds}
    answer: dict[str, Any] = {
        "description": "One of " + ", ".join(titles) + "." if len(kinds) > 1 else titles[0] + ".",
        "content": {PROBLEM: {"schema": _PROBLEM_REF, "examples": examples}},
    }
    if status in _STATUS_HEADERS:
        name = _STATUS_HEADERS[status]
        answer["headers"] = {name: _HEADERS[name]}
    return answer


def _example(kind: str) -> dict[str, Any]:
    status, title, detail = _PROBLEM_TYPES[kind]
    example: dict[str, Any] = {"type": _TYPE_BASE + kind, "title": title, "status": status, "detail": detail,
                               "instance": "/v1/sagas", "trace_id": "e9bfda2fa3aa471ea7a39ae7eb4abd3d"}  # fmt: skip
    if kind in _EXAMPLE_ERRORS:
        example["errors"] = _EXAMPLE_ERRORS[kind]
    return example


# The body of POST /v1/sagas, per saga type. The payload rules mirror `definitions.validate_order_payload`
# (and through it what the participants accept); the contract test fails if the two disagree.
_ORDER_ITEM: Final = {
    "type": "object",
    "additionalProperties": False,
    "required": ["sku", "quantity", "unit_price"],
    "properties": {
        "sku": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", "examples": ["SKU-WIDGET"]},
        "quantity": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
        "unit_price": {"type": "string", "pattern": r"^[0-9]{1,12}(\.[0-9]{1,2})?$", "examples": ["9.99"],
                       "description": "A decimal string: at most 12 digits before the point and 2 after."},
    },
}  # fmt: skip
_ORDER_PAYLOAD: Final = {
    "type": "object",
    "additionalProperties": False,
    "required": ["customer_id", "items"],
    "description": "An order. Its total, the sum of quantity x unit_price the order service computes, must be "
    "above 0 and at most 999999999999.99: otherwise `422 invalid-payload` (a rule across fields, which no "
    "schema states).",
    "properties": {
        "customer_id": {"type": "string", "format": "uuid", "pattern": UUID_PATTERN},
        "items": {"type": "array", "minItems": 1, "maxItems": 100, "items": {"$ref": "#/components/schemas/OrderItem"}},
        "currency": {"type": "string", "pattern": "^[A-Z]{3}$", "default": "USD"},
    },
}
_START_EXAMPLE: Final = {
    "saga_type": definitions.ORDER_SAGA,
    "payload": {"customer_id": "11111111-1111-4111-8111-111111111111",
                "items": [{"sku": "SKU-WIDGET", "quantity": 2, "unit_price": "9.99"}], "currency": "USD"},
}  # fmt: skip
_START_SAGA: Final = {
    "type": "object",
    "additionalProperties": False,
    "required": ["saga_type", "payload"],
    "description": "Unknown members are refused with 422, at every level, rather than silently dropped.",
    "properties": {
        "saga_type": {"type": "string", "enum": [definitions.ORDER_SAGA]},
        "deadline": {
            "type": ["string", "null"],
            "pattern": DEADLINE_PATTERN,
            "description": "Replaces the saga type's deadline (60 s for order_saga): a whole number of ms, s, m "
            "or h, from 1ms to 24h. Part of the request's fingerprint for the Idempotency-Key.",
            "examples": ["30s"],
        },
        "payload": {"$ref": "#/components/schemas/OrderSagaPayload"},
    },
}
_START_EXTRA: Final = {
    "parameters": [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": True,
            "description": "Names this business transaction for its caller: the same key and body again answers "
            "200 with the same saga; the same key with another body, 422. 1-255 printable ASCII characters, not "
            "only spaces; anything else is a 400.",
            "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": KEY_PATTERN},
            "example": "7f1c2b9e-order-42",
        }
    ],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"$ref": "#/components/schemas/StartSaga"},
                "examples": {"order": {"summary": "An order of two widgets", "value": _START_EXAMPLE}},
            }
        },
    },
}


def _probe_paths() -> dict[str, Any]:
    """The probes and `/metrics`, answered by the middleware before FastAPI, so FastAPI cannot list them."""

    def probe(operation: str, summary: str, answers: dict[str, Any]) -> dict[str, Any]:
        return {"get": {"operationId": operation, "summary": summary, "security": [], "responses": answers}}

    def json_answer(description: str, schema: str) -> dict[str, Any]:
        return {"description": description,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}  # fmt: skip

    alive = {"200": json_answer("The event loop answers (no dependency is checked).", "Liveness")}
    not_ready = {**json_answer("Not ready: shutting down, database unreachable, or no recent poll.", "Readiness"),
                 "headers": {"Retry-After": _HEADERS["Retry-After"]}}  # fmt: skip
    ready = {"200": json_answer("Ready to take sagas.", "Readiness"), "503": not_ready}
    metrics = {"200": {"description": "Prometheus text format.",
                       "content": {"text/plain": {"schema": {"type": "string"}}}}}  # fmt: skip
    return {
        "/livez": probe("livez", "Liveness", alive),
        "/health": probe("health", "Liveness (alias of /livez)", alive),
        "/readyz": probe("readyz", "Readiness: a database round trip and a recent poll", ready),
        "/ready": probe("ready", "Readiness (alias of /readyz)", ready),
        "/metrics": probe("metrics", "Prometheus metrics", metrics),
    }


def _components(auth: bool) -> dict[str, Any]:
    """Schemas of every document the API reads or writes, the shared answers, and the security scheme."""
    models = (ProblemDetails, SagaView, SagaSummaryView, SagaPage, StepView, EventView, Liveness, Readiness)
    _, found = models_json_schema([(m, "serialization") for m in models], ref_template="#/components/schemas/{model}")
    schemas = {**found["$defs"], "StartSaga": _START_SAGA, "OrderSagaPayload": _ORDER_PAYLOAD,
               "OrderItem": _ORDER_ITEM}  # fmt: skip
    shared = {
        "NotFound": _problem_answer(("not-found",)),
        "MethodNotAllowed": _problem_answer(("method-not-allowed",)),
        "InternalError": _problem_answer(("internal-error",)),
    }
    components: dict[str, Any] = {"schemas": schemas, "responses": shared}
    if auth:
        scheme = "An API key; role `client` may start and read sagas, `admin` may also retry and cancel them."
        components["securitySchemes"] = {"bearerAuth": {"type": "http", "scheme": "bearer", "description": scheme}}
    return components


def _document(app: FastAPI, auth: bool) -> dict[str, Any]:
    """The OpenAPI document: FastAPI's paths and parameters, completed with what FastAPI cannot know.

    That is the schemas of the documents handlers build by hand, the headers checked by hand, the
    probes the middleware answers, and the bearer scheme when authentication is on.
    """
    document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    derived, own = document.get("components", {}), _components(auth)
    document["components"] = {**derived, **own, "schemas": {**derived.get("schemas", {}), **own["schemas"]}}
    for item in document["paths"].values():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                parameter["schema"] = _without_null(parameter["schema"])
            if auth:
                operation["security"] = [{"bearerAuth": []}]
    document["paths"].update(_probe_paths())
    return document


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A parameter's schema without the `null` branch FastAPI adds for an optional one.

    A query parameter is a string or absent; it is never JSON null, so `anyOf [X, null]` becomes X.
    """
    branches = [b for b in schema.get("anyOf", []) if b != {"type": "null"}]
    if len(branches) != 1:
        return schema
    rest = {k: v for k, v in schema.items() if k != "anyOf"}
    return {**branches[0], **rest}
