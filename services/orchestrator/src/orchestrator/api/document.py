"""The OpenAPI document (`/openapi.json`): FastAPI's paths, completed with what FastAPI cannot know.

The document is the contract, so it is written to be true, not generated to look plausible. It lists
every status, header and media type each route answers with; every error has the one `ProblemDetails`
schema; the start body is described down to each saga type's payload rules, with unknown members refused
(`additionalProperties: false`) as the server refuses them. Where a rule is a pattern, the document and
the server use the same one (from `inputs`). The one rule no schema can state, that an order's total is
above zero and fits numeric(14,2), is described in the document and answered with 422
`invalid-payload`. `tests/e2e/test_e2e_contract.py` fuzzes a live stack against the document,
statefully too, to keep both honest.
"""

from typing import Any, Final

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema

from orchestrator import definitions
from orchestrator.api.inputs import DEADLINE_PATTERN, KEY_PATTERN, TEXT_PATTERN, UUID_PATTERN
from orchestrator.api.problems import PROBLEM, PROBLEM_TYPES, TYPE_BASE
from orchestrator.api.schemas import (
    EventView,
    Liveness,
    ProblemDetails,
    Readiness,
    SagaHistory,
    SagaPage,
    SagaPlan,
    SagaSummaryView,
    SagaView,
    StepView,
)

