"""The load driver's HTTP client, against a real uvicorn server on a real port."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn

from bench import client
from servicekit import http_server

_seen: list[tuple[str, dict[str, str], Any]] = []


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Echo the JSON body back; /close answers with Connection: close, /chunked streams its body."""
    if scope["type"] != "http":
        return
    body = await http_server.read_body(receive)
    assert body is not None
    headers = {k.decode(): v.decode() for k, v in scope["headers"]}
    _seen.append((scope["path"], headers, json.loads(body)))
    answer = json.dumps({"echo": json.loads(body), "client": list(scope["client"])}).encode()
    if scope["path"] == "/chunked":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": answer, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    extra = [(b"connection", b"close")] if scope["path"] == "/close" else []
    await send({"type": "http.response.start", "status": 202,
                "headers": [(b"content-length", str(len(answer)).encode()), *extra]})  # fmt: skip
    await send({"type": "http.response.body", "body": answer})


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", http="h11"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


async def test_posts_json_with_headers_and_reads_status_and_body_over_one_kept_alive_connection(
    base_url: str,
) -> None:
    http = client.Client(base_url)

    first = await http.post("/sagas", {"n": 1}, {"Idempotency-Key": "k-1"})
    second = await http.post("/sagas", {"n": 2})

    assert (first.status_code, first.json()["echo"]) == (202, {"n": 1})
    assert second.json()["echo"] == {"n": 2}
    assert first.json()["client"] == second.json()["client"], "the second request reused the connection"
    assert _seen[-2][1]["idempotency-key"] == "k-1"
    assert _seen[-2][1]["content-type"] == "application/json"
    await http.aclose()


async def test_a_connection_the_server_closes_is_not_reused(base_url: str) -> None:
    http = client.Client(base_url)

    first = await http.post("/close", {"n": 1})
    second = await http.post("/close", {"n": 2})

    assert first.json()["client"] != second.json()["client"]
    await http.aclose()


async def test_a_body_without_content_length_is_an_error_not_a_guess(base_url: str) -> None:
    http = client.Client(base_url)

    with pytest.raises(client.TransportError, match="chunked"):
        await http.post("/chunked", {"n": 1})


async def test_a_refused_connection_is_a_transport_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: nothing answers there

    with pytest.raises(client.TransportError):
        await client.Client(f"http://127.0.0.1:{port}").post("/sagas", {})


async def test_a_connection_idle_past_the_bound_is_replaced_not_reused(base_url: str) -> None:
    http = client.Client(base_url, idle_for=0.05)

    first = await http.post("/sagas", {"n": 1})
    await asyncio.sleep(0.1)
    second = await http.post("/sagas", {"n": 2})

    assert first.json()["client"] != second.json()["client"]
    await http.aclose()
