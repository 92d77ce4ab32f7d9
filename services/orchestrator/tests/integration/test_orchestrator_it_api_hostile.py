"""Hostile input against a real orchestrator instance on real PostgreSQL (SPEC section 3).

Every answer to bad input is a 4xx problem+json document and leaves `sagas` and `idempotency_keys`
empty: a NUL PostgreSQL cannot store, a forged cursor, a payload a participant would refuse, JSON that
is ambiguous or inexact, a body that is not JSON at all. The instance runs through `bootstrap.start`
with uvicorn on an ephemeral port; its participants point at a closed port, as nothing here may start.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest

from orchestrator import bootstrap, config
from orchestrator.bootstrap import MIGRATIONS_DIR
from sagaline import pg
from servicekit import migrations
from services.orchestrator.tests.integration import test_orchestrator_it_api as it_api

PROBLEM_TYPE = "https://sagaline.dev/problems/"
CLIENT_ONE = {"Authorization": "Bearer client-one-key"}
CLIENT_TWO = {"Authorization": "Bearer client-two-key"}
ADMIN = {"Authorization": "Bearer admin-key"}
UNREACHABLE = "127.0.0.1:1"
CUSTOMER = "11111111-1111-4111-8111-111111111111"
SAGA_ID = "7b0f4a8e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"


def settings(url: str, auth: str = "on") -> config.Settings:
    keys = [
        it_api.api_key("client-one", "client", b"client-one-key"),
        it_api.api_key("client-two", "client", b"client-two-key"),
        it_api.api_key("ops", "admin", b"admin-key"),
    ]
    return it_api.settings(url, auth, keys)


@dataclass
class Api:
    running: bootstrap.Running
    http: httpx.AsyncClient
    db: asyncpg.Pool

    async def persisted(self) -> dict[str, int]:
        return {t: await self.db.fetchval(f"SELECT count(*) FROM {t}") for t in ("sagas", "idempotency_keys")}

    async def start(self, key: str, body: Any, caller: dict[str, str] = CLIENT_ONE) -> httpx.Response:
        return await self.http.post("/v1/sagas", json=body, headers={**caller, "Idempotency-Key": key})


async def _open(url: str, auth: str = "on") -> Api:
    running = await bootstrap.start(settings(url, auth))
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    assert pool is not None
    return Api(running, httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.http_port}", timeout=20), pool)


async def _close(api: Api) -> None:
    await api.http.aclose()
    await api.running.stop()
    await api.db.close()


@pytest.fixture(scope="module")
async def api(pg_server: str) -> AsyncIterator[Api]:
    """One instance on an empty database, for the tests that must leave it empty."""
    name = f"test_{os.getpid()}_{uuid.uuid4().hex[:12]}"
    await pg.create_database(pg_server, name, exist_ok=False)
    try:
        url = pg.with_database(pg_server, name)
        await migrations.apply(url, MIGRATIONS_DIR)
        instance = await _open(url)
        try:
            yield instance
        finally:
            await _close(instance)
    finally:
        await pg.drop_database(pg_server, name)


@pytest.fixture
async def start_instance(make_database: Any) -> AsyncIterator[Callable[[str], Awaitable[Api]]]:
    """Factory of instances (auth on or off) on one fresh database per test."""
    url: str = await make_database(MIGRATIONS_DIR)
    started: list[Api] = []

    async def start(auth: str) -> Api:
        started.append(await _open(url, auth))
        return started[-1]

    yield start
    for instance in started:
        await _close(instance)


def assert_problem(response: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body: dict[str, Any] = response.json()
    assert (body["type"], body["status"]) == (PROBLEM_TYPE + kind, status), body
    assert body["title"]
    assert body["detail"]
    return body


def order(**changes: Any) -> dict[str, Any]:
    return {
        "customer_id": CUSTOMER,
        "items": [{"sku": "SKU-WIDGET", "quantity": 2, "unit_price": "9.99"}],
        "currency": "USD",
        **changes,
    }


def item(**changes: Any) -> dict[str, Any]:
    return order(items=[{"sku": "SKU-WIDGET", "quantity": 2, "unit_price": "9.99", **changes}])


def body(payload: Any = None, **changes: Any) -> bytes:
    return json.dumps(
        {"saga_type": "order_saga", "payload": order() if payload is None else payload, **changes}
    ).encode()


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value]
    return value


def quantity(literal: bytes) -> bytes:
    """A valid body whose quantity is written as the literal given (json.dumps would not write these)."""
    return body().replace(b'"quantity": 2', b'"quantity": ' + literal)


VALID = body()
JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Hostile:
    content: bytes
    status: int
    kind: str
    headers: dict[str, str] | None = None


# Bodies of POST /v1/sagas. JSON text is spelled by hand where json.dumps would refuse to write it.
HOSTILE_BODIES = {
    # Text PostgreSQL cannot store, and control characters that hide in plain sight.
    "NUL in saga_type": Hostile(body(saga_type="order_saga\u0000"), 422, "invalid-request"),
    "NUL in a payload string": Hostile(body(item(sku="SKU\u0000")), 422, "invalid-payload"),
    "NUL in a member name": Hostile(body({**order(), "customer_id\u0000": CUSTOMER}), 422, "invalid-payload"),
    "NUL in the deadline": Hostile(body(deadline="30s\u0000"), 422, "invalid-request"),
    "newline after the currency": Hostile(body(order(currency="USD\n")), 422, "invalid-payload"),
    "newline after the sku": Hostile(body(item(sku="SKU-WIDGET\n")), 422, "invalid-payload"),
    "terminal escape in the sku": Hostile(body(item(sku="\u001b[31mSKU")), 422, "invalid-payload"),
    "DEL in the currency": Hostile(body(order(currency="US\u007f")), 422, "invalid-payload"),
    "unpaired surrogate": Hostile(body().replace(b"SKU-WIDGET", b"SKU-\\ud800"), 422, "invalid-payload"),
    # Overlong strings.
    "saga_type of 10,000 characters": Hostile(body(saga_type="s" * 10_000), 422, "invalid-request"),
    "sku of 10,000 characters": Hostile(body(item(sku="S" * 10_000)), 422, "invalid-payload"),
    "customer_id of 10,000 characters": Hostile(body(order(customer_id="1" * 10_000)), 422, "invalid-payload"),
    "member name of 10,000 characters": Hostile(body({**order(), "m" * 10_000: 1}), 422, "invalid-payload"),
    # Deep nesting: within the parser's reach, and beyond it.
    "payload nested 40 deep": Hostile(body(order(currency=nested(40))), 422, "invalid-payload"),
    "body nested 5,000 deep": Hostile(b"[" * 5000 + b"]" * 5000, 422, "invalid-request"),
    # Numbers that are not exact, not finite or not JSON.
    "integer of 30 digits": Hostile(quantity(b"9" * 30), 400, "malformed-json"),
    "integer of 5,000 digits": Hostile(quantity(b"9" * 5000), 400, "malformed-json"),
    "number 1e400": Hostile(quantity(b"1e400"), 400, "malformed-json"),
    "NaN": Hostile(quantity(b"NaN"), 400, "malformed-json"),
    "-Infinity": Hostile(quantity(b"-Infinity"), 400, "malformed-json"),
    "quantity beyond int32": Hostile(body(item(quantity=2**31)), 422, "invalid-payload"),
    "quantity 2.5": Hostile(body(item(quantity=2.5)), 422, "invalid-payload"),
    "zero total": Hostile(body(item(unit_price="0.00")), 422, "invalid-payload"),
    "total beyond numeric(14,2)": Hostile(body(item(unit_price="999999999999.99")), 422, "invalid-payload"),
    # Wrong types.
    "quantity as a string": Hostile(body(item(quantity="2")), 422, "invalid-payload"),
    "unit_price as a number": Hostile(body(item(unit_price=9.99)), 422, "invalid-payload"),
    "items as an object": Hostile(body(order(items={"sku": "SKU-WIDGET"})), 422, "invalid-payload"),
    "payload as a list": Hostile(body([order()]), 422, "invalid-request"),
    "saga_type as a number": Hostile(body(saga_type=1), 422, "invalid-request"),
    "body null": Hostile(b"null", 422, "invalid-request"),
    "body a string": Hostile(b'"order_saga"', 422, "invalid-request"),
    "unknown top-level member": Hostile(body(dealine="30s"), 422, "invalid-request"),
    "empty body": Hostile(b"", 422, "invalid-request"),
    # Duplicate member names: which one wins depends on the parser.
    "saga_type twice": Hostile(b'{"saga_type": "x", ' + VALID[1:], 400, "malformed-json"),
    "sku twice in one item": Hostile(body().replace(b'"sku": ', b'"sku": "A", "sku": '), 400, "malformed-json"),
    # Bytes that are not UTF-8, or not JSON.
    "invalid UTF-8 in a string": Hostile(body().replace(b"SKU-WIDGET", b"SKU-\xff"), 400, "malformed-json"),
    "overlong UTF-8 NUL": Hostile(body().replace(b"SKU-WIDGET", b"SKU-\xc0\x80"), 400, "malformed-json"),
    "UTF-16 body": Hostile(VALID.decode().encode("utf-16"), 400, "malformed-json"),
    "UTF-8 byte order mark": Hostile(b"\xef\xbb\xbf" + VALID, 400, "malformed-json"),
    "truncated JSON": Hostile(VALID[:-5], 400, "malformed-json"),
    # Not application/json at all.
    "no Content-Type": Hostile(VALID, 415, "unsupported-media-type", {}),
    "text/plain": Hostile(VALID, 415, "unsupported-media-type", {"Content-Type": "text/plain"}),
    "form encoded": Hostile(
        b"saga_type=order_saga", 415, "unsupported-media-type", {"Content-Type": "application/x-www-form-urlencoded"}
    ),
    "JSON in Latin-1": Hostile(
        VALID, 415, "unsupported-media-type", {"Content-Type": "application/json; charset=iso-8859-1"}
    ),
    "gzip coded": Hostile(VALID, 415, "unsupported-media-type", {**JSON, "Content-Encoding": "gzip"}),
}


@pytest.mark.parametrize("case", HOSTILE_BODIES.values(), ids=HOSTILE_BODIES.keys())
async def test_a_hostile_body_gets_a_problem_and_writes_nothing(api: Api, case: Hostile) -> None:
    headers = {**CLIENT_ONE, "Idempotency-Key": "hostile", **(JSON if case.headers is None else case.headers)}
    response = await api.http.post("/v1/sagas", content=case.content, headers=headers)
    problem = assert_problem(response, case.status, case.kind)
    assert problem["instance"] == "/v1/sagas"
    assert len(problem.get("errors", [])) <= 20
    assert await api.persisted() == {"sagas": 0, "idempotency_keys": 0}


async def test_a_problem_names_the_field_and_the_character(api: Api) -> None:
    response = await api.http.post(
        "/v1/sagas", content=body(item(sku="SKU\u0000")), headers={**CLIENT_ONE, **JSON, "Idempotency-Key": "k"}
    )
    problem = assert_problem(response, 422, "invalid-payload")
    assert problem["errors"] == [
        "payload.items[0].sku: must not contain control characters or unpaired surrogates (found U+0000)"
    ]


PAYLOADS_A_PARTICIPANT_REFUSES = {
    "currency with a trailing newline": (order(currency="USD\n"), "payload.currency"),
    "zero total": (item(unit_price="0"), "payload.items"),
    "total the order service cannot store": (item(quantity=2, unit_price="999999999999.99"), "payload.items"),
    "price in non-ASCII digits": (item(unit_price="\u0661"), "payload.items[0].unit_price"),
    "quantity over the order maximum": (item(quantity=1_000_001), "payload.items[0].quantity"),
}


@pytest.mark.parametrize(
    ("payload", "field"), PAYLOADS_A_PARTICIPANT_REFUSES.values(), ids=PAYLOADS_A_PARTICIPANT_REFUSES.keys()
)
async def test_a_payload_a_participant_would_refuse_is_a_422_naming_the_field(
    api: Api, payload: dict[str, Any], field: str
) -> None:
    response = await api.start("refused", {"saga_type": "order_saga", "payload": payload})
    problem = assert_problem(response, 422, "invalid-payload")
    assert [line.split(": ", 1)[0] for line in problem["errors"]] == [field]
    assert await api.persisted() == {"sagas": 0, "idempotency_keys": 0}


def cursor(text: str) -> str:
    """A cursor in the repository's own spelling, which the API no longer takes from clients."""
    return base64.urlsafe_b64encode(text.encode()).decode()


