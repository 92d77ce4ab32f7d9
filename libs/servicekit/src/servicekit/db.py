"""PostgreSQL pools on asyncpg, with statement timing and safe session defaults.

Pools are bounded (total connections <= instances x max_size) and every connection refuses to idle
inside a transaction for long, so a stuck client cannot hold the xmin horizon and slow `SKIP LOCKED` polls.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from servicekit import metrics, settings, telemetry

_SERVER_SETTINGS = {"idle_in_transaction_session_timeout": "30000", "application_name": "sagaline"}


_OPERATIONS = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "BEGIN", "COMMIT", "ROLLBACK"})


def _observe(query: Any) -> None:
    # The statement's first word, once for the metric and the span; asyncpg sends `BEGIN;` and `COMMIT;`.
    verb = query.query.lstrip().split(None, 1)[0].rstrip(";").upper() if query.query.strip() else "SQL"
    metrics.DB_QUERY_DURATION.labels(verb.lower() if verb in _OPERATIONS else "other").observe(query.elapsed)
    telemetry.sql_span(query.query, verb, query.elapsed, query.exception is not None)


async def _on_acquire(connection: asyncpg.Connection) -> None:
    # asyncpg drops log listeners whenever a connection returns to the pool, so the timing hook is
    # attached at every acquire (a cheap in-memory call, no round trip).
    connection.add_query_logger(_observe)


async def _keep_session(_: asyncpg.Connection) -> None:
    """Skip the default reset query (one round trip per release).

    Safe because no Sagaline code leaves session state on a pooled connection: no SET, no LISTEN, no
    session-level advisory lock (participants lock per transaction; migrations use their own connection).
    asyncpg still rolls back any open transaction and clears listeners before calling this.
    """


async def create_pool(config: settings.DatabaseSettings, application_name: str = "sagaline") -> asyncpg.Pool:
    """Open a bounded pool; connections log statement durations into `db_query_duration_seconds`."""
    pool = await asyncpg.create_pool(
        config.url.get_secret_value(),
        min_size=config.min_size,
        max_size=config.max_size,
        command_timeout=config.command_timeout.total_seconds(),
        timeout=config.connect_timeout.total_seconds(),
        server_settings={**_SERVER_SETTINGS, "application_name": application_name},
        setup=_on_acquire,
        reset=_keep_session,
    )
    if pool is None:  # pragma: no cover - asyncpg returns None only when awaited lazily
        raise RuntimeError("asyncpg returned no pool")
    return pool


async def ping(pool: asyncpg.Pool, within: float = 2.0) -> bool:
    """One round trip to the database within `within` seconds; False on any connection or timeout failure.

    The bound covers waiting for a free connection and connecting, not only the query: a readiness probe
    must answer even when every pooled connection is busy or the server has stopped answering.
    """
    try:
        async with asyncio.timeout(within):
            await pool.fetchval("SELECT 1")
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False
    return True
