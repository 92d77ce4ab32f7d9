"""The fault battery's harness: a stack of real processes under load, faults on a clock, and the verdict.

A `Harness` runs one scenario on its own databases and ports: three participants and two orchestrators
under `stack.Supervisor` (which restarts what dies), optionally with a `FaultProxy` on every link from an
orchestrator to a participant and to PostgreSQL, and with every participant writing a call journal. A
`Load` starts sagas at a steady rate through the REST API, as a careful client would: the same
Idempotency-Key again on a 503, a reset or a timeout, on the other instance. When the scenario is done
the harness stops the load, waits for every accepted saga to end, and asks the oracle (`sagaline check`)
for its verdict, journal included.

What a scenario reports (`Result`): faults injected; sagas accepted; lost (accepted, not in the database);
stuck (not terminal by the end of the drain); FAILED (handed to a person); duplicated effects, stale-owner
writes and calls (oracle); 5xx answers other than 503; and recovery: for each fault window, the time from
the window's end until every saga then in flight had moved again (a new event in its history).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx

from sagaline import check, pg, stack
from sagaline.chaos.proxy import FaultProxy

ALICE: Final = "11111111-1111-4111-8111-111111111111"
TERMINAL: Final = ("COMPLETED", "COMPENSATED", "FAILED")

# Default ownership settings (lease 4 s, poll 0.5 s) are what the battery proves; only the shutdown grace
# and the restart delay are short, so a scenario's restarts fit in its time.
PROFILE: Final = {"SAGALINE_SHUTDOWN_GRACE": "5s"}


def order(customer: str = ALICE, sku: str = "SKU-WIDGET", price: str = "10.00") -> dict[str, Any]:
    """A start request for one happy order saga."""
    item = {"sku": sku, "quantity": 1, "unit_price": price}
    return {"saga_type": "order_saga", "payload": {"customer_id": customer, "items": [item], "currency": "USD"}}


@dataclass
class Result:
    """One scenario's line in the reliability table."""

    scenario: str
    seed: int
    faults: int = 0
    sagas: int = 0
    lost: int = 0
    stuck: int = 0
    failed: int = 0
    duplicated: int = 0
    stale_writes: int = 0
    stale_calls: int = 0
    http_5xx: int = 0
    http_503: int = 0
    recovery: list[float] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        """Zero in every loss column and no invariant violated."""
        losses = (self.lost, self.stuck, self.duplicated, self.stale_writes, self.stale_calls, self.http_5xx)
        return not any(losses) and not self.violations

    def recovery_quantile(self, q: float) -> float | None:
        """A quantile of the recovery times (None without fault windows)."""
        if not self.recovery:
            return None
        ordered = sorted(self.recovery)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Load:
    """Starts sagas at `rate` per second, each as a client that retries with its key until accepted."""

    def __init__(self, harness: Harness, rate: float, *, instances: list[int] | None = None) -> None:
        self._harness, self._rate = harness, rate
        self._instances = instances if instances is not None else list(range(len(harness.topology.orchestrator_ports)))
        self._rng = random.Random(harness.seed)  # noqa: S311 - a reproducible schedule, not security
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self.accepted: list[str] = []
        self.refused: list[str] = []

    def start(self) -> None:
        """Begin starting sagas in the background."""
        self._runner = asyncio.create_task(self._run(), name="chaos-load")

    async def stop(self) -> None:
        """Stop starting new sagas and let every client finish its retries."""
        self._stop.set()
        if self._runner is not None:
            await self._runner
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=5.0) as client:
            while not self._stop.is_set():
                task = asyncio.create_task(self._one(client, self._harness.extra_body()))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self._rng.expovariate(self._rate))

    async def _one(self, client: httpx.AsyncClient, body: dict[str, Any]) -> None:
        key, first = str(uuid.uuid4()), self._rng.randrange(len(self._instances))
        for attempt in range(120):
            url = self._harness.topology.orchestrator_url(self._instances[(first + attempt) % len(self._instances)])
            try:
                response = await client.post(f"{url}/v1/sagas", json=body, headers={"Idempotency-Key": key})
            except httpx.HTTPError:
                await asyncio.sleep(0.25)
                continue
            if response.status_code in (200, 202):
                self.accepted.append(response.json()["id"])
                return
            if response.status_code == 503:
                self._harness.result.http_503 += 1
            elif response.status_code >= 500:
                self._harness.result.http_5xx += 1
                self._harness.result.violations.append(f"POST /v1/sagas answered {response.status_code}")
            else:
                self.refused.append(f"{response.status_code} {response.text[:200]}")
                return
            await asyncio.sleep(0.25)
        self.refused.append(f"key {key}: not accepted after 120 tries")


