"""The pages of the saga timeline UI and `install`, which adds them to the API's FastAPI application.

Sign-in: a browser cannot send the API's `Authorization: Bearer` header when it navigates, so the login
form takes the same API key and keeps it in an HttpOnly, SameSite=Strict cookie (Secure over https)
scoped to `/ui`. The API's middleware reads that cookie for `/ui` paths only and names the caller as
it does for the REST API; no principal means "sign in first". With auth off there is no login.

CSRF: besides SameSite=Strict (the browser sends neither cookie on a cross-site request), every POST
carries a form field that must equal the per-session `sagaline_ui_csrf` cookie (double submit), issued
on the first page and renewed at each sign-in. A forged form knows neither.

Roles: `client` reads, `admin` also acts (retry, cancel): the same rule as the REST API.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Any, Final, Protocol
from urllib.parse import parse_qs, urlencode

import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from orchestrator import definitions, ports, usecases
from orchestrator.domain import errors
from orchestrator.domain.model import LIVE, Operator, SagaStatus
from orchestrator.ui import timeline
from orchestrator.worker import Worker

SESSION_COOKIE: Final = "sagaline_ui_key"
CSRF_COOKIE: Final = "sagaline_ui_csrf"
PAGE_SIZE: Final = 25
STATIC: Final = Path(__file__).parent / "static"
TEMPLATES: Final = Path(__file__).parent / "templates"
# Scripts, styles and forms only from this origin; htmx's own indicator styles are off (see base.html).
_SECURITY_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
_UUID: Final = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# The age filter: label, and (newer_than, older_than).
AGES: Final[dict[str, tuple[str, timedelta | None, timedelta | None]]] = {
    "15m": ("last 15 minutes", timedelta(minutes=15), None),
    "1h": ("last hour", timedelta(hours=1), None),
    "24h": ("last 24 hours", timedelta(hours=24), None),
    "older-1h": ("older than 1 hour", None, timedelta(hours=1)),
    "older-24h": ("older than 24 hours", None, timedelta(hours=24)),
}
# The admin actions, by the name in their URL; all but cancel are a person's action on a FAILED saga,
# recorded in its history with who and why (see `usecases.SagaService`).
ACTIONS: Final = ("retry", "retry-with-payload", "skip", "force-compensation", "resolve", "cancel")
_REASON_LIMIT: Final = 500


class Caller(Protocol):
    """Who is calling (the API middleware's principal)."""

    @property
    def name(self) -> str:
        """The API key's configured name."""
        ...

    @property
    def role(self) -> str:
        """`client` or `admin`."""
        ...


def session_key(cookie_header: bytes | None) -> str | None:
    """The API key in the UI's session cookie, from a raw `Cookie` header; None when absent or unreadable."""
    return _cookie(cookie_header, SESSION_COOKIE)


def _cookie(header: bytes | None, name: str) -> str | None:
    if not header:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header.decode("latin-1"))
    except CookieError:
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None and morsel.value else None


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined
    )
    env.filters["clock"] = _clock
    env.filters["ms"] = _ms
    env.filters["pretty"] = lambda value: json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
    return env


def _clock(value: datetime | str | None) -> str:
    """A UTC time to the millisecond, as operators read logs."""
    if value is None:
        return "-"
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f} ms" if value < 10_000 else f"{value / 1000:.1f} s"