SAGA_HEX = uuid.UUID(SAGA_ID).hex


HOSTILE_TARGETS = {
    "NUL in saga_type": ("/v1/sagas?saga_type=%00", 400, "invalid-characters"),
    "newline in saga_type": ("/v1/sagas?saga_type=order_saga%0A", 400, "invalid-characters"),
    "tab in status": ("/v1/sagas?status=FAILED%09", 400, "invalid-characters"),
    "invalid UTF-8 in saga_type": ("/v1/sagas?saga_type=%FF", 400, "invalid-characters"),
    "NUL in a parameter name": ("/v1/sagas?%00=1", 400, "invalid-characters"),
    "NUL in the cursor": ("/v1/sagas?cursor=%00", 400, "invalid-characters"),
    "NUL in the path": ("/v1/sagas/%00", 400, "invalid-characters"),
    "overlong UTF-8 NUL in the path": ("/v1/sagas/%C0%80", 400, "invalid-characters"),
    "saga_type of 101 characters": ("/v1/sagas?saga_type=" + "s" * 101, 422, "invalid-request"),
    "limit of 30 digits": ("/v1/sagas?limit=" + "9" * 30, 422, "invalid-request"),
    "cursor at year 1, +14:00": (
        f"/v1/sagas?cursor={cursor(f'0001-01-01T00:00:00+14:00|{SAGA_ID}')}",
        400,
        "malformed-cursor",
    ),
    "cursor at year 9999, -14:00": (
        f"/v1/sagas?cursor={cursor(f'9999-12-31T23:59:59-14:00|{SAGA_ID}')}",
        400,
        "malformed-cursor",
    ),
    "cursor without a time zone": (
        f"/v1/sagas?cursor={cursor(f'2024-01-01T00:00:00|{SAGA_ID}')}",
        400,
        "malformed-cursor",
    ),
    "cursor with a bad saga id": (
        f"/v1/sagas?cursor={cursor('2024-01-01T00:00:00+00:00|nope')}",
        400,
        "malformed-cursor",
    ),
    "cursor not base64": ("/v1/sagas?cursor=%25%25%25", 400, "malformed-cursor"),
    "cursor of 18 digits": (f"/v1/sagas?cursor={'9' * 18}.{SAGA_HEX}", 400, "malformed-cursor"),
    "cursor with upper-case hex": (f"/v1/sagas?cursor=1.{SAGA_HEX.upper()}", 400, "malformed-cursor"),
    "cursor with a negative time": (f"/v1/sagas?cursor=-1.{SAGA_HEX}", 400, "malformed-cursor"),
    "cursor with a hyphenated id": (f"/v1/sagas?cursor=1.{SAGA_ID}", 400, "malformed-cursor"),
    "empty cursor": ("/v1/sagas?cursor=", 400, "malformed-cursor"),
}


