"""The queue, the dry run, the export and the Python client against a real stack of processes.

The stack runs with `saga.on_timeout: fail`, so a saga started with a 1 ms deadline stops FAILED before
its first call: a real saga that needs a person. The CLI then acts on such sagas as an operator would,
the participants do what the actions ask, and `sagaline check` judges the four databases at the end.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sagaline import client as sagaline_client
from sagaline import stack
from sagaline.cli import app
from tests.e2e.conftest import ALICE, running_stack

runner = CliRunner()
ORDER: dict[str, Any] = {"customer_id": ALICE, "currency": "USD",
                         "items": [{"sku": "SKU-WIDGET", "quantity": 1, "unit_price": "4.00"}]}  # fmt: skip


@pytest.fixture(scope="module")
async def system(pg_server: str) -> AsyncIterator[stack.Supervisor]:
    async for supervisor in running_stack(pg_server, {"SAGALINE_SAGA__ON_TIMEOUT": "fail"}):
        yield supervisor


def sagaline(system: stack.Supervisor, *args: str) -> tuple[int, str]:
    prefix = system.topology.databases["saga_orchestrator"].removesuffix("_saga_orchestrator")
    env = {"SAGALINE_URL": system.topology.orchestrator_url(0), "SAGALINE_DB_PREFIX": prefix}
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.output


def api(system: stack.Supervisor, index: int = 0) -> sagaline_client.Client:
    return sagaline_client.Client(system.topology.orchestrator_url(index))


def failed_saga(system: stack.Supervisor) -> str:
    """A real saga stopped FAILED by its deadline (on_timeout: fail) before it called anyone."""
    with api(system) as sagaline:
        saga = sagaline.run("order_saga", ORDER, deadline="1ms", within=30)
    assert (saga["status"], saga["error"]) == ("FAILED", "deadline exceeded"), saga
    return str(saga["id"])


def test_the_python_client_starts_once_per_key_waits_and_raises_typed_errors(system: stack.Supervisor) -> None:
    key = f"client-{uuid.uuid4()}"
    with api(system, 0) as first, api(system, 1) as second:
        done = first.run("order_saga", ORDER, idempotency_key=key, within=30)
        again = second.start("order_saga", ORDER, idempotency_key=key)
        with pytest.raises(sagaline_client.InvalidPayload) as invalid:
            first.start("order_saga", {**ORDER, "items": []})
        with pytest.raises(sagaline_client.IdempotencyKeyReused):
            first.start("order_saga", {**ORDER, "currency": "EUR"}, idempotency_key=key)
        with pytest.raises(sagaline_client.SagaNotFound):
            first.get(str(uuid.uuid4()))

    assert done["status"] == "COMPLETED"
    assert again["id"] == done["id"], "the same key names the same saga on either instance"
    assert invalid.value.errors == ["payload.items: must be a list of 1 to 100 items"]


async def test_the_async_client_runs_a_saga_to_its_end(system: stack.Supervisor) -> None:
    async with sagaline_client.AsyncClient(system.topology.orchestrator_url(1)) as sagaline:
        saga = await sagaline.run("order_saga", ORDER, within=30)
        plan = await sagaline.plan("order_saga", ORDER)
    assert saga["status"] == "COMPLETED"
    assert plan["payload"] == saga["payload"]


def test_failed_sagas_are_compensated_retried_with_a_new_payload_and_resolved_from_the_cli(
    system: stack.Supervisor, tmp_path: Path
) -> None:
    to_undo, to_fix, to_close = failed_saga(system), failed_saga(system), failed_saga(system)
    code, out = sagaline(system, "saga", "queue")
    assert code == 0, out
    assert {to_undo, to_fix, to_close} <= set(out.split())

    code, out = sagaline(system, "saga", "skip", to_undo, "process_payment", "--reason", "paid by hand")
    assert code == 1
    assert "stuck at create_order, not process_payment" in out
    assert sagaline(system, "saga", "compensate", to_undo, "--reason", "customer cancelled by phone")[0] == 0
    fixed = json.dumps({**ORDER, "items": [{"sku": "SKU-GADGET", "quantity": 1, "unit_price": "4.00"}]})
    code, out = sagaline(system, "saga", "retry-payload", to_fix, "--payload", fixed, "--reason", "wrong SKU")
    assert code == 0, out
    assert sagaline(system, "saga", "resolve", to_close, "--reason", "duplicate order")[0] == 0
    assert sagaline(system, "saga", "compensate", to_close, "--reason", "again")[0] == 1, "a resolved saga is closed"

    with api(system) as sagaline_api:
        undone, done = sagaline_api.wait(to_undo, within=30), sagaline_api.wait(to_fix, within=30)
        closed = sagaline_api.get(to_close)
    assert undone["status"] == "COMPENSATED"
    assert (done["status"], done["payload"]["items"][0]["sku"]) == ("COMPLETED", "SKU-GADGET")
    assert (closed["status"], closed["resolution"]["reason"]) == ("FAILED", "duplicate order")
    assert [a["detail"]["by"] for a in done["events"] if a["kind"] == "operator_action"] == ["anonymous"]
    code, out = sagaline(system, "saga", "queue")
    assert not {to_undo, to_fix, to_close} & set(out.split()), out

    exported = tmp_path / "saga.json"
    assert sagaline(system, "saga", "export", to_fix, "--output", str(exported))[0] == 0
    history = json.loads(exported.read_text())
    assert (history["format"], history["id"], history["status"]) == ("sagaline.saga-history/1", to_fix, "COMPLETED")

    code, out = sagaline(system, "check")
    assert code == 0, out


def test_the_cli_prints_the_dry_run(system: stack.Supervisor) -> None:
    code, out = sagaline(system, "saga", "plan", "order_saga", "--payload", json.dumps(ORDER))
    assert code == 0, out
    assert "confirm_order" in out
    assert "none: the point of no return" in out
    assert "reserve_inventory: refused -> ReleaseStock, RefundPayment, CancelOrder" in out
    code, out = sagaline(system, "saga", "plan", "travel_saga", "--payload", json.dumps(ORDER))
    assert code == 1
    assert "Saga type not found" in out
