"""The debug port: profile, heap and task dumps of a live process, without restarting it.

Bound to 127.0.0.1 only and off unless `debug.enabled` is set. Endpoints:

- `GET /debug/profile?seconds=N&format=html|speedscope`: a CPU profile of the whole event loop thread
  for N seconds (1-60), taken while the process keeps serving; open the HTML in a browser or the
  speedscope JSON at https://www.speedscope.app.
- `GET /debug/heap?top=N&seconds=S`: the N biggest allocation sites of the next S seconds (1-60,
  default 10; tracemalloc runs only for that window, since it slows every allocation while on) and
  live object counts by type.
- `GET /debug/tasks`: every asyncio task with its stack.
"""

from __future__ import annotations

import asyncio
import gc
import io
import json
import tracemalloc
from collections import Counter
from typing import Any
from urllib.parse import parse_qs

from pyinstrument import Profiler
from pyinstrument.renderers import HTMLRenderer, SpeedscopeRenderer

from servicekit import http_server, logging, settings
from servicekit.health import Send, respond

log = logging.get_logger(__name__)

_MAX_PROFILE_SECONDS = 60


class DebugApp:
    """ASGI app for the debug endpoints."""

    def __init__(self) -> None:
        self._profiling = asyncio.Lock()
        self._tracing = asyncio.Lock()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] != "http":
            return
        query = {k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
        path = scope["path"]
        if path == "/debug/profile":
            await self._profile(query, send)
        elif path == "/debug/heap":
            await self._heap(query, send)
        elif path == "/debug/tasks":
            await respond(send, 200, tasks().encode(), "text/plain; charset=utf-8")
        else:
            await respond(send, 404, b'{"status":"not found"}', "application/json")

    async def _heap(self, query: dict[str, str], send: Send) -> None:
        if self._tracing.locked():
            await respond(send, 409, b'{"error":"a heap window is already open"}', "application/json")
            return
        async with self._tracing:
            body = await heap(
                _int(query.get("top"), 25, 1, 500), _int(query.get("seconds"), 10, 1, _MAX_PROFILE_SECONDS)
            )
        await respond(send, 200, json.dumps(body).encode(), "application/json")

    async def _profile(self, query: dict[str, str], send: Send) -> None:
        seconds = _int(query.get("seconds"), 10, 1, _MAX_PROFILE_SECONDS)
        fmt = query.get("format", "html")
        if fmt not in ("html", "speedscope"):
            await respond(send, 400, b'{"error":"format must be html or speedscope"}', "application/json")
            return
        if self._profiling.locked():
            await respond(send, 409, b'{"error":"a profile is already running"}', "application/json")
            return
        async with self._profiling:
            body = await profile(seconds, fmt)
        content_type = "text/html; charset=utf-8" if fmt == "html" else "application/json"
        await respond(send, 200, body.encode(), content_type)


def _int(value: str | None, default: int, low: int, high: int) -> int:
    try:
        number = int(value) if value is not None else default
    except ValueError:
        number = default
    return min(max(number, low), high)


async def profile(seconds: float, fmt: str = "html") -> str:
    """Sample the event loop thread for `seconds` while it keeps running everything else."""
    profiler = Profiler(interval=0.001, async_mode="disabled")
    profiler.start()
    try:
        await asyncio.sleep(seconds)
    finally:
        session = profiler.stop()
    renderer = HTMLRenderer() if fmt == "html" else SpeedscopeRenderer()
    return str(renderer.render(session))


async def heap(top: int, seconds: float) -> dict[str, Any]:
    """Allocation sites by size over the next `seconds`, and live objects by type.

    tracemalloc slows every allocation while it runs, so it runs only for the window and is stopped
    after the snapshot, unless it was already on (`PYTHONTRACEMALLOC`), in which case it is left alone
    and the snapshot covers everything since it started.
    """
    already = tracemalloc.is_tracing()
    if not already:
        tracemalloc.start(10)
    try:
        await asyncio.sleep(seconds)
        snapshot = tracemalloc.take_snapshot()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        if not already:
            tracemalloc.stop()
    stats = snapshot.statistics("lineno")[:top]
    objects = Counter(type(o).__name__ for o in gc.get_objects()).most_common(top)
    return {
        "traced_seconds": None if already else seconds,
        "traced_bytes": current,
        "traced_peak_bytes": peak,
        "top_allocations": [{"where": str(s.traceback[0]), "bytes": s.size, "blocks": s.count} for s in stats],
        "objects_by_type": dict(objects),
    }


def tasks() -> str:
    """Every asyncio task of the running loop, with its current stack."""
    out = io.StringIO()
    everything = sorted(asyncio.all_tasks(), key=lambda t: t.get_name())
    out.write(f"{len(everything)} tasks\n")
    for task in everything:
        out.write(f"\n--- {task.get_name()} ({'done' if task.done() else 'pending'})\n")
        task.print_stack(limit=20, file=out)
    return out.getvalue()


async def start_server(config: settings.DebugSettings) -> http_server.HttpServer | None:
    """Start the debug port on 127.0.0.1 when enabled (port 0 picks a free one); None when off."""
    if not config.enabled:
        return None
    server = http_server.HttpServer(DebugApp(), "127.0.0.1", config.port)
    await server.start()
    log.warning("debug port open: profiles, heap and task dumps", port=server.port, host="127.0.0.1")
    return server
