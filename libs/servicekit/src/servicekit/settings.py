"""Settings: a YAML file with `${VAR:default}` expansion, overridden by `SAGALINE_*` environment variables.

Precedence, highest first: init arguments, environment (`<prefix>FIELD`, `__` for nesting), secret files
named by `<prefix>FIELD_FILE`, the YAML file named by `SAGALINE_CONFIG`, field defaults. Durations accept
Go-style strings (`30s`, `100ms`, `1m30s`) as well as numbers of seconds. A bad value fails at startup with
every offending field named, never later at first use.
"""

from __future__ import annotations

import math
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import yaml
from pydantic import BaseModel, BeforeValidator, Field, PlainSerializer, SecretStr, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|h|m|s)")
_UNIT_SECONDS: dict[str, float] = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6}
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([^}]*))?\}")


class ConfigError(Exception):
    """The configuration cannot be loaded; the message names every bad field."""


def parse_duration(value: object) -> timedelta:
    """Parse `30s`, `100ms`, `1m30s`, `1.5h`, a number of seconds, or a timedelta.

    Raises:
        ValueError: the value is not a non-negative duration.
    """
    if isinstance(value, timedelta):
        result = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        result = _from_seconds(value, value)
    elif isinstance(value, str):
        result = _parse_duration_text(value.strip())
    else:
        raise ValueError(f"expected a duration such as '30s' or '100ms', got {value!r}")
    if result < timedelta(0):
        raise ValueError(f"duration must not be negative, got {value!r}")
    return result


def _parse_duration_text(text: str) -> timedelta:
    try:
        seconds = float(text)
    except ValueError:
        parts = _DURATION_PART.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"expected a duration such as '30s', '100ms' or '1m30s', got {text!r}") from None
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    return _from_seconds(seconds, text)


def _from_seconds(seconds: float, original: object) -> timedelta:
    # timedelta raises OverflowError (not ValueError) for inf and huge values, and pydantic lets only
    # ValueError become a validation error: without this, `30000000000h` would crash with a bare traceback.
    if not math.isfinite(seconds):
        raise ValueError(f"expected a finite duration, got {original!r}")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"duration {original!r} is out of range") from None


def _format_duration(value: timedelta) -> str:
    return f"{value.total_seconds():g}s"


Duration = Annotated[timedelta, BeforeValidator(parse_duration), PlainSerializer(_format_duration, return_type=str)]
"""A timedelta that also accepts Go-style duration strings."""


def expand_env(text: str, environ: dict[str, str] | None = None) -> str:
    """Replace `${VAR}` and `${VAR:default}` with the environment's value.

    Raises:
        ConfigError: a referenced variable is unset and has no default.
    """
    env = os.environ if environ is None else environ

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is None:
            raise ConfigError(f"config references ${{{name}}}, which is not set and has no default")
        return default

    return _ENV_REFERENCE.sub(replace, text)


