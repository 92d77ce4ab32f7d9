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
        "`cancel_requested`, `operator_action` (a person's action: `detail` names the action, who and why)."
    )
    step: str | None
    from_status: str | None
    to_status: str | None
    fence: int = Field(ge=0)
    owner_id: str | None
    detail: dict[str, Any]
    at: datetime


class Resolution(BaseModel):
    """Who marked a FAILED saga handled without acting, when, and why."""

    model_config = ConfigDict(extra="forbid")

    by: str = Field(description="The API key's name (`anonymous` with authentication off).")
    role: str
    reason: str
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
    resolution: Resolution | None = Field(
        description="Set when a person marked this FAILED saga handled without acting (it stays FAILED)."
    )


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


# -- the dry run's answer ----------------------------------------------------------------------------------


class PlanDelay(BaseModel):
    """One retry's delay without jitter, and its bounds with the most jitter either way."""

    model_config = ConfigDict(extra="forbid")

    retry: int = Field(ge=1)
    delay_seconds: float = Field(ge=0)
    min_seconds: float = Field(ge=0)
    max_seconds: float = Field(ge=0)


class PlanRetry(BaseModel):
    """A retry policy as a schedule; `max_retries: null` retries until it succeeds (`then_repeats` forever)."""

    model_config = ConfigDict(extra="forbid")

    max_retries: int | None
    attempts: int | None
    jitter: float
    schedule: list[PlanDelay]
    then_repeats: PlanDelay | None


class PlanCall(BaseModel):
    """One participant call: where it goes, its per-attempt timeout and its retries."""

    model_config = ConfigDict(extra="forbid")

    service: str
    method: str
    timeout_seconds: float
    retry: PlanRetry


class PlanStep(BaseModel):
    """One step in order: its action, and its compensation (null: forward-only, the point of no return)."""

    model_config = ConfigDict(extra="forbid")

    position: int = Field(ge=0)
    name: str
    forward_only: bool
    action: PlanCall
    compensation: PlanCall | None


class PlanCompensation(BaseModel):
    """A compensation that would run."""

    model_config = ConfigDict(extra="forbid")

    step: str
    service: str
    method: str


class PlanFailure(BaseModel):
    """A failure at one position: the compensations that run, in order, if refused or if its outcome stays unknown.

    `if_unknown` is null for a step retried until it succeeds: an unknown outcome never compensates it.
    """

    model_config = ConfigDict(extra="forbid")

    position: int = Field(ge=0)
    step: str
    if_refused: list[PlanCompensation]
    if_unknown: list[PlanCompensation] | None
    unknown_after_attempts: int | None


class SagaPlan(BaseModel):
    """The dry run of a saga: nothing was written and no participant was called."""

    model_config = ConfigDict(extra="forbid")

    saga_type: str
    definition_version: int = Field(ge=1)
    payload: dict[str, Any] = Field(description="The payload as a start would store it, validated and normalised.")
    deadline_seconds: float
    on_timeout: OnTimeout
    steps: list[PlanStep]
    failures: list[PlanFailure]


# -- the export of one saga ---------------------------------------------------------------------------------


class HistoryStepView(StepView):
    """A step as exported: its view, plus the request its action sent and its idempotency keys."""

    request: dict[str, Any] | None = Field(description="What the action sent at its first attempt.")
    idempotency_key: str
    compensation_key: str


class SagaHistory(SagaSummaryView):
    """One saga's whole history, as `sagaline saga export` writes it and retention exports it (one JSON line)."""

    format: Literal["sagaline.saga-history/1"]
    trace_context: dict[str, str]
    steps: list[HistoryStepView]
    events: list[EventView]
