"""The inventory service's settings: `SAGALINE_INVENTORY_*` variables over the `inventory` YAML section."""

from __future__ import annotations

from typing import ClassVar, Final

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from servicekit import settings

DEFAULT_DATABASE_URL: Final = "postgresql://postgres@127.0.0.1:5432/inventory_service"


class Settings(settings.ServiceSettings):
    """Where the inventory service listens and which database it owns."""

    model_config = SettingsConfigDict(env_prefix="SAGALINE_INVENTORY_", env_nested_delimiter="__", extra="forbid")
    yaml_section: ClassVar[str | None] = "inventory"

    grpc_host: str = "0.0.0.0"  # noqa: S104 - services listen on all interfaces in containers
    grpc_port: int = Field(default=50053, ge=0, le=65535)
    http_port: int = Field(default=9103, ge=0, le=65535)
    # Mutual TLS on the gRPC port when certificates are set (SAGALINE_INVENTORY_TLS__CERT_FILE, __KEY_FILE,
    # __CA_FILE); callers then need a client certificate from that CA. Plaintext otherwise.
    tls: settings.TlsSettings = settings.TlsSettings()
    # Reflection lists every method and message to anyone who can connect: off unless asked for
    # (`sagaline up` turns it on for local exploration with grpcurl).
    grpc_reflection: bool = False
    default_database_url: ClassVar[str] = DEFAULT_DATABASE_URL
