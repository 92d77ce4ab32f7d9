"""One saga, one trace: REST request, steps, gRPC calls, participant handlers and SQL, across four processes.

A minimal OTLP/gRPC trace receiver runs inside the test; every process of a fresh stack exports to it.
"""

from __future__ import annotations

import asyncio
import io
import json
import signal
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from sagaline import stack
from sagaline.otlp_sink import Sink as Receiver
from tests.e2e.conftest import ALICE, order, running_stack


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[tuple[Receiver, int]]:
    collected = Receiver()
    await collected.start()
    yield collected, collected.port
    await collected.stop()


@pytest.fixture(scope="module")
async def traced(pg_server: str, receiver: tuple[Receiver, int]) -> AsyncIterator[stack.Supervisor]:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver[1]}", "OTEL_EXPORTER_OTLP_INSECURE": "true",
           "OTEL_BSP_SCHEDULE_DELAY": "100",
           **{f"SAGALINE_{s.upper()}_TELEMETRY__SQL_SPANS": "true" for s in stack.SERVICES},  # off by default
           "SAGALINE_LOG__LEVEL": "debug"}  # step attempts are logged at debug  # fmt: skip
    async for supervisor in running_stack(pg_server, env):
        yield supervisor


async def finished(client: httpx.AsyncClient, saga_id: str) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while True:
            saga: dict[str, Any] = (await client.get(f"/v1/sagas/{saga_id}")).json()
            if saga["status"] in ("COMPLETED", "COMPENSATED", "FAILED"):
                return saga
            await asyncio.sleep(0.05)


async def spans_from(collected: Receiver, trace_id: str, services: set[str]) -> list[dict[str, Any]]:
    async with asyncio.timeout(15):
        while {s["service"] for s in collected.of_trace(trace_id)} < services:
            await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # stragglers of the same batch
    return collected.of_trace(trace_id)


async def test_one_saga_is_one_trace_across_all_four_processes(
    traced: stack.Supervisor, receiver: tuple[Receiver, int]
) -> None:
    collected, _ = receiver
    async with httpx.AsyncClient(base_url=traced.topology.orchestrator_url(0)) as client:
        response = await client.post("/v1/sagas", json=order(ALICE), headers={"Idempotency-Key": str(uuid.uuid4())})
        saga = await finished(client, response.json()["id"])
    assert saga["status"] == "COMPLETED"
    trace_id = saga["trace_id"]
    assert trace_id, "the API reports the saga's trace id"
    spans = await spans_from(collected, trace_id, {"orchestrator", "order", "payment", "inventory"})
    by_id = {s["span_id"]: s for s in spans}
    root = [s for s in spans if s["name"] == "POST /v1/sagas"]
    assert len(root) == 1, "the REST request is the trace's root"
    steps = {s["attributes"]["saga.step"].string_value: s for s in spans if s["name"].startswith("saga.action ")}
    assert set(steps) == {"create_order", "process_payment", "reserve_inventory", "confirm_order"}
    for step in steps.values():
        assert step["attributes"]["saga.id"].string_value == saga["id"]
        assert step["attributes"]["saga.attempt"].int_value == 1
        children = [s for s in spans if s["parent"] == step["span_id"] and s["service"] == "orchestrator"]
        assert children, f"{step['name']} has a gRPC client span"
        servers = [
            s for s in spans if s["parent"] in {c["span_id"] for c in children} and s["service"] != "orchestrator"
        ]
        assert servers, f"{step['name']}'s participant span is a child of the client span"
    participant_sql = [s for s in spans if s["service"] == "payment" and s["parent"] in by_id
                       and by_id[s["parent"]]["service"] == "payment"]  # fmt: skip
    assert participant_sql, "the participant's handler and SQL spans join the trace"
    sql = [s for s in spans if s["name"].startswith("SQL ")]
    assert {s["name"] for s in sql} <= {"SQL SELECT", "SQL INSERT", "SQL UPDATE", "SQL WITH", "SQL DELETE"}, (
        "statements only: BEGIN and COMMIT say nothing their handler's span does not"
    )
    for statement in sql:
        handler = by_id[statement["parent"]]
        assert handler["service"] == statement["service"], "a statement is a child of a span of its own process"
        assert handler["name"].startswith("sagaline."), "a statement is a child of the gRPC handler that ran it"
        assert statement["attributes"]["db.system"].string_value == "postgresql"
        assert statement["attributes"]["db.query.text"].string_value
    assert not [s["name"] for s in spans if s["name"].startswith("fastapi.")], "no framework spans besides ours"


async def test_a_saga_taken_over_after_kill_9_links_to_its_first_trace(
    traced: stack.Supervisor, receiver: tuple[Receiver, int]
) -> None:
    collected, _ = receiver
    traced.signal("payment", signal.SIGSTOP)
    try:
        async with httpx.AsyncClient(base_url=traced.topology.orchestrator_url(0)) as client:
            response = await client.post("/v1/sagas", json=order(ALICE), headers={"Idempotency-Key": str(uuid.uuid4())})
        saga_id, trace_id = response.json()["id"], response.json()["trace_id"]
        await asyncio.sleep(1.0)  # step 2 is in flight against the frozen payment service
        traced.signal("orchestrator-1", signal.SIGKILL)
    finally:
        traced.signal("payment", signal.SIGCONT)
    async with httpx.AsyncClient(base_url=traced.topology.orchestrator_url(1)) as client:
        saga = await finished(client, saga_id)
    assert saga["status"] == "COMPLETED"
    async with asyncio.timeout(15):
        while not (resumed := [s for s in collected.spans if s["name"] == "saga.resume" and trace_id in s["links"]]):
            await asyncio.sleep(0.1)
    assert resumed[0]["attributes"]["saga.id"].string_value == saga_id
    assert resumed[0]["trace_id"] != trace_id, "the successor's work is a new trace linked to the first"


async def test_a_steps_log_line_carries_its_spans_trace_and_span_ids(
    traced: stack.Supervisor, receiver: tuple[Receiver, int]
) -> None:
    if not isinstance(traced.out, io.StringIO):
        pytest.fail("child logs are needed in memory; run without SAGALINE_TEST_LOGS")
    collected, _ = receiver
    await traced.wait_healthy("orchestrator-1")  # it may be restarting after the takeover test's kill -9
    async with httpx.AsyncClient(base_url=traced.topology.orchestrator_url(0)) as client:
        response = await client.post("/v1/sagas", json=order(ALICE), headers={"Idempotency-Key": str(uuid.uuid4())})
        saga = await finished(client, response.json()["id"])
    spans = await spans_from(collected, saga["trace_id"], {"orchestrator", "order", "payment", "inventory"})
    step_spans = {s["span_id"]: s for s in spans if s["name"].startswith("saga.action ")}
    lines = [
        json.loads(line.split("] ", 1)[1]) for line in traced.out.getvalue().splitlines() if "step attempt" in line
    ]
    mine = [line for line in lines if line.get("saga_id") == saga["id"]]
    assert len(mine) == 4, "one (debug) log line per step attempt"
    for line in mine:
        assert line["trace_id"] == saga["trace_id"]
        assert line["span_id"] in step_spans
        assert step_spans[line["span_id"]]["attributes"]["saga.step"].string_value == line["step"]
