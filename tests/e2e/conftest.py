"""A whole Sagaline stack of real processes on fresh databases and free ports, per test module."""

from __future__ import annotations

import io
import os
import sys
import uuid
from collections.abc import AsyncIterator

import pytest

from sagaline import pg, stack

ALICE = "11111111-1111-4111-8111-111111111111"
BOB = "22222222-2222-4222-8222-222222222222"
CAROL = "33333333-3333-4333-8333-333333333333"

# A short profile so takeovers and deadlines happen within a test's patience.
FAST_PROFILE = {
    "SAGALINE_OWNERSHIP__LEASE_TTL": "3s",
    "SAGALINE_OWNERSHIP__POLL_INTERVAL": "0.5s",
    "SAGALINE_SHUTDOWN_GRACE": "5s",
}


async def running_stack(pg_server: str, extra_env: dict[str, str] | None = None) -> AsyncIterator[stack.Supervisor]:
    """Create, migrate and seed unique databases, run 3 services + 2 orchestrators, tear all down."""
    prefix = f"e2e_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    topology = stack.Topology.ephemeral(pg_server, prefix)
    await stack.prepare(topology, out=io.StringIO())
    # Child logs go to stderr only when asked (SAGALINE_TEST_LOGS=1), to keep test output readable.
    out = sys.stderr if os.environ.get("SAGALINE_TEST_LOGS") else io.StringIO()
    supervisor = stack.Supervisor(
        topology, extra_env={**FAST_PROFILE, **(extra_env or {})}, restart_delay=0.5, out=out, log_format="json"
    )
    try:
        try:
            await supervisor.start()
        except (TimeoutError, OSError) as exc:
            logs = out.getvalue()[-4000:] if isinstance(out, io.StringIO) else "(logs went to stderr)"
            raise RuntimeError(f"the stack did not start: {exc!r}\n{logs}") from exc
        yield supervisor
    finally:
        await supervisor.stop()
        for name in topology.databases.values():
            await pg.drop_database(pg_server, name)


@pytest.fixture(scope="module")
async def system(pg_server: str) -> AsyncIterator[stack.Supervisor]:
    async for supervisor in running_stack(pg_server):
        yield supervisor


def order(customer: str, sku: str = "SKU-WIDGET", quantity: int = 1, price: str = "10.00") -> dict[str, object]:
    return {
        "saga_type": "order_saga",
        "payload": {"customer_id": customer, "items": [{"sku": sku, "quantity": quantity, "unit_price": price}],
                    "currency": "USD"},
    }  # fmt: skip
