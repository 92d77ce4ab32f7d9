"""Secrets never leak: planted canaries appear in no log line, metric, answer or span of a running stack.

The stack runs with authentication on. Its API keys come from key files whose content is a canary,
and every database URL carries a canary password (the test server trusts local connections, so the
password is accepted and never checked; a server URL that already has a password makes that password
the canary instead). A canary is also sent as a wrong key, the secret a client may get wrong. Then the
stack is driven through good and bad requests, 401s, a 403, 4xx of every kind, and a database outage
that the API answers with 503 and the workers log as errors. Afterwards every log line of every
process, every `/metrics`, `/readyz` and `/openapi.json` body, every answer (headers and body) and
every span the OTLP receiver got (names and attribute values, SQL spans included) is searched for each
canary, as sent and base64-encoded (as a Basic credential or a careless encoder would spell it).

Not covered: the resource attributes of spans (the receiver keeps only `service.name`), OTLP metrics
and logs (not exported here), and the debug port (off by default).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest

from sagaline import stack
from sagaline.otlp_sink import Sink
from tests.e2e.conftest import ALICE, order, running_stack

CLIENT_KEY = f"canary-key-{uuid.uuid4()}"
ADMIN_KEY = f"canary-admin-key-{uuid.uuid4()}"
WRONG_KEY = f"canary-wrong-key-{uuid.uuid4()}"
DATABASES = ("saga_orchestrator", "order_service", "payment_service", "inventory_service")


def with_password(url: str) -> tuple[str, str]:
    """The server URL with a canary password, and the password to look for."""
    parts = urlsplit(url)
    if parts.password:
        return url, parts.password
    password = f"canary-pw-{uuid.uuid4()}"
    port = f":{parts.port}" if parts.port else ""
    netloc = f"{parts.username or 'postgres'}:{password}@{parts.hostname or ''}{port}"
    return urlunsplit(parts._replace(netloc=netloc)), password


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[Sink]:
    sink = Sink()
    await sink.start()
    yield sink
    await sink.stop()


@pytest.fixture(scope="module")
def server(pg_server: str) -> tuple[str, str]:
    return with_password(pg_server)


@pytest.fixture(scope="module")
async def planted(
    server: tuple[str, str], receiver: Sink, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[stack.Supervisor]:
    folder = tmp_path_factory.mktemp("secrets")
    keys = []
    for name, role, key in (("shop", "client", CLIENT_KEY), ("ops", "admin", ADMIN_KEY)):
        (folder / name).write_text(key + "\n")
        keys.append({"name": name, "role": role, "key_file": str(folder / name)})
    env = {
        "SAGALINE_AUTH": "on",
        "SAGALINE_API_KEYS": json.dumps(keys),
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "SAGALINE_TELEMETRY__SQL_SPANS": "true",
    }
    async for supervisor in running_stack(server[0], env):
        yield supervisor


class Traffic:
    """Sends requests as a caller, and keeps every answer as text, headers included."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.seen: list[str] = []

    async def send(
        self, method: str, path: str, key: str | None = CLIENT_KEY, headers: dict[str, str] | None = None, **kw: Any
    ) -> httpx.Response:
        bearer = {"Authorization": f"Bearer {key}"} if key is not None else {}
        response = await self.client.request(method, path, headers={**bearer, **(headers or {})}, **kw)
        self.seen.append(f"{response.status_code} {response.headers}\n{response.text}")
        return response


async def good_and_bad_requests(traffic: Traffic) -> str:
    """Requests of every outcome; returns the id of the saga started."""
    key = {"Idempotency-Key": str(uuid.uuid4())}
    started = await traffic.send("POST", "/v1/sagas", json=order(ALICE), headers=key)
    assert started.status_code == 202, started.text  # the client key from its file is the key
    saga = started.json()["id"]
    assert (await traffic.send("POST", "/v1/sagas", json=order(ALICE), headers=key)).status_code == 200
    assert (await traffic.send("GET", f"/v1/sagas/{saga}")).status_code == 200
    assert (await traffic.send("GET", "/v1/sagas", params={"limit": 1})).status_code == 200
    assert (await traffic.send("POST", f"/v1/sagas/{saga}/retry", key=ADMIN_KEY)).status_code in (202, 409)
    basic = f"Basic {base64.b64encode(WRONG_KEY.encode()).decode()}"
    refused = [
        ("GET", "/v1/sagas", None, {}, 401),
        ("GET", "/v1/sagas", WRONG_KEY, {}, 401),
        ("GET", "/v1/sagas", None, {"Authorization": basic}, 401),
        ("GET", "/v1/sagas", None, {"Authorization": WRONG_KEY}, 401),
        ("POST", f"/v1/sagas/{saga}/cancel", CLIENT_KEY, {}, 403),
        ("POST", "/v1/sagas", CLIENT_KEY, {}, 422),
        ("GET", f"/v1/sagas/{uuid.uuid4()}", CLIENT_KEY, {}, 404),
        ("DELETE", f"/v1/sagas/{saga}", CLIENT_KEY, {}, 405),
        ("GET", "/v1/sagas?cursor=forged", CLIENT_KEY, {}, 400),
    ]
    for method, path, caller, headers, status in refused:
        assert (await traffic.send(method, path, key=caller, headers=headers)).status_code == status, (method, path)
    bad_body = {"saga_type": "order_saga", "payload": {"customer_id": "nobody", "items": []}}
    assert (await traffic.send("POST", "/v1/sagas", json=bad_body, headers={"Idempotency-Key": "k"})).status_code == 422
    assert (await traffic.send("POST", "/v1/sagas", content=b"{", headers={"Idempotency-Key": "k"})).status_code == 415
    return str(saga)


