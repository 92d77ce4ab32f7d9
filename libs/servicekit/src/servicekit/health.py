"""The probe endpoints of every process: `/livez`, `/readyz` (and `/health`, `/ready`), `/metrics`.

`/livez` depends on nothing but the event loop answering. `/readyz` asks the process (usually: a
database round trip, and not shutting down). A plain ASGI app, so probes cost almost nothing.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from servicekit import db

Readiness = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]

Send = Callable[[dict[str, Any]], Awaitable[None]]


async def respond(
    send: Send, status: int, body: bytes, content_type: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Send one complete HTTP response over ASGI."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def probe(path: str, send: Send, readiness: Readiness) -> bool:
    """Answer path if it is a probe or `/metrics`; False when it is not one of ours."""
    if path in ("/livez", "/health"):
        await respond(send, 200, b'{"status":"ok"}', "application/json")
    elif path in ("/readyz", "/ready"):
        ready, detail = await readiness()
        body = json.dumps({"status": "ready" if ready else "not ready", **detail}).encode()
        await respond(
            send, 200 if ready else 503, body, "application/json", None if ready else [(b"retry-after", b"1")]
        )
    elif path == "/metrics":
        await respond(send, 200, generate_latest(), CONTENT_TYPE_LATEST)
    else:
        return False
    return True


class ProbeApp:
    """ASGI app serving only the probes and metrics; anything else is 404."""

    def __init__(self, readiness: Readiness) -> None:
        """`readiness` returns (ready, detail) for `/readyz`."""
        self._readiness = readiness

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] != "http":
            return
        if not await probe(scope["path"], send, self._readiness):
            await respond(send, 404, b'{"status":"not found"}', "application/json")


class DatabaseReadiness:
    """Readiness of a process whose one dependency is its database: ready while not draining and it answers."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        """Set `draining` when shutdown begins, so load balancers stop sending before the server stops."""
        self._pool = pool
        self.draining = False

    async def __call__(self) -> tuple[bool, dict[str, Any]]:
        """(ready, detail) for `/readyz`."""
        if self.draining:
            return False, {"reason": "shutting down"}
        reachable = await db.ping(self._pool)
        return reachable, {"database": "ok" if reachable else "unreachable"}
