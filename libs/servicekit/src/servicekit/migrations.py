"""A forward-only migration runner: numbered SQL files applied once each, in order, under an advisory lock.

Files are named `NNNN_what.sql`. Each is applied in its own transaction together with its row in
`schema_migrations`, so a crash never leaves a file half-applied or applied-but-unrecorded. A session
advisory lock serialises runners, so several instances may start at once. A checksum per file makes an
edit to an already applied file fail loudly instead of silently diverging from the database.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import asyncpg

_NAME: Final = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Any constant works as long as every runner uses the same one; it scopes the lock to migrations.
_LOCK_KEY: Final = 0x5A6A11E

_CREATE_TABLE: Final = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text        NOT NULL,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT clock_timestamp()
)"""


class MigrationError(Exception):
    """A migration file is malformed, missing, or was edited after it was applied."""


@dataclass(frozen=True)
class Migration:
    """One numbered SQL file."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the file's text."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(directory: Path) -> list[Migration]:
    """Read every `NNNN_what.sql` in directory, sorted by version.

    Raises:
        MigrationError: a `.sql` file is misnamed or two files share a version.
    """
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise MigrationError(f"migration file {path.name} is not named NNNN_what.sql")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"two migration files share version {version}")
        found[version] = Migration(version, match.group(2), path.read_text())
    return [found[v] for v in sorted(found)]


async def apply(dsn: str, directory: Path) -> list[int]:
    """Apply every pending migration of directory to the database at dsn; returns the versions applied.

    Raises:
        MigrationError: an applied file was edited, or the database knows a version no file has.
    """
    pending = discover(directory)
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        try:
            return await _apply_locked(connection, pending)
        finally:
            await connection.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    finally:
        await connection.close()


async def _apply_locked(connection: asyncpg.Connection, migrations: list[Migration]) -> list[int]:
    await connection.execute(_CREATE_TABLE)
    rows = await connection.fetch("SELECT version, checksum FROM schema_migrations")
    applied = {row["version"]: row["checksum"] for row in rows}
    known = {m.version for m in migrations}
    if unknown := sorted(set(applied) - known):
        raise MigrationError(f"database has migrations {unknown} that no file in this release has")
    done: list[int] = []
    for migration in migrations:
        if migration.version in applied:
            if applied[migration.version] != migration.checksum:
                name = f"{migration.version:04d}_{migration.name}.sql"
                raise MigrationError(f"migration {name} was edited after it was applied")
            continue
        async with connection.transaction():
            await connection.execute(migration.sql)
            await connection.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
        done.append(migration.version)
    return done
