"""Retention's bounds and its handling of a failed export, against a fake store (no I/O).

What retention deletes, and that it never touches a live or unresolved saga under concurrency, is the
job of the SQL and is tested on the real PostgreSQL (`test_orchestrator_it_retention.py`); here the
use case's own rules: how many batches one run makes, and what a failed export costs.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from orchestrator import ports, usecases
from orchestrator.domain import errors

AGE = timedelta(hours=1)


class FakeRetentionStore:
    """`due` finished sagas and `expired` keys; each batch takes up to `batch` of them."""

    def __init__(self, due: int, expired: int, *, export_fails: bool = False) -> None:
        self.due, self.expired, self.export_fails = due, expired, export_fails
        self.batches: list[tuple[str, int]] = []

    async def purge_finished(self, older_than: timedelta, batch: int, export_dir: Path | None) -> ports.Purged:
        assert older_than == AGE
        self.batches.append(("sagas", batch))
        if self.export_fails and export_dir is not None:
            raise errors.ExportFailed("cannot export: disk full")
        taken = min(batch, self.due)
        self.due -= taken
        return ports.Purged(taken, 4 * taken, 10 * taken)

    async def purge_expired_keys_batch(self, batch: int) -> int:
        self.batches.append(("keys", batch))
        taken = min(batch, self.expired)
        self.expired -= taken
        return taken


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_one_run_is_bounded_however_much_is_due() -> None:
    store = FakeRetentionStore(due=1000, expired=1000)
    policy = usecases.RetentionPolicy(AGE, batch=10, max_batches=3)

    purged, keys = await usecases.Retention(store, policy).run()

    assert (purged, keys) == (ports.Purged(30, 120, 300), 30)
    assert store.batches == [("sagas", 10)] * 3 + [("keys", 10)] * 3


async def test_a_run_stops_at_the_first_short_batch_and_counts_what_it_removed() -> None:
    store = FakeRetentionStore(due=25, expired=3)
    before = {kind: sample("saga_retention_deleted_total", kind=kind) for kind in ("saga", "step", "event")}
    keys_before = sample("saga_retention_deleted_total", kind="idempotency_key")
    exported_before = sample("saga_retention_exported_total")

    purged, keys = await usecases.Retention(store, usecases.RetentionPolicy(AGE, 10, 100, Path("out"))).run()

    assert (purged.sagas, keys) == (25, 3)
    assert store.batches == [("sagas", 10)] * 3 + [("keys", 10)]
    assert sample("saga_retention_deleted_total", kind="saga") - before["saga"] == 25
    assert sample("saga_retention_deleted_total", kind="step") - before["step"] == 100
    assert sample("saga_retention_deleted_total", kind="event") - before["event"] == 250
    assert sample("saga_retention_deleted_total", kind="idempotency_key") - keys_before == 3
    assert sample("saga_retention_exported_total") - exported_before == 25


async def test_without_an_age_every_saga_is_kept_and_only_expired_keys_go() -> None:
    store = FakeRetentionStore(due=5, expired=5)

    purged, keys = await usecases.Retention(store, usecases.RetentionPolicy()).run()

    assert (purged.sagas, keys, store.due) == (0, 5, 5)
    assert [kind for kind, _ in store.batches] == ["keys"]


async def test_a_failed_export_deletes_nothing_this_run_and_keys_are_still_forgotten() -> None:
    store = FakeRetentionStore(due=5, expired=2, export_fails=True)
    failures = sample("saga_retention_export_failures_total")

    purged, keys = await usecases.Retention(store, usecases.RetentionPolicy(AGE, export_dir=Path("full"))).run()

    assert (purged.sagas, store.due, keys) == (0, 5, 2)
    assert sample("saga_retention_export_failures_total") == failures + 1


@pytest.mark.parametrize("error", [errors.StoreUnavailable("database down")])
async def test_a_database_error_reaches_the_worker_which_retries_at_its_next_tick(error: Exception) -> None:
    class Down(FakeRetentionStore):
        async def purge_expired_keys_batch(self, batch: int) -> int:
            raise error

    with pytest.raises(type(error)):
        await usecases.Retention(Down(0, 1), usecases.RetentionPolicy()).run()
