"""`python -m bench`: sagas/s, latency, durable commits, statements and CPU per saga against a stack started here.

Runs a serial phase (one client) and then N sagas with C closed-loop clients through the REST API of two
orchestrator instances (alternating): each client starts a saga, waits until the database shows it
terminal, and starts the next. The default mix is 90% happy and 10% payment declined; latency is accept
-> terminal on the database's clock (the creation's first event -> sagas.finished_at). Commits are measured as
deltas of pg_stat_wal.wal_sync (server-wide fsyncs), pg_stat_database.xact_commit (the four databases;
this also counts read-only transactions) and transaction ids assigned (durable commits). CPU is read
for every process of the stack and every PostgreSQL backend, less the driver's own polling backend. The
commit ceiling of the machine is measured in the same run with pgbench (one-row inserts, 32 clients).
`--fault` kill -9's one orchestrator mid-run (`--fault term` sends SIGTERM instead) and reports the
takeover time and `sagaline check`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import random
import re
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
import uvloop

from bench import client
from bench.profile import Profiles
from sagaline import check, pg, stack
from sagaline.otlp_sink import Sink

ALICE, BOB = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"
RESULTS = Path(__file__).resolve().parent / "results"


def body(declined: bool) -> dict[str, Any]:
    customer, price = (BOB, "500.00") if declined else (ALICE, "12.50")
    return {"saga_type": "order_saga",
            "payload": {"customer_id": customer, "currency": "USD",
                        "items": [{"sku": "SKU-WIDGET", "quantity": 1, "unit_price": price}]}}  # fmt: skip


async def counters(topology: stack.Topology) -> tuple[int, int, int]:
    """(WAL syncs, commits in the four databases, transaction ids assigned server-wide).

    A transaction id is assigned only to a transaction that writes, and every such commit is a durable
    one: the id delta counts durable commits exactly, where `xact_commit` also counts read-only ones and
    `wal_sync` depends on group commit and background flushes. Reading the id assigns one itself.
    """
    conn = await asyncpg.connect(topology.server_url)
    try:
        wal = await conn.fetchval("SELECT wal_sync FROM pg_stat_wal")
        commits = await conn.fetchval(
            "SELECT sum(xact_commit) FROM pg_stat_database WHERE datname = ANY($1::text[])",
            list(topology.databases.values()),
        )
        xid = await conn.fetchval("SELECT txid_current()")
        return int(wal), int(commits), int(xid)
    finally:
        await conn.close()


def cpu_seconds(supervisor: stack.Supervisor) -> dict[str, float]:
    """CPU seconds used so far by each live child process."""
    used = {}
    for name, child in supervisor.children.items():
        if child.process is not None and child.process.returncode is None:
            times = psutil.Process(child.process.pid).cpu_times()
            used[name] = times.user + times.system
    return used


def postgres_cpu_seconds() -> float:
    """CPU seconds used so far by every PostgreSQL process of this host (backends and background workers).

    Backends live as long as the pooled connections, so the delta over a phase is the server's cost of
    it; other databases' activity on the same server would count too (the benchmark runs alone).
    """
    used = 0.0
    for process in psutil.process_iter(["name", "cpu_times"]):
        if process.info["name"] in ("postgres", "postmaster") and process.info["cpu_times"] is not None:
            used += process.info["cpu_times"].user + process.info["cpu_times"].system
    return used


_QUERY_COUNT = re.compile(r'^db_query_duration_seconds_count\{operation="([a-z]+)"\} ([0-9.e+]+)$', re.M)


async def statements(supervisor: stack.Supervisor) -> dict[str, float]:
    """SQL statements run so far by each process, from its own `/metrics` (one database per process)."""
    topology = supervisor.topology
    urls = {f"orchestrator-{i + 1}": topology.orchestrator_url(i) for i in range(len(topology.orchestrator_ports))}
    urls |= {s: f"http://{topology.host}:{topology.http_ports[s]}" for s in stack.SERVICES}
    counts: dict[str, float] = {}
    async with httpx.AsyncClient(timeout=10) as scraper:
        for name, url in urls.items():
            text = (await scraper.get(f"{url}/metrics")).text
            counts[name] = sum(float(n) for op, n in _QUERY_COUNT.findall(text) if op not in ("begin", "commit"))
    return counts


def own_cpu_seconds() -> float:
    """CPU seconds used so far by this process: the load driver (and the span receiver when tracing)."""
    times = psutil.Process().cpu_times()
    return times.user + times.system


class Watcher:
    """Tells each client when its saga is terminal, from one connection polling the database every 5 ms.

    One shared poller instead of one per client keeps the driver's own load on PostgreSQL small; its
    backend's CPU is still measured (`backend_cpu_seconds`) and taken out of PostgreSQL's figure.
    """

    def __init__(self, topology: stack.Topology) -> None:
        self._topology = topology
        self._waiting: dict[uuid.UUID, asyncio.Future[None]] = {}
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Watcher:
        self._conn = await asyncpg.connect(self._topology.url("saga_orchestrator"))
        self._task = asyncio.create_task(self._poll())
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None:
            await self._conn.close()

    def backend_cpu_seconds(self) -> float:
        assert self._conn is not None  # noqa: S101 - entered
        times = psutil.Process(self._conn.get_server_pid()).cpu_times()
        return float(times.user + times.system)

    async def terminal(self, saga_id: str, within: float = 60) -> None:
        future = self._waiting.setdefault(uuid.UUID(saga_id), asyncio.get_running_loop().create_future())
        await asyncio.wait_for(future, within)

    async def _poll(self) -> None:
        assert self._conn is not None  # noqa: S101 - entered
        while True:
            if self._waiting:
                rows = await self._conn.fetch(
                    "SELECT id FROM sagas WHERE id = ANY($1::uuid[]) AND finished_at IS NOT NULL", list(self._waiting)
                )
                for row in rows:
                    future = self._waiting.pop(row["id"])
                    if not future.done():
                        future.set_result(None)
            await asyncio.sleep(0.005)


async def start(
    target: client.Client,
    payload: dict[str, Any],
    headers: dict[str, str],
    fallback: Callable[[], client.Client],
    retried: list[int],
) -> client.Response:
    """POST one start; a broken connection is retried twice with the same key, on `fallback()`.

    The connection broke under this request (the instance died, or a kept-alive connection was closed as it
    was reused): a client retries with the same key, on the surviving instance after a kill, and gets the
    saga already accepted (200) or a new one (202).
    """
    for attempt in range(3):
        try:
            return await target.post("/v1/sagas", payload, headers)
        except client.TransportError:
            if attempt == 2:
                raise
            retried.append(attempt)
            target = fallback()
    raise AssertionError("unreachable")  # pragma: no cover


async def drive(
    supervisor: stack.Supervisor,
    n: int,
    concurrency: int,
    decline: float,
    kill_at: int | None,
    fault_signal: int,
    watcher: Watcher,
) -> dict[str, Any]:
    """Closed loop: each of `concurrency` clients starts a saga, waits until it is terminal, starts the next."""
    topology = supervisor.topology
    clients = [client.Client(topology.orchestrator_url(i)) for i in range(2)]
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    ids: list[str] = []
    killed: dict[str, float] = {}
    retried: list[int] = []
    rng = random.Random(7)

    async def client_loop() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            if kill_at is not None and i == kill_at and not killed:
                supervisor.signal("orchestrator-1", fault_signal)
                killed["at"] = time.time()
            target = clients[1] if killed else clients[i % 2]
            payload, headers = body(rng.random() < decline), {"Idempotency-Key": str(uuid.uuid4())}

            def fallback(first: client.Client = target) -> client.Client:
                return clients[1] if killed else first

            response = await start(target, payload, headers, fallback, retried)
            if response.status_code not in (200, 202):
                raise RuntimeError(f"start failed: {response.status_code} {response.text}")
            ids.append(response.json()["id"])
            if not killed:  # after a kill, sagas wait for the takeover: keep the load going meanwhile
                await watcher.terminal(ids[-1])

    await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    for each in clients:
        await each.aclose()
    return {"ids": ids, "killed_at": killed.get("at"), "client_retries": len(retried)}


async def drive_open(supervisor: stack.Supervisor, n: int, rate: float, decline: float) -> dict[str, Any]:
    """Open loop: n starts at Poisson arrivals of `rate` per second, whatever the answers' pace (the queueing view)."""
    topology = supervisor.topology
    clients = [client.Client(topology.orchestrator_url(i)) for i in range(2)]
    rng = random.Random(11)
    ids: list[str] = []

    async def start(i: int) -> None:
        payload, headers = body(rng.random() < decline), {"Idempotency-Key": str(uuid.uuid4())}
        response = await clients[i % 2].post("/v1/sagas", payload, headers)
        if response.status_code not in (200, 202):
            raise RuntimeError(f"start failed: {response.status_code} {response.text}")
        ids.append(response.json()["id"])

    tasks = []
    due = time.monotonic()
    for i in range(n):
        due += rng.expovariate(rate)
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        tasks.append(asyncio.create_task(start(i)))
    await asyncio.gather(*tasks)
    for each in clients:
        await each.aclose()
    return {"ids": ids, "killed_at": None, "client_retries": 0}


