"""Settings of the payment service: `SAGALINE_PAYMENT_*` variables over the `payment` section of the YAML file."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from servicekit import settings


class Settings(settings.ServiceSettings):
    """What the payment process is configured with."""

    model_config = SettingsConfigDict(env_prefix="SAGALINE_PAYMENT_", env_nested_delimiter="__", extra="forbid")
    yaml_section: ClassVar[str | None] = "payment"

    grpc_host: str = "0.0.0.0"  # noqa: S104 - services listen on all interfaces in containers
    grpc_port: int = Field(default=50052, ge=0, le=65535)
    http_port: int = Field(default=9102, ge=0, le=65535)
    # Mutual TLS on the gRPC port when certificates are set (SAGALINE_PAYMENT_TLS__CERT_FILE, __KEY_FILE,
    # __CA_FILE); callers then need a client certificate from that CA. Plaintext otherwise.
    tls: settings.TlsSettings = settings.TlsSettings()
    # Reflection lists every method and message to anyone who can connect: off unless asked for
    # (`sagaline up` turns it on for local exploration with grpcurl).
    grpc_reflection: bool = False
    default_database_url: ClassVar[str] = "postgresql://postgres@127.0.0.1:5432/payment_service"