@pytest.mark.parametrize(("target", "status", "kind"), HOSTILE_TARGETS.values(), ids=HOSTILE_TARGETS.keys())
async def test_a_hostile_path_or_query_gets_a_problem_not_a_500(api: Api, target: str, status: int, kind: str) -> None:
    assert_problem(await api.http.get(target, headers=CLIENT_ONE), status, kind)
    assert await api.persisted() == {"sagas": 0, "idempotency_keys": 0}


async def test_every_cursor_of_the_documented_shape_is_served(api: Api) -> None:
    # The edges of `<microseconds since 1970>.<32 hex digits>`: 1970 itself, and 17 digits (year 5138).
    for edge in (f"0.{'0' * 32}", f"{'9' * 17}.{'f' * 32}", f"00000000000000001.{SAGA_HEX}"):
        response = await api.http.get("/v1/sagas", params={"cursor": edge}, headers=CLIENT_ONE)
        assert response.status_code == 200, response.text
        assert response.json() == {"items": [], "next_cursor": None}


async def test_401_names_the_bearer_scheme(api: Api) -> None:
    for headers in ({}, {"Authorization": "Bearer not-a-key"}, {"Authorization": "Basic Y2xpZW50"}):
        response = await api.http.get("/v1/sagas", headers=headers)
        assert_problem(response, 401, "unauthenticated")
        assert response.headers["www-authenticate"].startswith("Bearer ")


