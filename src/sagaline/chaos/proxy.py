"""A TCP proxy that injects network faults between a client and its server, switchable while traffic flows.

Placed between an orchestrator and a participant (gRPC over HTTP/2) or between a service and PostgreSQL,
it forwards bytes both ways until told to misbehave::

    proxy = FaultProxy(("127.0.0.1", 5432), seed=7)
    port = await proxy.start()  # point the client at 127.0.0.1:port
    await proxy.set_mode(Mode.LATENCY, delay_ms=200, jitter_ms=50)
    await proxy.set_mode(Mode.BLACKHOLE)
    await proxy.stop()

The modes, and what each does to the connections that exist when it is set and to new ones:

- `pass`: forward both ways.
- `latency`: forward both ways, each chunk delivered `delay ± jitter` after it was read. Delivery is
  pipelined and in order (a chunk with a short draw waits behind an earlier one), so this is latency, not
  a bandwidth limit.
- `blackhole`: accept, connect upstream, then read both sides and discard everything, FINs included: the
  client sees a connection that swallows its requests and never answers, as in a network partition.
- `drop_responses`: forward client->server, discard server->client: the request reaches the server and
  takes effect, the answer is lost. The fault that idempotency keys exist for.
- `reset`: abort every existing connection, both sides, with a TCP RST (SO_LINGER 0), and reset new ones
  as soon as they are accepted.
- `down`: stop listening, so the kernel refuses new connections (ECONNREFUSED, as with a dead process),
  and close existing ones with a FIN. Leaving `down` listens again on the same port.

A stream with a hole cannot resume: TCP would have retransmitted what a partition held up, but this proxy
discarded it, and forwarding later bytes would hand the peer a corrupt stream. So switching to a mode that
forwards a direction in which a connection lost bytes (or its FIN) resets that connection. Connections
that stayed idle through the fault carry on, as they would after a real partition heals.

Counters: `totals`, and `by_mode[mode]` where each event counts under the mode in force when it happened (a
connection under the mode at accept, a chunk under the mode when it was read). Jitter is drawn from
`random.Random(seed)`; `seed` is kept so a run can be replayed.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import socket
import struct
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Final, Self

from servicekit import logging

log = logging.get_logger(__name__)

_CHUNK: Final = 64 * 1024
# Chunks in flight per direction; past it the pump stops reading and TCP backpressure reaches the sender.
_PIPE_CHUNKS: Final = 16
# SO_LINGER on with a zero timeout: closing the socket sends RST and discards unsent data.
_LINGER_RESET: Final = struct.pack("ii", 1, 0)


class Mode(StrEnum):
    """What the proxy does to traffic; see the module docstring."""

    PASS = "pass"  # noqa: S105 - a mode, not a password
    LATENCY = "latency"
    BLACKHOLE = "blackhole"
    DROP_RESPONSES = "drop_responses"
    RESET = "reset"
    DOWN = "down"


class Direction(StrEnum):
    """A direction of one proxied connection."""

    TO_SERVER = "to_server"
    TO_CLIENT = "to_client"


_BOTH: Final = frozenset(Direction)
# The directions whose bytes each mode forwards; the others are read and discarded.
_FORWARDED: Final[dict[Mode, frozenset[Direction]]] = {
    Mode.PASS: _BOTH,
    Mode.LATENCY: _BOTH,
    Mode.BLACKHOLE: frozenset(),
    Mode.DROP_RESPONSES: frozenset({Direction.TO_SERVER}),
    Mode.RESET: frozenset(),
    Mode.DOWN: frozenset(),
}


def _per_direction() -> dict[Direction, int]:
    return dict.fromkeys(Direction, 0)


@dataclass
class Counters:
    """What the proxy did: connections, and bytes per direction.

    Attributes:
        accepted: client connections accepted, including those reset or closed at once.
        reset: connections the proxy aborted with RST: in reset mode, on a heal after lost bytes, or
            passing on an upstream's refusal or either side's reset.
        closed: connections the proxy closed with a FIN (down, stop).
        forwarded: bytes read and passed on, per direction.
        dropped: bytes read and discarded, per direction.
    """

    accepted: int = 0
    reset: int = 0
    closed: int = 0
    forwarded: dict[Direction, int] = field(default_factory=_per_direction)
    dropped: dict[Direction, int] = field(default_factory=_per_direction)


@dataclass(eq=False)
class _Connection:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    lost: set[Direction] = field(default_factory=set)  # directions in which bytes or the FIN were discarded

    def writers(self) -> list[asyncio.StreamWriter]:
        return [self.client] if self.upstream is None else [self.client, self.upstream]


class FaultProxy:
    """A TCP proxy on `host:port` in front of `upstream`, its fault `mode` switchable at any time.

    Not thread-safe: use it from the event loop that started it.
    """

    def __init__(
        self, upstream: tuple[str, int], *, seed: int | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        """Prepare a proxy; nothing listens before `start`.

        Args:
            upstream: the server's (host, port).
            seed: seeds the jitter draws; None draws one, kept in `seed` for replay.
            host: the address to listen on.
            port: the port to listen on; 0 for an ephemeral one.
        """
        self.upstream = upstream
        self.host = host
        self.seed = secrets.randbits(32) if seed is None else seed
        self.totals = Counters()
        self.by_mode = {mode: Counters() for mode in Mode}
        self._port = port
        self._rand = random.Random(self.seed)  # noqa: S311 - replayable jitter, not secrets
        self._mode = Mode.PASS
        self._delay = self._jitter = 0.0
        self._running = False
        self._server: asyncio.Server | None = None
        # Each connection's task; held here because the event loop keeps only weak references to tasks.
        self._connections: dict[_Connection, asyncio.Task[None]] = {}

    @property
    def port(self) -> int:
        """The listening port: after `start`, the bound one, kept across `down`."""
        return self._port

    @property
    def mode(self) -> Mode:
        """The mode in force."""
        return self._mode

    async def start(self) -> int:
        """Listen (unless the mode is `down`, which still binds once to learn the port); returns the port."""
        if self._running:
            raise RuntimeError("fault proxy already started")
        self._running = True
        await self._listen()
        if self._mode is Mode.DOWN:
            await self._go_quiet()
        log.info("fault proxy started", port=self._port, upstream=self.upstream, mode=self._mode, seed=self.seed)
        return self._port

    async def stop(self) -> None:
        """Stop listening and close every connection with a FIN; idempotent."""
        self._running = False
        await self._go_quiet()

    async def set_mode(self, mode: Mode | str, *, delay_ms: float = 0.0, jitter_ms: float = 0.0) -> None:
        """Switch to mode for new and existing connections; returns once existing ones are dealt with.

        Args:
            mode: the new mode.
            delay_ms: latency only: the delay added to each chunk, each way.
            jitter_ms: latency only: each chunk's delay is drawn uniformly from delay ± jitter (at least 0).

        Raises:
            ValueError: an unknown mode, a negative delay, or a delay given to a mode other than latency.
        """
        mode = Mode(mode)
        _check_latency(mode, delay_ms, jitter_ms)
        # No await between the switch and choosing the victims: a pump never reads under the new mode
        # from a connection that is about to be ended for it.
        self._mode, self._delay, self._jitter = mode, delay_ms / 1000, jitter_ms / 1000
        log.info("fault proxy mode", port=self._port, mode=mode, delay_ms=delay_ms, jitter_ms=jitter_ms)
        if mode is Mode.DOWN:
            await self._go_quiet()
            return
        victims = [c for c in self._connections if mode is Mode.RESET or c.lost & _FORWARDED[mode]]
        await self._end_all(victims, reset=True)
        if self._running and self._server is None:
            await self._listen()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _listen(self) -> None:
        # asyncio sets SO_REUSEADDR, so leaving `down` can bind the port again despite TIME_WAIT sockets.
        self._server = await asyncio.start_server(self._accept, self.host, self._port)
        self._port = self._server.sockets[0].getsockname()[1]

    async def _go_quiet(self) -> None:
        """Stop listening and close every connection with a FIN (down, stop)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()  # first, so that nothing is accepted while the others are being closed
        await self._end_all(list(self._connections), reset=False)
        if server is not None:
            await server.wait_closed()  # after the connections end: from Python 3.12 it waits for them

    def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        # A plain callback rather than a coroutine, so that the task is created, and held, by the proxy.
        connection, mode = _Connection(client_writer), self._mode
        for counters in self._counters(mode):
            counters.accepted += 1
        if mode in (Mode.RESET, Mode.DOWN):  # DOWN: accepted just before the listener closed
            self._shut(connection, reset=mode is Mode.RESET)
        else:
            self._connections[connection] = asyncio.create_task(self._serve(connection, client_reader))

    async def _serve(self, connection: _Connection, client_reader: asyncio.StreamReader) -> None:
        try:
            upstream_reader, connection.upstream = await asyncio.open_connection(*self.upstream)
            async with asyncio.TaskGroup() as pumps:
                pumps.create_task(self._pump(connection, Direction.TO_SERVER, client_reader, connection.upstream))
                pumps.create_task(self._pump(connection, Direction.TO_CLIENT, upstream_reader, connection.client))
        except* OSError:
            # The upstream refused, or one side reset: reset the other too, as the lost peer would have.
            if connection in self._connections:
                self._end(connection, reset=True)
        finally:
            self._connections.pop(connection, None)
            for writer in connection.writers():
                writer.close()

    async def _pump(
        self, connection: _Connection, direction: Direction, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Move one direction: read each chunk, then forward it (after any latency) or discard it, per the mode."""
        pipe: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue(_PIPE_CHUNKS)
        loop = asyncio.get_running_loop()
        async with asyncio.TaskGroup() as delivery:
            delivery.create_task(_deliver(pipe, writer))
            while chunk := await reader.read(_CHUNK):
                mode = self._mode
                forward = direction in _FORWARDED[mode]
                for counters in self._counters(mode):
                    (counters.forwarded if forward else counters.dropped)[direction] += len(chunk)
                if forward:
                    await pipe.put((loop.time() + self._latency(mode), chunk))
                else:
                    connection.lost.add(direction)
            # End of stream: pass the FIN on only while this direction flows, else it is lost like a byte.
            if direction in _FORWARDED[self._mode]:
                await pipe.put((loop.time() + self._latency(self._mode), b""))
            else:
                connection.lost.add(direction)
                await pipe.put((0.0, None))

    def _latency(self, mode: Mode) -> float:
        if mode is not Mode.LATENCY:
            return 0.0
        jitter = self._rand.uniform(-self._jitter, self._jitter) if self._jitter else 0.0
        return max(0.0, self._delay + jitter)

    def _end(self, connection: _Connection, *, reset: bool) -> asyncio.Task[None]:
        """Take a live connection out of service and shut it; returns its task, not yet cancelled."""
        task = self._connections.pop(connection)
        self._shut(connection, reset=reset)
        return task

    def _shut(self, connection: _Connection, *, reset: bool) -> None:
        """Reset or close both sides of a connection, and count it."""
        for writer in connection.writers():
            if reset:
                _reset(writer)
            else:
                writer.close()
        for counters in self._counters(self._mode):
            if reset:
                counters.reset += 1
            else:
                counters.closed += 1

    async def _end_all(self, connections: list[_Connection], *, reset: bool) -> None:
        tasks = [self._end(connection, reset=reset) for connection in connections]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    def _counters(self, mode: Mode) -> tuple[Counters, Counters]:
        return self.totals, self.by_mode[mode]


async def _deliver(pipe: asyncio.Queue[tuple[float, bytes | None]], writer: asyncio.StreamWriter) -> None:
    """Write each piped chunk at its due time, in order; b"" half-closes the writer, None just stops."""
    loop = asyncio.get_running_loop()
    while True:
        due, chunk = await pipe.get()
        if (wait := due - loop.time()) > 0:
            await asyncio.sleep(wait)
        if chunk is None:
            return
        if not chunk:
            if writer.can_write_eof():
                writer.write_eof()
            return
        writer.write(chunk)
        await writer.drain()


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.fileno() != -1:  # -1: the transport has already closed it
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    writer.transport.abort()


def _check_latency(mode: Mode, delay_ms: float, jitter_ms: float) -> None:
    if delay_ms < 0 or jitter_ms < 0:
        raise ValueError(f"delay_ms and jitter_ms must be >= 0, got {delay_ms} and {jitter_ms}")
    if mode is not Mode.LATENCY and (delay_ms or jitter_ms):
        raise ValueError(f"delay_ms and jitter_ms apply to the latency mode only, not to {mode}")
