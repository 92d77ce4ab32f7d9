"""The REST API of a real orchestrator instance, started in-process on a fresh database (SPEC section 3).

Every test starts an instance through `bootstrap.start` (real pool, worker, uvicorn on an ephemeral port)
and talks to it over HTTP with httpx. The participants point at a closed port on purpose: sagas retry and
compensate in the background, while the tests look at what the API answers and what it persists.
"""

import asyncio
import hashlib
import json
import os
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from orchestrator import bootstrap, config, definitions
from orchestrator.adapters.postgres import PostgresSagaRepository
from orchestrator.bootstrap import MIGRATIONS_DIR
from orchestrator.config import ApiKey, ParticipantSettings
from orchestrator.domain.model import Saga, SagaStatus
from sagaline import pg
from servicekit import migrations
from servicekit.settings import DatabaseSettings

PROBLEM_TYPE = "https://sagaline.dev/problems/"
CLIENT = {"Authorization": "Bearer client-key"}
ADMIN = {"Authorization": "Bearer admin-key"}
UNREACHABLE = "127.0.0.1:1"
PERSISTED = ("sagas", "idempotency_keys")


def order_payload(quantity: int = 2) -> dict[str, Any]:
    return {
        "customer_id": "11111111-1111-4111-8111-111111111111",
        "items": [{"sku": "SKU-WIDGET", "quantity": quantity, "unit_price": "9.99"}],
        "currency": "USD",
    }


def order_body(quantity: int = 2) -> dict[str, Any]:
    return {"saga_type": "order_saga", "payload": order_payload(quantity)}


def api_key(name: str, role: str, key: bytes) -> ApiKey:
    return ApiKey(name=name, role=role, sha256=SecretStr(hashlib.sha256(key).hexdigest()))  # type: ignore[arg-type]


def settings(url: str, auth: str = "on", api_keys: list[ApiKey] | None = None) -> config.Settings:
    """An instance on `url` whose participants are unreachable, with the API keys given (or c and a)."""
    keys = (
        [api_key("c", "client", b"client-key"), api_key("a", "admin", b"admin-key")] if api_keys is None else api_keys
    )
    return config.Settings(
        database=DatabaseSettings(url=SecretStr(url)),
        http_port=0,
        http_host="127.0.0.1",
        auth=auth,  # type: ignore[arg-type]
        api_keys=keys if auth == "on" else [],
        participants=ParticipantSettings(order=UNREACHABLE, payment=UNREACHABLE, inventory=UNREACHABLE),
        shutdown_grace=timedelta(seconds=3),
    )


@dataclass
class Orchestrator:
    """A running instance, an HTTP client on it, and the database it writes to."""

    running: bootstrap.Running
    http: httpx.AsyncClient
    db: asyncpg.Pool
    repo: PostgresSagaRepository

    async def counts(self, tables: tuple[str, ...] = PERSISTED) -> dict[str, int]:
        return {table: await self.db.fetchval(f"SELECT count(*) FROM {table}") for table in tables}

    async def start_saga(self, key: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return await self.http.post("/v1/sagas", json=body or order_body(), headers={**CLIENT, "Idempotency-Key": key})

    async def seed(self, status: SagaStatus) -> str:
        """A saga not owned by the instance, driven through the domain model to COMPENSATED or FAILED, or
        set by SQL to any other status."""
        definition = definitions.registry().latest(definitions.ORDER_SAGA)
        assert definition is not None
        # The database's clock, as the instance stamps its own sagas with (not this host's wall clock).
        now: datetime = await self.db.fetchval("SELECT clock_timestamp()")
        saga = Saga.new(str(uuid.uuid4()), definition, order_payload(), now)
        saga.start(now)
        created = await self.repo.create(saga, f"seed-{saga.id}", "seed", "test-owner", timedelta(minutes=5))
        assert created.lease is not None
        if status is SagaStatus.FAILED:
            saga.begin_compensation("create_order failed", now, saga.steps[0], unknown=True)
            saga.compensation_exhausted(saga.steps[0], "UNAVAILABLE: order service down", now)
            await self.repo.save(saga, created.lease, timedelta(minutes=5))
        elif status is SagaStatus.COMPENSATED:
            saga.begin_compensation("declined", now, saga.steps[0], unknown=False)
            saga.compensation_succeeded(saga.steps[0], {}, now)  # the declined key's tombstone
            await self.repo.save(saga, created.lease, timedelta(minutes=5))
        else:
            await self.db.execute(
                "UPDATE sagas SET status = $2, owner_id = NULL, lease_expires_at = NULL,"
                " finished_at = clock_timestamp() WHERE id = $1",
                uuid.UUID(saga.id),
                status.value,
            )
        assert (await self.repo.status(saga.id)) == status
        return saga.id

    async def wait_status(self, saga_id: str, wanted: set[str], within: float) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + within
        while True:
            view = (await self.http.get(f"/v1/sagas/{saga_id}", headers=CLIENT)).json()
            if view["status"] in wanted or asyncio.get_running_loop().time() > deadline:
                return dict(view)
            await asyncio.sleep(0.1)


async def _open(url: str) -> Orchestrator:
    running = await bootstrap.start(settings(url))
    pool = await asyncpg.create_pool(url, min_size=1, max_size=4)
    assert pool is not None
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.http_port}", timeout=20)
    return Orchestrator(running, client, pool, PostgresSagaRepository(pool, definitions.registry()))


