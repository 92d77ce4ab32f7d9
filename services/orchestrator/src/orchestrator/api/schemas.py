"""The documents this API answers with, as pydantic models that describe them for `/openapi.json`.

The handlers return the views' plain dicts; these models only describe them. Unknown members are
forbidden, so a field added to a view without a word here fails the contract test rather than
reaching clients undocumented.
"""

from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.api.inputs import CURSOR_PATTERN, UUID_PATTERN
from orchestrator.api.problems import MAX_PROBLEMS, TYPE_BASE
from orchestrator.domain.model import OnTimeout, SagaStatus, StepStatus

_UUID: Final = Field(pattern=UUID_PATTERN, json_schema_extra={"format": "uuid"})
_TRACE_ID: Final = r"^[0-9a-f]{32}$"


def _optional_members(schema: dict[str, Any]) -> None:
    """Drop the `default` of members that are absent rather than defaulted (pydantic needs one to say optional)."""
    for member in schema.get("properties", {}).values():
        member.pop("default", None)


class ProblemDetails(BaseModel):
    """An error (RFC 9457); `type` is stable per error, `errors` names every bad field of a 422."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_optional_members)

    type: str = Field(json_schema_extra={"format": "uri"}, examples=[TYPE_BASE + "malformed-cursor"])
    title: str
    status: int = Field(ge=400, le=599)
    detail: str
    instance: str = Field(description="The request's path.")
    errors: list[str] = Field(
        default_factory=list, max_length=MAX_PROBLEMS, description="One line per problem: `field.path: reason`."
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