class Pages:
    """The UI's request handlers, over the API's use cases and read models."""

    def __init__(
        self,
        service: usecases.SagaService,
        views: ports.SagaViews,
        worker: Worker,
        known_key: Callable[[str], Caller | None],
        *,
        auth: bool,
        trace_url: str | None,
    ) -> None:
        self._service, self._views, self._worker, self._known_key = service, views, worker, known_key
        self._auth, self._trace_url = auth, trace_url
        self._env = _environment()
        self._registry = definitions.registry()

    # -- plumbing ------------------------------------------------------------------------------------

    def _render(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        token = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)
        caller: Caller | None = getattr(request.state, "principal", None)
        page = self._env.get_template(template).render(
            caller=caller, auth=self._auth, admin=caller is not None and caller.role == "admin", csrf=token,
            **context,
        )  # fmt: skip
        response = HTMLResponse(page, status_code=status, headers=_SECURITY_HEADERS)
        if request.cookies.get(CSRF_COOKIE) != token:
            self._set_cookie(request, response, CSRF_COOKIE, token)
        return response

    @staticmethod
    def _set_cookie(request: Request, response: Response, name: str, value: str) -> None:
        secure = request.url.scheme == "https"
        response.set_cookie(name, value, path="/ui", httponly=True, samesite="strict", secure=secure)

    @staticmethod
    def _caller(request: Request) -> Caller | None:
        caller: Caller | None = getattr(request.state, "principal", None)
        return caller

    @staticmethod
    def _to_login(request: Request) -> Response:
        if request.headers.get("hx-request"):
            # An htmx poll after the session ended: htmx follows HX-Redirect with a full navigation.
            return Response(status_code=401, headers={"HX-Redirect": "/ui/login"})
        return RedirectResponse("/ui/login", status_code=303)

    @staticmethod
    async def _form(request: Request) -> dict[str, str]:
        # The middleware bounds the body; only urlencoded forms are posted by these pages.
        raw = (await request.body()).decode("utf-8", errors="replace")
        return {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}

    @staticmethod
    def _csrf_ok(request: Request, form: dict[str, str]) -> bool:
        expected = request.cookies.get(CSRF_COOKIE) or ""
        sent = form.get("csrf", "")
        return bool(expected) and hmac.compare_digest(expected.encode(), sent.encode())

    def _compensable(self, view: dict[str, Any]) -> frozenset[str] | None:
        try:
            definition = self._registry.get(view["saga_type"], view["definition_version"])
        except KeyError:
            return None
        return frozenset(s.name for s in definition.steps if s.compensation is not None)

    def _trace_link(self, trace_id: str | None) -> str | None:
        if not trace_id or not self._trace_url:
            return None
        return self._trace_url.replace("{trace_id}", trace_id)

    # -- sign-in -------------------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        """The sign-in form (with auth off there is nothing to sign in to)."""
        if not self._auth:
            return RedirectResponse("/ui", status_code=303)
        return self._render(request, "login.html", error=None)

    async def login(self, request: Request) -> Response:
        """Check the key, keep it in the session cookie, start a new CSRF token."""
        if not self._auth:
            return RedirectResponse("/ui", status_code=303)
        form = await self._form(request)
        if not self._csrf_ok(request, form):
            return self._render(request, "login.html", status=403, error="The form expired; try again.")
        key = form.get("key", "").strip()
        if not key or self._known_key(key) is None:
            return self._render(request, "login.html", status=401, error="Unknown API key.")
        response = RedirectResponse("/ui", status_code=303)
        self._set_cookie(request, response, SESSION_COOKIE, key)
        self._set_cookie(request, response, CSRF_COOKIE, secrets.token_urlsafe(32))
        return response

    async def logout(self, request: Request) -> Response:
        """Forget the session (the key cookie and the CSRF token)."""
        form = await self._form(request)
        if not self._csrf_ok(request, form):
            return self._render(request, "login.html", status=403, error="The form expired; try again.")
        response = RedirectResponse("/ui/login" if self._auth else "/ui", status_code=303)
        for name in (SESSION_COOKIE, CSRF_COOKIE):
            response.delete_cookie(name, path="/ui", httponly=True, samesite="strict")
        return response

    # -- pages ---------------------------------------------------------------------------------------

    async def sagas(self, request: Request) -> Response:
        """The list: filters, a page of sagas newest first, and the live counts."""
        if self._caller(request) is None:
            return self._to_login(request)
        params = request.query_params
        status = params.get("status") or None
        status = status if status in SagaStatus.__members__ else None
        saga_type = params.get("saga_type") or None
        saga_type = saga_type if saga_type in self._registry.types else None
        age = params.get("age") if params.get("age") in AGES else ""
        error_text = (params.get("error") or "").strip()[:200] or None
        _, newer, older = AGES.get(age or "", ("", None, None))
        query = ports.SagaQuery(status, saga_type, newer, older, error_text)
        try:
            items, following = await self._views.search_view(query, PAGE_SIZE, params.get("cursor") or None)
        except errors.MalformedCursor:
            return self._render(request, "message.html", status=400, title="Bad page link",
                                message="This page link is not valid any more; start from the first page.")  # fmt: skip
        filters = {"status": status or "", "saga_type": saga_type or "", "age": age or "", "error": error_text or ""}
        next_link = None
        if following is not None:
            next_link = "/ui?" + urlencode({**{k: v for k, v in filters.items() if v}, "cursor": following})
        counts = await self._views.status_counts()
        rows = [(item, timeline.badge(item, self._compensable(item))) for item in items]
        return self._render(
            request, "list.html", rows=rows, filters=filters, next_link=next_link, counts=counts,
            statuses=list(SagaStatus), types=self._registry.types, ages=AGES, first_page=not params.get("cursor"),
        )  # fmt: skip

    async def counts(self, request: Request) -> Response:
        """The live counts per status, the fragment the list page polls."""
        if self._caller(request) is None:
            return self._to_login(request)
        counts = await self._views.status_counts()
        return self._render(request, "_counts.html", counts=counts, statuses=list(SagaStatus))

    async def saga(self, request: Request) -> Response:
        """One saga: its timeline forward and back, ownership, payload, responses and full history."""
        if self._caller(request) is None:
            return self._to_login(request)
        return await self._saga_page(request, request.path_params["saga_id"])

    async def _saga_page(
        self, request: Request, saga_id: str, status: int = 200, notice: str | None = None,
        problems: list[str] | None = None,
    ) -> Response:  # fmt: skip
        view = await self._views.get_view(saga_id) if _UUID.fullmatch(saga_id) else None
        if view is None:
            return self._render(request, "message.html", status=404, title="No such saga",
                                message=f"There is no saga {saga_id}.")  # fmt: skip
        compensable = self._compensable(view)
        built = timeline.build(view, compensable)
        return self._render(
            request, "saga.html", status=status, saga=view, timeline=built, forward={p.step: p for p in built.forward},
            steps={s["name"]: s for s in view["steps"]}, trace_link=self._trace_link(view.get("trace_id")),
            live=SagaStatus(view["status"]) in LIVE, notice=notice, problems=problems or [],
            actions=timeline.actions(view, compensable), stuck=timeline.stuck_step(view["steps"]),
        )  # fmt: skip

    async def act(self, request: Request) -> Response:
        """An admin action on one saga, then back to its page (Post/Redirect/Get)."""
        caller = self._caller(request)
        if caller is None:
            return self._to_login(request)
        saga_id, action = request.path_params["saga_id"], request.path_params["action"]
        form = await self._form(request)
        if not self._csrf_ok(request, form):
            return self._render(request, "message.html", status=403, title="Refused",
                                message="The form expired; reload the page and try again.")  # fmt: skip
        if caller.role != "admin":
            return self._render(request, "message.html", status=403, title="Refused",
                                message="This action needs the admin role.")  # fmt: skip
        if action not in ACTIONS or not _UUID.fullmatch(saga_id):
            return self._render(request, "message.html", status=404, title="Not found", message="No such action.")
        try:
            await self._run(action, saga_id, form, caller)
        except errors.SagaNotFound:
            return await self._saga_page(request, saga_id)
        except errors.StateConflict as exc:
            return await self._saga_page(request, saga_id, status=409, notice=str(exc))
        except errors.InvalidRequest as exc:
            return await self._saga_page(request, saga_id, status=422, notice=str(exc), problems=exc.problems)
        return RedirectResponse(f"/ui/sagas/{saga_id}", status_code=303)

    async def _run(self, action: str, saga_id: str, form: dict[str, str], caller: Caller) -> None:
        """Do the action; a saga the action left live is run by this instance at once.

        Raises:
            errors.InvalidRequest: no reason given, or a payload or output that is not a JSON object.
        """
        if action == "cancel":
            await self._service.cancel(saga_id)
            return
        reason = form.get("reason", "").strip()
        if not reason:
            raise errors.InvalidRequest("say why: the reason is recorded in the saga's history", ["reason: required"])
        by, owner = Operator(caller.name, caller.role, reason[:_REASON_LIMIT]), self._worker.owner_id
        service = self._service
        if action == "retry":
            claimed = await service.retry(saga_id, owner, by)
        elif action == "retry-with-payload":
            claimed = await service.retry_with_payload(saga_id, _json_object(form, "payload"), owner, by)
        elif action == "skip":
            claimed = await service.skip_step(saga_id, form.get("step", ""), _json_object(form, "output"), owner, by)
        elif action == "force-compensation":
            claimed = await service.force_compensation(saga_id, owner, by)
        else:
            claimed = await service.resolve(saga_id, owner, by)
        if not claimed.saga.status.terminal:
            self._worker.adopt(claimed)


