"""The migration runner against a real PostgreSQL: order, idempotence, edits, failures and concurrent runners."""

import asyncio
import hashlib
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from servicekit import migrations

MakeDatabase = Callable[[Path | None], Awaitable[str]]

FILES = {
    "0001_create_runs.sql": "CREATE TABLE runs (version integer PRIMARY KEY, at timestamptz DEFAULT now());",
    # Depends on 0001 and on running once: a second run would violate the primary key.
    "0002_first_row.sql": "SELECT pg_sleep(0.05);\nINSERT INTO runs (version) VALUES (2);",
    "0003_second_row.sql": "ALTER TABLE runs ADD COLUMN note text;\nINSERT INTO runs (version, note) VALUES (3, 'x');",
}


def _write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(exist_ok=True)
    for name, sql in files.items():
        (directory / name).write_text(sql)
    return directory


@pytest.fixture
def migrations_dir(tmp_path: Path) -> Path:
    return _write(tmp_path / "migrations", FILES)


@pytest.fixture
async def database(make_database: MakeDatabase) -> str:
    return await make_database(None)


async def _fetch(dsn: str, query: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(dsn)
    try:
        rows: list[asyncpg.Record] = await connection.fetch(query)
    finally:
        await connection.close()
    return rows


async def _recorded(dsn: str) -> list[tuple[int, str, str]]:
    rows = await _fetch(dsn, "SELECT version, name, checksum FROM schema_migrations ORDER BY version")
    return [(row["version"], row["name"], row["checksum"]) for row in rows]


async def _runs(dsn: str) -> list[int]:
    return [row["version"] for row in await _fetch(dsn, "SELECT version FROM runs ORDER BY version")]


def test_discover_sorts_by_version_and_ignores_other_files(tmp_path: Path) -> None:
    directory = _write(tmp_path, {"0010_later.sql": "SELECT 10;", "0002_early.sql": "SELECT 2;", "README.md": "x"})

    found = migrations.discover(directory)

    assert [(m.version, m.name, m.sql) for m in found] == [(2, "early", "SELECT 2;"), (10, "later", "SELECT 10;")]
    assert found[0].checksum == hashlib.sha256(b"SELECT 2;").hexdigest()


@pytest.mark.parametrize("name", ["1_init.sql", "0001-init.sql", "0001_Init.sql", "00001_init.sql", "0001_.sql"])
def test_discover_refuses_misnamed_files(tmp_path: Path, name: str) -> None:
    _write(tmp_path, {"0002_fine.sql": "SELECT 1;", name: "SELECT 1;"})

    with pytest.raises(migrations.MigrationError, match=r"NNNN_what\.sql"):
        migrations.discover(tmp_path)


def test_discover_refuses_two_files_with_one_version(tmp_path: Path) -> None:
    _write(tmp_path, {"0001_orders.sql": "SELECT 1;", "0001_payments.sql": "SELECT 2;"})

    with pytest.raises(migrations.MigrationError, match="share version 1"):
        migrations.discover(tmp_path)


async def test_apply_on_an_empty_database_applies_every_file_in_order(database: str, migrations_dir: Path) -> None:
    applied = await migrations.apply(database, migrations_dir)

    assert applied == [1, 2, 3]
    assert await _runs(database) == [2, 3]
    assert await _recorded(database) == [(m.version, m.name, m.checksum) for m in migrations.discover(migrations_dir)]


async def test_a_second_run_applies_nothing(database: str, migrations_dir: Path) -> None:
    await migrations.apply(database, migrations_dir)
    before = await _recorded(database)

    assert await migrations.apply(database, migrations_dir) == []
    assert await _recorded(database) == before
    assert await _runs(database) == [2, 3]


async def test_only_new_files_are_applied_later(database: str, migrations_dir: Path) -> None:
    (migrations_dir / "0003_second_row.sql").rename(migrations_dir.parent / "held_back.sql")
    assert await migrations.apply(database, migrations_dir) == [1, 2]

    (migrations_dir.parent / "held_back.sql").rename(migrations_dir / "0003_second_row.sql")

    assert await migrations.apply(database, migrations_dir) == [3]
    assert await _runs(database) == [2, 3]


async def test_an_edited_applied_file_is_refused_before_anything_else_runs(database: str, migrations_dir: Path) -> None:
    (migrations_dir / "0003_second_row.sql").unlink()
    await migrations.apply(database, migrations_dir)
    (migrations_dir / "0001_create_runs.sql").write_text(FILES["0001_create_runs.sql"] + "\n-- tweaked\n")
    _write(migrations_dir, {"0003_second_row.sql": FILES["0003_second_row.sql"]})

    with pytest.raises(migrations.MigrationError, match=r"0001_create_runs\.sql was edited"):
        await migrations.apply(database, migrations_dir)

    assert [version for version, _, _ in await _recorded(database)] == [1, 2]
    assert await _runs(database) == [2]


async def test_a_database_ahead_of_the_files_is_refused(database: str, migrations_dir: Path, tmp_path: Path) -> None:
    await migrations.apply(database, migrations_dir)
    older = _write(tmp_path / "older", {name: FILES[name] for name in ("0001_create_runs.sql", "0002_first_row.sql")})

    with pytest.raises(migrations.MigrationError, match=r"\[3\]"):
        await migrations.apply(database, older)


async def test_a_failing_migration_leaves_nothing_recorded_and_nothing_half_applied(
    database: str, migrations_dir: Path
) -> None:
    good = FILES["0003_second_row.sql"]
    (migrations_dir / "0003_second_row.sql").write_text(
        "CREATE TABLE half_done (id integer);\nINSERT INTO runs (version) VALUES (3);\nSELECT 1 / 0;"
    )

    with pytest.raises(asyncpg.DivisionByZeroError):
        await migrations.apply(database, migrations_dir)

    assert [version for version, _, _ in await _recorded(database)] == [1, 2]
    assert await _runs(database) == [2]
    [row] = await _fetch(database, "SELECT to_regclass('half_done') AS relation")
    assert row["relation"] is None

    (migrations_dir / "0003_second_row.sql").write_text(good)
    assert await migrations.apply(database, migrations_dir) == [3]


async def test_concurrent_runners_apply_each_file_exactly_once(database: str, migrations_dir: Path) -> None:
    results = await asyncio.gather(*(migrations.apply(database, migrations_dir) for _ in range(3)))

    assert sorted(results) == [[], [], [1, 2, 3]]
    assert await _runs(database) == [2, 3]
    assert [version for version, _, _ in await _recorded(database)] == [1, 2, 3]


RUNNER = """
import asyncio, json, sys
from pathlib import Path
from servicekit import migrations
print(json.dumps(asyncio.run(migrations.apply(sys.argv[1], Path(sys.argv[2])))))
"""


async def test_runners_in_separate_processes_apply_each_file_exactly_once(database: str, migrations_dir: Path) -> None:
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            RUNNER,
            database,
            str(migrations_dir),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outputs = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in processes)), timeout=30)

    assert [p.returncode for p in processes] == [0, 0], [err.decode() for _, err in outputs]
    assert sorted(json.loads(out) for out, _ in outputs) == [[], [1, 2, 3]]
    assert await _runs(database) == [2, 3]
