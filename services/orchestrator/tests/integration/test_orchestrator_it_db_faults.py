"""Transient database errors against a real PostgreSQL: translated once, retried safely, never a 500.

Findings from a live stack: a cancelled statement parked a healthy saga as FAILED and answered a POST
with 500, and a checkpoint whose answer was lost left the saga to wait for its whole lease. Here the
errors are made by the server itself (a row lock held past `statement_timeout` / `lock_timeout`) and by a
TCP proxy that lets a save reach PostgreSQL and drops its answer.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest

from orchestrator import bootstrap, definitions, ports
from orchestrator.adapters.postgres import PostgresSagaRepository
from orchestrator.bootstrap import MIGRATIONS_DIR
from orchestrator.domain import errors
from orchestrator.domain.model import Saga
from sagaline.chaos.proxy import FaultProxy, Mode
from services.orchestrator.tests.integration.test_orchestrator_it_api import ADMIN, settings

TTL = timedelta(seconds=30)
PAYLOAD: dict[str, Any] = {
    "customer_id": "11111111-1111-4111-8111-111111111111",
    "items": [{"sku": "SKU-WIDGET", "quantity": 1, "unit_price": "9.99"}],
    "currency": "USD",
}


@pytest.fixture
async def url(make_database: Any) -> str:
    created: str = await make_database(MIGRATIONS_DIR)
    return created


async def _owned_saga(repo: PostgresSagaRepository) -> tuple[Saga, ports.Lease]:
    definition = definitions.registry().latest(definitions.ORDER_SAGA)
    assert definition is not None
    now = datetime.now(UTC)
    saga = Saga.new(str(uuid.uuid4()), definition, definition.validate(PAYLOAD), now)
    saga.start(now)
    created = await repo.create(saga, f"key-{saga.id}", "hash", "owner-a", TTL)
    assert created.lease is not None
    return saga, created.lease


@pytest.mark.parametrize(
    "timeouts",
    [{"statement_timeout": "200"}, {"lock_timeout": "100"}],
    ids=["statement_timeout (57014 query_canceled)", "lock_timeout (55P03 lock_not_available)"],
)
async def test_a_cancelled_or_timed_out_checkpoint_is_store_unavailable_and_lands_once_retried(
    url: str, timeouts: dict[str, str]
) -> None:
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2, server_settings=timeouts)
    assert pool is not None
    holder = await asyncpg.connect(url)
    try:
        await _held_up_then_retried(PostgresSagaRepository(pool, definitions.registry()), holder)
    finally:
        await holder.close()
        await pool.close()


async def _held_up_then_retried(repo: PostgresSagaRepository, holder: asyncpg.Connection) -> None:
    saga, lease = await _owned_saga(repo)
    saga.step_succeeded(saga.steps[0], {}, {"order_id": "o-1", "total_amount": "9.99"}, datetime.now(UTC))
    async with holder.transaction():
        await holder.execute("SELECT 1 FROM sagas WHERE id = $1 FOR UPDATE", uuid.UUID(saga.id))
        with pytest.raises(errors.StoreUnavailable):
            await repo.save(saga, lease, TTL)

    await repo.save(saga, lease, TTL)  # the same checkpoint, now that the lock is gone

    moves = await holder.fetchval(
        "SELECT count(*) FROM saga_events WHERE saga_id = $1 AND kind = 'step' AND to_status = 'SUCCEEDED'",
        uuid.UUID(saga.id),
    )
    assert moves == 1
    assert saga.revision == 1


async def test_a_checkpoint_whose_answer_was_lost_is_recognised_not_repeated(url: str) -> None:
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    proxy = FaultProxy((parts.hostname, parts.port), seed=1)
    port = await proxy.start()
    proxied = urlunsplit(parts._replace(netloc=parts.netloc.rsplit(":", 1)[0] + f":{port}"))
    pool = await asyncpg.create_pool(proxied, min_size=1, max_size=2, command_timeout=0.5)
    assert pool is not None
    direct = await asyncpg.connect(url)
    try:
        repo = PostgresSagaRepository(pool, definitions.registry())
        saga, lease = await _owned_saga(repo)
        saga.step_succeeded(saga.steps[0], {}, {"order_id": "o-1", "total_amount": "9.99"}, datetime.now(UTC))
        await proxy.set_mode(Mode.DROP_RESPONSES)
        with pytest.raises(errors.StoreUnavailable):
            await repo.save(saga, lease, TTL)  # it reached PostgreSQL and committed; the answer did not come back
        await proxy.set_mode(Mode.PASS)

        await repo.save(saga, lease, TTL)  # the engine repeats the same save: it must find its own commit

        row = await direct.fetchrow("SELECT revision, owner_id FROM sagas WHERE id = $1", uuid.UUID(saga.id))
        events = await direct.fetchval(
            "SELECT count(*) FROM saga_events WHERE saga_id = $1 AND kind = 'step' AND to_status = 'SUCCEEDED'",
            uuid.UUID(saga.id),
        )
        assert (row["revision"], row["owner_id"]) == (1, "owner-a")
        assert events == 1, "the move is recorded once"
        assert saga.revision == 1
    finally:
        await direct.close()
        await pool.close()
        await proxy.stop()


@dataclass
class Live:
    """An instance whose every statement is cancelled past `statement_timeout`, one saga it accepted, and
    an outside connection to hold that saga's row lock with."""

    http: httpx.AsyncClient
    admin: asyncpg.Connection
    saga_id: uuid.UUID