async def database_outage(traffic: Traffic, supervisor: stack.Supervisor, admin_url: str) -> None:
    """Refuse every connection to the stack's databases and end the open ones, until the API answers 503."""
    names = [supervisor.topology.databases[role] for role in DATABASES]
    admin = await asyncpg.connect(admin_url)
    try:
        for name in names:
            await admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ANY($1::text[])", names
        )
        async with asyncio.timeout(15):
            while (down := await traffic.send("GET", "/v1/sagas")).status_code != 503:
                await asyncio.sleep(0.2)
        assert down.headers["retry-after"]
        await traffic.send("POST", "/v1/sagas", json=order(ALICE), headers={"Idempotency-Key": str(uuid.uuid4())})
        await asyncio.sleep(2)  # the pollers and heartbeats fail and log meanwhile
    finally:
        for name in names:
            await admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        await admin.close()
    async with asyncio.timeout(30):
        while (await traffic.send("GET", "/v1/sagas")).status_code != 200:
            await asyncio.sleep(0.2)


async def exposed_text(supervisor: stack.Supervisor, traffic: Traffic) -> list[str]:
    """What the stack shows on its HTTP ports without a key: metrics, readiness, the OpenAPI document."""
    topology = supervisor.topology
    bases = [topology.orchestrator_url(i) for i in range(len(topology.orchestrator_ports))]
    bases += [f"http://{topology.host}:{port}" for port in topology.http_ports.values()]
    pages = [f"{base}{path}" for base in bases for path in ("/metrics", "/readyz")]
    pages.append(f"{bases[0]}/openapi.json")
    texts = []
    async with httpx.AsyncClient(timeout=10) as client:
        for page in pages:
            response = await client.get(page)
            assert response.status_code == 200, page
            texts.append(f"{page}\n{response.headers}\n{response.text}")
    return texts


def span_text(sink: Sink) -> list[str]:
    return [f"{s['service']} {s['name']} {s['attributes']}" for s in sink.spans]


async def test_no_secret_appears_in_logs_metrics_answers_or_spans(
    planted: stack.Supervisor, receiver: Sink, server: tuple[str, str]
) -> None:
    if not isinstance(planted.out, io.StringIO):
        pytest.fail("child logs are needed in memory; run without SAGALINE_TEST_LOGS")
    admin_url, password = server
    assert password in planted.topology.url("saga_orchestrator"), "every process was given the canary password"
    async with httpx.AsyncClient(base_url=planted.topology.orchestrator_url(0), timeout=10) as client:
        traffic = Traffic(client)
        saga = await good_and_bad_requests(traffic)
        await database_outage(traffic, planted, admin_url)
        await good_and_bad_requests(traffic)
    exposed = await exposed_text(planted, traffic)
    async with asyncio.timeout(15):  # spans of every process, then the stragglers of their last batch
        while {s["service"] for s in receiver.spans} < {"orchestrator", "order", "payment", "inventory"}:
            await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)

    logs = planted.out.getvalue()
    assert "database unavailable during request" in logs, "the outage reached the API's error path"
    assert any(s["name"].startswith("SQL ") for s in receiver.spans), "SQL spans were exported"
    places = {"logs": logs.splitlines(), "answers": traffic.seen, "pages": exposed, "spans": span_text(receiver)}
    # The search sees what is there: the saga's id in the logs, answers and spans, a metric in the pages.
    present = {"logs": saga, "answers": saga, "spans": saga, "pages": "http_request_duration_seconds"}
    for place, marker in present.items():
        assert any(marker in text for text in places[place]), f"{marker} should be in the {place}"
    for canary in (CLIENT_KEY, ADMIN_KEY, WRONG_KEY, password):
        spellings = (canary, base64.b64encode(canary.encode()).decode().rstrip("="))
        for place, texts in places.items():
            leaked = [text[:300] for text in texts for spelled in spellings if spelled in text]
            assert not leaked, f"a canary leaked into the {place}: {leaked[:3]}"
