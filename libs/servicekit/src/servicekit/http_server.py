"""Serve an ASGI application with uvicorn inside a process that owns its own signal handling."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Generator
from typing import Any

import uvicorn


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The process's lifecycle owns SIGTERM/SIGINT; uvicorn must not install its own handlers.
        yield


class HttpServer:
    """One uvicorn server run as a task; `stop` lets open requests finish."""

    def __init__(self, app: Any, host: str, port: int, *, backlog: int = 2048) -> None:
        """Prepare (but do not bind) a server for app on host:port; port 0 picks a free port."""
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            lifespan="off",
            access_log=False,
            log_config=None,
            server_header=False,
            backlog=backlog,
            timeout_graceful_shutdown=5,
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
