"""The debug port profiles, dumps the heap and lists tasks while the process keeps serving."""

import asyncio
import json
import tracemalloc

import httpx

from servicekit import debug, health, http_server, settings


async def busy_work(stop: asyncio.Event) -> int:
    rounds = 0
    while not stop.is_set():
        sum(i * i for i in range(2000))
        rounds += 1
        await asyncio.sleep(0)
    return rounds


async def test_a_profile_is_taken_while_the_process_keeps_serving() -> None:
    port = await debug.start_server(settings.DebugSettings(enabled=True, port=0))
    assert port is not None

    async def ready() -> tuple[bool, dict[str, object]]:
        return True, {}

    probes = http_server.HttpServer(health.ProbeApp(ready), "127.0.0.1", 0)
    await probes.start()
    stop = asyncio.Event()
    worker = asyncio.create_task(busy_work(stop), name="busy-work")
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            profile = asyncio.create_task(
                client.get(f"http://127.0.0.1:{port.port}/debug/profile", params={"seconds": 1, "format": "speedscope"})
            )
            answered = 0
            while not profile.done():
                assert (await client.get(f"http://127.0.0.1:{probes.port}/livez")).status_code == 200
                answered += 1
                await asyncio.sleep(0.05)
            response = await profile
            html = await client.get(f"http://127.0.0.1:{port.port}/debug/profile", params={"seconds": 1})
            tasks = await client.get(f"http://127.0.0.1:{port.port}/debug/tasks")
            heap = await client.get(f"http://127.0.0.1:{port.port}/debug/heap", params={"top": 5, "seconds": 1})
            tracing_after_heap = tracemalloc.is_tracing()
            bad = await client.get(f"http://127.0.0.1:{port.port}/debug/profile", params={"format": "pdf"})
    finally:
        stop.set()
        await worker
        await probes.stop()
        await port.stop()
    assert answered >= 5, "probes kept answering during the profile"
    speedscope = response.json()
    assert speedscope["$schema"].startswith("https://www.speedscope.app/")
    frames = [f["name"] for f in speedscope["shared"]["frames"]]
    assert "busy_work" in frames or any("genexpr" in f for f in frames), "the event loop's work was sampled"
    assert html.headers["content-type"].startswith("text/html")
    assert "busy-work" in tasks.text
    window = json.loads(heap.text)
    assert 1 <= len(window["top_allocations"]) <= 5, "the window saw the busy work allocate"
    assert window["traced_seconds"] == 1
    assert not tracing_after_heap, "tracemalloc runs only during the window: it slows every allocation"
    assert bad.status_code == 400


async def test_the_debug_port_stays_closed_unless_enabled() -> None:
    assert await debug.start_server(settings.DebugSettings()) is None