async def test_405_lists_every_method_of_the_path(api: Api) -> None:
    expected = {
        ("PUT", "/v1/sagas"): "GET, POST",  # two routes, one path: both methods are named
        ("HEAD", "/v1/sagas"): "GET, POST",  # FastAPI routes do not answer HEAD, so Allow does not claim it
        ("DELETE", f"/v1/sagas/{SAGA_ID}"): "GET",
        ("GET", f"/v1/sagas/{SAGA_ID}/cancel"): "POST",
        ("PATCH", f"/v1/sagas/{SAGA_ID}/retry"): "POST",
    }
    for (method, path), allow in expected.items():
        response = await api.http.request(method, path, headers=ADMIN)
        assert response.status_code == 405
        if method != "HEAD":  # a HEAD answer has no body
            assert_problem(response, 405, "method-not-allowed")
        assert response.headers["allow"] == allow


async def test_invented_methods_share_one_metric_label(api: Api) -> None:
    for n in range(20):
        response = await api.http.request(f"INVENTED{n}", "/v1/sagas", headers=CLIENT_ONE)
        assert_problem(response, 405, "method-not-allowed")
    metrics = (await api.http.get("/metrics")).text
    assert "INVENTED" not in metrics
    assert 'http_request_duration_seconds_count{method="other",route="/v1/sagas",status="405"}' in metrics


