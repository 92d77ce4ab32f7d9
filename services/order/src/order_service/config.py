"""Settings of the order service: `SAGALINE_ORDER_*` variables, or the `order` section of the YAML file."""

from __future__ import annotations

from typing import ClassVar, Final

from pydantic import Field, SecretStr, field_validator
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
    database: settings.DatabaseSettings = settings.DatabaseSettings(url=SecretStr(DATABASE_URL))

    @field_validator("database", mode="before")
    @classmethod
    def _keep_the_order_database(cls, value: object) -> object:
        # A partial override (`SAGALINE_ORDER_DATABASE__MAX_SIZE=20`, or a YAML section without `url`)
        # arrives as a dict; without this it would get the base class's URL, not the order database's.
        if isinstance(value, dict) and "url" not in value:
            return {"url": DATABASE_URL, **value}
        return value
