"""The queue's actions, the dry run and the export through a real instance on a fresh database.

The instance's participants are unreachable (as in `test_orchestrator_it_api`): FAILED sagas are seeded
through the domain model and the repository, then acted on over HTTP with the admin key `a`; what the
database holds afterwards is the verdict.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from orchestrator import definitions
from orchestrator.bootstrap import MIGRATIONS_DIR
from orchestrator.domain.model import Saga, SagaStatus
from services.orchestrator.tests.integration.test_orchestrator_it_api import (
    ADMIN,
    CLIENT,
    Orchestrator,
    _close,
    _open,
    assert_problem,
    order_body,
    order_payload,
)

LEASE = timedelta(minutes=5)


@pytest.fixture
async def api(make_database: Any) -> AsyncIterator[Orchestrator]:
    instance = await _open(await make_database(MIGRATIONS_DIR))
    yield instance
    await _close(instance)


async def seed(api: Orchestrator, shape: str) -> str:
    """A FAILED saga nobody holds: `compensation` (create_order's compensation failed), `forward` (its
    deadline passed during process_payment, on_timeout=fail) or `confirming` (parked while confirm_order ran)."""
    definition = definitions.registry().latest(definitions.ORDER_SAGA)
    assert definition is not None
    now: datetime = await api.db.fetchval("SELECT clock_timestamp()")
    saga = Saga.new(str(uuid.uuid4()), definition, order_payload(), now)
    saga.start(now)
    created = await api.repo.create(saga, f"seed-{saga.id}", "seed", "test-owner", LEASE)
    assert created.lease is not None
    if shape == "compensation":
        saga.begin_compensation("create_order failed", now, saga.steps[0], unknown=True)
        saga.compensation_exhausted(saga.steps[0], "UNAVAILABLE: order service down", now)
    else:
        outputs = [{"order_id": "o-1", "total_amount": "19.98"}, {"payment_id": "p-1"}, {"reservation_id": "r-1"}]
        for step, output in zip(saga.steps[: 1 if shape == "forward" else 3], outputs, strict=False):
            saga.step_succeeded(step, {"ok": True}, output, now)
        saga.fail("deadline exceeded" if shape == "forward" else "internal error: RuntimeError('bug')")
    await api.repo.save(saga, created.lease, LEASE)
    assert await api.repo.status(saga.id) == SagaStatus.FAILED
    return saga.id


async def footprint(api: Orchestrator, saga_id: str) -> tuple[Any, ...]:
    """What a refused action must leave alone: status, fence, revision, owner, payload, event count."""
    row = await api.db.fetchrow(
        "SELECT status, fence, revision, owner_id, payload, resolution,"
        " (SELECT count(*) FROM saga_events WHERE saga_id = $1) AS events FROM sagas WHERE id = $1",
        uuid.UUID(saga_id),
    )
    return tuple(row)


def operator_actions(view: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["detail"] for e in view["events"] if e["kind"] == "operator_action"]


async def test_resolving_records_who_and_why_and_the_saga_then_takes_no_action(api: Orchestrator) -> None:
    saga_id = await seed(api, "compensation")
    waiting = (await api.repo.stats()).failed

    response = await api.http.post(f"/v1/sagas/{saga_id}/resolve", json={"reason": "refunded by hand"}, headers=ADMIN)

    assert response.status_code == 200, response.text
    view = response.json()
    assert view["status"] == "FAILED"
    assert {k: view["resolution"][k] for k in ("by", "role", "reason")} == {
        "by": "a",
        "role": "admin",
        "reason": "refunded by hand",
    }
    assert operator_actions(view) == [{"action": "resolve", "by": "a", "role": "admin", "reason": "refunded by hand"}]
    row = await api.db.fetchrow("SELECT owner_id, finished_at FROM sagas WHERE id = $1", uuid.UUID(saga_id))
    assert row["owner_id"] is None
    assert row["finished_at"] is not None
    assert (await api.repo.stats()).failed == waiting - 1, "saga_failed_current counts only the queue"
    before = await footprint(api, saga_id)
    for action in ("retry", "compensate", "resolve"):
        refused = await api.http.post(f"/v1/sagas/{saga_id}/{action}", json={"reason": "again"}, headers=ADMIN)
        body = assert_problem(refused, 409, "state-conflict")
        assert "resolved by a: refunded by hand" in body["detail"]
    assert await footprint(api, saga_id) == before


async def test_forcing_compensation_past_the_point_of_no_return_is_a_409_that_says_why(api: Orchestrator) -> None:
    saga_id = await seed(api, "confirming")
    before = await footprint(api, saga_id)

    refused = await api.http.post(f"/v1/sagas/{saga_id}/compensate", json={"reason": "undo it"}, headers=ADMIN)

    body = assert_problem(refused, 409, "point-of-no-return")
    assert "confirm_order was executing, past the point of no return" in body["detail"]
    assert await footprint(api, saga_id) == before


async def test_skipping_the_confirmation_by_hand_completes_the_saga_with_the_output_recorded(api: Orchestrator) -> None:
    saga_id = await seed(api, "confirming")

    body = {"step": "confirm_order", "output": {"confirmed_by": "phone"}, "reason": "confirmed with the shop"}
    response = await api.http.post(f"/v1/sagas/{saga_id}/skip-step", json=body, headers=ADMIN)

    assert response.status_code == 202, response.text
    view = response.json()
    assert view["status"] == "COMPLETED"
    assert view["steps"][3]["status"] == "SUCCEEDED"
    assert view["steps"][3]["response"] == {"confirmed_by": "phone"}
    (action,) = operator_actions(view)
    assert (action["action"], action["step"], action["by"], action["reason"]) == (
        "skip_step",
        "confirm_order",
        "a",
        "confirmed with the shop",
    )
    fences = [e["fence"] for e in view["events"]]
    assert fences == sorted(fences), "the person's move is written under the fence of its claim"


async def test_retry_with_an_edited_payload_is_validated_like_a_start_and_resumes_forward(api: Orchestrator) -> None:
    saga_id = await seed(api, "forward")
    before = await footprint(api, saga_id)

    bad = {**order_payload(), "currency": "usd"}
    refused = await api.http.post(
        f"/v1/sagas/{saga_id}/retry-with-payload", json={"payload": bad, "reason": "fix"}, headers=ADMIN
    )
    assert assert_problem(refused, 422, "invalid-payload")["errors"] == [
        "payload.currency: must be a 3-letter upper-case code such as USD"
    ]
    assert await footprint(api, saga_id) == before

    edited = {**order_payload(), "currency": "EUR"}
    response = await api.http.post(
        f"/v1/sagas/{saga_id}/retry-with-payload", json={"payload": edited, "reason": "wrong currency"}, headers=ADMIN
    )
    assert response.status_code == 202, response.text
    stored = await api.db.fetchrow(
        "SELECT payload::text AS payload, deadline > clock_timestamp() AS fresh FROM sagas WHERE id = $1",
        uuid.UUID(saga_id),
    )
    assert '"currency": "EUR"' in stored["payload"]
    assert stored["fresh"], "a forward move gets a fresh deadline"
    assert operator_actions(response.json())[0]["previous_payload"]["currency"] == "USD"


async def test_every_action_needs_the_admin_role_and_a_reason_and_a_refusal_writes_nothing(api: Orchestrator) -> None:
    saga_id = await seed(api, "compensation")
    before = await footprint(api, saga_id)
    bodies = {
        "retry-with-payload": {"payload": order_payload(), "reason": "x"},
        "skip-step": {"step": "create_order", "output": {}, "reason": "x"},
        "compensate": {"reason": "x"},
        "resolve": {"reason": "x"},
        "retry": {"reason": "x"},
    }
    for action, body in bodies.items():
        assert_problem(
            await api.http.post(f"/v1/sagas/{saga_id}/{action}", json=body, headers=CLIENT), 403, "forbidden"
        )
        without_reason = {k: v for k, v in body.items() if k != "reason"}
        if without_reason:
            refused = await api.http.post(f"/v1/sagas/{saga_id}/{action}", json=without_reason, headers=ADMIN)
            assert_problem(refused, 422, "invalid-request")
        empty = await api.http.post(f"/v1/sagas/{saga_id}/{action}", json={**body, "reason": ""}, headers=ADMIN)
        assert_problem(empty, 422, "invalid-request")
        text = await api.http.post(
            f"/v1/sagas/{saga_id}/{action}", content=b"reason", headers={**ADMIN, "Content-Type": "text/plain"}
        )
        assert_problem(text, 415, "unsupported-media-type")
    assert await footprint(api, saga_id) == before


async def test_an_action_on_a_saga_a_live_owner_holds_is_refused(api: Orchestrator) -> None:
    saga_id = await seed(api, "compensation")
    await api.db.execute(
        "UPDATE sagas SET owner_id = 'someone-else', lease_expires_at = clock_timestamp() + interval '1 minute'"
        " WHERE id = $1",
        uuid.UUID(saga_id),
    )
    before = await footprint(api, saga_id)

    refused = await api.http.post(f"/v1/sagas/{saga_id}/compensate", json={"reason": "now"}, headers=ADMIN)

    assert "held by a live owner" in assert_problem(refused, 409, "state-conflict")["detail"]
    assert await footprint(api, saga_id) == before


async def test_a_retry_takes_an_optional_reason_and_records_who_asked(api: Orchestrator) -> None:
    with_reason, without = await seed(api, "compensation"), await seed(api, "compensation")

    first = await api.http.post(f"/v1/sagas/{with_reason}/retry", json={"reason": "order service back"}, headers=ADMIN)
    second = await api.http.post(f"/v1/sagas/{without}/retry", headers=ADMIN)

    assert (first.status_code, second.status_code) == (202, 202)
    assert operator_actions(first.json())[0]["reason"] == "order service back"
    assert operator_actions(second.json())[0] == {
        "action": "retry",
        "by": "a",
        "role": "admin",
        "reason": "retried by an admin",
    }


async def test_the_dry_run_writes_nothing_and_normalises_the_payload_as_a_start_stores_it(api: Orchestrator) -> None:
    loose = {**order_payload(), "customer_id": order_payload()["customer_id"].upper()}
    tables = ("sagas", "saga_steps", "saga_events", "idempotency_keys")
    before = await api.counts(tables)

    planned = await api.http.post("/v1/saga-types/order_saga/plan", json={"payload": loose}, headers=CLIENT)

    assert planned.status_code == 200, planned.text
    assert await api.counts(tables) == before
    plan = planned.json()
    assert [f["step"] for f in plan["failures"]] == [
        "create_order",
        "process_payment",
        "reserve_inventory",
        "confirm_order",
    ]
    assert [c["method"] for c in plan["failures"][2]["if_refused"]] == ["ReleaseStock", "RefundPayment", "CancelOrder"]
    started = await api.start_saga("plan-then-start", {"saga_type": "order_saga", "payload": loose})
    assert started.json()["payload"] == plan["payload"]

    unknown = await api.http.post("/v1/saga-types/travel_saga/plan", json={"payload": loose}, headers=CLIENT)
    assert_problem(unknown, 404, "saga-type-not-found")
    invalid = await api.http.post("/v1/saga-types/order_saga/plan", json={"payload": {}}, headers=CLIENT)
    assert_problem(invalid, 422, "invalid-payload")


async def test_the_history_of_a_saga_holds_its_requests_keys_and_events(api: Orchestrator) -> None:
    saga_id = (await api.start_saga("history", order_body())).json()["id"]

    response = await api.http.get(f"/v1/sagas/{saga_id}/history", headers=CLIENT)

    assert response.status_code == 200, response.text
    history = response.json()
    assert history["format"] == "sagaline.saga-history/1"
    assert history["steps"][0]["idempotency_key"] == f"{saga_id}:create_order:action"
    assert history["events"][0]["to_status"] == "PENDING"
    missing = await api.http.get(f"/v1/sagas/{uuid.uuid4()}/history", headers=CLIENT)
    assert_problem(missing, 404, "saga-not-found")


async def test_the_document_declares_the_queue_the_dry_run_and_the_export(api: Orchestrator) -> None:
    paths = (await api.http.get("/openapi.json")).json()["paths"]

    compensate = paths["/v1/sagas/{saga_id}/compensate"]["post"]
    assert compensate["operationId"] == "compensateSaga"
    assert set(compensate["responses"]["409"]["content"]["application/problem+json"]["examples"]) == {
        "state-conflict",
        "point-of-no-return",
    }
    assert compensate["requestBody"]["required"] is True
    assert paths["/v1/sagas/{saga_id}/retry"]["post"]["requestBody"]["required"] is False
    assert {"200", "404", "415", "422"} <= set(paths["/v1/saga-types/{saga_type}/plan"]["post"]["responses"])
    assert "403" not in paths["/v1/saga-types/{saga_type}/plan"]["post"]["responses"], "any role may plan"
    assert paths["/v1/sagas/{saga_id}/history"]["get"]["operationId"] == "getSagaHistory"