class Harness:
    """One scenario's stack, load, faults and verdict (an async context manager)."""

    def __init__(
        self,
        pg_server: str,
        scenario: str,
        *,
        seed: int,
        env: Mapping[str, str] | None = None,
        orchestrator_env: list[dict[str, str]] | None = None,
        service_env: Mapping[str, dict[str, str]] | None = None,
        participant_proxies: bool = False,
        database_proxies: bool = False,
    ) -> None:
        """Prepare (not start) the scenario; `seed` drives every random choice it makes."""
        self.pg_server, self.seed = pg_server, seed
        self.rng = random.Random(seed)  # noqa: S311 - a reproducible schedule, not security
        self.result = Result(scenario, seed)
        prefix = f"chaos_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.topology = stack.Topology.ephemeral(pg_server, prefix)
        self.journal = tempfile.mkdtemp(prefix="sagaline-journal-")
        self.log = io.StringIO()
        self._env = {**PROFILE, "SAGALINE_CALL_JOURNAL": self.journal, **(env or {})}
        self._orchestrator_env, self._service_env = orchestrator_env or [], service_env or {}
        self._want_participant_proxies, self._want_database_proxies = participant_proxies, database_proxies
        self.participant_proxies: dict[tuple[int, str], FaultProxy] = {}
        self.database_proxies: dict[int, FaultProxy] = {}
        self.windows: list[tuple[float, float]] = []
        self.supervisor: stack.Supervisor | None = None
        self.body = order()
        self._started = time.monotonic()

    def extra_body(self) -> dict[str, Any]:
        """The start request the load sends (a scenario may swap it)."""
        return self.body

    async def __aenter__(self) -> Harness:
        """Create the databases, the proxies and the processes, and wait until all are ready."""
        await stack.prepare(self.topology, out=io.StringIO())
        supervisor = stack.Supervisor(
            self.topology, extra_env=self._env, restart_delay=0.3, out=self.log, log_format="json"
        )
        for index, overrides in enumerate(self._orchestrator_env):
            supervisor.children[f"orchestrator-{index + 1}"].env.update(overrides)
        for service, overrides in self._service_env.items():
            supervisor.children[service].env.update(overrides)
        if self._want_participant_proxies:
            await self._proxy_participants(supervisor)
        if self._want_database_proxies:
            await self._proxy_databases(supervisor)
        self.supervisor = supervisor
        try:
            await supervisor.start(ready_timeout=60)
        except (TimeoutError, OSError) as exc:
            raise RuntimeError(f"the stack did not start: {exc!r}\n{self.log.getvalue()[-3000:]}") from exc
        return self

    async def _proxy_participants(self, supervisor: stack.Supervisor) -> None:
        for index in range(len(self.topology.orchestrator_ports)):
            for service in stack.SERVICES:
                proxy = FaultProxy((self.topology.host, self.topology.grpc_ports[service]), seed=self.seed)
                port = await proxy.start()
                self.participant_proxies[(index, service)] = proxy
                env = supervisor.children[f"orchestrator-{index + 1}"].env
                env[f"SAGALINE_PARTICIPANTS__{service.upper()}"] = f"{self.topology.host}:{port}"

    async def _proxy_databases(self, supervisor: stack.Supervisor) -> None:
        parts = urlsplit(self.topology.url("saga_orchestrator"))
        if parts.hostname is None or parts.port is None:
            raise RuntimeError("database proxies need PostgreSQL on TCP (host:port in the URL)")
        for index in range(len(self.topology.orchestrator_ports)):
            proxy = FaultProxy((parts.hostname, parts.port), seed=self.seed)
            port = await proxy.start()
            self.database_proxies[index] = proxy
            netloc = parts.netloc.rsplit(":", 1)[0] + f":{port}"
            supervisor.children[f"orchestrator-{index + 1}"].env["SAGALINE_DATABASE__URL"] = urlunsplit(
                parts._replace(netloc=netloc)
            )

    async def __aexit__(self, *_: object) -> None:
        """Stop the processes and proxies, drop the databases, remove the journal."""
        if self.supervisor is not None:
            await self.supervisor.stop()
        for proxy in [*self.participant_proxies.values(), *self.database_proxies.values()]:
            await proxy.stop()
        for name in self.topology.databases.values():
            await pg.drop_database(self.pg_server, name)
        shutil.rmtree(self.journal, ignore_errors=True)

    # -- faults ----------------------------------------------------------------------------------------

    def fault(self, count: int = 1) -> None:
        """Count injected faults."""
        self.result.faults += count

    @contextlib.asynccontextmanager
    async def window(self) -> AsyncIterator[None]:
        """A fault window: recovery is measured from its end (wall clock, as the database's on this host)."""
        started = time.time()
        try:
            yield
        finally:
            self.windows.append((started, time.time()))

    def signal(self, name: str, signum: int) -> None:
        """Send a signal to one child (counted as a fault)."""
        assert self.supervisor is not None  # noqa: S101 - entered
        with contextlib.suppress(ProcessLookupError):
            self.supervisor.signal(name, signum)
        self.fault()

    async def wait_healthy(self, name: str, within: float = 30.0) -> None:
        """Wait until a (restarted) child answers its probe."""
        assert self.supervisor is not None  # noqa: S101 - entered
        await self.supervisor.wait_healthy(name, within)

    async def sql(self, role: str, query: str, *args: Any) -> list[asyncpg.Record]:
        """Run one statement on a database of the stack, outside of it (the harness's own connection)."""
        conn = await asyncpg.connect(self.topology.url(role))
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    async def admin(self, query: str, *args: Any) -> list[asyncpg.Record]:
        """Run one statement on the server's admin database."""
        conn = await asyncpg.connect(self.pg_server)
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    # -- the verdict -----------------------------------------------------------------------------------

    async def finish(self, load: Load, drain: float = 90.0) -> Result:
        """Stop the load, wait for every accepted saga to end, and judge the run."""
        await load.stop()
        self.result.sagas = len(load.accepted)
        if load.refused:
            self.result.violations += [f"start refused: {r}" for r in load.refused[:5]]
        ids = [uuid.UUID(i) for i in load.accepted]
        await self.terminal_within(ids, drain)
        rows = await self.sql("saga_orchestrator", "SELECT id, status FROM sagas WHERE id = ANY($1::uuid[])", ids)
        found = {r["id"]: r["status"] for r in rows}
        self.result.lost = sum(1 for i in ids if i not in found)
        self.result.stuck = sum(1 for s in found.values() if s not in TERMINAL)
        self.result.failed = sum(1 for s in found.values() if s == "FAILED")
        await self._judge()
        self.result.recovery = await self._recovery()
        self.result.seconds = time.monotonic() - self._started
        return self.result

    async def terminal_within(self, ids: list[uuid.UUID], within: float) -> float:
        """Seconds until every one of `ids` is terminal, polled every 100 ms; infinity past `within`."""
        started = time.monotonic()
        while time.monotonic() - started < within:
            rows = await self.sql(
                "saga_orchestrator",
                "SELECT count(*) AS n FROM sagas WHERE id = ANY($1::uuid[]) AND status <> ALL($2::text[])",
                ids,
                list(TERMINAL),
            )
            if rows[0]["n"] == 0:
                return time.monotonic() - started
            await asyncio.sleep(0.1)
        return float("inf")

    async def _judge(self) -> None:
        urls = {role: self.topology.url(role) for role in pg.DATABASES}
        report = await check.run(urls, journal=self.journal)
        self.result.stale_calls = report.stale_calls
        for violation in report.violations:
            if "applied twice" in violation or "twice" in violation:
                self.result.duplicated += 1
            elif "fencing token decreased" in violation:
                self.result.stale_writes += 1
            elif "fence" in violation and "took over" in violation:
                continue  # counted in stale_calls
            else:
                self.result.violations.append(violation)
        reasons = dict(report.failed)
        self.result.notes += [f"{line} (reason: {reasons.get(line.split()[2].rstrip(':'), '?')})"
                              for line in report.needs_person[:5]]  # fmt: skip

    async def _recovery(self) -> list[float]:
        """Per fault window: seconds from its end until every saga in flight then had moved again."""
        times = []
        for _, ended in self.windows:
            at = datetime.fromtimestamp(ended, UTC)
            rows = await self.sql(
                "saga_orchestrator",
                """SELECT s.id, (SELECT min(e.created_at) FROM saga_events e
                                 WHERE e.saga_id = s.id AND e.created_at > $1) AS moved
                   FROM sagas s
                   WHERE s.created_at <= $1 AND (s.finished_at IS NULL OR s.finished_at > $1)""",
                at,
            )
            moved = [(r["moved"] - at).total_seconds() for r in rows if r["moved"] is not None]
            if rows:
                times.append(max(moved) if len(moved) == len(rows) else float("inf"))
        return times
