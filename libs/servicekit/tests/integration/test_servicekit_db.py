"""Pools against a real PostgreSQL: session defaults, statement timing, and a ping that never hangs."""

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr

from servicekit import db, settings

MakeDatabase = Callable[[Path | None], Awaitable[str]]


def _count(operation: str) -> float:
    return REGISTRY.get_sample_value("db_query_duration_seconds_count", {"operation": operation}) or 0.0


def _config(url: str, **overrides: object) -> settings.DatabaseSettings:
    return settings.DatabaseSettings.model_validate({"url": SecretStr(url), **overrides})


def _unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def pool(pg_server: str) -> AsyncIterator[asyncpg.Pool]:
    """A small pool on the server's admin database, for tests that create nothing."""
    created = await db.create_pool(_config(pg_server, min_size=1, max_size=2), "sk-db-test")
    yield created
    await created.close()


async def test_pool_connections_carry_the_application_name_and_idle_timeout(pool: asyncpg.Pool) -> None:
    row = await pool.fetchrow(
        "SELECT current_setting('application_name') AS name,"
        " current_setting('idle_in_transaction_session_timeout') AS idle"
    )

    assert row is not None
    assert row["name"] == "sk-db-test"
    assert row["idle"] == "30s"


async def test_pool_is_bounded_by_max_size(pool: asyncpg.Pool) -> None:
    async with pool.acquire(), pool.acquire():
        with pytest.raises(TimeoutError):
            await pool.acquire(timeout=0.1)


async def test_statements_are_timed_by_kind(make_database: MakeDatabase) -> None:
    pool = await db.create_pool(_config(await make_database(None), min_size=1, max_size=2))
    try:
        await _run_statements_of_every_kind(pool)
    finally:
        await pool.close()


async def _run_statements_of_every_kind(pool: asyncpg.Pool) -> None:
    before = {op: _count(op) for op in ("select", "insert", "update", "with", "other", "begin", "commit")}

    await pool.execute("CREATE TABLE things (id integer)")
    await pool.execute("INSERT INTO things VALUES (1), (2)")
    for _ in range(3):
        # Each round acquires a connection afresh: timing must survive the pool's reset on release.
        async with pool.acquire() as connection:
            await connection.fetchval("SELECT count(*) FROM things")
    await pool.execute("  update things SET id = id + 1")
    await pool.fetch("WITH t AS (SELECT 1) SELECT * FROM t")
    async with pool.acquire() as connection, connection.transaction():  # asyncpg sends `BEGIN;` and `COMMIT;`
        await connection.execute("SELECT 1")

    after = {op: _count(op) for op in before}
    assert after["insert"] - before["insert"] == 1
    assert after["update"] - before["update"] == 1
    assert after["with"] - before["with"] == 1
    assert after["select"] - before["select"] >= 3
    assert after["other"] - before["other"] >= 1
    assert after["begin"] - before["begin"] == 1, "a trailing semicolon does not hide the statement's kind"
    assert after["commit"] - before["commit"] == 1


async def test_statement_durations_are_real_elapsed_time(pool: asyncpg.Pool) -> None:
    before = REGISTRY.get_sample_value("db_query_duration_seconds_sum", {"operation": "select"}) or 0.0

    await pool.fetchval("SELECT pg_sleep(0.1)")

    after = REGISTRY.get_sample_value("db_query_duration_seconds_sum", {"operation": "select"}) or 0.0
    assert after - before >= 0.1


async def test_statements_stay_timed_on_a_connection_that_went_back_to_the_pool(pg_server: str) -> None:
    # The timing hook is attached once per connection: it must survive every release and acquire.
    one = await db.create_pool(_config(pg_server, min_size=1, max_size=1))
    try:
        for _ in range(3):
            before = REGISTRY.get_sample_value("db_query_duration_seconds_count", {"operation": "select"}) or 0.0
            async with one.acquire() as connection:
                await connection.fetchval("SELECT 1")
            await asyncio.sleep(0)  # the hook runs as a callback of the loop
            after = REGISTRY.get_sample_value("db_query_duration_seconds_count", {"operation": "select"}) or 0.0
            assert after == before + 1
    finally:
        await one.close()


async def test_ping_is_true_on_a_live_pool(pool: asyncpg.Pool) -> None:
    assert await db.ping(pool) is True


async def test_ping_is_false_on_a_closed_pool(pg_server: str) -> None:
    closed = await db.create_pool(_config(pg_server, min_size=1, max_size=1))
    await closed.close()

    assert await db.ping(closed) is False


async def test_ping_is_false_when_the_server_is_unreachable() -> None:
    unreachable = await db.create_pool(
        _config(f"postgresql://postgres@127.0.0.1:{_unused_port()}/postgres", min_size=0, max_size=1)
    )
    try:
        assert await db.ping(unreachable, within=1.0) is False
    finally:
        await unreachable.close()


async def test_ping_answers_within_its_bound_when_every_connection_is_busy(pool: asyncpg.Pool) -> None:
    async with pool.acquire(), pool.acquire():
        started = time.monotonic()
        healthy = await asyncio.wait_for(db.ping(pool, within=0.2), timeout=5)
        elapsed = time.monotonic() - started

    assert healthy is False
    assert elapsed < 1.0
    assert await db.ping(pool) is True
