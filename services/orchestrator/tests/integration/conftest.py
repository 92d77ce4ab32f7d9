"""Fixtures the orchestrator's integration tests share: a fresh migrated `saga_orchestrator` database."""

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from orchestrator.bootstrap import MIGRATIONS_DIR


@pytest.fixture
async def database(make_database: Any) -> str:
    """The URL of a fresh database with every orchestrator migration applied."""
    url: str = await make_database(MIGRATIONS_DIR)
    return url


@pytest.fixture
async def db(database: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection to that database, for checking what was committed."""
    connection = await asyncpg.connect(database)
    yield connection
    await connection.close()
