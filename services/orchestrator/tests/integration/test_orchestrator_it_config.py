"""Operator settings reach the running engine, and the housekeeping gauges read sagas past their deadline.

The YAML file named by SAGALINE_CONFIG sets the retry policies, step timeouts and breakers, and variables
override single fields of it.

The instance is started through `bootstrap.start` from settings loaded the way a process loads them
(`SAGALINE_*` variables), on a fresh database. Its order service is a TCP listener that accepts and never
answers, so every call to it ends at the client's deadline: how long a saga takes to give up, and how many
attempts its step made, show which timeout and retry policy the engine really used.
"""

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from orchestrator import bootstrap, config, definitions, ports
from orchestrator.adapters.postgres import PostgresSagaRepository
from orchestrator.bootstrap import MIGRATIONS_DIR
from orchestrator.domain.breaker import BreakerPolicy
from orchestrator.domain.definition import StepDefinition
from orchestrator.domain.model import Saga
from orchestrator.domain.retry import RetryPolicy
from servicekit import settings

PAYLOAD = {
    "customer_id": "11111111-1111-4111-8111-111111111111",
    "items": [{"sku": "SKU-WIDGET", "quantity": 1, "unit_price": "9.99"}],
    "currency": "USD",
}


@pytest.fixture
async def silent_service() -> AsyncIterator[str]:
    """`host:port` of a listener that accepts connections and never says a word."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"127.0.0.1:{port}"
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


def load(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, yaml_text: str, **env: str) -> config.Settings:
    """Settings from a YAML file and variables, as a process started with SAGALINE_CONFIG loads them."""
    path = tmp_path / "sagaline.yaml"
    path.write_text(yaml_text)
    return load_from_environment(monkeypatch, {"SAGALINE_AUTH": "off", "SAGALINE_CONFIG": str(path), **env})


def steps_of(cfg: config.Settings) -> dict[str, StepDefinition]:
    definition = bootstrap.saga_registry(cfg).latest(definitions.ORDER_SAGA)
    assert definition is not None
    return {step.name: step for step in definition.steps}


def load_from_environment(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> config.Settings:
    for key in list(os.environ):
        if key.startswith("SAGALINE_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return settings.load(config.Settings)


async def run_one_saga(cfg: config.Settings, url: str) -> tuple[float, dict[str, Any]]:
    """Start one order saga and wait until it is terminal; (seconds it took, its first step's row)."""
    running = await bootstrap.start(cfg)
    db = await asyncpg.connect(url)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.http_port}", timeout=10) as http:
            started = asyncio.get_running_loop().time()
            answer = await http.post(
                "/v1/sagas",
                json={"saga_type": "order_saga", "payload": PAYLOAD},
                headers={"Idempotency-Key": str(uuid.uuid4())},
            )
            assert answer.status_code == 202, answer.text
            saga_id = uuid.UUID(answer.json()["id"])
            async with asyncio.timeout(30):
                while await db.fetchval("SELECT status FROM sagas WHERE id = $1", saga_id) not in {
                    "COMPENSATED",
                    "FAILED",
                }:
                    await asyncio.sleep(0.05)
            took = asyncio.get_running_loop().time() - started
        step = await db.fetchrow("SELECT * FROM saga_steps WHERE saga_id = $1 AND position = 0", saga_id)
        assert step is not None
        return took, dict(step)
    finally:
        await db.close()
        await running.stop()


