"""Fixtures every test suite shares: a real PostgreSQL server and fresh, migrated databases.

A migrated template database is built once per migrations directory per session; each test that asks
for a database gets its own `CREATE DATABASE ... TEMPLATE` copy, dropped afterwards. Without a server
on 127.0.0.1:5432 (or `SAGALINE_DATABASE_URL`), the embedded server under `.data/` is started, as
`make up` does.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from sagaline import pg
from servicekit import migrations

MakeDatabase = Callable[[Path | None], Awaitable[str]]


@pytest.fixture(scope="session")
def pg_server() -> str:
    """Admin URL of the PostgreSQL server the tests use."""
    url, _ = pg.server_url()
    return url


@pytest.fixture(scope="session")
async def _templates(pg_server: str) -> AsyncIterator[dict[Path, str]]:
    built: dict[Path, str] = {}
    yield built
    for name in built.values():
        await pg.drop_database(pg_server, name)


@pytest.fixture
async def make_database(pg_server: str, _templates: dict[Path, str]) -> AsyncIterator[MakeDatabase]:
    """Factory: `await make_database(migrations_dir)` returns the URL of a fresh migrated database."""
    created: list[str] = []

    async def make(migrations_dir: Path | None) -> str:
        template = None
        if migrations_dir is not None:
            template = _templates.get(migrations_dir)
            if template is None:
                template = f"tpl_{os.getpid()}_{uuid.uuid4().hex[:10]}"
                await pg.create_database(pg_server, template, exist_ok=False)
                await migrations.apply(pg.with_database(pg_server, template), migrations_dir)
                _templates[migrations_dir] = template
        name = f"test_{os.getpid()}_{uuid.uuid4().hex[:12]}"
        await pg.create_database(pg_server, name, template, exist_ok=False)
        created.append(name)
        return pg.with_database(pg_server, name)

    yield make
    for name in created:
        await pg.drop_database(pg_server, name)