async def wait_terminal(topology: stack.Topology, ids: list[str], within: float) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(topology.url("saga_orchestrator"))
    try:
        async with asyncio.timeout(within):
            while True:
                rows = await conn.fetch(
                    # Accepted when its creation committed: its first event's time, like finished_at on the
                    # database's clock (sagas.created_at is the accepting instance's reading of that clock).
                    "SELECT status, finished_at, (SELECT min(e.created_at) FROM saga_events e WHERE e.saga_id = s.id)"
                    " AS created_at FROM sagas s WHERE id = ANY($1::uuid[])",
                    [uuid.UUID(i) for i in ids],
                )
                if all(r["finished_at"] is not None for r in rows) and len(rows) == len(ids):
                    return list(rows)
                await asyncio.sleep(0.01)
    finally:
        await conn.close()


QUANTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


async def run_phase(
    supervisor: stack.Supervisor,
    n: int,
    c: int,
    decline: float,
    kill_at: int | None = None,
    fault_signal: int = signal.SIGKILL,
    profiles: Profiles | None = None,
    open_rate: float | None = None,
) -> dict[str, Any]:
    topology = supervisor.topology
    async with Watcher(topology) as watcher:
        wal0, commits0, xid0 = await counters(topology)
        cpu0, driver0, pg0 = cpu_seconds(supervisor), own_cpu_seconds(), postgres_cpu_seconds()
        watcher0 = watcher.backend_cpu_seconds()
        sql0 = await statements(supervisor) if kill_at is None else {}
        if profiles is not None:
            profiles.start()
        if open_rate is None:
            driven = await drive(supervisor, n, c, decline, kill_at, fault_signal, watcher)
        else:
            driven = await drive_open(supervisor, n, open_rate, decline)
        rows = await wait_terminal(topology, sorted(set(driven["ids"])), within=120)
        if profiles is not None:
            profiles.stop()
        wal1, commits1, xid1 = await counters(topology)
        cpu1, driver1, pg1 = cpu_seconds(supervisor), own_cpu_seconds(), postgres_cpu_seconds()
        pg1 -= watcher.backend_cpu_seconds() - watcher0  # the driver's own polling is not the system's cost
        sql1 = await statements(supervisor) if kill_at is None else {}
    latencies = [(r["finished_at"] - r["created_at"]).total_seconds() for r in rows]
    span = (max(r["finished_at"] for r in rows) - min(r["created_at"] for r in rows)).total_seconds()
    outcome: dict[str, int] = {}
    for r in rows:
        outcome[r["status"]] = outcome.get(r["status"], 0) + 1
    result = {
        "sagas": n, "concurrency": c, "outcomes": outcome, "client_retries": driven["client_retries"],
        "sagas_per_second": round(n / span, 1),
        "latency_ms": {q: round(percentile(latencies, v) * 1000, 1) for q, v in QUANTILES},
        "latencies_ms": sorted(round(v * 1000, 2) for v in latencies),
        "wal_sync_per_saga": round((wal1 - wal0) / n, 2),
        "durable_commits_per_saga": round((xid1 - xid0 - 1) / n, 2),
        "xact_commit_per_saga": round((commits1 - commits0) / n, 2),
        "cpu_seconds_per_saga": round(sum(cpu1[k] - cpu0[k] for k in cpu1 if k in cpu0) / n, 5),
        "cpu_ms_per_saga_by_process": {k: round((cpu1[k] - cpu0[k]) / n * 1000, 2) for k in cpu1 if k in cpu0},
        "postgres_cpu_ms_per_saga": round((pg1 - pg0) / n * 1000, 2),
        "total_cpu_ms_per_saga": round((sum(cpu1[k] - cpu0[k] for k in cpu1 if k in cpu0) + pg1 - pg0) / n * 1000, 2),
        "statements_per_saga_by_process": {k: round((sql1[k] - sql0[k]) / n, 2) for k in sql1 if k in sql0},
        "driver_cpu_ms_per_saga": round((driver1 - driver0) / n * 1000, 2),
    }  # fmt: skip
    if driven["killed_at"] is not None:
        result["killed"] = True
        result["takeover_seconds"] = await takeover_time(topology, driven["killed_at"])
    return result


