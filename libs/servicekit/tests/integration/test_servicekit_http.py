"""The probe app served by uvicorn on an ephemeral port, fetched over real HTTP."""

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from servicekit import health, http_server, metrics


@dataclass
class Readiness:
    ready: bool = True
    delay: float = 0.0
    entered: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self) -> tuple[bool, dict[str, Any]]:
        self.entered.set()
        if self.delay:
            await asyncio.sleep(self.delay)
        return self.ready, {"database": "up" if self.ready else "down"}


@dataclass
class Served:
    server: http_server.HttpServer
    readiness: Readiness
    client: httpx.AsyncClient


@pytest.fixture(scope="module")
async def _shared_server() -> AsyncIterator[tuple[http_server.HttpServer, Readiness]]:
    """One server for the tests that only read from it; uvicorn takes ~0.1 s to notice a stop."""
    readiness = Readiness()
    server = http_server.HttpServer(health.ProbeApp(readiness), "127.0.0.1", 0)
    await server.start()
    yield server, readiness
    await server.stop()


@pytest.fixture
async def served(_shared_server: tuple[http_server.HttpServer, Readiness]) -> AsyncIterator[Served]:
    server, readiness = _shared_server
    readiness.ready, readiness.delay, readiness.entered = True, 0.0, asyncio.Event()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", trust_env=False, timeout=5) as client:
        yield Served(server, readiness, client)


async def test_start_binds_an_ephemeral_port(served: Served) -> None:
    assert served.server.port > 0


@pytest.mark.parametrize("path", ["/livez", "/health"])
async def test_liveness_is_200(served: Served, path: str) -> None:
    served.readiness.ready = False

    response = await served.client.get(path)

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize("path", ["/readyz", "/ready"])
async def test_readiness_follows_the_readiness_callable(served: Served, path: str) -> None:
    ready = await served.client.get(path)
    served.readiness.ready = False
    not_ready = await served.client.get(path)

    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "database": "up"}
    assert "retry-after" not in ready.headers
    assert not_ready.status_code == 503
    assert not_ready.json() == {"status": "not ready", "database": "down"}
    assert not_ready.headers["retry-after"] == "1"


async def test_metrics_are_served_as_prometheus_text(served: Served) -> None:
    metrics.GRPC_REQUEST_DURATION.labels("client", "sk.http.v1.Probe", "Get", "OK").observe(0.002)

    response = await served.client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "# TYPE grpc_request_duration_seconds histogram" in response.text
    labels = 'code="OK",method="Get",role="client",service="sk.http.v1.Probe"'
    assert f"grpc_request_duration_seconds_count{{{labels}}} " in response.text


@pytest.mark.parametrize("path", ["/", "/api/orders", "/livez/deep"])
async def test_anything_else_is_404(served: Served, path: str) -> None:
    response = await served.client.get(path)

    assert response.status_code == 404
    assert response.json() == {"status": "not found"}


async def test_stop_lets_an_open_request_finish() -> None:
    readiness = Readiness(delay=0.2)
    server = http_server.HttpServer(health.ProbeApp(readiness), "127.0.0.1", 0)
    await server.start()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", trust_env=False, timeout=5) as client:
        request = asyncio.ensure_future(client.get("/readyz"))
        await asyncio.wait_for(readiness.entered.wait(), timeout=5)

        await asyncio.wait_for(server.stop(), timeout=5)

        response = await request
        assert response.status_code == 200
        with pytest.raises(httpx.ConnectError):
            await client.get("/livez")


async def test_a_taken_port_fails_start_without_stopping_the_event_loop() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = http_server.HttpServer(health.ProbeApp(Readiness()), "127.0.0.1", taken.getsockname()[1])

        with pytest.raises(OSError, match="failed to start"):
            await server.start()

    await asyncio.sleep(0)  # the loop is still running this test


async def test_stop_before_start_does_nothing() -> None:
    await http_server.HttpServer(health.ProbeApp(Readiness()), "127.0.0.1", 0).stop()