async def _close(instance: Orchestrator) -> None:
    await instance.http.aclose()
    await instance.running.stop()
    await instance.db.close()


@pytest.fixture(scope="module")
async def shared(pg_server: str) -> AsyncIterator[Orchestrator]:
    """One instance on its own database for the tests that only add to it (they compare counts before and
    after); it holds a saga from the start, so "nothing persisted" is checked against a non-empty database."""
    name = f"test_{os.getpid()}_{uuid.uuid4().hex[:12]}"
    await pg.create_database(pg_server, name, exist_ok=False)
    try:
        url = pg.with_database(pg_server, name)
        await migrations.apply(url, MIGRATIONS_DIR)
        instance = await _open(url)
        try:
            assert (await instance.start_saga("existing")).status_code == 202
            yield instance
        finally:
            await _close(instance)
    finally:
        await pg.drop_database(pg_server, name)


@pytest.fixture
async def start_instance(make_database: Any) -> AsyncIterator[Callable[[], Awaitable[Orchestrator]]]:
    """Factory of instances on one fresh database per test; all are stopped (drained) at the end."""
    url: str = await make_database(MIGRATIONS_DIR)
    started: list[Orchestrator] = []

    async def start() -> Orchestrator:
        started.append(await _open(url))
        return started[-1]

    yield start
    for instance in started:
        await _close(instance)


@pytest.fixture
async def fresh(start_instance: Callable[[], Awaitable[Orchestrator]]) -> Orchestrator:
    """An instance of its own: an empty database and closed circuit breakers."""
    return await start_instance()


