"""The scenarios of the fault battery, each a function of (server, scale, seed) that returns its `Result`.

Every scenario runs under load on its own stack and ends with the oracle's verdict (see `harness`). The
scale says how long and how often; `QUICK` is the subset inside `make test`, `FULL` is `make chaos`.
Every random choice comes from the scenario's seed, which the report prints: a run is replayed by
passing the same seed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import asyncpg
import httpx

from sagaline.chaos.harness import Harness, Load, Result, order
from sagaline.chaos.proxy import Mode


@dataclass(frozen=True)
class Scale:
    """How much of each fault a scenario injects."""

    name: str
    seconds: float  # how long a continuous fault lasts
    kills: int  # kill -9s in the kill scenario
    rate: float  # sagas started per second
    rounds: int  # repetitions of a discrete fault
    takeover_goal: float  # seconds within which 300 sagas of a killed owner must all be terminal


QUICK: Final = Scale("quick", seconds=6.0, kills=5, rate=8.0, rounds=1, takeover_goal=15.0)
FULL: Final = Scale("full", seconds=30.0, kills=64, rate=12.0, rounds=4, takeover_goal=10.0)
LEASE: Final = 4.0  # the default lease the battery proves

Scenario = Callable[[str, Scale, int], Awaitable[Result]]
ORCHESTRATORS: Final = ("orchestrator-1", "orchestrator-2")


async def _under_load(h: Harness, scale: Scale, faults: Callable[[], Awaitable[None]], **load: Any) -> Result:
    running = Load(h, scale.rate, **load)
    running.start()
    await asyncio.sleep(1.0)  # traffic first, so every fault meets sagas in flight
    await faults()
    await asyncio.sleep(1.0)
    return await h.finish(running)


async def kill9(server: str, scale: Scale, seed: int) -> Result:
    """Kill -9 a random orchestrator again and again; the supervisor restarts it."""
    async with Harness(server, "kill -9 an orchestrator, repeatedly", seed=seed) as h:

        async def faults() -> None:
            for _ in range(scale.kills):
                victim = h.rng.choice(ORCHESTRATORS)
                async with h.window():
                    h.signal(victim, signal.SIGKILL)
                await asyncio.sleep(h.rng.uniform(0.3, 1.2))
                await h.wait_healthy(victim)

        return await _under_load(h, scale, faults)


async def takeover(server: str, scale: Scale, seed: int) -> Result:
    """Kill -9 the owner of 300 sagas in flight; the survivor must finish all of them within 10 s."""
    async with Harness(server, "kill -9 the owner of 300 sagas in flight", seed=seed) as h:
        h.signal("payment", signal.SIGSTOP)  # every saga accepted now waits in process_payment
        try:
            ids = await _accept(h, 300, instance=0)
            await asyncio.sleep(1.0)
        finally:
            async with h.window():
                h.signal("orchestrator-1", signal.SIGKILL)
                h.signal("payment", signal.SIGCONT)
        killed = time.time()
        load = Load(h, 0.0)
        load.accepted = ids
        elapsed = await h.terminal_within([uuid.UUID(i) for i in ids], 30.0)
        [row] = await h.sql(
            "saga_orchestrator",
            """SELECT extract(epoch FROM min(e.created_at)) AS first, extract(epoch FROM max(e.created_at)) AS last,
                      (SELECT extract(epoch FROM max(finished_at)) FROM sagas) AS done
               FROM saga_events e WHERE e.kind = 'lease_acquired'""",
        )
        if row["first"] is not None:
            h.result.notes.append(
                f"claimed {float(row['first']) - killed:.1f}-{float(row['last']) - killed:.1f} s after the kill,"
                f" last saga finished at {float(row['done']) - killed:.1f} s"
            )
        result = await h.finish(load)
        result.recovery = [elapsed]
        result.notes.append(f"all {len(ids)} sagas terminal {elapsed:.1f} s after the kill")
        if elapsed > scale.takeover_goal:
            result.violations.append(
                f"takeover of {len(ids)} sagas took {elapsed:.1f} s (goal: {scale.takeover_goal:g} s)"
            )
        return result


async def _accept(h: Harness, count: int, instance: int) -> list[str]:
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(base_url=h.topology.orchestrator_url(instance), timeout=30, limits=limits) as client:
        responses = await asyncio.gather(
            *(client.post("/v1/sagas", json=order(), headers={"Idempotency-Key": str(uuid.uuid4())})
              for _ in range(count))
        )  # fmt: skip
    return [r.json()["id"] for r in responses if r.status_code == 202]


FAILPOINTS: Final = {
    "orchestrator": ["engine.before_call", "engine.after_call", "engine.before_save", "engine.after_save",
                     "worker.after_claim"],
    "order": ["order.before_commit", "order.after_commit"],
    "payment": ["payment.before_commit", "payment.after_commit"],
    "inventory": ["inventory.before_commit", "inventory.after_commit"],
}  # fmt: skip


async def failpoints(server: str, scale: Scale, seed: int) -> Result:
    """Every fail-point, crashing its process now and then (kill -9 at that exact line)."""
    probability = 0.01 if scale is QUICK else 0.005
    spec = {owner: ";".join(f"{p}=crash@{probability}" for p in points) for owner, points in FAILPOINTS.items()}
    fault_env = {"SAGALINE_FAULT_SEED": str(seed)}
    async with Harness(
        server,
        "fail-points: crash before and after each checkpoint and participant commit",
        seed=seed,
        orchestrator_env=[{"SAGALINE_FAILPOINTS": spec["orchestrator"], **fault_env}] * 2,
        service_env={s: {"SAGALINE_FAILPOINTS": spec[s], **fault_env} for s in ("order", "payment", "inventory")},
    ) as h:

        async def faults() -> None:
            await asyncio.sleep(scale.seconds * 2)
            await _disarm(h)

        result = await _under_load(h, scale, faults)
        assert h.supervisor is not None  # noqa: S101 - entered
        crashes = {name: child.exits.count(86) for name, child in h.supervisor.children.items()}
        h.fault(sum(crashes.values()))
        result.notes.append("crashes by process: " + ", ".join(f"{k} {v}" for k, v in crashes.items()))
        return result


async def _disarm(h: Harness) -> None:
    """End the fault phase as a fix would: restart every process without its fail-points.

    Armed processes crash at a rate that grows with the work they hold, and a restarted orchestrator
    claims every orphan at once, so while armed the fleet can crash faster than sagas progress. The
    verdict is about what the crashes left behind: after this, every saga must still end, and nothing
    may be lost, doubled or held.
    """
    assert h.supervisor is not None  # noqa: S101 - entered
    for name, child in h.supervisor.children.items():
        child.env.pop("SAGALINE_FAILPOINTS", None)
        with contextlib.suppress(ProcessLookupError):  # it may be between a crash and its restart
            h.supervisor.signal(name, signal.SIGKILL)  # restarted by the supervisor, now unarmed
    for name in h.supervisor.children:
        await h.wait_healthy(name, within=60.0)


async def sigstop(server: str, scale: Scale, seed: int) -> Result:
    """Pause an orchestrator past its lease (taken over) and well under it (must not be taken over)."""
    async with Harness(server, "SIGSTOP past the lease and under it", seed=seed) as h:

        async def faults() -> None:
            for _ in range(scale.rounds):
                async with h.window():
                    h.signal("orchestrator-1", signal.SIGSTOP)
                    await asyncio.sleep(LEASE * 1.6)
                    h.signal("orchestrator-1", signal.SIGCONT)
                await asyncio.sleep(1.0)
                before = await _takeovers(h)
                async with h.window():
                    h.signal("orchestrator-1", signal.SIGSTOP)
                    await asyncio.sleep(LEASE * 0.3)
                    h.signal("orchestrator-1", signal.SIGCONT)
                if (false := await _takeovers(h) - before) > 0:
                    h.result.violations.append(f"{false} takeovers during a pause shorter than the lease")
                await asyncio.sleep(1.0)

        return await _under_load(h, scale, faults)


async def _takeovers(h: Harness) -> int:
    rows = await h.sql(
        "saga_orchestrator",
        "SELECT count(*) AS n FROM saga_events WHERE kind = 'lease_acquired' AND detail->>'previous_owner' IS NOT NULL",
    )
    return int(rows[0]["n"])


async def stale_owner(server: str, scale: Scale, seed: int) -> Result:
    """An owner holding sagas on an open breaker is paused, its successor finishes them, then it wakes.

    Not one call may reach a participant from the paused owner after the successor took over (counted
    from the participants' call journal by the oracle).
    """
    async with Harness(
        server,
        "stopped owner resumed after its successor finished",
        seed=seed,
        participant_proxies=True,
        orchestrator_env=[{"SAGALINE_BREAKER__OPEN_FOR": "2s"}] * 2,
    ) as h:

        async def faults() -> None:
            for _ in range(scale.rounds):
                link = h.participant_proxies[(0, "payment")]
                await link.set_mode(Mode.DOWN)  # orchestrator-1's sagas pile up on its open payment breaker
                h.fault()
                await asyncio.sleep(2.5)
                async with h.window():
                    h.signal("orchestrator-1", signal.SIGSTOP)
                    await link.set_mode(Mode.PASS)
                    await asyncio.sleep(LEASE + 4.0)  # orchestrator-2 takes them over and finishes them
                    h.signal("orchestrator-1", signal.SIGCONT)
                await asyncio.sleep(3.0)

        return await _under_load(h, scale, faults, instances=[0])


async def database_outage(server: str, scale: Scale, seed: int) -> Result:
    """All four databases refuse connections and every backend is terminated, for 1 s at a time."""
    async with Harness(server, "database outage of 1 s (connections refused, backends terminated)", seed=seed) as h:
        names = list(h.topology.databases.values())

        async def faults() -> None:
            for _ in range(scale.rounds * 2):
                async with h.window():
                    await _outage(h, names, 1.0)
                await asyncio.sleep(3.0)

        return await _under_load(h, scale, faults)


async def _outage(h: Harness, names: list[str], seconds: float) -> None:
    # The names come from Topology.ephemeral (checked safe identifiers), never from input.
    for name in names:
        await h.admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    try:
        killed = await h.admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ANY($1::text[])", names
        )
        h.fault(1 + len(killed))
        await asyncio.sleep(seconds)
    finally:
        for name in names:
            await h.admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def _local_cluster() -> list[str] | None:
    """`pg_ctlcluster <version> <name>` for the machine's cluster on 5432, if this host runs one."""
    if shutil.which("pg_ctlcluster") is None or shutil.which("pg_lsclusters") is None:
        return None
    listing = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=False)  # noqa: S607
    for line in listing.stdout.splitlines():
        version, name, port, *_ = line.split()
        if port == "5432":
            return ["pg_ctlcluster", "--skip-systemctl-redirect", version, name]
    return None


