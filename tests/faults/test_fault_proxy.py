"""The fault proxy, against a real echo server and a real PostgreSQL on loopback.

Each mode is shown doing to a live client what the module docstring promises, and the counters are
checked against what crossed the wire. Every wait is bounded; a wait for something that must not happen
(an answer through a blackhole) is a bounded read that must time out.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from urllib.parse import urlsplit

import asyncpg
import pytest

from sagaline.chaos.proxy import Direction, FaultProxy, Mode

pytestmark = pytest.mark.timeout(30)

SILENCE = 0.3  # how long a read must stay unanswered to count as "no answer"
MESSAGE = b"ping\n"


class EchoServer:
    """Echoes every byte back and remembers what it received, so tests can tell what reached it."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.address = ("127.0.0.1", 0)
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._echo, "127.0.0.1", 0)
        self.address = ("127.0.0.1", self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The proxy resets upstream connections in some modes: that ends the echo, it is not a failure.
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                self.received += data
                writer.write(data)
                await writer.drain()
        writer.close()


@pytest.fixture
async def echo() -> AsyncIterator[EchoServer]:
    server = EchoServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def proxy(echo: EchoServer) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(echo.address, seed=20240611) as started:
        yield started


class Client:
    """A raw TCP client of the proxy."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, proxy: FaultProxy) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def receive(self, size: int, within: float = 2.0) -> bytes:
        async with asyncio.timeout(within):
            return await self.reader.readexactly(size)

    async def round_trip(self, data: bytes = MESSAGE) -> bytes:
        await self.send(data)
        return await self.receive(len(data))

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    """Clients a test opens; closed at teardown."""
    opened: list[Client] = []
    yield opened
    for client in opened:
        client.close()


async def connect(proxy: FaultProxy, clients: list[Client]) -> Client:
    client = await Client.connect(proxy)
    clients.append(client)
    return client


async def eventually(condition: Callable[[], bool], within: float = 2.0) -> None:
    """Wait until condition() is true, bounded."""
    async with asyncio.timeout(within):
        while not condition():
            await asyncio.sleep(0.01)


# --- raw TCP, against the echo server ----------------------------------------------------------------


async def test_pass_forwards_both_ways_and_counts_the_bytes(
    proxy: FaultProxy, echo: EchoServer, clients: list[Client]
) -> None:
    client = await connect(proxy, clients)

    assert await client.round_trip() == MESSAGE

    assert echo.received == MESSAGE
    for counters in (proxy.totals, proxy.by_mode[Mode.PASS]):
        assert counters.accepted == 1
        assert counters.forwarded == {Direction.TO_SERVER: len(MESSAGE), Direction.TO_CLIENT: len(MESSAGE)}
        assert counters.dropped == {Direction.TO_SERVER: 0, Direction.TO_CLIENT: 0}


async def test_latency_delays_each_direction_of_an_existing_connection(
    proxy: FaultProxy, clients: list[Client]
) -> None:
    client = await connect(proxy, clients)
    await client.round_trip()
    await proxy.set_mode(Mode.LATENCY, delay_ms=100)

    started = time.monotonic()
    assert await client.round_trip() == MESSAGE
    elapsed = time.monotonic() - started

    assert elapsed >= 0.2  # 100 ms to the server, 100 ms back
    assert proxy.by_mode[Mode.LATENCY].forwarded == {
        Direction.TO_SERVER: len(MESSAGE),
        Direction.TO_CLIENT: len(MESSAGE),
    }


async def test_latency_with_jitter_keeps_the_byte_order(proxy: FaultProxy, clients: list[Client]) -> None:
    await proxy.set_mode(Mode.LATENCY, delay_ms=10, jitter_ms=40)
    client = await connect(proxy, clients)
    sent = b"".join(b"%03d;" % i for i in range(40))

    for i in range(0, len(sent), 4):
        await client.send(sent[i : i + 4])
        await asyncio.sleep(0.002)  # separate chunks, so that each gets its own delay draw

    assert await client.receive(len(sent), within=5) == sent


async def test_blackhole_swallows_requests_and_never_answers(
    proxy: FaultProxy, echo: EchoServer, clients: list[Client]
) -> None:
    client = await connect(proxy, clients)
    await proxy.set_mode(Mode.BLACKHOLE)

    await client.send(MESSAGE)

    with pytest.raises(TimeoutError):
        await client.receive(1, within=SILENCE)
    assert echo.received == b""
    assert proxy.by_mode[Mode.BLACKHOLE].dropped[Direction.TO_SERVER] == len(MESSAGE)


async def test_leaving_blackhole_resets_connections_that_lost_bytes_and_keeps_idle_ones(
    proxy: FaultProxy, clients: list[Client]
) -> None:
    lossy, idle = await connect(proxy, clients), await connect(proxy, clients)
    await proxy.set_mode(Mode.BLACKHOLE)
    await lossy.send(MESSAGE)
    await eventually(lambda: proxy.totals.dropped[Direction.TO_SERVER] == len(MESSAGE))

    await proxy.set_mode(Mode.PASS)

    with pytest.raises(ConnectionResetError):
        await lossy.round_trip()
    assert await idle.round_trip() == MESSAGE
    assert proxy.by_mode[Mode.PASS].reset == 1


async def test_drop_responses_delivers_requests_and_discards_answers(
    proxy: FaultProxy, echo: EchoServer, clients: list[Client]
) -> None:
    client = await connect(proxy, clients)
    await proxy.set_mode(Mode.DROP_RESPONSES)

    await client.send(MESSAGE)

    await eventually(lambda: echo.received == MESSAGE)
    with pytest.raises(TimeoutError):
        await client.receive(1, within=SILENCE)
    assert proxy.by_mode[Mode.DROP_RESPONSES].forwarded[Direction.TO_SERVER] == len(MESSAGE)
    assert proxy.by_mode[Mode.DROP_RESPONSES].dropped[Direction.TO_CLIENT] == len(MESSAGE)


async def test_reset_aborts_existing_connections_and_resets_new_ones_on_accept(
    proxy: FaultProxy, clients: list[Client]
) -> None:
    existing = await connect(proxy, clients)
    await existing.round_trip()

    await proxy.set_mode(Mode.RESET)
    new = await connect(proxy, clients)  # the kernel completes the handshake; the proxy then resets it

    for client in (existing, new):
        with pytest.raises(ConnectionResetError):
            await client.receive(1)
    assert proxy.by_mode[Mode.RESET].accepted == 1
    assert proxy.by_mode[Mode.RESET].reset == 2


async def test_down_refuses_new_connections_closes_existing_ones_and_recovers_on_the_same_port(
    proxy: FaultProxy, clients: list[Client]
) -> None:
    existing = await connect(proxy, clients)
    await existing.round_trip()
    port = proxy.port

    await proxy.set_mode(Mode.DOWN)

    async with asyncio.timeout(2):
        assert await existing.reader.read(1) == b""  # a FIN, not a reset
    with pytest.raises(ConnectionRefusedError):
        await Client.connect(proxy)
    assert proxy.by_mode[Mode.DOWN].closed == 1

    await proxy.set_mode(Mode.PASS)
    assert proxy.port == port
    assert await (await connect(proxy, clients)).round_trip() == MESSAGE


async def test_an_upstream_that_refuses_resets_the_client(clients: list[Client]) -> None:
    with socket_bound_but_not_listening() as port:
        async with FaultProxy(("127.0.0.1", port), seed=1) as proxy:
            client = await connect(proxy, clients)
            with pytest.raises(ConnectionResetError):
                await client.receive(1)
            assert proxy.totals.reset == 1


async def test_latency_parameters_are_checked() -> None:
    proxy = FaultProxy(("127.0.0.1", 9), seed=1)

    with pytest.raises(ValueError, match="latency mode only"):
        await proxy.set_mode(Mode.BLACKHOLE, delay_ms=10)
    with pytest.raises(ValueError, match=">= 0"):
        await proxy.set_mode(Mode.LATENCY, delay_ms=-1)
    with pytest.raises(ValueError, match="'sideways' is not a valid Mode"):
        await proxy.set_mode("sideways")
    assert proxy.mode is Mode.PASS


@contextlib.contextmanager
def socket_bound_but_not_listening() -> Iterator[int]:
    """A loopback port that refuses connections and that no other test can take meanwhile."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


# --- PostgreSQL through the proxy ----------------------------------------------------------------------


RUNNING = "SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND state = 'active' AND query LIKE 'SELECT pg_sleep%'"


@pytest.fixture
async def pg_proxy(pg_server: str) -> AsyncIterator[FaultProxy]:
    parts = urlsplit(pg_server)
    if not parts.hostname or parts.hostname.startswith("/"):
        pytest.skip("the PostgreSQL server listens on a Unix socket only; the proxy speaks TCP")
    async with FaultProxy((parts.hostname, parts.port or 5432), seed=20240611) as started:
        yield started


@pytest.fixture
async def table(pg_server: str) -> AsyncIterator[str]:
    """A uniquely named table in the admin database, dropped afterwards."""
    name = f"fault_proxy_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    direct = await asyncpg.connect(pg_server)
    try:
        await direct.execute(f"CREATE TABLE {name} (id uuid PRIMARY KEY)")
        yield name
        await direct.execute(f"DROP TABLE IF EXISTS {name}")
    finally:
        await direct.close()


@pytest.fixture
async def through(pg_server: str, pg_proxy: FaultProxy) -> AsyncIterator[asyncpg.Connection]:
    """A PostgreSQL connection through the proxy, opened in pass mode; terminated afterwards."""
    connection = await asyncpg.connect(pg_server, host="127.0.0.1", port=pg_proxy.port, timeout=5)
    yield connection
    connection.terminate()


async def test_postgres_queries_pass_through(through: asyncpg.Connection, pg_proxy: FaultProxy) -> None:
    assert await through.fetchval("SELECT 41 + 1", timeout=2) == 42
    assert pg_proxy.totals.accepted == 1
    assert pg_proxy.totals.forwarded[Direction.TO_CLIENT] > 0


async def test_postgres_latency_adds_at_least_the_delay(through: asyncpg.Connection, pg_proxy: FaultProxy) -> None:
    await pg_proxy.set_mode(Mode.LATENCY, delay_ms=100)

    started = time.monotonic()
    assert await through.fetchval("SELECT 1", timeout=2) == 1

    assert time.monotonic() - started >= 0.2  # the query out and its answer back, 100 ms each


async def test_postgres_query_times_out_in_a_blackhole(through: asyncpg.Connection, pg_proxy: FaultProxy) -> None:
    await pg_proxy.set_mode(Mode.BLACKHOLE)

    with pytest.raises(TimeoutError):
        await through.fetchval("SELECT 1", timeout=0.5)
    assert pg_proxy.by_mode[Mode.BLACKHOLE].dropped[Direction.TO_SERVER] > 0


async def test_postgres_reset_fails_the_query_in_flight_and_new_connections(
    pg_server: str, through: asyncpg.Connection, pg_proxy: FaultProxy
) -> None:
    direct = await asyncpg.connect(pg_server)
    try:
        backend = through.get_server_pid()
        query = asyncio.create_task(through.fetchval("SELECT pg_sleep(10)"))
        async with asyncio.timeout(2):  # the reset must interrupt the query mid-flight, so wait till it runs
            while await direct.fetchval(RUNNING, backend) is None:
                await asyncio.sleep(0.01)

        await pg_proxy.set_mode(Mode.RESET)

        with pytest.raises(asyncpg.ConnectionDoesNotExistError):
            await asyncio.wait_for(query, 2)
        with pytest.raises(ConnectionResetError):
            await asyncpg.connect(pg_server, host="127.0.0.1", port=pg_proxy.port, timeout=2)
    finally:
        # The server notices a vanished client only when it next writes: end the sleeping backend now.
        await direct.execute("SELECT pg_terminate_backend($1)", backend)
        await direct.close()


async def test_postgres_connections_are_refused_while_down(pg_server: str, pg_proxy: FaultProxy) -> None:
    await pg_proxy.set_mode(Mode.DOWN)

    with pytest.raises(ConnectionRefusedError):
        await asyncpg.connect(pg_server, host="127.0.0.1", port=pg_proxy.port, timeout=2)


async def test_postgres_insert_commits_at_the_server_while_its_answer_is_lost(
    pg_server: str, through: asyncpg.Connection, pg_proxy: FaultProxy, table: str
) -> None:
    row = uuid.uuid4()
    await pg_proxy.set_mode(Mode.DROP_RESPONSES)

    with pytest.raises(TimeoutError):
        await through.execute(f"INSERT INTO {table} (id) VALUES ('{row}')", timeout=0.5)

    direct = await asyncpg.connect(pg_server)
    try:
        async with asyncio.timeout(2):  # committed by the server on its own time: wait for it, bounded
            while await direct.fetchval(f"SELECT count(*) FROM {table} WHERE id = $1", row) != 1:
                await asyncio.sleep(0.01)
    finally:
        await direct.close()
    assert pg_proxy.by_mode[Mode.DROP_RESPONSES].dropped[Direction.TO_CLIENT] > 0
