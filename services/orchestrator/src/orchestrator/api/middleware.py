"""The plain ASGI middleware in front of FastAPI, and who the caller is.

The middleware answers probes and `/metrics` before FastAPI sees them, authenticates API keys (an
`Authenticator` names the `Principal`) before any body is read, refuses a path or query that is not
UTF-8 or holds a control character, enforces the body size limit, and times requests by route template
in `HTTP_DURATION` under one server span, all without per-message overhead.
"""

import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from opentelemetry import propagate, trace
from prometheus_client import Histogram
from starlette.exceptions import HTTPException as StarletteHTTPException

from orchestrator.api.inputs import clean_target, printable
from orchestrator.api.problems import Problem, problem_response
from orchestrator.ui import session_key
from servicekit import health, metrics

tracer = trace.get_tracer("sagaline.orchestrator.api")

# Metric labels and span names take the method from this closed set: any token is a valid HTTP
# method, and a label per invented method would grow /metrics without bound.
_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# What `health.probe` answers, before FastAPI and without authentication, for GET and HEAD only.
_PROBES: Final = frozenset({"/livez", "/health", "/readyz", "/ready", "/metrics"})
# What only operators need; behind an API key when the instance protects them (see Middleware).
_OPERATOR_PATHS: Final = frozenset({"/metrics", "/docs", "/openapi.json"})

HTTP_DURATION: Final = Histogram(
    "http_request_duration_seconds", "REST request duration by route template.", ["method", "route", "status"]
)


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

    def principal_for(self, key: str) -> Principal | None:
        """The caller a bare API key names (the UI's sign-in form and cookie), or None for an unknown key."""
        try:
            return self(f"Bearer {key}")
        except Problem:
            return None


class Middleware:
    """Probes, metrics, authentication, the path and query check, body limit and request timing, as plain ASGI.

    Authentication happens here, before any body is read, so an unauthenticated caller learns nothing
    about its input; the routes read the caller from the request state. A path or query with a control
    character or bytes that are not UTF-8 is refused here too, once for every route.

    With `protect_operator_paths` (production: `SAGALINE_OPERATOR_ENDPOINTS=authenticated`), `/metrics`,
    `/docs`, `/openapi.json` and the Swagger assets need a valid API key of any role too (Prometheus
    scrapes with a bearer token file); the liveness and readiness probes always stay open, since load
    balancers and orchestrators call them without credentials and they reveal nothing.

    The `/ui` pages name their caller from the UI's session cookie instead (and only they do): a
    browser cannot send the Bearer header when it navigates. A page without a caller asks to sign in.
    """

    def __init__(
        self,
        app: Any,
        readiness: health.Readiness,
        max_body: int,
        authenticate: Authenticator,
        *,
        protect_operator_paths: bool = False,
        direct: dict[tuple[str, str], Any] | None = None,
    ) -> None:
        """`direct` maps a (method, exact path) to a plain ASGI app that answers it instead of `app`.

        Such a route gets everything this middleware does (authentication, checks, limit, span, metrics).
        """
        self._app, self._readiness, self._max_body = app, readiness, max_body
        self._direct = direct or {}
        self._authenticate, self._protect_operator_paths = authenticate, protect_operator_paths

    def _needs_key(self, path: str) -> bool:
        if path.startswith("/v1/"):
            return True
        return self._protect_operator_paths and (path in _OPERATOR_PATHS or path.startswith("/static/"))

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
            await problem_response(refusal, printable(scope["path"]))(scope, receive, send)
            return
        await self._observed(scope, receive, send)

    async def _probe(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Probes and metrics read nothing, so they answer GET and HEAD; anything else is a 405 (RFC 9110)."""
        if self._needs_key(scope["path"]) and (refusal := self._caller(scope)) is not None:
            await problem_response(refusal, scope["path"])(scope, receive, send)
            return
        if scope["method"] in ("GET", "HEAD"):
            await health.probe(scope["path"], send, self._readiness)
            return
        wrong = Problem("method-not-allowed", headers={"Allow": "GET, HEAD"})
        await problem_response(wrong, scope["path"])(scope, receive, send)

    def _refusal(self, scope: dict[str, Any]) -> Problem | None:
        """The problem that stops a request before routing (401, 400, 413), or None; records the caller."""
        headers = dict(scope["headers"])
        if scope["path"] == "/ui" or scope["path"].startswith("/ui/"):
            self._ui_caller(scope, headers)
        elif self._needs_key(scope["path"]) and (refusal := self._caller(scope)) is not None:
            return refusal
        if not clean_target(scope):
            return Problem("invalid-characters", "the path and query must be UTF-8 without control characters")
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self._max_body):
            return Problem("payload-too-large", f"the limit is {self._max_body} bytes")
        return None

    def _caller(self, scope: dict[str, Any]) -> Problem | None:
        """Authenticate the request into `scope["state"]["principal"]`; the 401 problem if that fails."""
        authorization = dict(scope["headers"]).get(b"authorization")
        try:
            principal = self._authenticate(authorization.decode("latin-1") if authorization else None)
        except Problem as problem:
            return problem
        scope.setdefault("state", {})["principal"] = principal
        return None

    def _ui_caller(self, scope: dict[str, Any], headers: dict[bytes, bytes]) -> None:
        """A `/ui` page names its caller with the UI's session cookie (only here), or none: the page asks to sign in.

        A browser cannot send the Bearer header when it navigates; the cookie carries the same API key
        (see `orchestrator.ui.routes`). With auth off every caller is the anonymous admin.
        """
        key = session_key(headers.get(b"cookie"))
        principal = self._authenticate.principal_for(key) if key else None
        if not self._authenticate.enabled:
            principal = self._authenticate(None)
        if principal is not None:
            scope.setdefault("state", {})["principal"] = principal

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
                app = self._direct.get((scope["method"], scope["path"]), self._app)
                await app(scope, self._limited(receive), observed_send)
            finally:
                route = getattr(scope.get("route"), "path", "unmatched")
                span.update_name(f"{method} {route}")
                span.set_attribute("http.request.method", method)
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                metrics.labelled(HTTP_DURATION, method, route, str(status)).observe(time.perf_counter() - started)

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
