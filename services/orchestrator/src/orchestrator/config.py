"""Orchestrator settings: `SAGALINE_*` environment (with `__` nesting) over the YAML file's `orchestrator:` section."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

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


class BreakerSettings(BaseModel):
    """Circuit breaker per downstream service."""

    failure_threshold: int = Field(default=5, ge=1)
    open_for: Duration = timedelta(seconds=30)
    success_threshold: int = Field(default=2, ge=1)


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
    participants: ParticipantSettings = ParticipantSettings()
    # Mutual TLS to the participants (SAGALINE_TLS__CERT_FILE, __KEY_FILE, __CA_FILE: the client
    # certificate, its key, and the CA that signed the participants' certificates; __SERVER_NAME to
    # check another name than the target's host). Plaintext when unset.
    tls: settings.ClientTlsSettings = settings.ClientTlsSettings()
    saga: SagaSettings = SagaSettings()
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
