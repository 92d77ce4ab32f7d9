"""The worker: runs sagas on this instance and keeps their leases.

Side tasks, each named and watched by a monitor that stops the worker if one dies:
- the poller claims due sagas that are unowned or whose lease expired (`FOR UPDATE SKIP LOCKED`),
  every poll interval, batch after batch while batches come back full; it is for recovery and for work
  left by others, since a saga accepted by this instance starts here at once through `adopt`;
- the heartbeat renews, every TTL/3, the leases of the sagas whose runs are alive, in one statement;
  a lease it cannot renew is lost, and that saga's run is cancelled so it makes no further call;
- the clock re-reads the database's clock, which every time rule is decided on;
- housekeeping refreshes the gauges (oldest live saga, FAILED count, sagas past their deadline) and runs
  retention: expired client keys and, when configured, old finished sagas, in bounded batches.

Database errors reach the side tasks only as `errors.StoreUnavailable` (the repository translates them
once); they are logged and the task goes on at its next tick.

Shutdown: stop claiming first, then let every run reach its next checkpoint (each releases its lease),
then cancel what is still running after the grace period and release its lease (fenced).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from orchestrator import metrics, ports, usecases
from orchestrator.domain import errors
from orchestrator.engine import Engine
from servicekit import failpoints, logging

log = logging.get_logger(__name__)


@dataclass(frozen=True)
class WorkerConfig:
    """Ownership timing and capacity (the defaults claim a killed instance's sagas within 4.5 s)."""

    lease_ttl: timedelta = timedelta(seconds=4)
    poll_interval: timedelta = timedelta(milliseconds=500)
    max_concurrent: int = 500
    claim_batch: int = 100
    housekeeping_interval: timedelta = timedelta(seconds=15)
    clock_sync_interval: timedelta = timedelta(seconds=5)


@dataclass
class _Run:
    lease: ports.Lease
    task: asyncio.Task[None]


class Worker:
    """Owns the runs of this instance."""

    def __init__(
        self,
        owner_id: str,
        repository: ports.SagaRepository,
        engine: Engine,
        config: WorkerConfig,
        clock: ports.AnchoredClock | None = None,
        retention: usecases.Retention | None = None,
    ) -> None:
        """`owner_id` is unique per process start; `clock`, when given, is kept anchored to the database's.

        `retention`, when given, runs in housekeeping (instead of the unbounded purge of expired keys).
        """
        self._retention = retention
        self.owner_id = owner_id
        self._repo, self._engine, self._config, self._clock = repository, engine, config, clock
        self._runs: dict[str, _Run] = {}
        self._stopping = asyncio.Event()
        self._side_tasks: list[asyncio.Task[None]] = []
        self.last_poll_ok: float = 0.0

    @property
    def stopping(self) -> bool:
        """True once shutdown has begun."""
        return self._stopping.is_set()

    def has_capacity(self) -> bool:
        """True when a new saga may start here at once."""
        return not self.stopping and len(self._runs) < self._config.max_concurrent

    def running(self) -> list[str]:
        """Ids of the sagas running here."""
        return list(self._runs)

    def adopt(self, claimed: ports.Claimed, *, resumed: bool = False) -> None:
        """Run a saga this instance holds the lease of (skipped if it already runs here)."""
        saga_id = claimed.saga.id
        current = self._runs.get(saga_id)
        if current is not None and current.lease.fence >= claimed.lease.fence:
            return  # already running here under this (or a newer) lease
        # A newer lease (an admin retry racing the previous run's last moments) replaces the entry; the
        # old run has made its final save and only its done-callback is pending.
        # A previous owner still named on the row ended without a clean release: its call may have gone.
        coro = self._engine.run(
            claimed.saga,
            claimed.lease,
            self._stopping,
            resumed=resumed,
            in_doubt=resumed and claimed.previous_owner is not None,
            acquired_at=claimed.acquired_at,
        )
        task = asyncio.create_task(coro, name=f"saga:{saga_id}")
        self._runs[saga_id] = _Run(claimed.lease, task)
        metrics.LEASES_HELD.set(len(self._runs))
        task.add_done_callback(functools.partial(self._finished, saga_id))

    def _finished(self, saga_id: str, task: asyncio.Task[None]) -> None:
        if (run := self._runs.get(saga_id)) is not None and run.task is task:
            del self._runs[saga_id]
        metrics.LEASES_HELD.set(len(self._runs))
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("saga run crashed", saga_id=saga_id, error=repr(exc), exc_info=exc)

    async def start(self) -> None:
        """Start the poller, heartbeat and housekeeping, and the monitor watching them."""
        loop = asyncio.get_running_loop()
        self._side_tasks = [
            loop.create_task(self._every(self._config.poll_interval, self._poll), name="poller"),
            loop.create_task(self._every(self._config.lease_ttl / 3, self._heartbeat), name="heartbeat"),
            loop.create_task(self._every(self._config.housekeeping_interval, self._housekeeping), name="housekeeping"),
        ]
        if self._clock is not None:
            self._side_tasks.append(
                loop.create_task(self._every(self._config.clock_sync_interval, self.sync_clock), name="clock")
            )

    async def sync_clock(self) -> None:
        """Anchor the clock to the database's (also called once at start, before any saga runs)."""
        if self._clock is not None:
            offset = await self._clock.sync(self._repo.database_time)
            metrics.CLOCK_OFFSET.set(offset.total_seconds())

    async def wait_failed(self) -> None:
        """Returns when a side task died unexpectedly (the monitor's signal to stop the process)."""
        done, _ = await asyncio.wait(self._side_tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.error("worker side task died", task=task.get_name(), exc_info=task.exception())

    async def _every(self, interval: timedelta, action: Any) -> None:
        while True:
            try:
                await action()
            except errors.StoreUnavailable as exc:
                log.warning("database unavailable", task=asyncio.current_task().get_name(), error=str(exc))  # type: ignore[union-attr]
            await asyncio.sleep(interval.total_seconds())

    async def _poll(self) -> None:
        """Claim batch after batch while they come back full: hundreds of orphans are taken in one tick."""
        while not self.stopping and (free := self._config.max_concurrent - len(self._runs)) > 0:
            batch = min(free, self._config.claim_batch)
            claimed = await self._repo.claim(self.owner_id, self._config.lease_ttl, batch, self.running())
            await failpoints.hit("worker.after_claim")
            for one in claimed:
                if one.previous_owner is not None:
                    metrics.TAKEOVERS.inc()
                    log.info("took over saga", saga_id=one.saga.id, previous_owner=one.previous_owner)
                self.adopt(one, resumed=True)
            if len(claimed) < batch:
                break
        self.last_poll_ok = asyncio.get_running_loop().time()
        metrics.LAST_POLL.set_to_current_time()

    async def _heartbeat(self) -> None:
        runs = dict(self._runs)
        leases = [run.lease for run in runs.values() if not run.task.done()]
        sent_at = self._engine.monotonic()
        renewal = await self._repo.renew(self.owner_id, leases, self._config.lease_ttl)
        # Only what the statement renewed is fresh; a saga that finished elsewhere is neither renewed nor lost.
        self._engine.renewed([lease for lease in leases if lease.saga_id in renewal.renewed], sent_at)
        for lease in leases:
            if lease.saga_id in renewal.lost and (run := runs.get(lease.saga_id)) is not None:
                metrics.LEASE_LOSSES.inc()
                log.warning("lease lost on renewal, stopping the saga here", saga_id=lease.saga_id, fence=lease.fence)
                run.task.cancel()

    async def _housekeeping(self) -> None:
        stats = await self._repo.stats()
        metrics.OLDEST_LIVE.set(stats.oldest_live_age)
        metrics.FAILED_SAGAS.set(stats.failed)
        metrics.PAST_DEADLINE.set(stats.past_deadline)
        metrics.MOST_OVERDUE.set(stats.most_overdue)
        if self._retention is None:
            await self._repo.purge_expired_keys()
        else:  # expired keys and, when configured, old finished sagas, in bounded batches
            await self._retention.run()

    async def stop(self, grace: float) -> None:
        """Stop claiming, let runs checkpoint and release within grace seconds, then cut the rest."""
        self._stopping.set()
        # Claiming stops now; the heartbeat keeps the leases alive while runs drain, so no other
        # instance takes a saga whose call is still in flight here.
        poller = [t for t in self._side_tasks if t.get_name() == "poller"]
        for task in poller:
            task.cancel()
        runs = dict(self._runs)
        if runs:
            log.info("waiting for in-flight sagas to checkpoint", count=len(runs), grace=grace)
            await asyncio.wait([r.task for r in runs.values()], timeout=grace)
        for task in self._side_tasks:
            task.cancel()
        await asyncio.gather(*self._side_tasks, return_exceptions=True)
        for run in runs.values():
            if not run.task.done():
                run.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, errors.StoreUnavailable):
                    await run.task
                # Cut mid-call: the call may have reached the participant, so the next owner counts it.
                with contextlib.suppress(errors.StoreUnavailable):
                    await self._repo.release(run.lease, clean=False)
