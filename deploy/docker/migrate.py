"""Migrate (and seed with the demo data) the database of one Sagaline process, then exit.

Usage: `python deploy/docker/migrate.py orchestrator|order|payment|inventory`

The one-shot `migrate-*` jobs of compose.yaml and the pre-deploy commands of render.yaml run this.
`sagaline migrate` does not fit there: it creates four databases on one server from an admin URL,
while compose gives each service its own server and Render its own managed database. This script
instead loads the settings of the process it migrates (the same `SAGALINE_*` variables, `*_FILE`
secrets and `SAGALINE_CONFIG` file), so a job and its service cannot point at different databases.

`SEED_DEMO_DATA=0` skips the demo customers and SKUs (seeding is idempotent and never resets data).
Exit status: 0 done, 2 bad usage or configuration, 1 anything else (the traceback says what).
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
from typing import Any

from servicekit import settings

PACKAGES = {
    "orchestrator": "orchestrator",
    "order": "order_service",
    "payment": "payment_service",
    "inventory": "inventory_service",
}


def database_url(service: str) -> str:
    """The database URL the given process is configured with."""
    config: Any = importlib.import_module(f"{PACKAGES[service]}.config")
    # The orchestrator refuses auth without API keys; a migration serves no requests, so auth is irrelevant.
    overrides = {"auth": "off"} if service == "orchestrator" else {}
    loaded = settings.load(config.Settings, **overrides)
    return str(loaded.database.url.get_secret_value())


async def migrate(service: str, *, seed: bool) -> None:
    """Apply the pending migrations of service's database, then seed it unless told not to."""
    bootstrap: Any = importlib.import_module(f"{PACKAGES[service]}.bootstrap")
    url = database_url(service)
    applied = await bootstrap.migrate(url)
    print(f"{service}: applied migrations {applied}" if applied else f"{service}: schema up to date", flush=True)
    if seed and hasattr(bootstrap, "seed"):
        for line in await bootstrap.seed(url):
            print(f"{service}: seed {line}", flush=True)


def main(argv: list[str]) -> int:
    """Entry point; returns the exit status."""
    if len(argv) != 1 or argv[0] not in PACKAGES:
        print(f"usage: migrate.py {'|'.join(PACKAGES)}", file=sys.stderr)
        return 2
    seed = os.environ.get("SEED_DEMO_DATA", "1").lower() not in ("0", "false", "no", "off")
    try:
        asyncio.run(migrate(argv[0], seed=seed))
    except settings.ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