async def server_restart(server: str, scale: Scale, seed: int) -> Result:
    """The PostgreSQL server restarted under load, once with `-m fast` and once with `-m immediate` (a crash).

    Restarting the server interrupts everything else using it, so this scenario runs only when asked
    (`SAGALINE_CHAOS_RESTART_SERVER=1`, which `make chaos` sets) and only against the local cluster.
    """
    cluster = _local_cluster() if os.environ.get("SAGALINE_CHAOS_RESTART_SERVER") == "1" else None
    async with Harness(server, "PostgreSQL restarted (fast, then immediate)", seed=seed) as h:

        async def faults() -> None:
            if cluster is None:
                h.result.notes.append("skipped: set SAGALINE_CHAOS_RESTART_SERVER=1 with a local pg_ctlcluster")
                return
            for mode in ("fast", "immediate"):
                async with h.window():
                    await asyncio.to_thread(
                        subprocess.run, [*cluster, "restart", "-m", mode], check=True, capture_output=True
                    )
                    h.fault()
                await asyncio.sleep(5.0)

        return await _under_load(h, scale, faults)


async def statement_cancels(server: str, scale: Scale, seed: int) -> Result:
    """Cancel every running statement of the stack every 5-20 ms (pg_cancel_backend, like statement_timeout)."""
    name = "every running statement cancelled, every 5-20 ms"
    return await _backend_storm(server, scale, seed, name, cancel=True, gap=(0.005, 0.02), seconds=scale.seconds * 2)


