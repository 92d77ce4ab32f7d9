"""PostgreSQL pools on asyncpg, with statement timing and safe session defaults.

Pools are bounded (total connections <= instances x max_size) and every connection refuses to idle
inside a transaction for long, so a stuck client cannot hold the xmin horizon and slow `SKIP LOCKED` polls.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

import asyncpg

from servicekit import metrics, settings, telemetry

# SQLSTATE classes and codes that say "not now" rather than "never": the same statement may succeed
# when retried (on a fresh connection where the old one is gone). Everything else is a bug or bad data.
_TRANSIENT_CLASSES: Final = frozenset(
    {
        "08",  # connection exception
        "40",  # transaction rollback: serialization failure, deadlock
        "53",  # insufficient resources: too many connections, out of memory, disk full
        "57",  # operator intervention: statement cancelled or timed out, admin or crash shutdown, cannot connect now
        "58",  # system error (I/O) in the server
    }
)
_TRANSIENT_CODES: Final = frozenset(
    {
        "25006",  # read-only transaction: a primary that just became a standby during failover
        "25P03",  # idle-in-transaction timeout closed the session
        "55P03",  # lock not available (lock_timeout)
        "55006",  # object in use
        "55000",  # raised at connect while the database refuses connections (datallowconn off, being dropped)
    }
)
# Raised by the driver itself when the connection is gone or never came: no statement ran, or its
# outcome is unknown.
_TRANSIENT_CLIENT: Final = (OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.InternalClientError)


def transient(exc: BaseException) -> bool:
    """True when `exc` from a database call is worth retrying: the database is unreachable or said "not now".

    This is the one classification of database errors; a service maps it to its own vocabulary once
    (the orchestrator to `StoreUnavailable`, a participant to the gRPC status `UNAVAILABLE`). A commit
    interrupted by one of these has an unknown outcome, so a retry must be idempotent (fenced or keyed).
    """
    if isinstance(exc, asyncpg.PostgresError):
        state = str(getattr(exc, "sqlstate", "") or "")
        return state[:2] in _TRANSIENT_CLASSES or state in _TRANSIENT_CODES
    return isinstance(exc, _TRANSIENT_CLIENT)


_SERVER_SETTINGS = {"idle_in_transaction_session_timeout": "30000", "application_name": "sagaline"}


_OPERATIONS = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "BEGIN", "COMMIT", "ROLLBACK"})


def _observe(query: Any) -> None:
    # The statement's first word, once for the metric and the span; asyncpg sends `BEGIN;` and `COMMIT;`.
    verb = query.query.lstrip().split(None, 1)[0].rstrip(";").upper() if query.query.strip() else "SQL"
    metrics.labelled(metrics.DB_QUERY_DURATION, verb.lower() if verb in _OPERATIONS else "other").observe(query.elapsed)
    telemetry.sql_span(query.query, verb, query.elapsed, query.exception is not None)


async def _on_connect(connection: asyncpg.Connection) -> None:
    # Query loggers stay with a connection for its whole life (a release clears only notification and
    # server-log listeners), so the timing hook is attached once, when the pool opens the connection.
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
        init=_on_connect,
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
