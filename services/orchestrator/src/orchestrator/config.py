"""Orchestrator settings: `SAGALINE_*` environment (with `__` nesting) over the YAML file's `orchestrator:` section."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from orchestrator import definitions
from orchestrator.domain.breaker import BreakerPolicy
from servicekit import settings
from servicekit import tls as transport
from servicekit.settings import Duration


class ApiKey(BaseModel):
    """One API key: its SHA-256 hex digest (never the key itself) or a file holding the key."""

    name: str
    role: Literal["client", "admin"]
    sha256: SecretStr | None = None
    key_file: Path | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ApiKey:
        if (self.sha256 is None) == (self.key_file is None):
            raise ValueError(f"api key {self.name!r} needs exactly one of sha256 or key_file")
        return self


class OwnershipSettings(BaseModel):
    """Leases and polling (SPEC section 6)."""

    # 4 s: a killed instance's sagas are claimed within lease + poll (4.5 s), and 300 of them are
    # finished within 10 s of the kill. The heartbeat renews every lease_ttl/3, so only a pause longer
    # than two heartbeats (2.7 s) hands a saga over early; a handover is safe (fenced, keyed), it only
    # costs an attempt.
    lease_ttl: Duration = timedelta(seconds=4)
    poll_interval: Duration = timedelta(milliseconds=500)
    max_concurrent: int = Field(default=500, ge=1)
    claim_batch: int = Field(default=100, ge=1)

    @model_validator(mode="after")
    def _sane(self) -> OwnershipSettings:
        if self.lease_ttl < timedelta(seconds=1) or self.poll_interval <= timedelta(0):
            raise ValueError("lease_ttl must be at least 1s and poll_interval positive")
        return self


class BreakerOverride(BaseModel):
    """One downstream service's breaker thresholds; an absent field keeps the `breaker` section's value."""

    model_config = ConfigDict(extra="forbid")

    failure_threshold: int | None = Field(default=None, ge=1)
    open_for: Duration | None = None
    success_threshold: int | None = Field(default=None, ge=1)


class BreakerSettings(BaseModel):
    """Circuit breaker per downstream service (SPEC section 6: 5 failures, 30 s open, 2 successes).

    A breaker guards a service, not a step: every step calling `payment` shares its breaker, so the
    per-service entries (`services.payment.open_for`) are the finest grain that means something.
    """

    failure_threshold: int = Field(default=5, ge=1)
    open_for: Duration = timedelta(seconds=30)
    success_threshold: int = Field(default=2, ge=1)
    services: dict[str, BreakerOverride] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_services(self) -> BreakerSettings:
        unknown = set(self.services) - set(ParticipantSettings.model_fields)
        if unknown:
            raise ValueError(
                f"no participant named {sorted(unknown)}; choose from {sorted(ParticipantSettings.model_fields)}"
            )
        return self

    def policy(self, service: str | None = None) -> BreakerPolicy:
        """The thresholds of service's breaker (the section's own without a service)."""
        override = self.services.get(service or "", BreakerOverride())
        return BreakerPolicy(
            override.failure_threshold or self.failure_threshold,
            (override.open_for or self.open_for).total_seconds(),
            override.success_threshold or self.success_threshold,
        )


class RetrySettings(BaseModel):
    """Fields of a retry policy to replace; absent ones keep the step's.

    The actions' defaults are SPEC section 6's: 3 retries, 100 ms initial, 10 s maximum, x2, 10% jitter.
    """

    model_config = ConfigDict(extra="forbid")

    max_retries: int | None = Field(default=None, ge=0, le=1000)
    initial: Duration | None = None
    maximum: Duration | None = None
    multiplier: float | None = Field(default=None, ge=1.0, le=10.0)
    jitter: float | None = Field(default=None, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> RetrySettings:
        if self.initial is not None and self.initial <= timedelta(0):
            raise ValueError("initial must be positive")
        if self.initial is not None and self.maximum is not None and self.initial > self.maximum:
            raise ValueError("initial must not exceed maximum")
        return self

    def overrides(self) -> dict[str, Any]:
        """The fields that were set, by `RetryPolicy` field name."""
        values = {name: getattr(self, name) for name in type(self).model_fields}
        return {name: value for name, value in values.items() if value is not None}


class StepSettings(BaseModel):
    """One step's call settings (`steps.<step name>`); absent fields keep the saga definition's."""

    model_config = ConfigDict(extra="forbid")

    timeout: Duration | None = None
    retry: RetrySettings = RetrySettings()
    compensation_timeout: Duration | None = None
    compensation_retry: RetrySettings = RetrySettings()

    @model_validator(mode="after")
    def _positive(self) -> StepSettings:
        for name in ("timeout", "compensation_timeout"):
            value = getattr(self, name)
            if value is not None and value <= timedelta(0):
                raise ValueError(f"{name} must be positive")
        return self

    def tuning(self) -> definitions.StepTuning:
        """These settings as the definitions apply them."""
        return definitions.StepTuning(
            self.timeout, self.retry.overrides(), self.compensation_timeout, self.compensation_retry.overrides()
        )


class HttpTimeoutSettings(BaseModel):
    """Time limits of the REST server's connections."""

    read: Duration = timedelta(seconds=30)  # a request body must arrive within this (408 after)
    write: Duration = timedelta(seconds=30)  # each part of a response must be taken by the client within this
    keep_alive: Duration = timedelta(seconds=5)  # an idle keep-alive connection is closed after this

    @model_validator(mode="after")
    def _positive(self) -> HttpTimeoutSettings:
        if min(self.read, self.write, self.keep_alive) <= timedelta(0):
            raise ValueError("read, write and keep_alive must be positive")
        return self