def _json_object(form: dict[str, str], field: str) -> dict[str, Any]:
    """A form field holding a JSON object.

    Raises:
        errors.InvalidRequest: the field is not a JSON object.
    """
    try:
        value = json.loads(form.get(field) or "")
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise errors.InvalidRequest(f"the {field} must be a JSON object", [f"{field}: not a JSON object"])
    return value


def install(
    app: FastAPI,
    service: usecases.SagaService,
    views: ports.SagaViews,
    worker: Worker,
    known_key: Callable[[str], Caller | None],
    *,
    auth: bool,
    trace_url: str | None = None,
) -> None:
    """Add the UI's pages under `/ui` and its assets under `/ui/static` (none in the OpenAPI document)."""
    pages = Pages(service, views, worker, known_key, auth=auth, trace_url=trace_url)
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")
    routes: list[tuple[str, Callable[[Request], Any], str]] = [
        ("/ui", pages.sagas, "GET"),
        ("/ui/counts", pages.counts, "GET"),
        ("/ui/sagas/{saga_id}", pages.saga, "GET"),
        ("/ui/sagas/{saga_id}/{action}", pages.act, "POST"),
        ("/ui/login", pages.login_form, "GET"),
        ("/ui/login", pages.login, "POST"),
        ("/ui/logout", pages.logout, "POST"),
    ]
    for path, endpoint, method in routes:
        app.add_api_route(path, endpoint, methods=[method], include_in_schema=False)
