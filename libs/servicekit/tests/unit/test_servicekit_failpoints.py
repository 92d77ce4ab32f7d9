"""Fail-points: inert when disarmed, fire as the spec says, replay from a seed, and refuse a bad spec loudly.

The crash and environment tests run a child interpreter, since `crash` ends the process and the
environment is read only at import.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest

from servicekit import failpoints


@pytest.fixture(autouse=True)
def _disarm_after() -> Iterator[None]:
    yield
    failpoints.configure(None)


async def firing_sequence(name: str, hits: int) -> list[bool]:
    """Which of `hits` consecutive hits of an `error` point fired."""
    sequence = []
    for _ in range(hits):
        try:
            await failpoints.hit(name)
        except failpoints.InjectedFault:
            sequence.append(True)
        else:
            sequence.append(False)
    return sequence


def run_child(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # Without PYTHONUNBUFFERED, so that the child's stdout is block-buffered and the crash must flush it.
    inherited = (failpoints.SPEC_ENV, failpoints.SEED_ENV, "PYTHONUNBUFFERED")
    environment = {k: v for k, v in os.environ.items() if k not in inherited}
    return subprocess.run(  # noqa: S603 - our own interpreter and a fixed script
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**environment, **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


async def test_disarmed_points_have_no_effect() -> None:
    failpoints.configure(None)

    await failpoints.hit("anything")
    failpoints.hit_sync("anything")

    assert not failpoints.armed()
    assert failpoints.seed() is None
    assert failpoints.fired("anything") == 0


async def test_configuring_a_blank_spec_disarms_previously_armed_points() -> None:
    failpoints.configure("p=error", seed=1)

    failpoints.configure("  ")

    assert not failpoints.armed()
    await failpoints.hit("p")
    assert failpoints.fired("p") == 0


async def test_an_armed_spec_leaves_other_points_inert() -> None:
    failpoints.configure("p=error", seed=1)

    await failpoints.hit("q")
    failpoints.hit_sync("q")

    assert failpoints.armed()
    assert failpoints.fired("q") == 0


async def test_error_raises_injected_fault_naming_the_point_from_both_apis() -> None:
    failpoints.configure("engine.after_commit=error", seed=1)

    with pytest.raises(failpoints.InjectedFault) as raised:
        await failpoints.hit("engine.after_commit")
    with pytest.raises(RuntimeError):
        failpoints.hit_sync("engine.after_commit")

    assert raised.value.name == "engine.after_commit"
    assert failpoints.fired("engine.after_commit") == 2


async def test_a_count_limits_how_many_times_a_point_fires() -> None:
    failpoints.configure("p=error*3", seed=1)

    sequence = await firing_sequence("p", 10)

    assert sequence == [True] * 3 + [False] * 7
    assert failpoints.fired("p") == 3


async def test_probability_and_count_combine() -> None:
    failpoints.configure("p=error@0.5*4", seed=7)

    sequence = await firing_sequence("p", 200)

    assert sum(sequence) == 4
    assert sequence[:4] != [True] * 4  # some early hits were skipped by the draw: the @0.5 is in effect
    assert failpoints.fired("p") == 4


async def test_reconfiguring_resets_the_counters() -> None:
    failpoints.configure("p=error*1", seed=1)
    await firing_sequence("p", 2)

    failpoints.configure("p=error*1", seed=1)

    assert failpoints.fired("p") == 0
    assert await firing_sequence("p", 2) == [True, False]


async def test_the_same_seed_replays_the_same_firing_sequence() -> None:
    failpoints.configure("p=error@0.3", seed=424242)
    first = await firing_sequence("p", 100)

    failpoints.configure("p=error@0.3", seed=424242)
    again = await firing_sequence("p", 100)
    failpoints.configure("p=error@0.3", seed=424243)
    other = await firing_sequence("p", 100)

    assert 0 < sum(first) < 100
    assert again == first
    assert other != first


async def test_hits_of_other_points_do_not_shift_a_points_sequence() -> None:
    failpoints.configure("p=error@0.5;q=error@0.5", seed=99)
    alone = await firing_sequence("p", 50)

    failpoints.configure("p=error@0.5;q=error@0.5", seed=99)
    interleaved = []
    for _ in range(50):
        await firing_sequence("q", 3)
        interleaved += await firing_sequence("p", 1)

    assert interleaved == alone


async def test_points_with_the_same_probability_draw_independently() -> None:
    failpoints.configure("p=error@0.5;q=error@0.5", seed=99)

    assert await firing_sequence("p", 50) != await firing_sequence("q", 50)


async def test_without_a_seed_one_is_drawn_and_exposed_for_replay() -> None:
    failpoints.configure("p=error@0.5")
    drawn = failpoints.seed()
    first = await firing_sequence("p", 64)

    assert drawn is not None
    failpoints.configure("p=error@0.5", seed=drawn)
    assert await firing_sequence("p", 64) == first


async def test_sleep_delays_the_async_hit() -> None:
    failpoints.configure("p=sleep(20)", seed=1)

    started = time.monotonic()
    await failpoints.hit("p")

    assert time.monotonic() - started >= 0.02
    assert failpoints.fired("p") == 1


async def test_sleep_yields_to_other_tasks_rather_than_blocking_the_loop() -> None:
    failpoints.configure("p=sleep(20)", seed=1)

    sleeper = asyncio.create_task(failpoints.hit("p"))
    await asyncio.sleep(0)  # one step of the sleeper: a blocking sleep would finish it within this step

    assert not sleeper.done()
    await sleeper


def test_a_sleep_point_passed_synchronously_is_a_configuration_error() -> None:
    failpoints.configure("p=sleep(5)", seed=1)

    with pytest.raises(ValueError, match=r"'p' has a sleep action"):
        failpoints.hit_sync("p")

    assert failpoints.fired("p") == 0


@pytest.mark.parametrize(
    ("spec", "bad_part"),
    [
        ("p", "'p'"),
        ("=error", "'=error'"),
        ("p q=error", "'p q=error'"),
        ("p=explode", "'explode'"),
        ("p=", "''"),
        ("p=sleep", "'sleep'"),
        ("p=sleep(abc)", "'sleep(abc)'"),
        ("p=sleep(-5)", "'sleep(-5)'"),
        ("p=error@0", "'0'"),
        ("p=error@1.5", "'1.5'"),
        ("p=error@nan", "'nan'"),
        ("p=error@often", "'often'"),
        ("p=error*0", "'0'"),
        ("p=error*x", "'error*x'"),
        ("p=error*2@0.5", "'error*2@0.5'"),
        ("p=error;q=crash;", "''"),
        ("p=error;p=crash", "'p' is given twice"),
    ],
)
def test_a_bad_spec_is_refused_with_its_bad_part_named(spec: str, bad_part: str) -> None:
    with pytest.raises(ValueError, match=re.escape(bad_part)):
        failpoints.configure(spec, seed=1)


def test_a_bad_spec_leaves_the_previous_configuration_armed() -> None:
    failpoints.configure("p=error", seed=1)

    with pytest.raises(ValueError, match="explode"):
        failpoints.configure("p=explode", seed=1)

    assert failpoints.armed()
    with pytest.raises(failpoints.InjectedFault):
        failpoints.hit_sync("p")


def test_crash_exits_86_at_the_point_without_running_what_follows() -> None:
    child = run_child(
        """
        import asyncio, sys
        from servicekit import failpoints, logging

        # Logs to stderr, and too quietly for the fail-point's own line: only the crash flushes either stream.
        logging.configure("failpoints-test", level="error")

        async def main() -> None:
            print("before", flush=False)
            sys.stderr.write("unflushed-stderr")
            await failpoints.hit("order.before_commit")
            print("after")

        failpoints.configure("order.before_commit=crash", seed=1)
        try:
            asyncio.run(main())
        finally:
            print("finally-ran")
        """
    )

    assert child.returncode == failpoints.CRASH_EXIT_CODE, child.stderr
    assert "before" in child.stdout  # buffered output is flushed before the exit
    assert "unflushed-stderr" in child.stderr
    assert "after" not in child.stdout
    assert "finally-ran" not in child.stdout


def test_the_environment_arms_points_at_import_with_its_seed() -> None:
    child = run_child(
        """
        from servicekit import failpoints

        print("state", failpoints.armed(), failpoints.seed())
        failpoints.hit_sync("payment.charge")
        print("survived")
        """,
        env={failpoints.SPEC_ENV: "payment.charge=crash", failpoints.SEED_ENV: "31337"},
    )

    assert child.returncode == failpoints.CRASH_EXIT_CODE, child.stderr
    assert "state True 31337" in child.stdout.splitlines()
    assert "survived" not in child.stdout


def test_without_a_seed_in_the_environment_the_drawn_seed_is_logged_once() -> None:
    child = run_child(
        """
        from servicekit import logging
        logging.configure("failpoints-test")
        from servicekit import failpoints

        print(failpoints.seed())
        """,
        env={failpoints.SPEC_ENV: "payment.charge=error@0.5"},
    )

    assert child.returncode == 0, child.stderr
    armed = [line for line in map(json.loads, child.stderr.splitlines()) if line["event"] == "fail-points armed"]
    assert len(armed) == 1
    assert armed[0]["seed"] == int(child.stdout)
    assert armed[0]["spec"] == "payment.charge=error@0.5"


def test_a_bad_spec_in_the_environment_fails_the_import() -> None:
    child = run_child("import servicekit.failpoints", env={failpoints.SPEC_ENV: "payment.charge=boom"})

    assert child.returncode == 1
    assert "ValueError: bad action 'boom' for fail-point 'payment.charge'" in child.stderr