async def terminated_backends(server: str, scale: Scale, seed: int) -> Result:
    """Terminate a random backend of the stack every 100-300 ms (failover, admin kill, OOM)."""
    name = "backends terminated every 100-300 ms"
    return await _backend_storm(server, scale, seed, name, cancel=False, gap=(0.1, 0.3), seconds=scale.seconds)


async def _backend_storm(
    server: str, scale: Scale, seed: int, name: str, *, cancel: bool, gap: tuple[float, float], seconds: float
) -> Result:
    async with Harness(server, name, seed=seed) as h:
        databases = list(h.topology.databases.values())

        async def faults() -> None:
            async with h.window():
                await _every(h, seconds, gap, lambda: _signal_backends(h, databases, cancel=cancel))

        return await _under_load(h, scale, faults)


_CANCEL_ONE: Final = """
SELECT pg_cancel_backend(pid) AS hit FROM pg_stat_activity
WHERE datname = ANY($1::text[]) AND pid <> pg_backend_pid() AND state = 'active'"""
_TERMINATE_ONE: Final = """
SELECT pg_terminate_backend(pid) AS hit FROM (
  SELECT pid FROM pg_stat_activity
  WHERE datname = ANY($1::text[]) AND pid <> pg_backend_pid()
  ORDER BY random() LIMIT 1) p"""


