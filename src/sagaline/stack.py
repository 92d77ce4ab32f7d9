"""The local process supervisor behind `sagaline up`, the end-to-end tests and the benchmark.

It prepares PostgreSQL (four databases, migrations, seed), then runs the three participant services
and N orchestrator instances as child processes with readable, prefixed logs. A child that dies is
reported and restarted after a short delay while the others keep running, so a user can `kill -9`
one orchestrator and watch the other take over. SIGTERM/SIGINT (or `stop`) stops every child
gracefully: SIGTERM, a grace period, then SIGKILL for any that will not go.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, TextIO

import httpx

from inventory_service import bootstrap as inventory
from orchestrator import bootstrap as orchestrator
from order_service import bootstrap as order
from payment_service import bootstrap as payment
from sagaline import pg

SERVICES: Final = ("order", "payment", "inventory")
# A directory `sagaline certs` wrote: with it every child speaks mutual TLS on the internal gRPC calls.
CERTS_DIR_ENV: Final = "SAGALINE_CERTS_DIR"
CLIENT_CERT: Final = "orchestrator"  # the name of the orchestrators' client certificate in that directory
_MIGRATE = {"saga_orchestrator": orchestrator.migrate, "order_service": order.migrate,
            "payment_service": payment.migrate, "inventory_service": inventory.migrate}  # fmt: skip
_SEED = {"order_service": order.seed, "payment_service": payment.seed, "inventory_service": inventory.seed}


_LISTEN_PORTS = range(20000, 32768)  # below Linux's default ephemeral range (32768-60999)
_ports = random.SystemRandom()  # independent of any seeded global generator
_handed_out: set[int] = set()  # never hand out one port twice in a process


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now, chosen outside the ephemeral range.

    A port the kernel hands out for `bind(0)` comes from the ephemeral range, which outgoing connections
    (to PostgreSQL, between the services) draw from too: between this check and the child's own bind,
    one of them can take it. Ports below that range are only ever taken by a listener.
    """
    for _ in range(100):
        port = _ports.choice(_LISTEN_PORTS)
        if port in _handed_out:
            continue  # free, but promised to a process not started yet
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            _handed_out.add(port)
            return port
    raise OSError("no free port found in 20000-32767")


@dataclass
class Topology:
    """Where everything lives: databases (by role) and ports."""

    server_url: str
    databases: dict[str, str] = field(default_factory=lambda: {d: d for d in pg.DATABASES})
    grpc_ports: dict[str, int] = field(default_factory=lambda: {"order": 50051, "payment": 50052, "inventory": 50053})
    http_ports: dict[str, int] = field(default_factory=lambda: {"order": 9101, "payment": 9102, "inventory": 9103})
    orchestrator_ports: list[int] = field(default_factory=lambda: [8080, 8081])
    # Used only when the debug port is enabled (SAGALINE_DEBUG__ENABLED=true); bound to 127.0.0.1.
    debug_ports: list[int] = field(default_factory=lambda: [6060, 6061])
    host: str = "127.0.0.1"
    # Where the orchestrators' REST listeners bind when not on `host`: `0.0.0.0` for a container whose
    # platform routes traffic to it (the Render free-plan blueprint). The participants stay on `host`.
    listen_host: str = ""

    @classmethod
    def ephemeral(cls, server_url: str, prefix: str, orchestrators: int = 2) -> Topology:
        """Unique databases and free ports, for tests and benchmarks beside a running `make up`."""
        return cls(
            server_url,
            databases={d: f"{prefix}_{d}" for d in pg.DATABASES},
            grpc_ports={s: free_port() for s in SERVICES},
            http_ports={s: free_port() for s in SERVICES},
            orchestrator_ports=[free_port() for _ in range(orchestrators)],
            debug_ports=[free_port() for _ in range(orchestrators)],
        )

    def url(self, role: str) -> str:
        """Connection URL of the database playing role (e.g. `payment_service`)."""
        return pg.with_database(self.server_url, self.databases[role])

    def orchestrator_url(self, index: int = 0) -> str:
        """Base URL of orchestrator instance index (0-based)."""
        return f"http://{self.host}:{self.orchestrator_ports[index]}"

    def service_env(self, service: str) -> dict[str, str]:
        """Environment of one participant service."""
        prefix = f"SAGALINE_{service.upper()}_"
        return {
            f"{prefix}DATABASE__URL": self.url(f"{service}_service"),
            f"{prefix}GRPC_PORT": str(self.grpc_ports[service]),
            f"{prefix}HTTP_PORT": str(self.http_ports[service]),
            f"{prefix}GRPC_HOST": self.host,
            f"{prefix}HTTP_HOST": self.host,
        }

    def orchestrator_env(self, index: int) -> dict[str, str]:
        """Environment of orchestrator instance index (0-based)."""
        env = {
            "SAGALINE_DATABASE__URL": self.url("saga_orchestrator"),
            "SAGALINE_INSTANCE": str(index + 1),
            "SAGALINE_HTTP_PORT": str(self.orchestrator_ports[index]),
            "SAGALINE_HTTP_HOST": self.listen_host or self.host,
            "SAGALINE_DEBUG__PORT": str(self.debug_ports[index]),
        }
        for service in SERVICES:
            env[f"SAGALINE_PARTICIPANTS__{service.upper()}"] = f"{self.host}:{self.grpc_ports[service]}"
        return env


