"""Settings of the order service: `SAGALINE_ORDER_*` variables, or the `order` section of the YAML file."""

from __future__ import annotations

from typing import ClassVar, Final

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from servicekit import settings

DATABASE_URL: Final = "postgresql://postgres@127.0.0.1:5432/order_service"


class Settings(settings.ServiceSettings):
    """Where the order service listens and which database it owns."""

    model_config = SettingsConfigDict(env_prefix="SAGALINE_ORDER_", env_nested_delimiter="__", extra="forbid")
    yaml_section: ClassVar[str | None] = "order"

    grpc_host: str = "0.0.0.0"  # noqa: S104 - services listen on all interfaces in containers
    grpc_port: int = Field(default=50051, ge=0, le=65535)
    http_port: int = Field(default=9101, ge=0, le=65535)
    # Mutual TLS on the gRPC port when certificates are set (SAGALINE_ORDER_TLS__CERT_FILE, __KEY_FILE,
    # __CA_FILE); callers then need a client certificate from that CA. Plaintext otherwise.
    tls: settings.TlsSettings = settings.TlsSettings()
    # Reflection lists every method and message to anyone who can connect: off unless asked for
    # (`sagaline up` turns it on for local exploration with grpcurl).
    grpc_reflection: bool = False
    default_database_url: ClassVar[str] = DATABASE_URL