def _expand_values(value: Any) -> Any:
    """Expand `${VAR:default}` in every string of parsed YAML (never in comments)."""
    if isinstance(value, str):
        return expand_env(value)
    if isinstance(value, dict):
        return {key: _expand_values(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_expand_values(item) for item in value]
    return value


class _YamlSource(PydanticBaseSettingsSource):
    """Reads the YAML file named by `SAGALINE_CONFIG` (or passed explicitly), after env expansion."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self._data: dict[str, Any] = {}
        if path is None:
            return
        try:
            loaded = _expand_values(yaml.safe_load(path.read_text()))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        section = getattr(settings_cls, "yaml_section", None)
        data = loaded or {}
        if section:
            # An empty section (every key commented out) loads as None and means "all defaults".
            data = data.get(section) or {}
            if not isinstance(data, dict):
                raise ConfigError(f"section {section!r} of config file {path} must hold a mapping")
        self._data = data

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


class _SecretFileSource(PydanticBaseSettingsSource):
    """`<prefix>FIELD_FILE=/path` reads FIELD from that file (Docker and Kubernetes secrets).

    Nested fields use the environment's `__` delimiter, so `SAGALINE_DATABASE__URL_FILE` sets `database.url`.
    """

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._read(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return self._collect(self.settings_cls.model_fields, "")

    def _collect(self, fields: dict[str, FieldInfo], path: str) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, field in fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                if nested := self._collect(annotation.model_fields, f"{path}{name}__"):
                    values[name] = nested
            elif (value := self._read(f"{path}{name}")) is not None:
                values[name] = value
        return values

    def _read(self, dotted: str) -> str | None:
        prefix = str(self.settings_cls.model_config.get("env_prefix", ""))
        path = os.environ.get(f"{prefix}{dotted}_FILE".upper())
        if path is None:
            return None
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read secret file for {dotted.replace('__', '.')}: {exc}") from exc


class LogSettings(BaseModel):
    """How a process writes its logs."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"


class DatabaseSettings(BaseModel):
    """A PostgreSQL pool; `url` may hold a password, so it is a secret."""

    url: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/postgres")
    min_size: int = Field(default=2, ge=0)
    max_size: int = Field(default=10, ge=1)
    command_timeout: Duration = timedelta(seconds=10)
    connect_timeout: Duration = timedelta(seconds=5)


class TelemetrySettings(BaseModel):
    """Tracing; the standard `OTEL_*` variables configure the exporter, nothing is exported without one."""

    service_name: str = ""
    sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    # A span per SQL statement, under the span of the call or request that ran it. Off by default: the
    # participants' actions are one statement each, whose span repeats its handler's and cost a third of a
    # saga's spans; `db_query_duration_seconds` times every statement regardless. On for a closer look.
    sql_spans: bool = False


class DebugSettings(BaseModel):
    """The profiling and debugging port, bound to 127.0.0.1 and off unless enabled."""

    enabled: bool = False
    port: int = Field(default=0, ge=0, le=65535)


class TlsSettings(BaseModel):
    """Mutual TLS on the internal gRPC calls: paths of PEM files, all three set or none (plaintext).

    `cert_file` and `key_file` are this process's own certificate chain and private key; `ca_file` holds
    the CA certificates it trusts to have signed the other side's certificate. Paths, not contents, so a
    rotated file is picked up by a restart and the key never passes through the environment or the logs;
    they are read when the server or channel is built, where an unreadable file stops the process.
    """

    cert_file: Path | None = None
    key_file: Path | None = None
    ca_file: Path | None = None

    @property
    def enabled(self) -> bool:
        """True when certificates are configured (the validator guarantees all three or none)."""
        return self.cert_file is not None

    @model_validator(mode="after")
    def _all_or_none(self) -> TlsSettings:
        # Half a configuration (a cert without its CA) must not quietly fall back to plaintext.
        given = {"cert_file": self.cert_file, "key_file": self.key_file, "ca_file": self.ca_file}
        if any(v is not None for v in given.values()) and any(v is None for v in given.values()):
            missing = ", ".join(name for name, value in given.items() if value is None)
            raise ValueError(f"TLS needs cert_file, key_file and ca_file together; missing {missing}")
        return self


class ClientTlsSettings(TlsSettings):
    """TLS of a gRPC client, which may check another name than the target's host in server certificates.

    `server_name` replaces the host of the target when the server's certificate is verified, for
    platforms whose internal host names are not known when certificates are made; `{service}` in it
    stands for the name of the service called (`order`, ...), which `sagaline certs` puts in every server
    certificate. Empty: the target's own host (`127.0.0.1`, `order`) must be in the certificate.
    """

    server_name: str = ""


class ServiceSettings(BaseSettings):
    """What every Sagaline process is configured with; services subclass it and add their own."""

    model_config = SettingsConfigDict(env_prefix="SAGALINE_", env_nested_delimiter="__", extra="forbid")
    yaml_section: ClassVar[str | None] = None
    # The database a service owns unless told otherwise; also used when only some database fields are set.
    default_database_url: ClassVar[str] = "postgresql://postgres@127.0.0.1:5432/postgres"

    log: LogSettings = LogSettings()
    database: DatabaseSettings = DatabaseSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    debug: DebugSettings = DebugSettings()
    http_host: str = "0.0.0.0"  # noqa: S104 - services listen on all interfaces in containers
    shutdown_grace: Duration = timedelta(seconds=10)

    @model_validator(mode="before")
    @classmethod
    def _own_database_by_default(cls, data: Any) -> Any:
        # A partial override (`<prefix>DATABASE__MAX_SIZE=20`, a YAML section without `url`) arrives as
        # a mapping without `url`; it must keep this service's database, not a generic default.
        if not isinstance(data, dict):
            return data
        database = data.get("database")
        if database is None:
            return {**data, "database": {"url": cls.default_database_url}}
        if isinstance(database, dict) and "url" not in database:
            return {**data, "database": {"url": cls.default_database_url, **database}}
        return data

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Init arguments, then environment, then `*_FILE` secrets, then the YAML file."""
        config = os.environ.get("SAGALINE_CONFIG")
        return (
            init_settings,
            env_settings,
            _SecretFileSource(settings_cls),
            _YamlSource(settings_cls, Path(config) if config else None),
        )


S = TypeVar("S", bound=BaseSettings)


def load(settings_cls: type[S], **overrides: Any) -> S:
    """Build settings, turning every validation failure into one readable `ConfigError`.

    Raises:
        ConfigError: a value is missing, malformed or out of range.
    """
    try:
        return settings_cls(**overrides)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid configuration for {settings_cls.__name__}: {problems}") from exc
