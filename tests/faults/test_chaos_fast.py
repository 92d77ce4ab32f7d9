"""The fast subset of the fault battery (`make chaos` runs all of it, longer): zeros in every loss column.

Each scenario runs real processes under load on their own databases, injects its faults, waits for
every accepted saga to end, and asks the oracle (`sagaline check`, call journal included). A failure
prints the scenario's seed: `python -m sagaline.chaos --only <name> --seed <seed>` replays it.
"""

from __future__ import annotations

import random

import pytest

from sagaline.chaos import scenarios

pytestmark = pytest.mark.timeout(120)

SUBSET = ["kill9", "takeover", "database-outage", "stale-owner"]


@pytest.mark.parametrize("name", SUBSET)
async def test_the_scenario_loses_strands_and_duplicates_nothing(pg_server: str, name: str) -> None:
    seed = random.SystemRandom().randrange(1, 1_000_000)

    result = await scenarios.ALL[name](pg_server, scenarios.QUICK, seed)

    replay = f"replay: python -m sagaline.chaos --scale quick --only {name} --seed {seed}"
    assert result.faults > 0, f"no fault was injected ({replay})"
    assert result.sagas > 0, f"no saga was started ({replay})"
    assert (result.lost, result.stuck, result.duplicated) == (0, 0, 0), replay
    assert (result.stale_writes, result.stale_calls, result.http_5xx) == (0, 0, 0), replay
    assert result.violations == [], f"{result.violations} ({replay})"
