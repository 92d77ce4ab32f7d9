"""Process lifecycle: run the main coroutine on uvloop and turn SIGTERM/SIGINT into an orderly stop.

The first signal sets the stop event the main coroutine waits on; it then drains and returns an exit
code. A second signal while draining exits at once with 130, for an operator who will not wait.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable

import uvloop

from servicekit import logging

log = logging.get_logger(__name__)

Main = Callable[[asyncio.Event], Awaitable[int]]


def run(main: Main) -> int:
    """Run main(stop_event) to completion on uvloop; returns its exit code."""
    return uvloop.run(_with_signals(main))


async def _with_signals(main: Main) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("second signal, exiting now", signal=signal.Signals(signum).name)
            os._exit(130)
        log.info("stopping", signal=signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    return await main(stop)