class ParticipantSettings(BaseModel):
    """Where the participant services listen (`host:port`)."""

    order: str = "127.0.0.1:50051"
    payment: str = "127.0.0.1:50052"
    inventory: str = "127.0.0.1:50053"


class SagaSettings(BaseModel):
    """Saga behaviour."""

    on_timeout: Literal["compensate", "fail"] = "compensate"
    deadline: Duration | None = None
    idempotency_key_ttl: Duration = timedelta(hours=24)


class RetentionSettings(BaseModel):
    """Retention of finished sagas and expired client keys, run by every instance's housekeeping (every 15 s).

    `finished_after` unset keeps every saga; set (`720h`), sagas COMPLETED, COMPENSATED or FAILED and
    resolved by a person longer ago are deleted with their steps, events and key, at most `batch` per
    transaction and `max_batches` per run, each first appended as a JSON line to a file in `export_dir`
    when that is set. Expired idempotency keys are forgotten in the same batches either way.
    """

    finished_after: Duration | None = None
    batch: int = Field(default=100, ge=1, le=10_000)
    max_batches: int = Field(default=10, ge=1, le=1_000)
    export_dir: Path | None = None

    @model_validator(mode="after")
    def _positive(self) -> RetentionSettings:
        if self.finished_after is not None and self.finished_after <= timedelta(0):
            raise ValueError("retention.finished_after must be positive (unset keeps every saga)")
        return self


class UiSettings(BaseModel):
    """The saga timeline UI at /ui."""

    # A tracing UI's page for one trace, with `{trace_id}` where the id goes, e.g. Jaeger's
    # `http://127.0.0.1:16686/trace/{trace_id}` (SAGALINE_UI__TRACE_URL); trace ids are plain text when unset.
    trace_url: str | None = None

    @model_validator(mode="after")
    def _template(self) -> UiSettings:
        url = self.trace_url = self.trace_url or None  # empty (`SAGALINE_UI__TRACE_URL=`) means unset
        if url is not None and (not url.startswith(("http://", "https://")) or "{trace_id}" not in url):
            raise ValueError("ui.trace_url must be an http(s) URL containing {trace_id}")
        return self


class Settings(settings.ServiceSettings):
    """Everything an orchestrator instance is configured with."""

    model_config = SettingsConfigDict(env_prefix="SAGALINE_", env_nested_delimiter="__", extra="ignore")
    yaml_section: ClassVar[str | None] = "orchestrator"

    instance: int = Field(default=1, ge=1)
    http_port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    auth: Literal["off", "on"] = "on"
    # `authenticated`: /metrics, /docs and /openapi.json need an API key too (compose and Render); the
    # probes stay open. `public` (the default, and `make up`) serves them to anyone who reaches the port.
    operator_endpoints: Literal["public", "authenticated"] = "public"
    # `auth: off` makes every caller an admin, so it starts only on a loopback HTTP bind unless this
    # says the operator means it (SAGALINE_ALLOW_INSECURE_AUTH_OFF=true): see `auth_off_exposure`.
    allow_insecure_auth_off: bool = False
    api_keys: list[ApiKey] = Field(default_factory=list)
    ownership: OwnershipSettings = OwnershipSettings()
    breaker: BreakerSettings = BreakerSettings()
    # Retry policy of every action that has a compensation, then per-step timeouts and retry policies
    # (SAGALINE_STEPS__PROCESS_PAYMENT__TIMEOUT=20s); bootstrap refuses a step name no saga has.
    retry: RetrySettings = RetrySettings()
    steps: dict[str, StepSettings] = Field(default_factory=dict)
    http_timeouts: HttpTimeoutSettings = HttpTimeoutSettings()
    participants: ParticipantSettings = ParticipantSettings()
    # Mutual TLS to the participants (SAGALINE_TLS__CERT_FILE, __KEY_FILE, __CA_FILE: the client
    # certificate, its key, and the CA that signed the participants' certificates; __SERVER_NAME to
    # check another name than the target's host). Plaintext when unset.
    tls: settings.ClientTlsSettings = settings.ClientTlsSettings()
    saga: SagaSettings = SagaSettings()
    retention: RetentionSettings = RetentionSettings()
    ui: UiSettings = UiSettings()
    # Fault injection for the fault battery only: this instance's own wall clock reads this far off.
    fault_clock_skew: Duration | None = None
    default_database_url: ClassVar[str] = "postgresql://postgres@127.0.0.1:5432/saga_orchestrator"
    # The orchestrator's own SQL is a handful of single-statement checkpoints per saga; spans for them
    # cost more than they tell (SAGALINE_TELEMETRY__SQL_SPANS=true turns them on).
    telemetry: settings.TelemetrySettings = settings.TelemetrySettings(sql_spans=False)

    def auth_off_exposure(self) -> str | None:
        """Why this instance must not start: auth off on an HTTP bind others can reach; None when safe.

        Not a validator: migration jobs load these settings with auth off on the default bind and never
        serve a request, so only starting an instance is refused (`bootstrap.start`).
        """
        if self.auth == "on" or self.allow_insecure_auth_off or transport.is_loopback(self.http_host):
            return None
        return (
            f"SAGALINE_AUTH=off with http_host={self.http_host!r}: anyone who can reach the port would be an admin. "
            "Bind to 127.0.0.1 (SAGALINE_HTTP_HOST), turn auth on with API keys, or set "
            "SAGALINE_ALLOW_INSECURE_AUTH_OFF=true to accept that"
        )

    @model_validator(mode="after")
    def _auth_needs_keys(self) -> Settings:
        if self.auth == "on" and not self.api_keys:
            raise ValueError("auth is on but no api_keys are configured (set SAGALINE_AUTH=off for local use)")
        return self
