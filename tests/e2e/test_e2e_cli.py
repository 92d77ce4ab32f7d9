"""The operator CLI against a running stack: start, show, list, cancel, retry, check and demo."""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
import pytest
import uvloop
from typer.testing import CliRunner

from sagaline import stack
from sagaline.cli import app
from tests.e2e.conftest import ALICE

runner = CliRunner()


def sagaline(system: stack.Supervisor, *args: str) -> tuple[int, str]:
    prefix = system.topology.databases["saga_orchestrator"].removesuffix("_saga_orchestrator")
    env = {"SAGALINE_URL": system.topology.orchestrator_url(0), "SAGALINE_DB_PREFIX": prefix}
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.output


def payload(customer: str = ALICE, sku: str = "SKU-WIDGET") -> str:
    return json.dumps({"customer_id": customer, "currency": "USD",
                       "items": [{"sku": sku, "quantity": 1, "unit_price": "3.00"}]})  # fmt: skip


def test_start_show_and_list_a_saga_as_json_and_as_tables(system: stack.Supervisor) -> None:
    code, out = sagaline(system, "saga", "start", payload(), "--json", "--key", str(uuid.uuid4()))
    assert code == 0, out
    saga_id = json.loads(out)["id"]
    code, out = sagaline(system, "saga", "show", saga_id)
    assert code == 0
    assert saga_id in out
    assert "create_order" in out
    code, out = sagaline(system, "saga", "list", "--limit", "5")
    assert code == 0
    assert saga_id in out
    code, out = sagaline(system, "saga", "list", "--json", "--status", "NOT_A_STATUS")
    assert code == 1, "a refused request is a non-zero exit"


def test_a_bad_payload_is_explained_and_exits_non_zero(system: stack.Supervisor) -> None:
    code, out = sagaline(system, "saga", "start", json.dumps({"customer_id": "nope", "items": []}))
    assert code == 1
    assert "payload.customer_id" in out
    code, out = sagaline(system, "saga", "start", "{not json")
    assert code != 0


def test_cancel_and_retry_of_terminal_sagas_are_refused(system: stack.Supervisor) -> None:
    code, out = sagaline(system, "saga", "start", payload(), "--json")
    assert code == 0, out
    saga_id = json.loads(out)["id"]
    uvloop.run(_wait_terminal(system, saga_id))
    assert sagaline(system, "saga", "cancel", saga_id)[0] == 1
    assert sagaline(system, "saga", "retry", saga_id)[0] == 1


async def _wait_terminal(system: stack.Supervisor, saga_id: str) -> None:
    conn = await asyncpg.connect(system.topology.url("saga_orchestrator"))
    try:
        for _ in range(300):
            status = await conn.fetchval("SELECT status FROM sagas WHERE id = $1", uuid.UUID(saga_id))
            if status in ("COMPLETED", "COMPENSATED", "FAILED"):
                return
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    pytest.fail(f"saga {saga_id} did not finish")


def test_demo_runs_every_outcome_and_check_passes(system: stack.Supervisor) -> None:
    code, out = sagaline(system, "demo")
    assert code == 0, out
    for case, status in (("completed", "COMPLETED"), ("payment declined", "COMPENSATED"),
                         ("out of stock", "COMPENSATED"), ("deadline", "COMPENSATED")):  # fmt: skip
        line = next(line for line in out.splitlines() if line.startswith(case))
        assert status in line, line
    code, out = sagaline(system, "check")
    assert code == 0, out
    assert "verdict: OK" in out


def test_check_fails_loudly_on_a_violation(system: stack.Supervisor) -> None:
    uvloop.run(_break_conservation(system))
    try:
        code, out = sagaline(system, "check")
        assert code == 1
        assert "VIOLATION" in out
    finally:
        uvloop.run(_break_conservation(system, undo=True))


async def _break_conservation(system: stack.Supervisor, undo: bool = False) -> None:
    conn = await asyncpg.connect(system.topology.url("payment_service"))
    try:
        delta = "-1" if undo else "1"
        await conn.execute(f"UPDATE accounts SET balance = balance + {delta} WHERE customer_id = $1", uuid.UUID(ALICE))
    finally:
        await conn.close()
