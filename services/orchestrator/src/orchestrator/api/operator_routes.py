"""The routes for people: the queue's actions on FAILED sagas, the dry run, and one saga's export.

Every queue action needs the admin role and a `reason`, and is recorded in the saga's history as an
`operator_action` event naming the caller's API key (name and role) and the reason. Each acts only
through the fenced claim (`SagaService`): a saga a live owner holds is a 409, never overwritten. An
action that would compensate past the point of no return is a 409 `point-of-no-return` that says why.
A saga an action leaves live runs here at once, like an accepted one. The dry run (any role) validates
like a start and writes and calls nothing. `register` adds them to the app `create_app` builds.
"""

from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Final

from fastapi import Depends, FastAPI, Path, Request
from fastapi.responses import JSONResponse

from orchestrator import ports, usecases
from orchestrator.api import document, inputs, middleware, problems
from orchestrator.domain import errors
from orchestrator.domain.model import Operator
from orchestrator.worker import Worker

SagaId = Annotated[
    str, Path(pattern=inputs.UUID_PATTERN, json_schema_extra={"format": "uuid"}, description="The saga's id.")
]
# A saga type's name, as definitions spell them.
SAGA_TYPE_PATTERN: Final = r"^[a-z][a-z0-9_]{0,99}$"
SagaType = Annotated[str, Path(pattern=SAGA_TYPE_PATTERN, description="The saga type, e.g. `order_saga`.")]
Caller = Callable[..., Coroutine[Any, Any, middleware.Principal]]

# The reason recorded for a retry sent without a body, as SPEC section 3's retry takes none.
DEFAULT_RETRY_REASON: Final = "retried by an admin"


async def _body(request: Request, model: type[inputs.Body]) -> inputs.Body:
    raw = await request.body()  # bounded by the middleware's body limit
    return inputs.action_body(request.headers.get("content-type"), request.headers.get("content-encoding"), raw, model)


def _operator(principal: middleware.Principal, reason: str) -> Operator:
    return Operator(principal.name, principal.role, reason)


def register(  # noqa: C901 - a flat list of route declarations
    app: FastAPI,
    service: usecases.SagaService,
    views: ports.SagaViews,
    worker: Worker,
    caller: Caller,
    admin: Caller,
) -> None:
    """Add the queue's actions, the dry run and the export to `app`; `caller` and `admin` are its auth dependencies."""
    auth = bool(getattr(app, "auth_enabled", True))
    Admin = Annotated[middleware.Principal, Depends(admin)]  # noqa: N806 - a type alias for FastAPI
    Reader = Annotated[middleware.Principal, Depends(caller)]  # noqa: N806 - a type alias for FastAPI

    async def answered(claimed: ports.Claimed, status: int = 202) -> JSONResponse:
        if not claimed.saga.status.terminal:
            worker.adopt(claimed)  # it runs here at once, under the lease the action took
        return JSONResponse(await views.get_view(claimed.saga.id), status_code=status)

    @app.post("/v1/sagas/{saga_id}/retry", status_code=202, operation_id="retrySaga",
              summary="Resume a FAILED saga (admin)", responses=document.responses("retrySaga", auth),
              openapi_extra=document.body("Reason", required=False))  # fmt: skip
    async def retry_saga(saga_id: SagaId, request: Request, principal: Admin) -> JSONResponse:
        reason = (await _body(request, inputs.ReasonBody)).reason if await request.body() else DEFAULT_RETRY_REASON
        return await answered(await service.retry(saga_id, worker.owner_id, _operator(principal, reason)))

    @app.post("/v1/sagas/{saga_id}/retry-with-payload", status_code=202, operation_id="retrySagaWithPayload",
              summary="Resume a saga that failed going forward, with an edited payload (admin)",
              responses=document.responses("retrySagaWithPayload", auth),
              openapi_extra=document.body("RetryWithPayload"))  # fmt: skip
    async def retry_with_payload(saga_id: SagaId, request: Request, principal: Admin) -> JSONResponse:
        body = await _body(request, inputs.RetryWithPayloadBody)
        by = _operator(principal, body.reason)
        return await answered(await service.retry_with_payload(saga_id, body.payload, worker.owner_id, by))

    @app.post("/v1/sagas/{saga_id}/skip-step", status_code=202, operation_id="skipSagaStep",
              summary="Mark the stuck step done by hand, with its output; the saga goes on (admin)",
              responses=document.responses("skipSagaStep", auth), openapi_extra=document.body("SkipStep"))  # fmt: skip
    async def skip_step(saga_id: SagaId, request: Request, principal: Admin) -> JSONResponse:
        body = await _body(request, inputs.SkipStepBody)
        by = _operator(principal, body.reason)
        return await answered(await service.skip_step(saga_id, body.step, body.output, worker.owner_id, by))

    @app.post("/v1/sagas/{saga_id}/compensate", status_code=202, operation_id="compensateSaga",
              summary="Force the compensation of a FAILED saga (admin)",
              responses=document.responses("compensateSaga", auth), openapi_extra=document.body("Reason"))  # fmt: skip
    async def compensate(saga_id: SagaId, request: Request, principal: Admin) -> JSONResponse:
        by = _operator(principal, (await _body(request, inputs.ReasonBody)).reason)
        return await answered(await service.force_compensation(saga_id, worker.owner_id, by))

    @app.post("/v1/sagas/{saga_id}/resolve", status_code=200, operation_id="resolveSaga",
              summary="Mark a FAILED saga handled without acting (admin)",
              responses=document.responses("resolveSaga", auth), openapi_extra=document.body("Reason"))  # fmt: skip
    async def resolve(saga_id: SagaId, request: Request, principal: Admin) -> JSONResponse:
        by = _operator(principal, (await _body(request, inputs.ReasonBody)).reason)
        return await answered(await service.resolve(saga_id, worker.owner_id, by), status=200)

    @app.post("/v1/saga-types/{saga_type}/plan", status_code=200, operation_id="planSaga",
              summary="Dry run: the steps, retries and compensations a saga would have; nothing is written",
              responses=document.responses("planSaga", auth), openapi_extra=document.body("PlanSaga"))  # fmt: skip
    async def plan(saga_type: SagaType, request: Request, _: Reader) -> JSONResponse:
        body = await _body(request, inputs.PlanBody)
        deadline = inputs.deadline(body.deadline)
        try:
            return JSONResponse(service.plan(saga_type, body.payload, deadline))
        except errors.UnknownSagaType as exc:
            raise problems.Problem("saga-type-not-found", str(exc), errors=exc.problems) from exc

    @app.get("/v1/sagas/{saga_id}/history", operation_id="getSagaHistory", summary="One saga's whole history",
             responses=document.responses("getSagaHistory", auth))  # fmt: skip
    async def history(saga_id: SagaId, _: Reader) -> JSONResponse:
        return JSONResponse(await service.history(saga_id))