async def takeover_time(topology: stack.Topology, killed_at: float) -> float | None:
    conn = await asyncpg.connect(topology.url("saga_orchestrator"))
    try:
        # New sagas start owned, so every lease acquisition after the signal is a takeover.
        first = await conn.fetchval(
            "SELECT min(created_at) FROM saga_events WHERE kind = 'lease_acquired' AND created_at > to_timestamp($1)",
            killed_at,
        )
    finally:
        await conn.close()
    return None if first is None else round(first.timestamp() - killed_at, 2)


def _pgbench_inserts(server_url: str, clients: int, seconds: int) -> tuple[float, float] | None:
    """pgbench one-row inserts (each its own durable commit) at `clients`: (commits/s, mean latency ms)."""
    name = f"bench_ceiling_{os.getpid()}"
    url = pg.with_database(server_url, name)
    uvloop.run(pg.create_database(server_url, name))
    try:
        subprocess.run(["psql", url, "-qc", "CREATE TABLE IF NOT EXISTS t (v int)"], check=True, capture_output=True)
        with tempfile.NamedTemporaryFile("w", suffix=".sql") as script:
            script.write("INSERT INTO t VALUES (1);\n")
            script.flush()
            out = subprocess.run(
                ["pgbench", "-n", "-c", str(clients), "-j", "2", "-T", str(seconds), "-f", script.name, url],
                check=True, capture_output=True, text=True,
            ).stdout  # fmt: skip
        tps, latency = re.search(r"tps = ([\d.]+)", out), re.search(r"latency average = ([\d.]+) ms", out)
        return (float(tps.group(1)), float(latency.group(1))) if tps and latency else None
    except (FileNotFoundError, subprocess.CalledProcessError):
        return None
    finally:
        uvloop.run(pg.drop_database(server_url, name))