def tls_env(certs_dir: str, process: str) -> dict[str, str]:
    """The TLS variables of one child (`orchestrator` or a participant) from the files `sagaline certs` wrote.

    Layout: `ca.crt` for everyone, `<participant>.crt`/`.key` (server certificates) and `orchestrator.crt`/
    `.key` (the client certificate every orchestrator instance presents).
    """
    directory = os.path.abspath(certs_dir)
    name = CLIENT_CERT if process == "orchestrator" else process
    prefix = "SAGALINE_TLS__" if process == "orchestrator" else f"SAGALINE_{process.upper()}_TLS__"
    return {
        f"{prefix}CERT_FILE": os.path.join(directory, f"{name}.crt"),
        f"{prefix}KEY_FILE": os.path.join(directory, f"{name}.key"),
        f"{prefix}CA_FILE": os.path.join(directory, "ca.crt"),
    }


async def prepare(topology: Topology, *, seed: bool = True, out: TextIO = sys.stdout) -> None:
    """Create the four databases if missing, migrate them, and seed the demo data."""
    for role, name in topology.databases.items():
        if await pg.create_database(topology.server_url, name):
            print(f"created database {name}", file=out)
        applied = await _MIGRATE[role](topology.url(role))
        if applied:
            print(f"migrated {name}: {applied}", file=out)
    if seed:
        for role, seeder in _SEED.items():
            for line in await seeder(topology.url(role)):
                print(f"seed {role}: {line}", file=out)


@dataclass
class Child:
    """One supervised process."""

    name: str
    module: str
    env: dict[str, str]
    health_url: str
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    exits: list[int] = field(default_factory=list)
    pump: asyncio.Task[None] | None = None