async def _signal_backends(h: Harness, names: list[str], *, cancel: bool) -> None:
    rows = await h.admin(_CANCEL_ONE if cancel else _TERMINATE_ONE, names)
    h.fault(sum(1 for r in rows if r["hit"]))


async def _every(h: Harness, seconds: float, gap: tuple[float, float], action: Callable[[], Awaitable[None]]) -> None:
    ends = time.monotonic() + seconds
    while time.monotonic() < ends:
        await action()
        await asyncio.sleep(h.rng.uniform(*gap))


async def lock_contention(server: str, scale: Scale, seed: int) -> Result:
    """Lock live sagas' rows in the opposite order to a checkpoint's, making deadlocks with the owners."""
    async with Harness(server, "row locks and deadlocks against checkpoints", seed=seed) as h:

        async def faults() -> None:
            async with h.window():
                await _every(h, scale.seconds, (0.01, 0.05), lambda: _lock_against(h))

        return await _under_load(h, scale, faults)


async def _lock_against(h: Harness) -> None:
    # A checkpoint locks the saga row, then its steps; this locks a step, then the saga row.
    conn = await asyncpg.connect(h.topology.url("saga_orchestrator"))
    try:
        async with conn.transaction():
            row = await conn.fetchrow(
                "SELECT saga_id FROM saga_steps WHERE status = 'EXECUTING' ORDER BY random() LIMIT 1 FOR UPDATE"
            )
            if row is None:
                return
            h.fault()
            await asyncio.sleep(0.02)
            await conn.execute("SELECT 1 FROM sagas WHERE id = $1 FOR UPDATE", row["saga_id"])
    except asyncpg.DeadlockDetectedError:
        h.result.notes.append("deadlock: the battery's transaction was the victim")
    finally:
        await conn.close()