def commit_ceiling(server_url: str, seconds: int = 5) -> float | None:
    """pgbench one-row inserts at 32 clients: the machine's durable commits per second."""
    measured = _pgbench_inserts(server_url, 32, seconds)
    return measured[0] if measured else None


def commit_latency(server_url: str, seconds: int = 3) -> float | None:
    """pgbench one-row inserts from one client: the milliseconds one durable commit takes, round trip included."""
    measured = _pgbench_inserts(server_url, 1, seconds)
    return measured[1] if measured else None


@contextlib.asynccontextmanager
async def running(args: argparse.Namespace, *, tracing: bool) -> AsyncIterator[tuple[stack.Supervisor, Sink]]:
    """A fresh stack (its own four databases) warmed up, with tracing as asked; everything removed after."""
    server_url, _ = pg.server_url()
    topology = stack.Topology.ephemeral(server_url, f"bench_{os.getpid()}_{uuid.uuid4().hex[:6]}")
    await stack.prepare(topology, out=io.StringIO())
    env = {"SAGALINE_LOG__LEVEL": "warning", "OTEL_SDK_DISABLED": "false" if tracing else "true"}
    sink = Sink(keep=False)
    if tracing:
        env["SAGALINE_TELEMETRY__SAMPLE_RATIO"] = str(args.sample_ratio)
    if tracing and not args.no_export:
        # Spans are exported for real, to a receiver in this process, so the cost measured includes export.
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = await sink.start()
        env["OTEL_EXPORTER_OTLP_INSECURE"] = "true"
    for service in stack.SERVICES:
        env[f"SAGALINE_{service.upper()}_LOG__LEVEL"] = "warning"
    if args.fault:
        env |= {"SAGALINE_OWNERSHIP__LEASE_TTL": "3s", "SAGALINE_OWNERSHIP__POLL_INTERVAL": "0.5s"}
    log = open(os.environ.get("BENCH_LOG", os.devnull), "w")  # noqa: SIM115, ASYNC230 - closed by the process exit
    supervisor = stack.Supervisor(topology, extra_env=env, out=log, restart_delay=1.0)
    try:
        await supervisor.start()
        await run_phase(supervisor, 50, 8, 0.0)  # warm-up: connections, caches
        yield supervisor, sink
    finally:
        await supervisor.stop()
        await sink.stop()
        for name in topology.databases.values():
            await pg.drop_database(server_url, name)