class Supervisor:
    """Runs children, restarts the ones that die, stops them all gracefully."""

    def __init__(
        self,
        topology: Topology,
        *,
        extra_env: Mapping[str, str] | None = None,
        restart_delay: float = 2.0,
        out: TextIO = sys.stdout,
        log_format: str = "console",
    ) -> None:
        """Prepare (not start) the children for topology.

        Local defaults, each overridable by the environment: auth off and gRPC reflection on, which is
        safe because every port binds to `topology.host` (loopback unless changed). With
        `SAGALINE_CERTS_DIR` (in extra_env or the environment) every child gets its TLS files from there.
        """
        base = {**os.environ, **(extra_env or {})}
        certs = base.get(CERTS_DIR_ENV)
        self.out, self._restart_delay, self.topology = out, restart_delay, topology
        self._stopping = False
        self.children: dict[str, Child] = {}
        for service in SERVICES:
            env = {**base, f"SAGALINE_{service.upper()}_LOG__FORMAT": log_format, **topology.service_env(service)}
            env.setdefault(f"SAGALINE_{service.upper()}_GRPC_REFLECTION", "true")
            env.update(tls_env(certs, service) if certs else {})
            url = f"http://{topology.host}:{topology.http_ports[service]}/readyz"
            self.children[service] = Child(service, f"{service}_service", env, url)
        for i in range(len(topology.orchestrator_ports)):
            env = {**base, "SAGALINE_LOG__FORMAT": log_format, **topology.orchestrator_env(i)}
            env.setdefault("SAGALINE_AUTH", "off")
            env.update(tls_env(certs, "orchestrator") if certs else {})
            name = f"orchestrator-{i + 1}"
            self.children[name] = Child(name, "orchestrator", env, f"{topology.orchestrator_url(i)}/livez")
        self._watchers: list[asyncio.Task[None]] = []

    async def start(self, ready_timeout: float = 30.0) -> None:
        """Start the services, wait for them, then the orchestrators, and wait for those."""
        services = [c for c in self.children.values() if c.module != "orchestrator"]
        orchestrators = [c for c in self.children.values() if c.module == "orchestrator"]
        for group in (services, orchestrators):
            for child in group:
                await self._spawn(child)
                self._watchers.append(asyncio.create_task(self._watch(child), name=f"watch:{child.name}"))
            await asyncio.gather(*(self.wait_healthy(c.name, ready_timeout) for c in group))

    async def _spawn(self, child: Child) -> None:
        child.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", child.module, env=child.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            # Its own session: a terminal's Ctrl-C reaches the supervisor only, which then stops each
            # child exactly once with SIGTERM (a second signal would make a child exit at once).
            start_new_session=True,
        )  # fmt: skip
        child.pump = asyncio.create_task(self._pump(child, child.process), name=f"pump:{child.name}")
        self._say(f"supervisor: started {child.name} (pid {child.process.pid})")

    async def _pump(self, child: Child, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None  # noqa: S101 - created with a pipe
        prefix = f"[{child.name}]".ljust(17)
        async for line in process.stdout:
            self._say(f"{prefix} {line.decode(errors='replace').rstrip()}")

    async def _watch(self, child: Child) -> None:
        while not self._stopping:
            assert child.process is not None  # noqa: S101 - spawned before watched
            code = await child.process.wait()
            child.exits.append(code)
            if child.pump is not None:
                await child.pump
            if self._stopping:
                return
            self._say(f"supervisor: {child.name} exited with {code}; restarting in {self._restart_delay:g}s")
            await asyncio.sleep(self._restart_delay)
            if self._stopping:
                return
            child.restarts += 1
            await self._spawn(child)

    def _say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    async def wait_healthy(self, name: str, within: float = 30.0) -> None:
        """Wait until the child's probe answers 200.

        Raises:
            TimeoutError: it did not within `within` seconds.
        """
        url = self.children[name].health_url
        async with httpx.AsyncClient(timeout=1.0) as client, asyncio.timeout(within):
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(url)).status_code == 200:
                        return
                await asyncio.sleep(0.1)

    def signal(self, name: str, signum: int) -> int:
        """Send signum to a child; returns its pid."""
        process = self.children[name].process
        assert process is not None  # noqa: S101 - started
        os.kill(process.pid, signum)
        return process.pid

    async def stop(self, grace: float = 15.0) -> dict[str, int | None]:
        """SIGTERM every child (orchestrators first), SIGKILL after grace; returns exit codes."""
        self._stopping = True
        ordered = sorted(self.children.values(), key=lambda c: c.module != "orchestrator")
        for child in ordered:
            if child.process is not None and child.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for child in ordered:
            if child.process is None:
                continue
            try:
                codes[child.name] = await asyncio.wait_for(child.process.wait(), grace)
            except TimeoutError:
                child.process.kill()
                codes[child.name] = await child.process.wait()
            if child.pump is not None:
                await child.pump
        for watcher in self._watchers:
            watcher.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        self._say(f"supervisor: stopped {codes}")
        return codes