async def participant_down(server: str, scale: Scale, seed: int) -> Result:
    """Inventory unreachable from both orchestrators past the breaker's open window, then back."""
    async with Harness(
        server,
        "participant down past the breaker window",
        seed=seed,
        participant_proxies=True,
        env={"SAGALINE_BREAKER__OPEN_FOR": "2s"},
    ) as h:

        async def faults() -> None:
            for _ in range(scale.rounds):
                async with h.window():
                    await _both(h, "inventory", Mode.DOWN)
                    await asyncio.sleep(5.0)
                    await _both(h, "inventory", Mode.PASS)
                await asyncio.sleep(3.0)

        return await _under_load(h, scale, faults)


async def participant_slow(server: str, scale: Scale, seed: int) -> Result:
    """Inventory answers after 5.6 s, past the 5 s step timeout: it commits after the caller gave up."""
    async with Harness(server, "participant slower than its step timeout", seed=seed, participant_proxies=True) as h:

        async def faults() -> None:
            for _ in range(scale.rounds):
                async with h.window():
                    await _both(h, "inventory", Mode.LATENCY, delay_ms=2800)  # 2 x 2.8 s per round trip
                    await asyncio.sleep(6.0)
                    await _both(h, "inventory", Mode.PASS)
                await asyncio.sleep(2.0)

        return await _under_load(h, scale, faults)


async def responses_lost(server: str, scale: Scale, seed: int) -> Result:
    """Payment answers are dropped in bursts: the payment happened, the caller never heard."""
    async with Harness(
        server, "participant answers, then the answer is lost", seed=seed, participant_proxies=True
    ) as h:

        async def faults() -> None:
            ends = time.monotonic() + scale.seconds
            while time.monotonic() < ends:
                async with h.window():
                    await _both(h, "payment", Mode.DROP_RESPONSES)
                    await asyncio.sleep(h.rng.uniform(0.1, 0.4))
                    await _both(h, "payment", Mode.PASS)
                await asyncio.sleep(h.rng.uniform(0.5, 1.5))

        return await _under_load(h, scale, faults)


async def _both(h: Harness, service: str, mode: Mode, **params: float) -> None:
    for index in range(len(h.topology.orchestrator_ports)):
        await h.participant_proxies[(index, service)].set_mode(mode, **params)
    h.fault()


async def partition_participant(server: str, scale: Scale, seed: int) -> Result:
    """Orchestrator-1 cut off from the order service (packets vanish) for 3 s at a time."""
    async with Harness(server, "orchestrator-to-participant partition", seed=seed, participant_proxies=True) as h:

        async def faults() -> None:
            for _ in range(scale.rounds):
                link = h.participant_proxies[(0, "order")]
                async with h.window():
                    await link.set_mode(Mode.BLACKHOLE)
                    h.fault()
                    await asyncio.sleep(3.0)
                    await link.set_mode(Mode.PASS)
                await asyncio.sleep(3.0)

        return await _under_load(h, scale, faults)


async def partition_database(server: str, scale: Scale, seed: int) -> Result:
    """Orchestrator-1 cut off from PostgreSQL (packets vanish) for 3 s, and for longer than its lease."""
    async with Harness(server, "orchestrator-to-database partition", seed=seed, database_proxies=True) as h:

        async def faults() -> None:
            for seconds in (3.0, LEASE + 2.0):
                link = h.database_proxies[0]
                async with h.window():
                    await link.set_mode(Mode.BLACKHOLE)
                    h.fault()
                    await asyncio.sleep(seconds)
                    await link.set_mode(Mode.PASS)
                await asyncio.sleep(4.0)

        return await _under_load(h, scale, faults)


