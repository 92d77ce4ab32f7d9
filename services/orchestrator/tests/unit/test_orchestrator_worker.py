"""The worker hands the engine what it needs for the local lease deadline: when a lease was granted, and renewed."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from orchestrator import definitions, ports
from orchestrator.domain.model import Saga
from orchestrator.worker import Worker, WorkerConfig

SECOND = "00000000-0000-4000-8000-000000000002"
PAYLOAD = {
    "customer_id": "11111111-1111-4111-8111-111111111111",
    "currency": "USD",
    "items": [{"sku": "SKU-1", "quantity": 1, "unit_price": "1.00"}],
}


class RecordingEngine:
    """Runs nothing; remembers how each run was started and every renewal reported."""

    def __init__(self) -> None:
        self.runs: list[dict[str, Any]] = []
        self.renewals: list[tuple[list[str], float]] = []
        self.release = asyncio.Event()

    async def run(self, saga: Saga, lease: ports.Lease, stopping: asyncio.Event, **options: Any) -> None:
        self.runs.append({"saga": saga.id, **options})
        await self.release.wait()

    def monotonic(self) -> float:
        return 42.0

    def renewed(self, leases: list[ports.Lease], sent_at: float) -> None:
        self.renewals.append(([lease.saga_id for lease in leases], sent_at))


class RenewingRepository:
    """Renews every lease except those of `lost` (taken by another owner) and `finished` (terminal elsewhere)."""

    def __init__(self, lost: set[str], finished: frozenset[str] = frozenset()) -> None:
        self.lost, self.finished = lost, finished

    async def claim(self, owner_id: str, ttl: timedelta, limit: int, exclude: Sequence[str]) -> list[ports.Claimed]:
        return []

    async def renew(self, owner_id: str, leases: Sequence[ports.Lease], ttl: timedelta) -> ports.Renewal:
        ids = {lease.saga_id for lease in leases}
        return ports.Renewal(frozenset(ids - self.lost - self.finished), frozenset(ids & self.lost))

    async def stats(self) -> ports.Stats:
        return ports.Stats(0.0, 0, 0, 0.0)

    async def purge_expired_keys(self) -> int:
        return 0


def claimed(number: int, acquired_at: float | None, previous_owner: str | None = None) -> ports.Claimed:
    definition = definitions.order_saga()
    saga_id = f"00000000-0000-4000-8000-00000000000{number}"
    saga = Saga.new(saga_id, definition, definition.validate(PAYLOAD), datetime.now(UTC))
    return ports.Claimed(saga, ports.Lease(saga_id, "me", 1), previous_owner, acquired_at)


async def test_adopt_starts_the_run_from_when_the_lease_was_granted() -> None:
    engine = RecordingEngine()
    worker = Worker("me", RenewingRepository(set()), engine, WorkerConfig())  # type: ignore[arg-type]

    worker.adopt(claimed(1, acquired_at=7.5))
    worker.adopt(claimed(2, acquired_at=None), resumed=True)
    await asyncio.sleep(0)

    assert engine.runs == [
        {"saga": "00000000-0000-4000-8000-000000000001", "resumed": False, "in_doubt": False, "acquired_at": 7.5},
        {"saga": "00000000-0000-4000-8000-000000000002", "resumed": True, "in_doubt": False, "acquired_at": None},
    ]
    engine.release.set()
    await asyncio.sleep(0.01)  # let both runs finish


@pytest.mark.parametrize(
    "repository",
    [RenewingRepository({SECOND}), RenewingRepository(set(), frozenset({SECOND}))],
    ids=["taken by another owner", "finished elsewhere (a paused owner's heartbeat must not refresh it)"],
)
async def test_the_heartbeat_reports_only_the_leases_it_renewed_with_the_time_it_sent_the_renewal(
    repository: RenewingRepository,
) -> None:
    engine = RecordingEngine()
    config = WorkerConfig(lease_ttl=timedelta(seconds=0.03), poll_interval=timedelta(seconds=10))
    worker = Worker("me", repository, engine, config)  # type: ignore[arg-type]
    worker.adopt(claimed(1, acquired_at=0.0))
    worker.adopt(claimed(2, acquired_at=0.0))
    await worker.start()
    try:
        async with asyncio.timeout(5):
            while not engine.renewals:
                await asyncio.sleep(0.01)
    finally:
        engine.release.set()
        await worker.stop(grace=1)

    renewed, sent_at = engine.renewals[0]
    assert renewed == ["00000000-0000-4000-8000-000000000001"], "only what the statement renewed is fresh"
    assert sent_at == 42.0


async def test_only_a_claim_from_a_named_previous_owner_counts_the_interrupted_attempt() -> None:
    engine = RecordingEngine()
    worker = Worker("me", RenewingRepository(set()), engine, WorkerConfig())  # type: ignore[arg-type]

    worker.adopt(claimed(1, acquired_at=None, previous_owner="crashed:1:ab"), resumed=True)
    worker.adopt(claimed(2, acquired_at=None, previous_owner=None), resumed=True)  # released cleanly
    await asyncio.sleep(0)

    assert [run["in_doubt"] for run in engine.runs] == [True, False]
    engine.release.set()
    await asyncio.sleep(0.01)


class OrphanRepository(RenewingRepository):
    """Holds `orphans` sagas of a killed instance; each claim hands out at most `limit` of them."""

    def __init__(self, orphans: int) -> None:
        super().__init__(set())
        self.orphans, self.claims = orphans, 0

    async def claim(self, owner_id: str, ttl: timedelta, limit: int, exclude: Sequence[str]) -> list[ports.Claimed]:
        self.claims += 1
        count = min(limit, self.orphans)
        self.orphans -= count
        start = 10 * self.claims
        return [claimed(start + i, acquired_at=None, previous_owner="dead:1:aa") for i in range(count)]


async def test_one_poll_claims_batch_after_batch_until_the_orphans_are_taken() -> None:
    engine = RecordingEngine()
    repo = OrphanRepository(orphans=25)
    worker = Worker("me", repo, engine, WorkerConfig(claim_batch=10))  # type: ignore[arg-type]

    await worker._poll()
    await asyncio.sleep(0)

    assert repo.orphans == 0, "hundreds of orphans are not left for later polls"
    assert repo.claims == 3
    assert len(engine.runs) == 25
    engine.release.set()
    await asyncio.sleep(0.01)
