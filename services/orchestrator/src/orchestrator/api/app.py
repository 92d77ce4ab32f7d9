"""The FastAPI application: its routes, their dependencies, and `create_app`, which puts it behind the middleware."""

from pathlib import Path as FilePath
from typing import Annotated, Any, Final

from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import Headers

from orchestrator import engine, ports, ui, usecases
from orchestrator.api import document, inputs, middleware, operator_routes, problems
from orchestrator.domain.model import SagaStatus
from orchestrator.metrics import SAGA_STARTED
from orchestrator.worker import Worker
from servicekit import health, http_server
from servicekit.metrics import labelled

# Swagger UI 5 (renders OpenAPI 3.1), vendored from npm's swagger-ui-dist: see static/swagger/VERSION.
SWAGGER_ASSETS: Final = FilePath(__file__).parent / "static" / "swagger"

# A saga id in a path, its pattern checked by FastAPI (a 422 otherwise).
SagaId = Annotated[
    str, Path(pattern=inputs.UUID_PATTERN, json_schema_extra={"format": "uuid"}, description="The saga's id.")
]


class _Api(FastAPI):
    """FastAPI with the OpenAPI document of this package (see `document.build`), built once."""

    auth_enabled = True

    def openapi(self) -> dict[str, Any]:
        """The document FastAPI derives from the routes, completed into the contract."""
        if self.openapi_schema is None:
            self.openapi_schema = document.build(self, self.auth_enabled)
        return self.openapi_schema


