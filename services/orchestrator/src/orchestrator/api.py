"""The REST API (SPEC section 3): FastAPI routes behind plain ASGI middleware.

Errors are `application/problem+json` (RFC 9457) with a stable `type` URI per error. Bad input gets a
4xx and persists nothing; a 5xx is a bug, except 503 with Retry-After while the database is down. The
middleware answers probes and `/metrics` before FastAPI sees them, enforces the body size limit, and
times requests by route template, all without per-message overhead.
"""

import hashlib
import hmac
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Final

import asyncpg
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from opentelemetry import propagate, trace
from prometheus_client import Histogram
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
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

HTTP_DURATION: Final = Histogram(
    "http_request_duration_seconds", "REST request duration by route template.", ["method", "route", "status"]
)


class StartSagaBody(BaseModel):
    """Body of `POST /v1/sagas`."""

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
    """An HTTP error rendered as problem+json."""

    def __init__(self, status: int, kind: str, title: str, detail: str = "", **extra: Any) -> None:
        super().__init__(detail or title)
        self.status, self.kind, self.title, self.detail, self.extra = status, kind, title, detail, extra


def problem_response(problem: Problem, instance: str) -> JSONResponse:
    """Render a Problem as an RFC 9457 document."""
    body = {"type": _TYPE_BASE + problem.kind, "title": problem.title, "status": problem.status,
            "detail": problem.detail or problem.title, "instance": instance, **problem.extra}  # fmt: skip
    headers = {"Retry-After": "1"} if problem.status == 503 else None
    return JSONResponse(body, status_code=problem.status, media_type=PROBLEM, headers=headers)


@dataclass(frozen=True)
class Principal:
    """Who is calling, and in which role."""

    name: str
    role: str


class Authenticator:
    """API keys compared as SHA-256 digests in constant time; `None` keys means auth is off."""

    def __init__(self, keys: list[tuple[str, str, bytes]] | None) -> None:
        """`keys` holds (name, role, sha256 digest) triples."""
        self._keys = keys

    def __call__(self, authorization: str | None) -> Principal:
        """Identify the caller from an `Authorization: Bearer <key>` header."""
        if self._keys is None:
            return Principal("anonymous", "admin")
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Problem(401, "unauthenticated", "Unauthenticated", "send Authorization: Bearer <api key>")
        digest = hashlib.sha256(token.strip().encode()).digest()
        match = None
        for name, role, expected in self._keys:  # every key is compared, so timing reveals nothing
            if hmac.compare_digest(digest, expected):
                match = Principal(name, role)
        if match is None:
            raise Problem(401, "unauthenticated", "Unauthenticated", "unknown API key")
        return match


class Middleware:
    """Probes, metrics, authentication, body limit and request timing, as plain ASGI.

    Authentication happens here, before any body is read, so an unauthenticated caller learns nothing
    about its input; the routes read the caller from the request state.
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

        # One server span per request (not per ASGI message); a caller's traceparent is honoured.
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        with tracer.start_as_current_span(
            f"{scope['method']} {scope['path']}", context=propagate.extract(carrier), kind=trace.SpanKind.SERVER
        ) as span:
            try:
                await self._app(scope, self._limited(receive), observed_send)
            finally:
                route = getattr(scope.get("route"), "path", "unmatched")
                span.update_name(f"{scope['method']} {route}")
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                HTTP_DURATION.labels(scope["method"], route, str(status)).observe(time.perf_counter() - started)

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

    @app.post("/v1/sagas", status_code=202, responses={200: {"description": "replay of an earlier request"}})
    async def start_saga(
        body: StartSagaBody,
        request: Request,
        _: Annotated[Principal, Depends(caller)],
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        key = _idempotency_key(idempotency_key)
        deadline = _deadline(body.deadline)
        owner = worker.owner_id if worker.has_capacity() else None
        started = await service.start(
            usecases.StartRequest(key, body.saga_type, body.payload, deadline), owner, dict(engine.carrier())
        )
        if started.created:
            SAGA_STARTED.labels(body.saga_type).inc()
        if started.claimed is not None:
            worker.adopt(started.claimed)
        view = await views.get_view(started.saga_id)
        location = f"/v1/sagas/{started.saga_id}"
        return JSONResponse(view, status_code=202 if started.created else 200, headers={"Location": location})

    @app.get("/v1/sagas/{saga_id}")
    async def get_saga(saga_id: uuid.UUID, _: Annotated[Principal, Depends(caller)]) -> JSONResponse:
        view = await views.get_view(str(saga_id))
        if view is None:
            raise Problem(404, "saga-not-found", "Saga not found", f"no saga {saga_id}")
        return JSONResponse(view)

    @app.get("/v1/sagas")
    async def list_sagas(
        _: Annotated[Principal, Depends(caller)],
        status: SagaStatus | None = None,
        saga_type: Annotated[str | None, Query(max_length=100)] = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
    ) -> JSONResponse:
        items, following = await views.list_view(status.value if status else None, saga_type, limit, cursor)
        return JSONResponse({"items": items, "next_cursor": following})

    @app.post("/v1/sagas/{saga_id}/retry", status_code=202)
    async def retry_saga(saga_id: uuid.UUID, _: Annotated[Principal, Depends(admin)]) -> JSONResponse:
        claimed = await service.retry(str(saga_id), worker.owner_id)
        worker.adopt(claimed)
        return JSONResponse(await views.get_view(str(saga_id)), status_code=202)

    @app.post("/v1/sagas/{saga_id}/cancel", status_code=202)
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
    404: ("not-found", "Not Found"),
    405: ("method-not-allowed", "Method Not Allowed"),
    413: ("payload-too-large", "Payload too large"),
}


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def on_problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc, request.url.path)

    @app.exception_handler(errors.OrchestratorError)
    async def on_domain(request: Request, exc: errors.OrchestratorError) -> JSONResponse:
        for kind, status, slug, title in _DOMAIN_ERRORS:
            if isinstance(exc, kind):
                extra = {"errors": exc.problems} if isinstance(exc, errors.InvalidRequest) else {}
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
        slug, title = _HTTP_ERRORS.get(exc.status_code, ("http-error", str(exc.detail)))
        return problem_response(Problem(exc.status_code, slug, title, str(exc.detail)), request.url.path)

    @app.exception_handler(errors.StoreUnavailable)
    @app.exception_handler(asyncpg.PostgresConnectionError)
    @app.exception_handler(asyncpg.InterfaceError)
    @app.exception_handler(asyncpg.InternalClientError)
    @app.exception_handler(asyncpg.CannotConnectNowError)
    @app.exception_handler(asyncpg.ObjectNotInPrerequisiteStateError)
    @app.exception_handler(OSError)
    @app.exception_handler(TimeoutError)
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
