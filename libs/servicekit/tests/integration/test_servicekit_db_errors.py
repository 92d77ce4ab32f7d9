"""The one classification of database errors, fed with the real errors PostgreSQL and asyncpg raise.

Each transient case is produced by the server itself (a cancelled statement, a timeout, a terminated
backend, a deadlock, a serialization failure, a read-only transaction, a connection limit), so the test
follows the driver if its exception types ever move.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from servicekit import db

MakeDatabase = Callable[[Path | None], Awaitable[str]]


@pytest.fixture
async def url(make_database: MakeDatabase) -> str:
    url = await make_database(None)
    conn = await asyncpg.connect(url)
    await conn.execute("CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL)")
    await conn.execute("INSERT INTO t VALUES (1, 0), (2, 0)")
    await conn.close()
    return url


@pytest.fixture
async def two(url: str) -> AsyncIterator[tuple[asyncpg.Connection, asyncpg.Connection]]:
    a, b = await asyncpg.connect(url), await asyncpg.connect(url)
    yield a, b
    for conn in (a, b):
        if not conn.is_closed():
            await conn.close()


async def _raised(call: Awaitable[object]) -> BaseException:
    try:
        await call
    except BaseException as exc:
        return exc
    raise AssertionError("no error was raised")


async def test_a_cancelled_statement_is_transient(two: tuple[asyncpg.Connection, asyncpg.Connection]) -> None:
    a, b = two
    pid = a.get_server_pid()
    sleeping = asyncio.create_task(_raised(a.execute("SELECT pg_sleep(10)")))
    await asyncio.sleep(0.2)
    await b.execute("SELECT pg_cancel_backend($1)", pid)

    assert db.transient(await sleeping)


async def test_a_statement_timeout_is_transient(two: tuple[asyncpg.Connection, asyncpg.Connection]) -> None:
    a, _ = two
    await a.execute("SET statement_timeout = '50ms'")

    assert db.transient(await _raised(a.execute("SELECT pg_sleep(1)")))


async def test_a_terminated_backend_is_transient(two: tuple[asyncpg.Connection, asyncpg.Connection]) -> None:
    a, b = two
    await b.execute("SELECT pg_terminate_backend($1)", a.get_server_pid())
    await asyncio.sleep(0.1)

    assert db.transient(await _raised(a.fetchval("SELECT 1")))


async def test_a_deadlock_victim_is_transient(two: tuple[asyncpg.Connection, asyncpg.Connection]) -> None:
    a, b = two
    await a.execute("BEGIN; UPDATE t SET v = 1 WHERE id = 1")
    await b.execute("BEGIN; UPDATE t SET v = 1 WHERE id = 2")
    first = asyncio.create_task(a.execute("UPDATE t SET v = 2 WHERE id = 2"))
    await asyncio.sleep(0.1)
    second = asyncio.create_task(b.execute("UPDATE t SET v = 2 WHERE id = 1"))
    # The server picks one victim; the other proceeds once the victim's transaction is rolled back.
    outcomes = await asyncio.gather(first, second, return_exceptions=True)
    victims = [o for o in outcomes if isinstance(o, BaseException)]

    assert len(victims) == 1
    assert isinstance(victims[0], asyncpg.DeadlockDetectedError)
    assert db.transient(victims[0])


async def test_a_serialization_failure_is_transient(two: tuple[asyncpg.Connection, asyncpg.Connection]) -> None:
    a, b = two
    await a.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    await a.fetchval("SELECT v FROM t WHERE id = 1")
    await b.execute("UPDATE t SET v = 5 WHERE id = 1")

    assert db.transient(await _raised(a.execute("UPDATE t SET v = 6 WHERE id = 1")))


async def test_a_read_only_server_is_transient(two: tuple[asyncpg.Connection, asyncpg.Connection]) -> None:
    a, _ = two
    await a.execute("SET default_transaction_read_only = on")

    assert db.transient(await _raised(a.execute("UPDATE t SET v = 1")))


async def test_too_many_connections_is_transient(pg_server: str, url: str) -> None:
    role = f"limited_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(pg_server)
    await admin.execute(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 0')
    try:
        exc = await _raised(asyncpg.connect(url, user=role))
    finally:
        await admin.execute(f'DROP ROLE "{role}"')
        await admin.close()

    assert isinstance(exc, asyncpg.TooManyConnectionsError)
    assert db.transient(exc)


async def test_a_closed_connection_and_an_unreachable_server_are_transient(url: str) -> None:
    conn = await asyncpg.connect(url)
    await conn.close()

    assert db.transient(await _raised(conn.fetchval("SELECT 1")))
    assert db.transient(await _raised(asyncpg.connect("postgresql://postgres@127.0.0.1:1/x", timeout=1)))


@pytest.mark.parametrize(
    "statement",
    [
        "SELEC 1",  # syntax error
        "INSERT INTO t VALUES (1, 0)",  # unique violation
        "INSERT INTO t VALUES (3, NULL)",  # not-null violation
        "SELECT nope FROM t",  # undefined column
        "SELECT 1/0",  # division by zero
    ],
)
async def test_bugs_and_bad_data_are_not_transient(
    two: tuple[asyncpg.Connection, asyncpg.Connection], statement: str
) -> None:
    a, _ = two

    assert not db.transient(await _raised(a.execute(statement)))
