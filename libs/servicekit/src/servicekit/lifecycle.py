"""Process lifecycle: run the main coroutine on uvloop and turn SIGTERM/SIGINT into an orderly stop.

The first signal sets the stop event the main coroutine waits on; it then drains and returns an exit
code. A second signal while draining exits at once with 130, for an operator who will not wait.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

import uvloop

from servicekit import debug, logging, settings, telemetry

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


S = TypeVar("S", bound=settings.ServiceSettings)
Serve = Callable[[S, asyncio.Event], Awaitable[int]]


def main(service: str, settings_cls: type[S], serve: Serve[S], *, log_name: Callable[[S], str] | None = None) -> int:
    """A service's process entry point: settings, logging, tracing, the debug port, then `serve` until a signal.

    Returns 2 on a bad configuration (printed to stderr, before logging exists), else serve's exit code.
    """
    try:
        loaded = settings.load(settings_cls)
    except settings.ConfigError as exc:
        sys.stderr.write(f"{service}: {exc}\n")
        return 2
    logging.configure(log_name(loaded) if log_name else service, loaded.log.level, loaded.log.format)
    telemetry.configure(service, loaded.telemetry)
    _freeze_what_was_loaded()
    try:
        return run(lambda stop: _with_debug_port(loaded, stop, serve))
    finally:
        telemetry.shutdown()


def _freeze_what_was_loaded() -> None:
    """Keep everything loaded so far (modules, classes, the frameworks' tables) out of garbage collections.

    Those objects live as long as the process; left in the collector's generations, every full
    collection walks all of them again (hundreds of thousands of objects after importing gRPC, FastAPI
    and OpenTelemetry), on the request path and at its tail latency.
    """
    gc.collect()
    gc.freeze()


async def _with_debug_port(loaded: S, stop: asyncio.Event, serve: Serve[S]) -> int:
    port = await debug.start_server(loaded.debug)
    try:
        return await serve(loaded, stop)
    finally:
        if port is not None:
            await port.stop()
