"""The REST API (SPEC section 3): FastAPI routes behind plain ASGI middleware, and its OpenAPI document.

Errors are `application/problem+json` (RFC 9457) with a stable `type` URI per error. Bad input gets a
4xx and persists nothing; a 5xx is a bug, except 503 with Retry-After while the database is unreachable
or answers with a transient error. The middleware answers probes and `/metrics` before FastAPI sees
them, enforces the body size limit, and times requests by route template, all without per-message
overhead.

The package's modules, from the bottom: `problems` (the problem types, `Problem` and the error handlers),
`inputs` (the patterns and the parsing of everything a request carries), `middleware` (the plain ASGI
middleware and the caller's `Principal`), `schemas` and `document` (the OpenAPI document),
`operator_routes` (the queue's actions on FAILED sagas, the dry run and the export), and `app` (the
routes and `create_app`).
"""

from orchestrator.api.app import create_app
from orchestrator.api.inputs import CURSOR_PATTERN, DEADLINE_PATTERN, KEY_PATTERN, UUID_PATTERN
from orchestrator.api.middleware import HTTP_DURATION, Authenticator, Principal
from orchestrator.api.problems import Problem, problem_response

__all__ = [
    "CURSOR_PATTERN",
    "DEADLINE_PATTERN",
    "HTTP_DURATION",
    "KEY_PATTERN",
    "UUID_PATTERN",
    "Authenticator",
    "Principal",
    "Problem",
    "create_app",
    "problem_response",
]
