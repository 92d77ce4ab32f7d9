"""The HTTP time limits expiring, in real time: first at the ASGI level with a scripted client, then on a real
uvicorn server over raw sockets (a client that stops sending its body gets a 408 and a closed connection,
an idle keep-alive connection is closed, and a prompt client is served)."""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from servicekit import http_server

LIMITS = http_server.Timeouts(read=0.3, write=5.0, keep_alive=1.0)
ASGI_LIMITS = http_server.Timeouts(read=0.05, write=0.05, keep_alive=7)


class Conversation:
    """The server side of one request: messages the client sends (None: it stalls), and what it receives."""

    def __init__(self, incoming: list[dict[str, Any] | None], *, reads_response: bool = True) -> None:
        self.incoming, self.sent = list(incoming), list[dict[str, Any]]()
        self.reads_response = reads_response

    async def receive(self) -> dict[str, Any]:
        message = self.incoming.pop(0) if self.incoming else None
        if message is None:
            await asyncio.Event().wait()  # the client sends nothing more
        assert message is not None
        return message

    async def send(self, message: dict[str, Any]) -> None:
        if not self.reads_response:
            await asyncio.Event().wait()  # the client's window is full and stays full
        self.sent.append(message)


def echo_app(log: list[dict[str, Any]]) -> Any:
    """Reads the whole body, then answers 200 with it; records what it received."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            log.append(message)
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    return app


async def test_a_body_that_arrives_in_time_reaches_the_application() -> None:
    talk = Conversation(
        [{"type": "http.request", "body": b"ab", "more_body": True}, {"type": "http.request", "body": b"c"}]
    )
    await http_server.TimeLimits(echo_app([]), ASGI_LIMITS)({"type": "http"}, talk.receive, talk.send)
    assert [m.get("status") for m in talk.sent] == [200, None]
    assert talk.sent[1]["body"] == b"abc"


async def test_a_stalled_body_is_answered_408_and_the_connection_closed() -> None:
    seen: list[dict[str, Any]] = []
    talk = Conversation([{"type": "http.request", "body": b"ab", "more_body": True}, None])
    async with asyncio.timeout(2):
        await http_server.TimeLimits(echo_app(seen), ASGI_LIMITS)({"type": "http"}, talk.receive, talk.send)
    start, body = talk.sent  # the application's own answer was dropped
    assert start["status"] == 408
    assert (b"connection", b"close") in start["headers"]
    assert json.loads(body["body"])["status"] == 408
    assert seen[-1] == {"type": "http.disconnect"}  # to the application, the client has gone


async def test_a_client_that_does_not_read_its_answer_is_cut_off() -> None:
    talk = Conversation([{"type": "http.request", "body": b""}], reads_response=False)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(2):
            await http_server.TimeLimits(echo_app([]), ASGI_LIMITS)({"type": "http"}, talk.receive, talk.send)


async def test_after_the_body_waiting_for_a_disconnect_is_not_limited() -> None:
    """Only the body has a deadline: an application may wait for the client to go away as long as it likes."""
    talk = Conversation([{"type": "http.request", "body": b""}, None])
    limited: list[Any] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        limited.append(asyncio.create_task(receive()))

    await http_server.TimeLimits(app, ASGI_LIMITS)({"type": "http"}, talk.receive, talk.send)
    await asyncio.sleep(ASGI_LIMITS.read * 3)
    assert not limited[0].done()
    assert talk.sent == []
    limited[0].cancel()


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(len(body)).encode())]}
    )
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
async def port() -> AsyncIterator[int]:
    server = http_server.HttpServer(echo, "127.0.0.1", 0, timeouts=LIMITS)
    await server.start()
    yield server.port
    await server.stop()


def post(length: int, body: bytes) -> bytes:
    return b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (length, body)


async def read_all(reader: asyncio.StreamReader, within: float) -> bytes:
    """Everything the server sends until it closes the connection (TimeoutError if it does not)."""
    async with asyncio.timeout(within):
        return await reader.read()


async def test_a_prompt_request_is_served(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(post(5, b"hello"))
    await writer.drain()
    async with asyncio.timeout(2):
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert await reader.readexactly(5) == b"hello"
    writer.close()


async def test_a_stalled_body_gets_408_and_the_connection_is_closed(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(post(100, b"only ten b"))  # 90 bytes never come
    await writer.drain()
    started = asyncio.get_running_loop().time()
    answer = await read_all(reader, within=3)  # returns only once the server closes the connection
    took = asyncio.get_running_loop().time() - started
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408")
    assert json.loads(body)["status"] == 408
    assert LIMITS.read * 0.8 <= took < 2.0, took
    writer.close()


async def test_an_idle_keep_alive_connection_is_closed(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(post(2, b"ok"))
    await writer.drain()
    answer = await read_all(reader, within=LIMITS.keep_alive + 2)  # closed by uvicorn's keep-alive timer
    assert answer.startswith(b"HTTP/1.1 200")
    writer.close()