async def test_the_openapi_document_lists_the_problems_and_the_body(api: Api) -> None:
    document = (await api.http.get("/openapi.json")).json()
    start = document["paths"]["/v1/sagas"]["post"]
    reference = start["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = document["components"]["schemas"][reference.rsplit("/", 1)[1]]
    assert {"saga_type", "payload"} <= set(schema["required"])
    assert schema["additionalProperties"] is False
    for status in ("400", "401", "413", "415", "422", "503"):
        assert "application/problem+json" in start["responses"][status]["content"], status
    assert "WWW-Authenticate" in start["responses"]["401"]["headers"]
    assert "Location" in start["responses"]["202"]["headers"]


# -- idempotency keys are scoped to the caller -----------------------------------------------------------


async def test_the_same_key_from_two_principals_names_two_sagas(
    start_instance: Callable[[str], Awaitable[Api]],
) -> None:
    api = await start_instance("on")
    one = await api.start("shared-key", {"saga_type": "order_saga", "payload": order()}, CLIENT_ONE)
    two = await api.start("shared-key", {"saga_type": "order_saga", "payload": item(quantity=5)}, CLIENT_TWO)
    assert (one.status_code, two.status_code) == (202, 202), (one.text, two.text)
    assert one.json()["id"] != two.json()["id"]

    # Each replays its own saga; neither can reach, or collide with, the other's.
    again_one = await api.start("shared-key", {"saga_type": "order_saga", "payload": order()}, CLIENT_ONE)
    again_two = await api.start("shared-key", {"saga_type": "order_saga", "payload": item(quantity=5)}, CLIENT_TWO)
    assert (again_one.status_code, again_one.json()["id"]) == (200, one.json()["id"])
    assert (again_two.status_code, again_two.json()["id"]) == (200, two.json()["id"])
    assert_problem(
        await api.start("shared-key", {"saga_type": "order_saga", "payload": order()}, CLIENT_TWO),
        422,
        "idempotency-key-reused",
    )

    stored = await api.db.fetch("SELECT key, saga_id FROM idempotency_keys ORDER BY key")
    assert [(r["key"], str(r["saga_id"])) for r in stored] == [
        ("client-one:shared-key", one.json()["id"]),
        ("client-two:shared-key", two.json()["id"]),
    ]
    for response in (one, two, again_one, again_two):
        assert response.headers["location"] == f"/v1/sagas/{response.json()['id']}"
        assert ":shared-key" not in response.text
        assert "shared-key" not in response.headers["location"]


async def test_with_auth_off_there_is_one_anonymous_namespace(start_instance: Callable[[str], Awaitable[Api]]) -> None:
    api = await start_instance("off")
    first = await api.start("open-key", {"saga_type": "order_saga", "payload": order()}, {})
    again = await api.start("open-key", {"saga_type": "order_saga", "payload": order()}, {"Authorization": "Bearer x"})
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["id"] == first.json()["id"]
    assert await api.db.fetchval("SELECT key FROM idempotency_keys") == "open-key"