def assert_problem(response: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["type"] == PROBLEM_TYPE + kind
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    return body


# -- starting sagas ------------------------------------------------------------------------------------


async def test_start_answers_202_with_location_and_a_replay_answers_200_with_the_same_saga(
    shared: Orchestrator,
) -> None:
    api = shared
    before = await api.counts(("sagas", "idempotency_keys"))
    created = await api.start_saga("order-1")
    assert created.status_code == 202
    view = created.json()
    assert created.headers["location"] == f"/v1/sagas/{view['id']}"
    assert (view["saga_type"], view["definition_version"]) == ("order_saga", 1)
    assert view["status"] in {"EXECUTING", "COMPENSATING"}
    assert [s["name"] for s in view["steps"]] == [
        "create_order",
        "process_payment",
        "reserve_inventory",
        "confirm_order",
    ]
    assert view["events"]

    # The same body, with other key order and spacing, is the same request.
    same = {"payload": dict(reversed(list(order_payload().items()))), "saga_type": "order_saga"}
    replay = await api.http.post(
        "/v1/sagas",
        content=json.dumps(same, indent=2).encode(),
        headers={**CLIENT, "Idempotency-Key": "order-1", "Content-Type": "application/json"},
    )
    assert replay.status_code == 200
    assert replay.json()["id"] == view["id"]
    assert replay.headers["location"] == created.headers["location"]

    shown = await api.http.get(created.headers["location"], headers=CLIENT)
    assert shown.status_code == 200
    assert shown.json()["id"] == view["id"]
    assert {"status", "attempts", "started_at", "finished_at", "last_error"} <= set(shown.json()["steps"][0])
    after = await api.counts(("sagas", "idempotency_keys"))
    assert after == {"sagas": before["sagas"] + 1, "idempotency_keys": before["idempotency_keys"] + 1}


async def test_the_same_key_with_another_body_is_refused_and_persists_nothing(shared: Orchestrator) -> None:
    api = shared
    assert (await api.start_saga("order-2")).status_code == 202
    before = await api.counts(("sagas", "idempotency_keys"))
    refused = await api.start_saga("order-2", order_body(quantity=3))
    assert_problem(refused, 422, "idempotency-key-reused")
    assert await api.counts(("sagas", "idempotency_keys")) == before
    assert (await api.repo.key_hash("c:order-2")) is not None  # keys are stored scoped to the caller


async def test_fifty_concurrent_duplicates_across_two_instances_make_one_saga(
    start_instance: Callable[[], Awaitable[Orchestrator]],
) -> None:
    first, second = await start_instance(), await start_instance()
    responses = await asyncio.gather(
        *((first if i % 2 else second).start_saga("duplicated-key", order_body()) for i in range(50))
    )
    assert Counter(r.status_code for r in responses) == {202: 1, 200: 49}
    assert len({r.json()["id"] for r in responses}) == 1
    assert len({r.headers["location"] for r in responses}) == 1
    assert await first.counts(("sagas", "idempotency_keys", "saga_steps")) == {
        "sagas": 1,
        "idempotency_keys": 1,
        "saga_steps": 4,
    }


# -- errors: problem+json with a stable type, nothing persisted ----------------------------------------

RANDOM_ID = "7b0f4a8e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
VALID = order_body()


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    headers: dict[str, str | bytes]
    status: int
    kind: str
    json: Any = None
    content: bytes | None = None


ERROR_CASES = {
    "missing idempotency key": Case("POST", "/v1/sagas", {**CLIENT}, 400, "missing-idempotency-key", VALID),
    "empty idempotency key": Case(
        "POST", "/v1/sagas", {**CLIENT, "Idempotency-Key": ""}, 400, "malformed-idempotency-key", VALID
    ),
    "idempotency key of 256 characters": Case(
        "POST", "/v1/sagas", {**CLIENT, "Idempotency-Key": "k" * 256}, 400, "malformed-idempotency-key", VALID
    ),
    "non-ASCII idempotency key": Case(
        "POST",
        "/v1/sagas",
        {**CLIENT, "Idempotency-Key": "clé-ключ".encode()},
        400,
        "malformed-idempotency-key",
        VALID,
    ),
    "malformed JSON": Case(
        "POST",
        "/v1/sagas",
        {**CLIENT, "Idempotency-Key": "k1", "Content-Type": "application/json"},
        400,
        "malformed-json",
        content=b'{"saga_type": "order_saga", "payload": {',
    ),
    "malformed JSON without credentials": Case(
        "POST",
        "/v1/sagas",
        {"Idempotency-Key": "k1", "Content-Type": "application/json"},
        401,
        "unauthenticated",
        content=b'{"saga_type": ',
    ),
    "deadline out of range": Case(
        "POST", "/v1/sagas", {**CLIENT, "Idempotency-Key": "k1"}, 422, "invalid-deadline", {**VALID, "deadline": "48h"}
    ),
    "deadline not a duration": Case(
        "POST", "/v1/sagas", {**CLIENT, "Idempotency-Key": "k1"}, 422, "invalid-deadline", {**VALID, "deadline": "soon"}
    ),
    "no bearer key": Case("POST", "/v1/sagas", {"Idempotency-Key": "k1"}, 401, "unauthenticated", VALID),
    "unknown bearer key": Case(
        "POST", "/v1/sagas", {"Authorization": "Bearer nope", "Idempotency-Key": "k1"}, 401, "unauthenticated", VALID
    ),
    "basic auth": Case("GET", "/v1/sagas", {"Authorization": "Basic Y2xpZW50LWtleQ=="}, 401, "unauthenticated"),
    "unknown key reading": Case("GET", f"/v1/sagas/{RANDOM_ID}", {"Authorization": "Bearer x"}, 401, "unauthenticated"),
    "client retrying": Case("POST", f"/v1/sagas/{RANDOM_ID}/retry", {**CLIENT}, 403, "forbidden"),
    "client cancelling": Case("POST", f"/v1/sagas/{RANDOM_ID}/cancel", {**CLIENT}, 403, "forbidden"),
    "unknown saga": Case("GET", f"/v1/sagas/{RANDOM_ID}", {**CLIENT}, 404, "saga-not-found"),
    "retry of an unknown saga": Case("POST", f"/v1/sagas/{RANDOM_ID}/retry", {**ADMIN}, 404, "saga-not-found"),
    "cancel of an unknown saga": Case("POST", f"/v1/sagas/{RANDOM_ID}/cancel", {**ADMIN}, 404, "saga-not-found"),
    "saga id not a UUID": Case("GET", "/v1/sagas/not-a-uuid", {**CLIENT}, 422, "invalid-request"),
    "unknown route": Case("GET", "/v1/nothing-here", {**CLIENT}, 404, "not-found"),
    "wrong method": Case("GET", f"/v1/sagas/{RANDOM_ID}/cancel", {**ADMIN}, 405, "method-not-allowed"),
    "body over max_body_bytes": Case(
        "POST",
        "/v1/sagas",
        {**CLIENT, "Idempotency-Key": "k1", "Content-Type": "application/json"},
        413,
        "payload-too-large",
        content=b'{"saga_type": "order_saga", "payload": {"pad": "' + b"x" * 65536 + b'"}}',
    ),
    "unknown saga type": Case(
        "POST",
        "/v1/sagas",
        {**CLIENT, "Idempotency-Key": "k1"},
        422,
        "unknown-saga-type",
        {"saga_type": "travel_saga", "payload": {}},
    ),
    "body without saga_type": Case(
        "POST", "/v1/sagas", {**CLIENT, "Idempotency-Key": "k1"}, 422, "invalid-request", {"payload": {}}
    ),
    "list with a bad status": Case("GET", "/v1/sagas?status=DONE", {**CLIENT}, 422, "invalid-request"),
    "list with a forged cursor": Case("GET", "/v1/sagas?cursor=bm90LWEtY3Vyc29y", {**CLIENT}, 400, "malformed-cursor"),
}


@pytest.mark.parametrize("case", ERROR_CASES.values(), ids=ERROR_CASES.keys())
async def test_bad_requests_get_a_problem_and_persist_nothing(shared: Orchestrator, case: Case) -> None:
    api = shared
    before = await api.counts(("sagas", "idempotency_keys"))
    response = await api.http.request(
        case.method, case.path, headers=case.headers, json=case.json, content=case.content
    )
    body = assert_problem(response, case.status, case.kind)
    assert body["instance"] == case.path.split("?")[0]
    assert await api.counts(("sagas", "idempotency_keys")) == before
    assert (await api.repo.key_hash("c:k1")) is None


async def test_a_chunked_body_over_the_limit_is_refused_with_413_and_persists_nothing(shared: Orchestrator) -> None:
    api = shared
    before = await api.counts(("sagas", "idempotency_keys"))

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"saga_type": "order_saga", "payload": {"pad": "'
        for _ in range(20):
            yield b"x" * 8192
        yield b'"}}'

    response = await api.http.post(
        "/v1/sagas", headers={**CLIENT, "Idempotency-Key": "k1", "Content-Type": "application/json"}, content=chunks()
    )
    assert "content-length" not in response.request.headers, "the body really went chunked"
    assert_problem(response, 413, "payload-too-large")
    assert await api.counts(("sagas", "idempotency_keys")) == before


async def test_an_invalid_payload_names_every_bad_field(shared: Orchestrator) -> None:
    api = shared
    before = await api.counts(("sagas", "idempotency_keys"))
    payload = {
        "customer_id": "not-a-uuid",
        "items": [{"sku": "SKU-1", "quantity": 0, "unit_price": "9.999"}],
        "currency": "usd",
        "coupon": "FREE",
    }
    response = await api.http.post(
        "/v1/sagas", json={"saga_type": "order_saga", "payload": payload}, headers={**CLIENT, "Idempotency-Key": "k"}
    )
    body = assert_problem(response, 422, "invalid-payload")
    fields = {problem.split(":")[0] for problem in body["errors"]}
    assert fields == {
        "payload",
        "payload.customer_id",
        "payload.currency",
        "payload.items[0].quantity",
        "payload.items[0].unit_price",
    }
    assert await api.counts(("sagas", "idempotency_keys")) == before


async def test_unknown_saga_type_lists_the_known_ones(shared: Orchestrator) -> None:
    api = shared
    before = await api.counts(("sagas", "idempotency_keys"))
    response = await api.http.post(
        "/v1/sagas", json={"saga_type": "travel_saga", "payload": {}}, headers={**CLIENT, "Idempotency-Key": "k"}
    )
    body = assert_problem(response, 422, "unknown-saga-type")
    assert any("order_saga" in problem for problem in body["errors"])
    assert await api.counts(("sagas", "idempotency_keys")) == before


async def test_admin_operations_on_sagas_in_the_wrong_state_conflict(shared: Orchestrator) -> None:
    api = shared
    running = (await api.start_saga("running")).json()["id"]
    completed = await api.seed(SagaStatus.COMPLETED)
    compensated = await api.seed(SagaStatus.COMPENSATED)
    before = await api.counts(("sagas", "idempotency_keys"))
    terminal = await terminal_state(api, [completed, compensated])

    for saga_id in (running, completed, compensated):
        body = assert_problem(await api.http.post(f"/v1/sagas/{saga_id}/retry", headers=ADMIN), 409, "state-conflict")
        assert "FAILED" in body["detail"]
    for saga_id in (completed, compensated):
        body = assert_problem(await api.http.post(f"/v1/sagas/{saga_id}/cancel", headers=ADMIN), 409, "state-conflict")
        assert "terminal" in body["detail"]

    assert await api.counts(("sagas", "idempotency_keys")) == before
    # Not even a lease taken and given back: the terminal rows and their histories are untouched.
    assert await terminal_state(api, [completed, compensated]) == terminal


async def terminal_state(api: Orchestrator, saga_ids: list[str]) -> list[Any]:
    ids = [uuid.UUID(i) for i in saga_ids]
    sagas = await api.db.fetch(
        "SELECT id, status, cancel_requested, owner_id, fence, lease_expires_at, updated_at FROM sagas"
        " WHERE id = ANY($1::uuid[]) ORDER BY id",
        ids,
    )
    events = await api.db.fetch(
        "SELECT saga_id, count(*) FROM saga_events WHERE saga_id = ANY($1::uuid[]) GROUP BY saga_id ORDER BY saga_id",
        ids,
    )
    return [*sagas, *events]


# -- reading -------------------------------------------------------------------------------------------


async def test_the_list_is_newest_first_with_cursor_pagination_and_filters(fresh: Orchestrator) -> None:
    api = fresh
    created = []
    for i in range(25):
        response = await api.start_saga(f"list-{i}", order_body(quantity=i + 1))
        assert response.status_code == 202
        created.append(response.json()["id"])

    pages, cursor = [], None
    while True:
        params = {"limit": "10", **({"cursor": cursor} if cursor else {})}
        response = await api.http.get("/v1/sagas", params=params, headers=CLIENT)
        assert response.status_code == 200
        page = response.json()
        pages.append([item["id"] for item in page["items"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert len(pages) < 5
    assert [len(p) for p in pages] == [10, 10, 5]
    listed = [saga_id for page in pages for saga_id in page]
    assert listed == list(reversed(created))

    # The instance stamps its sagas on its database-anchored clock, which may lead the database's own by
    # up to half the round trip of its last sync: the seed must come after the newest of them.
    newest = await api.db.fetchval("SELECT max(created_at) FROM sagas")
    while await api.db.fetchval("SELECT clock_timestamp()") <= newest:
        await asyncio.sleep(0.01)
    done = await api.seed(SagaStatus.COMPLETED)
    only_done = (await api.http.get("/v1/sagas", params={"status": "COMPLETED"}, headers=CLIENT)).json()
    assert [item["id"] for item in only_done["items"]] == [done]
    assert only_done["items"][0]["status"] == "COMPLETED"
    assert only_done["next_cursor"] is None
    live = (await api.http.get("/v1/sagas", params={"status": "EXECUTING", "limit": "100"}, headers=CLIENT)).json()
    assert {item["status"] for item in live["items"]} <= {"EXECUTING"}
    assert done not in {item["id"] for item in live["items"]}
    typed = (await api.http.get("/v1/sagas", params={"saga_type": "order_saga", "limit": "1"}, headers=CLIENT)).json()
    assert [item["id"] for item in typed["items"]] == [done]
    other = (await api.http.get("/v1/sagas", params={"saga_type": "travel_saga"}, headers=CLIENT)).json()
    assert other == {"items": [], "next_cursor": None}


async def test_probes_metrics_docs_and_openapi(shared: Orchestrator) -> None:
    api = shared
    for path in ("/livez", "/health"):
        response = await api.http.get(path)
        assert (response.status_code, response.json()["status"]) == (200, "ok")
    deadline = asyncio.get_running_loop().time() + 3
    while (ready := await api.http.get("/readyz")).status_code != 200:
        assert asyncio.get_running_loop().time() < deadline, ready.text
        await asyncio.sleep(0.1)
    assert ready.json()["owner_id"] == api.running.owner_id
    assert (await api.http.get("/ready")).status_code == 200

    await api.http.get("/v1/sagas", headers=CLIENT)
    metrics = await api.http.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'http_request_duration_seconds_count{method="GET",route="/v1/sagas",status="200"}' in metrics.text

    docs = await api.http.get("/docs")
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert "/static/swagger/swagger-ui-bundle.js" in docs.text
    assert "cdn" not in docs.text.lower()
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        served = await api.http.get(f"/static/swagger/{asset}")
        assert served.status_code == 200
        assert len(served.content) > 1000

    spec = (await api.http.get("/openapi.json")).json()
    assert {"/v1/sagas", "/v1/sagas/{saga_id}", "/v1/sagas/{saga_id}/retry", "/v1/sagas/{saga_id}/cancel"} <= set(
        spec["paths"]
    )
    assert "post" in spec["paths"]["/v1/sagas"]


# -- admin operations ----------------------------------------------------------------------------------


async def test_admin_cancel_stops_a_running_saga_going_forward(fresh: Orchestrator) -> None:
    api = fresh
    saga_id = (await api.start_saga("to-cancel")).json()["id"]
    response = await api.http.post(f"/v1/sagas/{saga_id}/cancel", headers=ADMIN)
    assert response.status_code == 202
    assert response.json()["cancel_requested"] is True
    view = await api.wait_status(saga_id, {"COMPENSATING", "COMPENSATED", "FAILED"}, within=15)
    assert view["status"] in {"COMPENSATING", "COMPENSATED", "FAILED"}
    kinds = [event["kind"] for event in view["events"]]
    assert "cancel_requested" in kinds
    assert any(e["to_status"] == "COMPENSATING" and e["from_status"] == "EXECUTING" for e in view["events"])
    assert view["steps"][0]["status"] in {"COMPENSATING", "COMPENSATED", "COMPENSATION_FAILED"}
    assert all(step["status"] == "PENDING" for step in view["steps"][1:])


async def test_admin_retry_resumes_the_compensation_of_a_failed_saga(shared: Orchestrator) -> None:
    api = shared
    saga_id = await api.seed(SagaStatus.FAILED)
    failed = (await api.http.get(f"/v1/sagas/{saga_id}", headers=CLIENT)).json()
    assert (failed["status"], failed["steps"][0]["status"]) == ("FAILED", "COMPENSATION_FAILED")
    listed = (await api.http.get("/v1/sagas", params={"status": "FAILED", "limit": "100"}, headers=ADMIN)).json()
    assert (saga_id, True) in [(item["id"], bool(item["error"])) for item in listed["items"]]

    response = await api.http.post(f"/v1/sagas/{saga_id}/retry", headers=ADMIN)
    assert response.status_code == 202
    view = response.json()
    assert view["status"] == "COMPENSATING"
    assert view["steps"][0]["status"] == "COMPENSATING"
    assert view["fence"] == 2
    assert any(e["detail"].get("reason") == "retried by an admin" for e in view["events"])
    fences = [e["fence"] for e in view["events"]]
    assert fences == sorted(fences)

    # Now held by this instance: a second retry conflicts instead of taking it over.
    assert_problem(await api.http.post(f"/v1/sagas/{saga_id}/retry", headers=ADMIN), 409, "state-conflict")
