"""The REST API (SPEC section 3): FastAPI routes behind plain ASGI middleware.

Errors are `application/problem+json` (RFC 9457) with a stable `type` URI per error. Bad input gets a
4xx and persists nothing; a 5xx is a bug, except 503 with Retry-After while the database is unreachable
or answers with a transient error. The
middleware answers probes and `/metrics` before FastAPI sees them, enforces the body size limit, and
times requests by route template, all without per-message overhead.

Hostile input stops here, before the use cases and the database see it: a path or query that is not
UTF-8 or holds a control character (PostgreSQL cannot store NUL in text) is a 400; the body of
`POST /v1/sagas` is parsed by this module, not by FastAPI, so that only I-JSON (RFC 7493: UTF-8, unique
member names, numbers a double holds exactly) in `application/json` gets through, with no control
characters or unpaired surrogates in any string and bounded nesting. The saga definition then refuses,
with 422, every payload a participant would refuse.
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
from typing import Annotated, Any, Final
from urllib.parse import unquote_to_bytes

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from opentelemetry import propagate, trace
from prometheus_client import Histogram
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from swagger_ui_bundle import swagger_ui_path

from orchestrator import engine, ports, usecases
from orchestrator.domain import errors
from orchestrator.domain.model import SagaStatus
from orchestrator.metrics import SAGA_STARTED
from orchestrator.worker import Worker
from servicekit import health, logging, settings

log = logging.get_logger(__name__)
tracer = trace.get_tracer("sagaline.orchestrator.api")

PROBLEM: Final = "application/problem+json"
_TYPE_BASE: Final = "https://sagaline.dev/problems/"
_KEY_CHARS: Final = frozenset(chr(c) for c in range(0x20, 0x7F))
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

HTTP_DURATION: Final = Histogram(
    "http_request_duration_seconds", "REST request duration by route template.", ["method", "route", "status"]
)


class StartSagaBody(BaseModel):
    """Body of `POST /v1/sagas`; an unknown member is refused rather than silently dropped (a typo'd deadline)."""

    model_config = ConfigDict(extra="forbid")

    saga_type: str = Field(min_length=1, max_length=100, examples=["order_saga"])
    deadline: str | None = Field(
        default=None,
        description="Override of the saga type's deadline, as a duration such as '30s' or '250ms' (1ms to 24h).",
        examples=["30s"],
    )
    payload: dict[str, Any] = Field(
        examples=[{"customer_id": "11111111-1111-4111-8111-111111111111",
                   "items": [{"sku": "SKU-WIDGET", "quantity": 2, "unit_price": "9.99"}], "currency": "USD"}]
    )  # fmt: skip


class Problem(Exception):
    """An HTTP error rendered as problem+json; `headers` go on the response (WWW-Authenticate, Allow)."""

    def __init__(
        self, status: int, kind: str, title: str, detail: str = "", *, headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:  # fmt: skip
        super().__init__(detail or title)
        self.status, self.kind, self.title, self.detail, self.extra = status, kind, title, detail, extra
        self.headers = dict(headers or {})


def problem_response(problem: Problem, instance: str) -> JSONResponse:
    """Render a Problem as an RFC 9457 document."""
    body = {"type": _TYPE_BASE + problem.kind, "title": problem.title, "status": problem.status,
            "detail": problem.detail or problem.title, "instance": instance, **problem.extra}  # fmt: skip
    headers = {"Retry-After": "1"} if problem.status == 503 else {}
    return JSONResponse(body, status_code=problem.status, media_type=PROBLEM, headers=headers | problem.headers)


class ProblemDocument(BaseModel):
    """The RFC 9457 document every error answers with (for the OpenAPI document)."""

    type: str
    title: str
    status: int
    detail: str
    instance: str
    errors: list[str] | None = Field(default=None, description="One line per problem: `field.path: reason`.")


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

    def __call__(self, authorization: str | None) -> Principal:
        """Identify the caller from an `Authorization: Bearer <key>` header."""
        if self._keys is None:
            return Principal("anonymous", "admin", authenticated=False)
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            # RFC 9110 section 11.6.1 and RFC 6750 section 3: a 401 names the scheme it wants.
            raise Problem(401, "unauthenticated", "Unauthenticated", "send Authorization: Bearer <api key>",
                          headers={"WWW-Authenticate": 'Bearer realm="sagaline"'})  # fmt: skip
        digest = hashlib.sha256(token.strip().encode()).digest()
        match = None
        for name, role, expected in self._keys:  # every key is compared, so timing reveals nothing
            if hmac.compare_digest(digest, expected):
                match = Principal(name, role)
        if match is None:
            raise Problem(401, "unauthenticated", "Unauthenticated", "unknown API key",
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
        if await health.probe(scope["path"], send, self._readiness):
            return
        headers = dict(scope["headers"])
        if scope["path"].startswith("/v1/"):
            authorization = headers.get(b"authorization")
            try:
                principal = self._authenticate(authorization.decode("latin-1") if authorization else None)
            except Problem as problem:
                await problem_response(problem, scope["path"])(scope, receive, send)
                return
            scope.setdefault("state", {})["principal"] = principal
        if not _clean_target(scope):
            bad = Problem(400, "invalid-characters", "Invalid characters",
                          "the path and query must be UTF-8 without control characters")  # fmt: skip
            await problem_response(bad, _printable(scope["path"]))(scope, receive, send)
            return
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self._max_body):
            too_big = Problem(413, "payload-too-large", "Payload too large", f"the limit is {self._max_body} bytes")
            await problem_response(too_big, scope["path"])(scope, receive, send)
            return
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
        raise Problem(400, "missing-idempotency-key", "Missing Idempotency-Key", "send an Idempotency-Key header")
    if not 1 <= len(value) <= 255 or not set(value) <= _KEY_CHARS or not value.strip():
        raise Problem(400, "malformed-idempotency-key", "Malformed Idempotency-Key",
                      "the key must be 1-255 printable ASCII characters")  # fmt: skip
    return value


def _deadline(value: str | None) -> timedelta | None:
    if value is None:
        return None
    try:
        deadline = settings.parse_duration(value)
    except ValueError as exc:
        raise Problem(422, "invalid-deadline", "Invalid deadline", str(exc)) from exc
    if not timedelta(milliseconds=1) <= deadline <= timedelta(hours=24):
        raise Problem(422, "invalid-deadline", "Invalid deadline", "the deadline must be from 1ms to 24h")
    return deadline


def _cursor(value: str | None) -> str | None:
    """The list cursor, passed on unchanged once it is known to be one the repository can use.

    The repository's `decode_cursor` parses `base64(<isoformat>|<uuid>)` but takes any timestamp
    `fromisoformat` does: a naive one, or one whose conversion to UTC leaves Python's range (year 1 at
    +14:00, year 9999 at -14:00), fails only when the driver encodes it, as a 500. A cursor this API
    issued is always timezone-aware and in range, so anything else is forged: 400.
    """
    if value is None:
        return None
    try:
        at, _, saga_id = base64.urlsafe_b64decode(value.encode("ascii")).decode("utf-8").partition("|")
        uuid.UUID(saga_id)
        parsed = datetime.fromisoformat(at)
        if parsed.utcoffset() is None:
            raise ValueError("a cursor's timestamp has a time zone")
        parsed.astimezone(UTC)
    except (ValueError, OverflowError) as exc:  # binascii.Error and UnicodeError are ValueErrors
        raise Problem(400, "malformed-cursor", "Malformed cursor", "the cursor is not one this API issued") from exc
    return value


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


def _finite_float(text: str) -> float:
    """Floats that stay finite (1e400 would become infinity, which JSON cannot even spell)."""
    value = float(text)
    if not math.isfinite(value):
        raise _NotIJson(f"the number {text[:20]} is out of range")
    return value


def _no_constant(name: str) -> Any:
    """NaN and Infinity are Python's extension, not JSON."""
    raise _NotIJson(f"{name} is not JSON")


def _json_document(raw: bytes) -> Any:
    """Parse a body as I-JSON.

    Raises:
        Problem: 400 for text that is not UTF-8, not JSON or not I-JSON; 422 for nesting so deep the
            parser gives up (bounded nesting is checked again, with a path, by `_text_problems`).
    """
    malformed = "Malformed JSON"
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_members, parse_int=_exact_integer,
                          parse_float=_finite_float, parse_constant=_no_constant)  # fmt: skip
    except UnicodeDecodeError as exc:
        raise Problem(400, "malformed-json", malformed, "the body is not valid UTF-8") from exc
    except json.JSONDecodeError as exc:
        raise Problem(400, "malformed-json", malformed, "the body is not valid JSON",
                      errors=[f"body: {exc.msg} at character {exc.pos}"]) from exc  # fmt: skip
    except _NotIJson as exc:
        raise Problem(400, "malformed-json", malformed, str(exc)) from exc
    except RecursionError as exc:
        raise Problem(422, "invalid-request", "Invalid request", "the body is nested too deeply",
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

    Raises:
        Problem: 415 for a body that is not `application/json` (or `+json`) in UTF-8 and identity
            coding; 400 for malformed JSON; 422 for bad text, deep nesting or a body the model refuses.
    """
    if not raw:
        raise Problem(422, "invalid-request", "Invalid request", "the request needs a JSON body",
                      errors=["body: a JSON object with saga_type and payload is required"])  # fmt: skip
    media, *params = [part.strip().lower() for part in (content_type or "").split(";")]
    charsets = {p.partition("=")[2].strip('"') for p in params if p.startswith("charset=")}
    is_json = media == "application/json" or (media.startswith("application/") and media.endswith("+json"))
    if not is_json or not charsets <= {"utf-8"} or (content_encoding or "identity").lower() != "identity":
        raise Problem(415, "unsupported-media-type", "Unsupported media type",
                      "send the body as application/json in UTF-8, without content coding")  # fmt: skip
    document = _json_document(raw)
    if problems := _text_problems(document):
        inside_payload = all(p.startswith("payload") for p in problems)
        kind, title = (
            ("invalid-payload", "Invalid payload") if inside_payload else ("invalid-request", "Invalid request")
        )
        raise Problem(422, kind, title, "the body holds text this API does not accept", errors=problems)
    try:
        return StartSagaBody.model_validate(document)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()]
        raise Problem(422, "invalid-request", "Invalid request", "the request does not match the API",
                      errors=problems[:_MAX_PROBLEMS]) from exc  # fmt: skip


def _http_problem(request: Request, exc: StarletteHTTPException) -> Problem:
    """Starlette's and FastAPI's HTTP errors as problems, keeping their headers."""
    slug, title = _HTTP_ERRORS.get(exc.status_code, ("http-error", str(exc.detail)))
    headers = dict(exc.headers or {})
    if exc.status_code == 405:  # RFC 9110 section 15.5.6: a 405 lists what the path does allow
        headers["Allow"] = _allowed(request)
    return Problem(exc.status_code, slug, title, str(exc.detail), headers=headers)


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


def _problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problem+json answers of a route."""
    return {status: _PROBLEM_DOCS[status] for status in statuses}


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
    app = FastAPI(title="Sagaline", version="1.0.0", docs_url=None, redoc_url=None,
                  description="Start, follow, retry and cancel sagas.",
                  telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False})  # fmt: skip
    app.mount("/static/swagger", StaticFiles(directory=str(swagger_ui_path)), name="swagger")
    _install_error_handlers(app)

    # Async dependencies run on the event loop; plain `def` ones would each hop through a thread pool.
    async def caller(request: Request, authorization: Annotated[str | None, Header()] = None) -> Principal:
        # The middleware authenticated the request already; the header is declared for the OpenAPI document.
        principal: Principal = request.state.principal
        return principal

    async def admin(principal: Annotated[Principal, Depends(caller)]) -> Principal:
        if principal.role != "admin":
            raise Problem(403, "forbidden", "Forbidden", "this operation needs the admin role")
        return principal

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="Sagaline API",
                                   swagger_js_url="/static/swagger/swagger-ui-bundle.js",
                                   swagger_css_url="/static/swagger/swagger-ui.css",
                                   swagger_favicon_url="/static/swagger/favicon-32x32.png")  # fmt: skip

    # The body is read and parsed by `_start_body`, not by FastAPI, so the OpenAPI document gets it here.
    start_doc = {"requestBody": {"required": True, "content": {"application/json": {"schema": _START_SCHEMA}}}}

    async def start_body(request: Request) -> StartSagaBody:
        raw = await request.body()  # bounded by the middleware's body limit
        return _start_body(request.headers.get("content-type"), request.headers.get("content-encoding"), raw)

    @app.post(
        "/v1/sagas",
        status_code=202,
        openapi_extra=start_doc,
        responses={
            200: {"description": "Replay of an earlier request with the same key and body: the same saga."},
            202: {"description": "The saga was created.", "headers": {"Location": _LOCATION_DOC}},
            **_problems(400, 401, 413, 415, 422, 503),
        },
    )
    async def start_saga(
        body: Annotated[StartSagaBody, Depends(start_body)],
        principal: Annotated[Principal, Depends(caller)],
        idempotency_key: Annotated[str | None, Header()] = None,
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

    @app.get("/v1/sagas/{saga_id}", responses=_problems(400, 401, 404, 422, 503))
    async def get_saga(saga_id: uuid.UUID, _: Annotated[Principal, Depends(caller)]) -> JSONResponse:
        view = await views.get_view(str(saga_id))
        if view is None:
            raise Problem(404, "saga-not-found", "Saga not found", f"no saga {saga_id}")
        return JSONResponse(view)

    @app.get("/v1/sagas", responses=_problems(400, 401, 422, 503))
    async def list_sagas(
        _: Annotated[Principal, Depends(caller)],
        status: SagaStatus | None = None,
        saga_type: Annotated[str | None, Query(max_length=100)] = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
    ) -> JSONResponse:
        items, following = await views.list_view(status.value if status else None, saga_type, limit, _cursor(cursor))
        return JSONResponse({"items": items, "next_cursor": following})

    @app.post("/v1/sagas/{saga_id}/retry", status_code=202, responses=_problems(400, 401, 403, 404, 409, 422, 503))
    async def retry_saga(saga_id: uuid.UUID, _: Annotated[Principal, Depends(admin)]) -> JSONResponse:
        claimed = await service.retry(str(saga_id), worker.owner_id)
        worker.adopt(claimed)
        return JSONResponse(await views.get_view(str(saga_id)), status_code=202)

    @app.post("/v1/sagas/{saga_id}/cancel", status_code=202, responses=_problems(400, 401, 403, 404, 409, 422, 503))
    async def cancel_saga(saga_id: uuid.UUID, _: Annotated[Principal, Depends(admin)]) -> JSONResponse:
        await service.cancel(str(saga_id))
        return JSONResponse(await views.get_view(str(saga_id)), status_code=202)

    return Middleware(app, readiness, max_body, authenticate)


_DOMAIN_ERRORS: Final[list[tuple[type[Exception], int, str, str]]] = [
    (errors.UnknownSagaType, 422, "unknown-saga-type", "Unknown saga type"),
    (errors.InvalidRequest, 422, "invalid-payload", "Invalid payload"),
    (errors.IdempotencyConflict, 422, "idempotency-key-reused", "Idempotency-Key reused with another body"),
    (errors.MalformedCursor, 400, "malformed-cursor", "Malformed cursor"),
    (errors.SagaNotFound, 404, "saga-not-found", "Saga not found"),
    (errors.StateConflict, 409, "state-conflict", "The saga's state forbids this"),
]


_HTTP_ERRORS: Final = {
    400: ("malformed-request", "Malformed request"),
    404: ("not-found", "Not Found"),
    405: ("method-not-allowed", "Method Not Allowed"),
    413: ("payload-too-large", "Payload too large"),
}

_START_SCHEMA: Final = StartSagaBody.model_json_schema()
_LOCATION_DOC: Final = {"description": "The saga's URL, `/v1/sagas/{saga_id}`.", "schema": {"type": "string"}}


def _problem_doc(description: str, **headers: str) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "description": description,
        "content": {PROBLEM: {"schema": ProblemDocument.model_json_schema()}},
    }
    if headers:
        doc["headers"] = {name: {"description": text, "schema": {"type": "string"}} for name, text in headers.items()}
    return doc