async def test_a_step_timeout_and_retry_budget_from_the_environment_reach_the_engine(
    make_database: Any, silent_service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = await make_database(MIGRATIONS_DIR)
    cfg = load_from_environment(
        monkeypatch,
        {
            "SAGALINE_DATABASE__URL": url,
            "SAGALINE_HTTP_HOST": "127.0.0.1",
            "SAGALINE_HTTP_PORT": "0",
            "SAGALINE_AUTH": "off",
            "SAGALINE_SHUTDOWN_GRACE": "2s",
            "SAGALINE_PARTICIPANTS__ORDER": silent_service,
            # The order service never answers: CreateOrder is given 250 ms (SPEC's default is 5 s) and two
            # retries; its compensation (CancelOrder, 15 s by default) 250 ms and none.
            "SAGALINE_STEPS__CREATE_ORDER__TIMEOUT": "250ms",
            "SAGALINE_STEPS__CREATE_ORDER__RETRY__MAX_RETRIES": "2",
            "SAGALINE_STEPS__CREATE_ORDER__RETRY__INITIAL": "50ms",
            "SAGALINE_STEPS__CREATE_ORDER__COMPENSATION_TIMEOUT": "250ms",
            "SAGALINE_STEPS__CREATE_ORDER__COMPENSATION_RETRY__MAX_RETRIES": "0",
        },
    )
    took, step = await run_one_saga(cfg, url)
    assert step["attempts"] == 3  # the first attempt and two retries, each ended by the 250 ms deadline
    assert step["compensation_attempts"] == 1
    assert "DEADLINE_EXCEEDED" in (step["error"] or "")
    # Four calls of 250 ms plus backoff: with the default timeouts one attempt alone would take 5 s.
    assert took < 4.0, took


async def test_stats_count_live_sagas_past_their_deadline_on_the_database_clock(make_database: Any) -> None:
    url = await make_database(MIGRATIONS_DIR)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    assert pool is not None
    try:
        registry = definitions.registry()
        repo = PostgresSagaRepository(pool, registry)
        definition = registry.latest(definitions.ORDER_SAGA)
        assert definition is not None
        assert await repo.stats() == ports.Stats(0.0, 0, 0, 0.0)
        now: datetime = await pool.fetchval("SELECT clock_timestamp()")
        # Accepted 100 s ago with a 60 s deadline: 40 s overdue. Another, accepted now, is not overdue.
        for accepted, key in ((now - timedelta(seconds=100), "late"), (now, "on-time")):
            saga = Saga.new(str(uuid.uuid4()), definition, dict(PAYLOAD), accepted)
            await repo.create(saga, key, key, None, timedelta(seconds=30))
        stats = await repo.stats()
        assert stats.past_deadline == 1
        assert 40.0 <= stats.most_overdue < 45.0
        assert stats.oldest_live_age >= 100.0
        assert stats.failed == 0
    finally:
        await pool.close()


def test_yaml_sets_the_retry_policy_and_each_steps_timeout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = load(
        monkeypatch,
        tmp_path,
        """
orchestrator:
  retry: {max_retries: 5, initial: 200ms, maximum: 2s, multiplier: 3, jitter: 0.2}
  steps:
    process_payment:
      timeout: 20s
      retry: {max_retries: 1}
      compensation_timeout: 30s
      compensation_retry: {max_retries: 12}
  database: {min_size: 4, max_size: 40}
""",
    )
    steps = steps_of(cfg)
    shared = RetryPolicy(5, timedelta(milliseconds=200), timedelta(seconds=2), 3.0, 0.2)
    assert steps["create_order"].action.retry == shared
    assert steps["reserve_inventory"].action.retry == shared
    payment = steps["process_payment"]
    assert payment.action.timeout == timedelta(seconds=20)
    assert payment.action.retry == RetryPolicy(1, timedelta(milliseconds=200), timedelta(seconds=2), 3.0, 0.2)
    assert payment.compensation is not None
    assert payment.compensation.timeout == timedelta(seconds=30)
    assert payment.compensation.retry.max_retries == 12
    assert steps["create_order"].compensation is not None
    assert steps["create_order"].compensation.retry.max_retries == 8
    # The shared policy is for steps that can be undone: the point of no return keeps retrying.
    assert steps["confirm_order"].action.retry.max_retries is None
    assert (cfg.database.min_size, cfg.database.max_size) == (4, 40)


def test_environment_overrides_yaml_per_step(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = load(
        monkeypatch,
        tmp_path,
        "orchestrator:\n  steps:\n    reserve_inventory: {timeout: 7s, retry: {max_retries: 4}}\n",
        SAGALINE_STEPS__RESERVE_INVENTORY__TIMEOUT="1500ms",
        SAGALINE_STEPS__CONFIRM_ORDER__RETRY__MAX_RETRIES="50",
        SAGALINE_STEPS__CONFIRM_ORDER__RETRY__MAXIMUM="1m",
    )
    steps = steps_of(cfg)
    assert steps["reserve_inventory"].action.timeout == timedelta(milliseconds=1500)
    assert steps["reserve_inventory"].action.retry.max_retries == 4  # from YAML, merged with the variable
    assert steps["confirm_order"].action.retry.max_retries == 50
    assert steps["confirm_order"].action.retry.maximum == timedelta(minutes=1)


def test_each_downstream_service_may_have_its_own_breaker(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = load(
        monkeypatch,
        tmp_path,
        "orchestrator:\n  breaker: {failure_threshold: 4, services: {payment: {open_for: 5s}}}\n",
        SAGALINE_BREAKER__SERVICES__INVENTORY__FAILURE_THRESHOLD="10",
    )
    assert cfg.breaker.policy() == BreakerPolicy(4, 30.0, 2)
    assert cfg.breaker.policy("payment") == BreakerPolicy(4, 5.0, 2)
    assert cfg.breaker.policy("inventory") == BreakerPolicy(10, 30.0, 2)
    assert cfg.breaker.policy("order") == BreakerPolicy(4, 30.0, 2)
