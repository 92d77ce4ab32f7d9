import asyncio
import os
import signal
import socket
import sys
import uuid
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest

from payment_service import bootstrap, domain
from sagaline.stack import free_port

ALICE = uuid.UUID("11111111-1111-4111-8111-111111111111")


async def test_migrate_applies_once(make_database: Any) -> None:
    url = await make_database(None)
    assert await bootstrap.migrate(url) == [1, 2]
    assert await bootstrap.migrate(url) == []


async def test_seed_creates_the_demo_customers_and_never_resets_a_balance(payment_db: str) -> None:
    lines = await bootstrap.seed(payment_db)
    assert lines == [
        "customer alice 11111111-1111-4111-8111-111111111111 balance 1000000000.00 USD",
        "customer bob 22222222-2222-4222-8222-222222222222 balance 50.00 USD",
        "customer carol 33333333-3333-4333-8333-333333333333 balance 5000.00 USD",
    ]
    connection = await asyncpg.connect(payment_db)
    try:
        await connection.execute("UPDATE accounts SET balance = balance - 1 WHERE customer_id = $1", ALICE)
        again = await bootstrap.seed(payment_db)
        assert again[0] == "customer alice 11111111-1111-4111-8111-111111111111 balance 999999999.00 USD"
        rows = await connection.fetch("SELECT customer_id, initial_balance FROM accounts ORDER BY name")
    finally:
        await connection.close()
    assert [(r["customer_id"], r["initial_balance"]) for r in rows] == [
        (a.customer_id, a.balance) for a in bootstrap.DEMO_CUSTOMERS
    ]


def test_demo_customers_are_valid_accounts() -> None:
    assert all(isinstance(a, domain.Account) and a.balance > 0 for a in bootstrap.DEMO_CUSTOMERS)
    assert {a.name for a in bootstrap.DEMO_CUSTOMERS} == {"alice", "bob", "carol"}
    assert min(a.balance for a in bootstrap.DEMO_CUSTOMERS) == Decimal("50.00")


def test_bad_configuration_exits_2_and_names_the_field(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SAGALINE_PAYMENT_GRPC_PORT", "not-a-port")
    assert bootstrap.main() == 2
    assert "grpc_port" in capsys.readouterr().err


async def test_serve_runs_until_stopped_and_returns_0(payment_settings: Any) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(bootstrap.serve(payment_settings, stop))
    await asyncio.sleep(0.2)
    stop.set()
    assert await asyncio.wait_for(task, 10) == 0


async def test_start_fails_with_an_error_and_closes_its_pool_when_the_http_port_is_taken(
    make_settings: Any, db: asyncpg.Connection
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError, match=r"failed to start|stopped during startup"):
            await bootstrap.start(make_settings(http_port=taken.getsockname()[1]))
    left = await db.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1",
        "sagaline-payment",
    )
    assert left == 0


async def test_process_serves_and_exits_0_on_sigterm(payment_db: str) -> None:
    http_port = free_port()
    env = {
        **os.environ,
        "SAGALINE_PAYMENT_DATABASE__URL": payment_db,
        "SAGALINE_PAYMENT_GRPC_PORT": str(free_port()),
        "SAGALINE_PAYMENT_HTTP_PORT": str(http_port),
        "SAGALINE_PAYMENT_GRPC_HOST": "127.0.0.1",
        "SAGALINE_PAYMENT_HTTP_HOST": "127.0.0.1",
        "OTEL_SDK_DISABLED": "true",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "payment_service", env=env, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as client:
            for _ in range(200):
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
            else:
                pytest.fail("the payment process never became ready")
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 15) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