async def clock_skew(server: str, scale: Scale, seed: int) -> Result:
    """Orchestrator-2's host clock runs 90 s fast while it takes over orchestrator-1's sagas."""
    async with Harness(
        server,
        "clock of one instance 90 s fast",
        seed=seed,
        orchestrator_env=[{}, {"SAGALINE_FAULT_CLOCK_SKEW": "90s"}],
    ) as h:

        async def faults() -> None:
            h.fault()  # the skew itself
            for _ in range(scale.rounds):
                async with h.window():
                    h.signal("orchestrator-1", signal.SIGKILL)
                await asyncio.sleep(LEASE + 2.0)
                await h.wait_healthy("orchestrator-1")

        result = await _under_load(h, scale, faults)
        rows = await h.sql("saga_orchestrator", "SELECT count(*) AS n FROM sagas WHERE error LIKE '%deadline%'")
        if rows[0]["n"]:
            result.violations.append(f"{rows[0]['n']} sagas compensated as past a deadline they had not reached")
        return result


async def rolling_restarts(server: str, scale: Scale, seed: int) -> Result:
    """SIGTERM each orchestrator in turn, four times over: a clean handover spends no attempt."""
    async with Harness(server, "rolling restarts of every instance, four rounds", seed=seed) as h:

        async def faults() -> None:
            for _ in range(4):
                for name in ORCHESTRATORS:
                    async with h.window():
                        h.signal(name, signal.SIGTERM)
                        await asyncio.sleep(1.0)
                    await h.wait_healthy(name)

        result = await _under_load(h, scale, faults)
        rows = await h.sql("saga_orchestrator", "SELECT count(*) AS n FROM sagas WHERE status <> 'COMPLETED'")
        if rows[0]["n"]:
            result.violations.append(f"{rows[0]['n']} happy sagas did not complete across clean handovers")
        return result


async def poison(server: str, scale: Scale, seed: int) -> Result:
    """One saga's step kills the inventory service every time; it is set aside, the fleet goes on."""
    async with Harness(
        server,
        "poison saga (its step kills the process every time)",
        seed=seed,
        service_env={"inventory": {"SAGALINE_FAILPOINTS": "inventory.reserve:SKU-GADGET=crash"}},
    ) as h:

        async def faults() -> None:
            await _poison_one(h)

        result = await _under_load(h, scale, faults)
        assert h.supervisor is not None  # noqa: S101 - entered
        crashes = h.supervisor.children["inventory"].exits.count(86)
        h.fault(crashes)
        result.notes.append(f"inventory killed by the poison saga {crashes} times before it was set aside")
        return result


async def _poison_one(h: Harness) -> None:
    async with httpx.AsyncClient(base_url=h.topology.orchestrator_url(0), timeout=10) as client:
        body, key = order(sku="SKU-GADGET"), {"Idempotency-Key": str(uuid.uuid4())}
        response = await client.post("/v1/sagas", json=body, headers=key)
    if response.status_code != 202:
        h.result.violations.append(f"the poison saga was not accepted: {response.status_code}")
        return
    poisoned = uuid.UUID(response.json()["id"])
    # Set aside within its deadline (60 s) plus a breaker window (30 s) and a lease: each crash also fails
    # the other sagas' calls, which open the inventory breaker, and the poison saga waits it out too.
    started = time.monotonic()
    elapsed = await h.terminal_within([poisoned], 120.0)
    [row] = await h.sql("saga_orchestrator", "SELECT status, error FROM sagas WHERE id = $1", poisoned)
    if elapsed == float("inf"):
        h.result.violations.append(f"the poison saga was still {row['status']} after 120 s")
        return
    h.result.notes.append(f"poison saga {row['status']} after {time.monotonic() - started:.0f} s: {row['error']}")


ALL: Final[dict[str, Scenario]] = {
    "kill9": kill9,
    "takeover": takeover,
    "failpoints": failpoints,
    "sigstop": sigstop,
    "stale-owner": stale_owner,
    "database-outage": database_outage,
    "server-restart": server_restart,
    "statement-cancels": statement_cancels,
    "terminated-backends": terminated_backends,
    "lock-contention": lock_contention,
    "participant-down": participant_down,
    "participant-slow": participant_slow,
    "responses-lost": responses_lost,
    "partition-participant": partition_participant,
    "partition-database": partition_database,
    "clock-skew": clock_skew,
    "rolling-restarts": rolling_restarts,
    "poison": poison,
}
