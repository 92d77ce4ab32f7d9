"""`python -m inventory_service` as a real process: it serves, reports ready, and exits 0 on SIGTERM."""

import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from inventory_service import bootstrap
from sagaline.stack import free_port

MakeDatabase = Callable[[Path | None], Awaitable[str]]


async def wait_ready(url: str, process: asyncio.subprocess.Process) -> int:
    async with httpx.AsyncClient() as client:
        for _ in range(200):
            if process.returncode is not None:
                return 0
            try:
                response = await client.get(url)
            except httpx.TransportError:
                await asyncio.sleep(0.05)
                continue
            return response.status_code
    return 0


async def test_the_process_serves_until_sigterm_and_exits_cleanly(make_database: MakeDatabase) -> None:
    url = await make_database(bootstrap.MIGRATIONS_DIR)
    http_port = free_port()
    env = {
        **os.environ,
        "SAGALINE_INVENTORY_DATABASE__URL": url,
        "SAGALINE_INVENTORY_GRPC_HOST": "127.0.0.1",
        "SAGALINE_INVENTORY_GRPC_PORT": str(free_port()),
        "SAGALINE_INVENTORY_HTTP_HOST": "127.0.0.1",
        "SAGALINE_INVENTORY_HTTP_PORT": str(http_port),
        "OTEL_SDK_DISABLED": "true",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "inventory_service", env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        status = await wait_ready(f"http://127.0.0.1:{http_port}/readyz", process)
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 15)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert status == 200, stderr.decode()
    assert process.returncode == 0, stderr.decode()
    assert b"inventory service stopped" in stderr
