"""The scripts the container image runs: the entrypoint (database password secret) and the migrate job."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

MakeDatabase = Callable[[Path | None], Awaitable[str]]

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "deploy/docker/entrypoint.sh"
MIGRATE = ROOT / "deploy/docker/migrate.py"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAGALINE_", "PG", "OTEL_"))}
    return {**env, **extra}


def sh(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = ["/bin/sh", str(ENTRYPOINT), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=30, check=False)  # noqa: S603


def test_entrypoint_exports_the_password_file_as_pgpassword(tmp_path: Path) -> None:
    secret = tmp_path / "postgres_order_password"
    secret.write_text("pa ss'w\"ord$1\n")
    show = "import os; print(repr(os.environ.get('PGPASSWORD')), 'PGPASSWORD_FILE' in os.environ)"
    result = sh(sys.executable, "-c", show, env=clean_env(PGPASSWORD_FILE=str(secret)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == repr("pa ss'w\"ord$1") + " False"


def test_entrypoint_without_a_password_file_changes_nothing() -> None:
    result = sh(sys.executable, "-c", "import os; print(os.environ.get('PGPASSWORD'))", env=clean_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "None"


def test_entrypoint_refuses_an_unreadable_password_file(tmp_path: Path) -> None:
    result = sh("true", env=clean_env(PGPASSWORD_FILE=str(tmp_path / "missing")))
    assert result.returncode == 2
    assert "PGPASSWORD_FILE" in result.stderr


def migrate(service: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(MIGRATE), service]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)  # noqa: S603


def test_migrate_script_rejects_an_unknown_service() -> None:
    result = migrate("billing", clean_env())
    assert result.returncode == 2
    assert "usage" in result.stderr


async def test_migrate_job_migrates_and_seeds_the_database_its_service_is_configured_with(
    make_database: MakeDatabase,
) -> None:
    url = await make_database(None)
    env = clean_env(SAGALINE_PAYMENT_DATABASE__URL=url)
    first = migrate("payment", env)
    assert first.returncode == 0, first.stderr
    assert "payment: applied migrations" in first.stdout
    assert "seed customer" in first.stdout
    again = migrate("payment", {**env, "SEED_DEMO_DATA": "0"})
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "payment: schema up to date"
    connection = await asyncpg.connect(url)
    try:
        assert await connection.fetchval("SELECT count(*) FROM accounts") > 0
    finally:
        await connection.close()


async def test_migrate_job_for_the_orchestrator_needs_no_api_keys(make_database: MakeDatabase) -> None:
    url = await make_database(None)
    result = migrate("orchestrator", clean_env(SAGALINE_DATABASE__URL=url, SAGALINE_AUTH="on"))
    assert result.returncode == 0, result.stderr
    assert "orchestrator: applied migrations" in result.stdout