@asynccontextmanager
async def live_instance(url: str, statement_timeout: str) -> AsyncIterator[Live]:
    admin = await asyncpg.connect(url)
    database = urlsplit(url).path.lstrip("/")
    await admin.execute(f"ALTER DATABASE \"{database}\" SET statement_timeout = '{statement_timeout}'")
    running = await bootstrap.start(settings(url))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.http_port}", timeout=20) as http:
            created = await http.post(
                "/v1/sagas",
                json={"saga_type": "order_saga", "payload": PAYLOAD},
                headers={**ADMIN, "Idempotency-Key": f"k-{uuid.uuid4()}"},
            )
            assert created.status_code == 202, created.text
            yield Live(http, admin, uuid.UUID(created.json()["id"]))
    finally:
        await running.stop()
        await admin.execute(f'ALTER DATABASE "{database}" RESET statement_timeout')
        await admin.close()


async def test_a_request_that_meets_a_cancelled_statement_gets_503_with_retry_after(url: str) -> None:
    async with live_instance(url, "300ms") as live, live.admin.transaction():
        await live.admin.execute("SELECT 1 FROM sagas WHERE id = $1 FOR UPDATE", live.saga_id)
        answer = await live.http.post(f"/v1/sagas/{live.saga_id}/cancel", headers=ADMIN)

    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"] == "1"
    assert answer.headers["content-type"].startswith("application/problem+json")


async def test_a_checkpoint_held_up_by_a_lock_does_not_stall_the_run_for_a_lease(url: str) -> None:
    """The engine repeats the save as soon as the database answers again, well within one lease."""
    async with live_instance(url, "150ms") as live:
        async with live.admin.transaction():  # the participants are unreachable: the run retries and saves
            await live.admin.execute("SELECT 1 FROM sagas WHERE id = $1 FOR UPDATE", live.saga_id)
            await asyncio.sleep(1.5)
        released = await live.admin.fetchval("SELECT clock_timestamp()")
        await asyncio.sleep(1.5)
        moved = await live.admin.fetchval(
            "SELECT count(*) FROM saga_events WHERE saga_id = $1 AND created_at > $2", live.saga_id, released
        )
        status = await live.admin.fetchval("SELECT status FROM sagas WHERE id = $1", live.saga_id)

    assert status != "FAILED", "a cancelled statement is not a reason to hand the saga to a person"
    assert moved > 0, "the saga moved again within 1.5 s of the lock's release, not after a lease"
