"""The OpenAPI document against a real instance, at the edges a fuzzer only reaches by luck (SPEC section 3).

Each rule the document states as a pattern or a range is tried at its boundaries, just inside and just
outside, and the document itself is checked for what it must always say: the shared problem schema on
every error, the headers of 401, 503 and 202, and no bearer scheme when authentication is off. The
live fuzzing of the whole document is `tests/e2e/test_e2e_contract.py`.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest

from orchestrator import api, bootstrap, config
from orchestrator.bootstrap import MIGRATIONS_DIR
from sagaline import pg
from servicekit import migrations
from services.orchestrator.tests.integration import test_orchestrator_it_api as it_api

CLIENT = {"Authorization": "Bearer contract-client-key"}
UNREACHABLE = "127.0.0.1:1"
ORDER = {
    "customer_id": "11111111-1111-4111-8111-111111111111",
    "items": [{"sku": "SKU-WIDGET", "quantity": 2, "unit_price": "9.99"}],
}


def settings(url: str, auth: str) -> config.Settings:
    return it_api.settings(url, auth, [it_api.api_key("shop", "client", b"contract-client-key")])


@dataclass
class Instance:
    http: httpx.AsyncClient
    db: asyncpg.Pool

    async def start(self, body: Any, key: str | None = None) -> httpx.Response:
        headers = {**CLIENT, "Idempotency-Key": key or str(uuid.uuid4())}
        return await self.http.post("/v1/sagas", json=body, headers=headers)


async def _instance(pg_server: str, auth: str) -> AsyncIterator[Instance]:
    name = f"test_{os.getpid()}_{uuid.uuid4().hex[:12]}"
    await pg.create_database(pg_server, name, exist_ok=False)
    try:
        url = pg.with_database(pg_server, name)
        await migrations.apply(url, MIGRATIONS_DIR)
        running = await bootstrap.start(settings(url, auth))
        pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
        assert pool is not None
        client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.http_port}", timeout=20)
        try:
            yield Instance(client, pool)
        finally:
            await client.aclose()
            await running.stop()
            await pool.close()
    finally:
        await pg.drop_database(pg_server, name)


@pytest.fixture(scope="module")
async def live(pg_server: str) -> AsyncIterator[Instance]:
    async for instance in _instance(pg_server, "on"):
        yield instance


@pytest.fixture(scope="module")
async def document(live: Instance) -> dict[str, Any]:
    answer = await live.http.get("/openapi.json")
    assert answer.status_code == 200
    spec: dict[str, Any] = answer.json()
    return spec


def problem_type(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    return str(response.json()["type"]).rsplit("/", 1)[1]


@pytest.mark.parametrize("deadline", ["1ms", "86400000ms", "1s", "86400s", "1m", "1440m", "1h", "24h", None])
async def test_every_deadline_the_document_admits_is_accepted(live: Instance, deadline: str | None) -> None:
    assert re.fullmatch(api.DEADLINE_PATTERN, deadline or "1s")
    response = await live.start({"saga_type": "order_saga", "deadline": deadline, "payload": ORDER})
    assert response.status_code == 202, response.text


@pytest.mark.parametrize(
    "deadline", ["0ms", "86400001ms", "0s", "86401s", "1441m", "0h", "25h", "01s", "1m30s", "1.5s", "30", " 30s", "1S"]
)
async def test_every_deadline_the_document_refuses_is_a_422(live: Instance, deadline: str) -> None:
    assert not re.fullmatch(api.DEADLINE_PATTERN, deadline)
    response = await live.start({"saga_type": "order_saga", "deadline": deadline, "payload": ORDER})
    assert (response.status_code, problem_type(response)) == (422, "invalid-deadline")


@pytest.mark.parametrize("key", ["k", "~" * 255, "a b", "!", "7f1c2b9e-order-42"])
async def test_every_key_the_document_admits_is_accepted(live: Instance, key: str) -> None:
    assert (await live.start({"saga_type": "order_saga", "payload": ORDER}, key)).status_code in (200, 202)


@pytest.mark.parametrize("key", ["", "k" * 256, "clé", "tab\there"])
async def test_every_key_the_document_refuses_is_a_400(live: Instance, key: str) -> None:
    response = await live.http.post(
        "/v1/sagas",
        json={"saga_type": "order_saga", "payload": ORDER},
        headers={**CLIENT, "Idempotency-Key": key.encode("utf-8")},  # type: ignore[dict-item]
    )
    assert (response.status_code, problem_type(response)) == (400, "malformed-idempotency-key")


async def test_an_integral_number_is_the_integer_json_schema_says_it_is(live: Instance) -> None:
    content = json.dumps({"saga_type": "order_saga", "payload": ORDER}).replace('"quantity": 2', '"quantity": 2.0')
    headers = {**CLIENT, "Idempotency-Key": str(uuid.uuid4()), "Content-Type": "application/json"}
    response = await live.http.post("/v1/sagas", content=content, headers=headers)
    assert response.status_code == 202, response.text
    assert response.json()["payload"]["items"][0]["quantity"] == 2
    again = await live.http.post("/v1/sagas", json={"saga_type": "order_saga", "payload": ORDER}, headers=headers)
    assert (again.status_code, again.json()["id"]) == (200, response.json()["id"]), "2.0 and 2 are one body"


@pytest.mark.parametrize("media", ["application/vnd.sagaline+json", "application/merge-patch+json", "text/json"])
async def test_only_the_declared_media_type_is_taken(live: Instance, media: str) -> None:
    headers = {**CLIENT, "Idempotency-Key": str(uuid.uuid4()), "Content-Type": media}
    body = json.dumps({"saga_type": "order_saga", "payload": ORDER})
    response = await live.http.post("/v1/sagas", content=body, headers=headers)
    assert (response.status_code, problem_type(response)) == (415, "unsupported-media-type")


async def test_a_page_cursor_is_of_the_documented_shape_and_leads_to_the_next_page(live: Instance) -> None:
    for _ in range(3):
        assert (await live.start({"saga_type": "order_saga", "payload": ORDER})).status_code == 202
    first = (await live.http.get("/v1/sagas", params={"limit": 2}, headers=CLIENT)).json()
    assert re.fullmatch(api.CURSOR_PATTERN, first["next_cursor"])
    second = await live.http.get("/v1/sagas", params={"limit": 2, "cursor": first["next_cursor"]}, headers=CLIENT)
    assert second.status_code == 200
    assert {s["id"] for s in first["items"]}.isdisjoint(s["id"] for s in second.json()["items"])


@pytest.mark.parametrize("path", ["/livez", "/readyz", "/metrics"])
async def test_a_probe_takes_only_get_and_head(live: Instance, path: str) -> None:
    assert (await live.http.head(path)).status_code == 200
    response = await live.http.post(path)
    assert (response.status_code, problem_type(response)) == (405, "method-not-allowed")
    assert response.headers["allow"] == "GET, HEAD"


async def test_a_trailing_slash_is_a_404_not_a_redirect(live: Instance) -> None:
    response = await live.http.get("/v1/sagas/", headers=CLIENT)
    assert (response.status_code, problem_type(response)) == (404, "not-found")


def test_every_problem_type_has_a_status_and_title_the_handlers_use() -> None:
    answer = api.problem_response(api.Problem("malformed-cursor", "x"), "/v1/sagas")
    assert (answer.status_code, json.loads(answer.body)["title"]) == (400, "Malformed cursor")


async def test_the_document_answers_every_error_with_the_shared_problem_schema(document: dict[str, Any]) -> None:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status, answer in operation["responses"].items():
                if status.startswith(("4", "5")) and path.startswith("/v1/"):
                    content = answer["content"]["application/problem+json"]
                    assert content["schema"] == {"$ref": "#/components/schemas/ProblemDetails"}, (method, path)
                    assert content["examples"], (method, path, status)
            if path.startswith("/v1/"):
                assert operation["security"] == [{"bearerAuth": []}]
                assert {"401", "413", "503"} <= set(operation["responses"]), (method, path)
                assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]
                assert "Retry-After" in operation["responses"]["503"]["headers"]
    start = document["paths"]["/v1/sagas"]["post"]
    assert {"Location"} == set(start["responses"]["202"]["headers"]) == set(start["responses"]["200"]["headers"])
    assert start["responses"]["202"]["links"]["GetSaga"]["operationId"] == "getSaga"
    (key,) = [p for p in start["parameters"] if p["name"] == "Idempotency-Key"]
    assert (key["in"], key["required"], key["schema"]["maxLength"]) == ("header", True, 255)
    assert document["components"]["schemas"]["SagaView"]["additionalProperties"] is False


async def test_with_auth_off_the_document_declares_no_key(pg_server: str) -> None:
    async for instance in _instance(pg_server, "off"):
        spec = (await instance.http.get("/openapi.json")).json()
        assert "securitySchemes" not in spec["components"]
        for item in spec["paths"].values():
            for operation in item.values():
                assert "security" not in operation or operation["security"] == []
                assert not {"401", "403"} & set(operation["responses"])