DESCRIPTION: Final = """Start, follow, retry and cancel sagas; act on the FAILED ones (the queue); plan one dry.

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

_EXAMPLE_ERRORS: Final = {
    "invalid-request": ["saga_type: Field required", "limit: Input should be less than or equal to 100"],
    "unknown-saga-type": ["saga_type: one of ['order_saga']"],
    "invalid-payload": [
        "payload.customer_id: must be a UUID string such as 11111111-1111-4111-8111-111111111111",
        "payload.items: the order total 0.00 must be greater than 0 (the payment service refuses 0)",
    ],
}


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
    "retrySagaWithPayload": {202: ("Resumed forward with the edited payload: the saga as it is now, EXECUTING.",
                                   False)},
    "skipSagaStep": {202: ("The step is marked done by hand and the saga goes on: the saga as it is now (or "
                           "COMPLETED, COMPENSATED when that was its last step).", False)},
    "compensateSaga": {202: ("Compensation forced: the saga as it is now, COMPENSATING (or COMPENSATED).", False)},
    "resolveSaga": {200: ("Resolved: the saga, still FAILED, with its `resolution`; it leaves the queue.", False)},
    "planSaga": {200: ("The dry run: nothing was written and no participant was called.", False)},
    "getSagaHistory": {200: ("The saga's whole history, as `sagaline saga export` writes it.", False)},
}  # fmt: skip
# Operations whose success is not a SagaView.
_SUCCESS_SCHEMA: Final = {"listSagas": "SagaPage", "planSaga": "SagaPlan", "getSagaHistory": "SagaHistory"}
# The queue's actions (admin): the saga as it is now, and a link to follow it.
QUEUE_ACTIONS: Final = (
    "retrySaga",
    "cancelSaga",
    "retrySagaWithPayload",
    "skipSagaStep",
    "compensateSaga",
    "resolveSaga",
)
_BODY_ERRORS: Final = {400: ("malformed-json", "invalid-characters"), 415: ("unsupported-media-type",)}
_ADMIN: Final = {403: ("forbidden",), 404: ("saga-not-found", "not-found"), 409: ("state-conflict",)}
_ROUTE_PROBLEMS: Final[dict[str, dict[int, tuple[str, ...]]]] = {
    "startSaga": {
        400: ("missing-idempotency-key", "malformed-idempotency-key", "malformed-json", "invalid-characters"),
        415: ("unsupported-media-type",),
        422: ("invalid-request", "unknown-saga-type", "invalid-payload", "invalid-deadline", "idempotency-key-reused"),
    },
    "getSaga": {400: ("invalid-characters",), 404: ("saga-not-found", "not-found"), 422: ("invalid-request",)},
    "listSagas": {400: ("malformed-cursor", "invalid-characters"), 422: ("invalid-request",)},
    "retrySaga": {**_BODY_ERRORS, **_ADMIN, 422: ("invalid-request",)},
    "cancelSaga": {400: ("invalid-characters",), **_ADMIN, 422: ("invalid-request",)},
    "retrySagaWithPayload": {**_BODY_ERRORS, **_ADMIN, 422: ("invalid-request", "invalid-payload")},
    "skipSagaStep": {**_BODY_ERRORS, **_ADMIN, 422: ("invalid-request", "invalid-payload")},
    "compensateSaga": {**_BODY_ERRORS, **_ADMIN, 409: ("state-conflict", "point-of-no-return"),
                       422: ("invalid-request",)},
    "resolveSaga": {**_BODY_ERRORS, **_ADMIN, 422: ("invalid-request",)},
    "planSaga": {**_BODY_ERRORS, 404: ("saga-type-not-found", "not-found"),
                 422: ("invalid-request", "invalid-payload", "invalid-deadline")},
    "getSagaHistory": {400: ("invalid-characters",), 404: ("saga-not-found", "not-found"), 422: ("invalid-request",)},
}  # fmt: skip
# What every /v1 operation may answer besides its own problems.
_EVERY_ROUTE: Final = {401: ("unauthenticated",), 413: ("payload-too-large",), 503: ("database-unavailable",)}


def responses(operation: str, auth: bool) -> dict[int | str, dict[str, Any]]:
    """The `responses` of one operation: its successes and its problems, with their headers and examples."""
    answers: dict[int | str, dict[str, Any]] = {}
    for status, (description, located) in _ROUTE_SUCCESS[operation].items():
        answer: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": _SAGA_REF}}}
        if operation in _SUCCESS_SCHEMA:
            answer["content"]["application/json"]["schema"] = {
                "$ref": f"#/components/schemas/{_SUCCESS_SCHEMA[operation]}"
            }
        if located:
            answer["headers"] = {"Location": _HEADERS["Location"]}
        if operation == "startSaga":
            answer["links"] = _SAGA_LINKS
        elif operation in QUEUE_ACTIONS:
            answer["links"] = {"GetSaga": _SAGA_LINKS["GetSaga"]}
        answers[status] = answer
    problems = {**_ROUTE_PROBLEMS[operation], **_EVERY_ROUTE}
    for status in sorted(problems):
        if auth or status not in (401, 403):
            answers[status] = _problem_answer(problems[status])
    return answers


def _problem_answer(kinds: tuple[str, ...]) -> dict[str, Any]:
    """One error status of an operation: the problem types it stands for, each with an example."""
    status = PROBLEM_TYPES[kinds[0]][0]
    titles = [f"`{kind}` ({PROBLEM_TYPES[kind][1]})" for kind in kinds]
    examples = {kind: {"summary": PROBLEM_TYPES[kind][1], "value": _example(kind)} for kind in kinds}
    answer: dict[str, Any] = {
        "description": "One of " + ", ".join(titles) + "." if len(kinds) > 1 else titles[0] + ".",
        "content": {PROBLEM: {"schema": _PROBLEM_REF, "examples": examples}},
    }
    if status in _STATUS_HEADERS:
        name = _STATUS_HEADERS[status]
        answer["headers"] = {name: _HEADERS[name]}
    return answer


def _example(kind: str) -> dict[str, Any]:
    status, title, detail = PROBLEM_TYPES[kind]
    example: dict[str, Any] = {"type": TYPE_BASE + kind, "title": title, "status": status, "detail": detail,
                               "instance": "/v1/sagas", "trace_id": "e9bfda2fa3aa471ea7a39ae7eb4abd3d"}  # fmt: skip
    if kind in _EXAMPLE_ERRORS:
        example["errors"] = _EXAMPLE_ERRORS[kind]
    return example


# The body of POST /v1/sagas, per saga type. The payload rules mirror `definitions.validate_order_payload`
# (and through it what the participants accept); the contract test fails if the two disagree.
ORDER_ITEM: Final = {
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
ORDER_PAYLOAD: Final = {
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
START_SAGA: Final = {
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
START_EXTRA: Final = {
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


# The bodies of the queue's actions and of the dry run (parsed by `inputs.action_body`, like the start's).
_REASON: Final = {
    "type": "string", "minLength": 1, "maxLength": 1000, "pattern": TEXT_PATTERN,
    "description": "Why the person acts; recorded in the saga's history with the API key's name and role.",
    "examples": ["payment service restored; refund by hand is not needed"],
}  # fmt: skip
_PLAN_DEADLINE: Final = {
    "type": ["string", "null"], "pattern": DEADLINE_PATTERN, "examples": ["30s"],
    "description": "Plan with this deadline instead of the saga type's, as a start's `deadline` would.",
}  # fmt: skip
OPERATOR_SCHEMAS: Final[dict[str, Any]] = {
    "Reason": {"type": "object", "additionalProperties": False, "required": ["reason"],
               "properties": {"reason": _REASON}},
    "RetryWithPayload": {
        "type": "object", "additionalProperties": False, "required": ["payload", "reason"],
        "description": "A saga that failed going forward resumes from its stuck step with this payload, validated "
        "exactly like a start's; steps that already succeeded are not run again.",
        "properties": {"payload": {"$ref": "#/components/schemas/OrderSagaPayload"}, "reason": _REASON},
    },
    "SkipStep": {
        "type": "object", "additionalProperties": False, "required": ["step", "output", "reason"],
        "properties": {
            "step": {"type": "string", "minLength": 1, "maxLength": 100, "pattern": TEXT_PATTERN,
                     "examples": ["confirm_order"],
                     "description": "The step the saga is stuck at (a guard against acting on a stale view)."},
            "output": {"type": "object", "maxProperties": 50,
                       "propertyNames": {"minLength": 1, "maxLength": 100, "pattern": TEXT_PATTERN},
                       "additionalProperties": {"type": "string", "maxLength": 1000, "pattern": TEXT_PATTERN},
                       "examples": [{"order_id": "9b2d6c1e-4f7a-4b8c-9d0e-1f2a3b4c5d6e"}],
                       "description": "What the step produced when done by hand, as names and text values. Going "
                       "forward it joins the saga's context, so it must hold what later steps read; for a "
                       "compensation it is its answer."},
            "reason": _REASON,
        },
    },
    "PlanSaga": {
        "type": "object", "additionalProperties": False, "required": ["payload"],
        "properties": {"payload": {"$ref": "#/components/schemas/OrderSagaPayload"},
                       "deadline": _PLAN_DEADLINE},
    },
}  # fmt: skip


def body(schema: str, *, required: bool = True) -> dict[str, Any]:
    """The `openapi_extra` declaring a hand-parsed JSON body of the component `schema`."""
    content = {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}
    return {"requestBody": {"required": required, "content": content}}


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
    models = (ProblemDetails, SagaView, SagaSummaryView, SagaPage, StepView, EventView, Liveness, Readiness,
              SagaPlan, SagaHistory)  # fmt: skip
    _, found = models_json_schema([(m, "serialization") for m in models], ref_template="#/components/schemas/{model}")
    schemas = {**found["$defs"], "StartSaga": START_SAGA, "OrderSagaPayload": ORDER_PAYLOAD,
               "OrderItem": ORDER_ITEM, **OPERATOR_SCHEMAS}  # fmt: skip
    shared = {
        "NotFound": _problem_answer(("not-found",)),
        "MethodNotAllowed": _problem_answer(("method-not-allowed",)),
        "InternalError": _problem_answer(("internal-error",)),
    }
    components: dict[str, Any] = {"schemas": schemas, "responses": shared}
    if auth:
        scheme = ("An API key; role `client` may start, plan and read sagas, `admin` may also retry and cancel them "
                  "and act on the queue of FAILED sagas.")  # fmt: skip
        components["securitySchemes"] = {"bearerAuth": {"type": "http", "scheme": "bearer", "description": scheme}}
    return components


def build(app: FastAPI, auth: bool) -> dict[str, Any]:
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
