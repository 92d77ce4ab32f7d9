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
from typing import Any

import asyncpg
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


class StatementLog:
    """A pool whose connections note the first word of every statement they send, as the services' pools do."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.pools: list[asyncpg.Pool] = []

    def _record(self, query: Any) -> None:
        self.sent.append(query.query.split()[0].rstrip(";").upper())

    async def pool(self, url: str) -> asyncpg.Pool:
        """One connection (so nothing runs beside the statements counted), no reset query per release."""

        async def setup(connection: asyncpg.Connection) -> None:
            connection.add_query_logger(self._record)  # the same callable: a connection keeps it once

        async def keep_session(_: asyncpg.Connection) -> None:
            return None

        pool = await asyncpg.create_pool(url, min_size=1, max_size=1, setup=setup, reset=keep_session)
        assert pool is not None
        self.pools.append(pool)
        return pool


@pytest.fixture
async def statement_log() -> AsyncIterator[StatementLog]:
    """Count the statements a use case sends: `pool = await statement_log.pool(url)`, then `statement_log.sent`."""
    log = StatementLog()
    yield log
    for pool in log.pools:
        await pool.close()