_PROBLEM_DOCS: Final = {
    400: _problem_doc("Missing or malformed Idempotency-Key, malformed JSON or cursor, or a path or query with "
                      "control characters or bytes that are not UTF-8."),
    401: _problem_doc("No or an unknown API key.", **{"WWW-Authenticate": "`Bearer`, the scheme this API takes."}),
    403: _problem_doc("The operation needs the admin role."),
    404: _problem_doc("No saga has this id."),
    409: _problem_doc("The saga's state forbids the operation."),
    413: _problem_doc("The body is over the size limit."),
    415: _problem_doc("The body is not application/json in UTF-8."),
    422: _problem_doc("Unknown saga type, invalid payload or parameters, or an Idempotency-Key reused with "
                      "another body. `errors` names every field and reason."),
    503: _problem_doc("The database is unreachable or answered with a transient error.",
                      **{"Retry-After": "Seconds to wait before trying again."}),
}  # fmt: skip


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def on_problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc, request.url.path)

    @app.exception_handler(errors.OrchestratorError)
    async def on_domain(request: Request, exc: errors.OrchestratorError) -> JSONResponse:
        for kind, status, slug, title in _DOMAIN_ERRORS:
            if isinstance(exc, kind):
                extra: dict[str, Any] = {"errors": exc.problems} if isinstance(exc, errors.InvalidRequest) else {}
                return problem_response(Problem(status, slug, title, str(exc), **extra), request.url.path)
        raise exc

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            bad = Problem(400, "malformed-json", "Malformed JSON", "the body is not valid JSON", errors=problems)
        else:
            bad = Problem(422, "invalid-request", "Invalid request", "the request does not match the API",
                          errors=problems)  # fmt: skip
        return problem_response(bad, request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem_response(_http_problem(request, exc), request.url.path)

    # The repository translates every transient database error (unreachable, cancelled, terminated,
    # too many connections, deadlock, serialization failure, read-only) into StoreUnavailable, once.
    @app.exception_handler(errors.StoreUnavailable)
    async def on_database_down(request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable during request", path=request.url.path, error=repr(exc))
        down = Problem(503, "database-unavailable", "Database unavailable", "try again shortly")
        return problem_response(down, request.url.path)

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception) -> JSONResponse:
        span = trace.get_current_span().get_span_context()
        log.exception("unhandled error in request", path=request.url.path)
        bug = Problem(500, "internal-error", "Internal error", "an unexpected error occurred",
                      trace_id=format(span.trace_id, "032x") if span.is_valid else None)  # fmt: skip
        return problem_response(bug, request.url.path)