async def judge(supervisor: stack.Supervisor) -> str | list[str]:
    """`sagaline check` over the stack's databases: "OK" or the violations."""
    topology = supervisor.topology
    report = await check.run({role: topology.url(role) for role in pg.DATABASES})
    return "OK" if report.ok else report.violations


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    _, source = pg.server_url()
    async with running(args, tracing=not args.no_tracing) as (supervisor, sink):
        phases = {"c1": await run_phase(supervisor, args.serial, 1, args.decline)}
        kill_at = args.sagas // 2 if args.fault else None
        fault_signal = signal.SIGTERM if args.fault == "term" else signal.SIGKILL
        profiles = Profiles(supervisor, args.profile) if args.profile else None
        phases[f"c{args.concurrency}"] = await run_phase(
            supervisor, args.sagas, args.concurrency, args.decline, kill_at, fault_signal, profiles
        )
        verdict = await judge(supervisor)
    return {"postgres": source, "tracing": not args.no_tracing, "exported": not (args.no_tracing or args.no_export),
            "sample_ratio": args.sample_ratio,
            "spans_exported": sink.count,
            "fault": args.fault, "phases": phases,
            "check": verdict}  # fmt: skip


def arguments() -> argparse.ArgumentParser:
    """The benchmark's options (also the defaults other benchmark tools start from)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sagas", type=int, default=int(os.environ.get("BENCH_SAGAS", "1000")))
    parser.add_argument("--concurrency", type=int, default=int(os.environ.get("BENCH_CONCURRENCY", "16")))
    parser.add_argument("--serial", type=int, default=100, help="sagas in the concurrency-1 phase")
    parser.add_argument("--decline", type=float, default=0.10, help="share of payment-declined sagas")
    parser.add_argument(
        "--fault", nargs="?", const="kill", choices=["kill", "term"],
        help="kill -9 (or SIGTERM with 'term') one orchestrator mid-run and report the takeover time",
    )  # fmt: skip
    parser.add_argument("--no-tracing", action="store_true", help="OTEL_SDK_DISABLED=true in every process")
    parser.add_argument(
        "--no-export", action="store_true",
        help="tracing on but no OTLP endpoint: spans are made and dropped (isolates the cost of exporting them)",
    )  # fmt: skip
    parser.add_argument("--no-ceiling", action="store_true", help="skip the pgbench commit-ceiling measurement")
    parser.add_argument("--sample-ratio", type=float, default=1.0, help="share of sagas traced (head sampling)")
    parser.add_argument(
        "--profile", type=Path, metavar="DIR",
        help="py-spy every process during the loaded phase: DIR/<process>.txt (raw) and .summary.txt",
    )  # fmt: skip
    return parser


def main() -> None:
    args = arguments().parse_args()
    result = uvloop.run(bench(args))
    server_url, _ = pg.server_url()
    result["commit_ceiling_tps"] = None if args.no_ceiling else commit_ceiling(server_url)
    result["at"] = datetime.now(UTC).isoformat()
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(result, indent=2))
    print_table(result, path)


def print_table(result: dict[str, Any], path: Path) -> None:
    print(f"{'phase':<6} {'sagas/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'wal_sync/saga':>14} "
          f"{'commits/saga':>13} {'xact/saga':>10} {'cpu ms/saga':>12}  outcomes")  # fmt: skip
    for name, p in result["phases"].items():
        lat = p["latency_ms"]
        print(f"{name:<6} {p['sagas_per_second']:>8} {lat['p50']:>8} {lat['p95']:>8} {lat['p99']:>8} "
              f"{p['wal_sync_per_saga']:>14} {p['durable_commits_per_saga']:>13} {p['xact_commit_per_saga']:>10} "
              f"{p['total_cpu_ms_per_saga']:>12}  "
              f"{p['outcomes']}" + (f"  takeover {p.get('takeover_seconds')}s" if "killed" in p else ""))  # fmt: skip
    for name, p in result["phases"].items():
        by_process = {**p["cpu_ms_per_saga_by_process"], "postgres": p["postgres_cpu_ms_per_saga"]}
        print(f"{name:<6} CPU ms/saga: " + ", ".join(f"{k} {v}" for k, v in by_process.items()))
        if p.get("statements_per_saga_by_process"):
            print(f"{name:<6} SQL statements/saga (BEGIN/COMMIT excluded): "
                  + ", ".join(f"{k} {v}" for k, v in p["statements_per_saga_by_process"].items()))  # fmt: skip
    ceiling = result["commit_ceiling_tps"]
    print(
        f"commit ceiling (pgbench, 32 clients): {'skipped' if ceiling is None else f'{ceiling:.0f} commits/s'};"
        f" check: {result['check']}; tracing: {result['tracing']} ({result['spans_exported']} spans exported)"
    )
    print(f"written to {path}")


if __name__ == "__main__":
    main()
