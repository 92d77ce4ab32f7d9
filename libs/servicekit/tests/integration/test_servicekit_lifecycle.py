"""Process lifecycle: SIGTERM stops a real process cleanly, a second signal exits at once."""

import asyncio
import gc
import os
import signal
import sys
from typing import Any

import pytest

from servicekit import lifecycle, settings

SERVICE = """
import asyncio, sys
from servicekit import lifecycle

async def main(stop: asyncio.Event) -> int:
    print("ready", flush=True)
    await stop.wait()
    print("draining", flush=True)
    if sys.argv[1] == "stuck":
        await asyncio.sleep(60)
    return int(sys.argv[2])

sys.exit(lifecycle.run(main))
"""


async def _start(mode: str, exit_code: int = 0) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVICE, mode, str(exit_code), stdout=asyncio.subprocess.PIPE
    )
    await _wait_for_line(process, "ready")
    return process


async def _wait_for_line(process: asyncio.subprocess.Process, expected: str) -> None:
    assert process.stdout is not None
    while True:
        line = await asyncio.wait_for(process.stdout.readline(), timeout=10)
        assert line, f"process exited before printing {expected!r}"
        if line.decode().strip() == expected:
            return


async def _exit_code(process: asyncio.subprocess.Process) -> int:
    try:
        return await asyncio.wait_for(process.wait(), timeout=5)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.mark.parametrize(
    ("signum", "code"),
    [
        pytest.param(signal.SIGTERM, 0, id="sigterm"),
        pytest.param(signal.SIGINT, 3, id="sigint-main-returns-3"),
    ],
)
async def test_a_signal_sets_the_stop_event_and_the_process_exits_with_mains_code(
    signum: signal.Signals, code: int
) -> None:
    process = await _start("clean", code)

    process.send_signal(signum)

    assert await _exit_code(process) == code


async def test_a_second_signal_while_draining_exits_at_once_with_130() -> None:
    process = await _start("stuck")
    process.send_signal(signal.SIGTERM)
    await _wait_for_line(process, "draining")

    process.send_signal(signal.SIGTERM)

    assert await _exit_code(process) == 130


def test_run_returns_the_exit_code_of_main_after_a_signal_in_process() -> None:
    seen: list[bool] = []

    async def main(stop: asyncio.Event) -> int:
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(stop.wait(), timeout=5)
        seen.append(stop.is_set())
        return 7

    # uvloop leaves its (closed) loop's handlers installed; restore ours so Ctrl-C still stops pytest.
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        assert lifecycle.run(main) == 7
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    assert seen == [True]


def test_main_keeps_what_was_loaded_before_serving_out_of_garbage_collections(monkeypatch: Any) -> None:
    # A full collection walks every tracked object; what was imported and configured before serving
    # lives as long as the process, so it is frozen out of them.
    frozen_when_serving: list[int] = []

    def run(_: Any) -> int:
        frozen_when_serving.append(gc.get_freeze_count())
        return 0

    monkeypatch.setattr(lifecycle, "run", run)
    monkeypatch.setattr(lifecycle.telemetry, "shutdown", lambda: None)
    try:
        assert lifecycle.main("frozen-test", settings.ServiceSettings, lambda *_: asyncio.sleep(0)) == 0
    finally:
        gc.unfreeze()
    assert frozen_when_serving[0] > 10_000