def create_app(  # noqa: C901 - a flat list of route declarations
    service: usecases.SagaService,
    views: ports.SagaViews,
    worker: Worker,
    authenticate: middleware.Authenticator,
    readiness: health.Readiness,
    max_body: int,
    *,
    protect_operator_paths: bool = False,
    ui_trace_url: str | None = None,
) -> Any:
    """The REST application and the `/ui` pages for one instance.

    `protect_operator_paths` puts metrics and docs behind a key; `ui_trace_url` links the UI's trace ids
    to a tracing UI (`{trace_id}` is replaced).
    """
    # FastAPI's built-in telemetry would add a second server span and spans per dependency and endpoint
    # to every request; the middleware below already makes the one server span and the HTTP metrics.
    # No slash redirects: `/v1/sagas/` is a 404 like any unknown path, not a 307 the document cannot list.
    app = _Api(title="Sagaline", version="1.0.0", docs_url=None, redoc_url=None, redirect_slashes=False,
               description=document.DESCRIPTION,
               telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False})  # fmt: skip
    app.auth_enabled = authenticate.enabled
    app.mount("/static/swagger", StaticFiles(directory=SWAGGER_ASSETS), name="swagger")
    problems.install_error_handlers(app)
    auth = authenticate.enabled

    # Async dependencies run on the event loop; plain `def` ones would each hop through a thread pool.
    async def caller(request: Request) -> middleware.Principal:
        # The middleware authenticated the request already; the document declares the bearer scheme.
        principal: middleware.Principal = request.state.principal
        return principal

    async def admin(principal: Annotated[middleware.Principal, Depends(caller)]) -> middleware.Principal:
        if principal.role != "admin":
            raise problems.Problem("forbidden", "this operation needs the admin role")
        return principal

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="Sagaline API",
                                   swagger_js_url="/static/swagger/swagger-ui-bundle.js",
                                   swagger_css_url="/static/swagger/swagger-ui.css",
                                   swagger_favicon_url="/static/swagger/favicon-32x32.png")  # fmt: skip

    @app.get("/swagger", include_in_schema=False)
    async def swagger() -> RedirectResponse:
        return RedirectResponse("/docs", status_code=308)

    async def start_body(request: Request) -> inputs.StartSagaBody:
        raw = await request.body()  # bounded by the middleware's body limit
        return inputs.start_body(request.headers.get("content-type"), request.headers.get("content-encoding"), raw)

    async def start(body: inputs.StartSagaBody, principal: middleware.Principal, key: str | None) -> JSONResponse:
        checked = inputs.idempotency_key(key)
        deadline = inputs.deadline(body.deadline)
        owner = worker.owner_id if worker.has_capacity() else None
        # Scoped to the caller, so one client's key can neither find nor block another client's saga.
        # The scoped form stays inside: the answer carries the saga, never the stored key.
        request = usecases.StartRequest(principal.scope(checked), body.saga_type, body.payload, deadline)
        started = await service.start(request, owner, dict(engine.carrier()))
        if started.created:
            labelled(SAGA_STARTED, body.saga_type).inc()
        if started.claimed is not None:
            worker.adopt(started.claimed)
        # A new saga's view came back with its write; only a replay reads the saga again.
        view = started.view if started.view is not None else await views.get_view(started.saga_id)
        location = f"/v1/sagas/{started.saga_id}"
        return JSONResponse(view, status_code=202 if started.created else 200, headers={"Location": location})

    # The document's route. Requests are answered by `start_direct` below, which the middleware calls for
    # POST /v1/sagas; this one answers only if that is bypassed (a test client mounting the FastAPI app).
    @app.post("/v1/sagas", status_code=202, operation_id="startSaga", summary="Start a saga",
              responses=document.responses("startSaga", auth), openapi_extra=document.START_EXTRA)  # fmt: skip
    async def start_saga(
        body: Annotated[inputs.StartSagaBody, Depends(start_body)],
        principal: Annotated[middleware.Principal, Depends(caller)],
        # Declared in the document by `document.START_EXTRA`: a bad key is a 400 here, not FastAPI's 422.
        idempotency_key: Annotated[str | None, Header(include_in_schema=False)] = None,
    ) -> JSONResponse:
        return await start(body, principal, idempotency_key)

    start_route = app.router.routes[-1]

    async def start_direct(scope: dict[str, Any], receive: Any, send: Any) -> None:
        """POST /v1/sagas as plain ASGI: the same checks, answers and errors as `start_saga`.

        The one route on every saga's path, so it skips what FastAPI does per request and this route does
        not need: routing, dependency resolution, the exception middleware stack (about a quarter of the
        CPU of a start request, in `python -m bench --profile`). The middleware has authenticated the caller.
        """
        scope["route"] = start_route  # the span's and the metric's route template
        headers = Headers(scope=scope)
        try:
            raw = await http_server.read_body(receive)
            if raw is None:
                return  # the client went away before sending its body: nobody to answer
            body = inputs.start_body(headers.get("content-type"), headers.get("content-encoding"), raw)
            response = await start(body, scope["state"]["principal"], headers.get("idempotency-key"))
        except Exception as exc:  # every error is answered as its problem, as FastAPI's handlers answer it
            response = problems.problem_response(problems.problem_for(exc, scope["path"]), scope["path"])
        await response(scope, receive, send)

    @app.get("/v1/sagas/{saga_id}", operation_id="getSaga", summary="One saga, its steps and its history",
             responses=document.responses("getSaga", auth))  # fmt: skip
    async def get_saga(saga_id: SagaId, _: Annotated[middleware.Principal, Depends(caller)]) -> JSONResponse:
        view = await views.get_view(saga_id)
        if view is None:
            raise problems.Problem("saga-not-found", f"no saga {saga_id}")
        return JSONResponse(view)

    @app.get("/v1/sagas", operation_id="listSagas", summary="List sagas, newest first",
             responses=document.responses("listSagas", auth))  # fmt: skip
    async def list_sagas(
        _: Annotated[middleware.Principal, Depends(caller)],
        status: Annotated[SagaStatus | None, Query(description="Only sagas in this status.")] = None,
        saga_type: Annotated[
            str | None, Query(max_length=100, pattern=inputs.TEXT_PATTERN, description="Only sagas of this type.")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=100, description="The most sagas on one page.")] = 20,
        # Checked by `inputs.repository_cursor`, so a cursor of another shape is a 400, not FastAPI's 422.
        cursor: Annotated[
            str | None,
            Query(
                json_schema_extra={"pattern": inputs.CURSOR_PATTERN},
                description="The `next_cursor` of the page before.",
            ),
        ] = None,
    ) -> JSONResponse:
        after = inputs.repository_cursor(cursor)
        items, following = await views.list_view(status.value if status else None, saga_type, limit, after)
        return JSONResponse({"items": items, "next_cursor": inputs.api_cursor(following)})

    @app.post("/v1/sagas/{saga_id}/cancel", status_code=202, operation_id="cancelSaga",
              summary="Stop a saga going forward (admin)",
              responses=document.responses("cancelSaga", auth))  # fmt: skip
    async def cancel_saga(saga_id: SagaId, _: Annotated[middleware.Principal, Depends(admin)]) -> JSONResponse:
        await service.cancel(saga_id)
        return JSONResponse(await views.get_view(saga_id), status_code=202)

    ui.install(app, service, views, worker, authenticate.principal_for, auth=auth, trace_url=ui_trace_url)
    # The queue's actions (retry among them), the dry run and the export.
    operator_routes.register(app, service, views, worker, caller, admin)
    return middleware.Middleware(
        app, readiness, max_body, authenticate, protect_operator_paths=protect_operator_paths,
        direct={("POST", "/v1/sagas"): start_direct},
    )  # fmt: skip
