"""Serve an ASGI application with uvicorn inside a process that owns its own signal handling."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Final

import uvicorn


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The process's lifecycle owns SIGTERM/SIGINT; uvicorn must not install its own handlers.
        yield


@dataclass(frozen=True)
class Timeouts:
    """Connection time limits, in seconds.

    `read`: the whole request body must arrive within this after the application asks for it, else the
    answer is `408` and the connection is closed (a client trickling a body holds no worker forever).
    `write`: each part of the response must be taken by the client within this, else the connection is
    dropped. `keep_alive`: an idle keep-alive connection is closed after this (uvicorn's own timer).
    uvicorn has no limit on reading the request line and headers; a proxy in front (nginx's
    `client_header_timeout`, a platform's load balancer) bounds that.
    """

    read: float = 30.0
    write: float = 30.0
    keep_alive: float = 5.0


_REQUEST_TIMEOUT: Final = json.dumps(
    {"title": "Request Timeout", "status": 408, "detail": "the request body did not arrive in time"}
).encode()


class TimeLimits:
    """ASGI middleware enforcing `Timeouts.read` and `Timeouts.write` on every HTTP request."""

    def __init__(self, app: Any, timeouts: Timeouts) -> None:
        """Wrap app."""
        self._app, self._timeouts = app, timeouts

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """ASGI entry point; other scopes (lifespan, websocket) pass through untouched."""
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        deadline: float | None = None
        body_done, answered = False, False

        async def limited_receive() -> dict[str, Any]:
            nonlocal deadline, body_done, answered
            if body_done or answered:
                return dict(await receive())  # after the body: only a disconnect can come, whenever it does
            loop = asyncio.get_running_loop()
            deadline = deadline if deadline is not None else loop.time() + self._timeouts.read
            try:
                async with asyncio.timeout_at(deadline):
                    message = dict(await receive())
            except TimeoutError:
                answered = True
                await _send_request_timeout(send)
                return {"type": "http.disconnect"}  # to the application, the client has gone
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def limited_send(message: dict[str, Any]) -> None:
            if answered:
                return  # the 408 was the answer; the application's own is dropped
            async with asyncio.timeout(self._timeouts.write):
                await send(message)

        await self._app(scope, limited_receive, limited_send)


async def read_body(receive: Any) -> bytes | None:
    """A plain ASGI app's whole request body, or None if the client disconnected before it was all sent."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _send_request_timeout(send: Any) -> None:
    headers = [(b"content-type", b"application/problem+json"), (b"connection", b"close"),
               (b"content-length", str(len(_REQUEST_TIMEOUT)).encode())]  # fmt: skip
    await send({"type": "http.response.start", "status": 408, "headers": headers})
    await send({"type": "http.response.body", "body": _REQUEST_TIMEOUT})


class HttpServer:
    """One uvicorn server run as a task; `stop` lets open requests finish."""

    def __init__(
        self, app: Any, host: str, port: int, *, backlog: int = 2048, timeouts: Timeouts | None = None
    ) -> None:
        """Prepare (but do not bind) a server for app on host:port; port 0 picks a free port.

        With timeouts, requests are held to them (`Timeouts`); without, only uvicorn's 5 s keep-alive applies.
        """
        config = uvicorn.Config(
            TimeLimits(app, timeouts) if timeouts else app,
            host=host,
            port=port,
            lifespan="off",
            access_log=False,
            log_config=None,
            server_header=False,
            backlog=backlog,
            timeout_graceful_shutdown=5,
            timeout_keep_alive=round(timeouts.keep_alive) if timeouts else 5,
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The bound port (meaningful after `start`)."""
        return int(self._server.servers[0].sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Bind and serve in the background; raises if the port cannot be bound."""
        self._task = asyncio.create_task(self._serve(), name=f"http:{self._server.config.port}")
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise OSError(f"http server on port {self._server.config.port} stopped during startup")
            await asyncio.sleep(0.01)

    async def _serve(self) -> None:
        try:
            await self._server.serve()
        except SystemExit as exc:
            # uvicorn calls sys.exit when it cannot bind; raised inside a task, that would stop the whole
            # event loop (and every other server in the process) instead of failing `start`.
            config = self._server.config
            raise OSError(f"http server on {config.host}:{config.port} failed to start") from exc

    async def stop(self) -> None:
        """Stop accepting, finish open requests, and wait for the server task."""
        if self._task is None:
            return
        self._server.should_exit = True
        await self._task
