"""The invariants of SPEC section 8, read straight from the four databases.

Each check returns human-readable violations; an empty list everywhere is a pass. The checks only
read, so they are safe against a running system, though sagas still in flight are judged only by
the liveness check (a saga may legitimately be half-way).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import asyncpg

TERMINAL = ("COMPLETED", "COMPENSATED", "FAILED")


@dataclass
class Report:
    """What the checker saw."""

    counts: dict[str, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no invariant is violated."""
        return not self.violations


async def _fetch(url: str, query: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(query))
    finally:
        await conn.close()


async def run(urls: dict[str, str], stuck_after: float = 75.0) -> Report:
    """Check every invariant; `stuck_after` is deadline + lease TTL + poll + backoff, in seconds past the deadline."""
    report = Report()
    sagas = await _fetch(
        urls["saga_orchestrator"], "SELECT id, status, error, deadline, clock_timestamp() AS now FROM sagas"
    )
    orders = _by_saga(await _fetch(urls["order_service"], "SELECT saga_id, status, total_amount FROM orders"))
    payments = _by_saga(await _fetch(urls["payment_service"], "SELECT saga_id, status, amount FROM payments"))
    reservations = _by_saga(await _fetch(urls["inventory_service"], "SELECT saga_id, status FROM reservations"))
    for status in ("PENDING", "EXECUTING", "COMPENSATING", *TERMINAL):
        report.counts[status] = sum(1 for s in sagas if s["status"] == status)
    for saga in sagas:
        sid = saga["id"]
        _check_saga(report, saga, orders.get(sid, []), payments.get(sid, []), reservations.get(sid, []), stuck_after)
    await _check_conservation(report, urls)
    await _check_fences(report, urls["saga_orchestrator"])
    return report


def _by_saga(rows: list[asyncpg.Record]) -> dict[uuid.UUID, list[asyncpg.Record]]:
    grouped: dict[uuid.UUID, list[asyncpg.Record]] = defaultdict(list)
    for row in rows:
        grouped[row["saga_id"]].append(row)
    return grouped


def _check_saga(  # noqa: C901 - one flat rule per saga status
    report: Report, saga: Any, orders: list[Any], payments: list[Any], reservations: list[Any], stuck_after: float
) -> None:
    sid, status = saga["id"], saga["status"]
    for name, rows in (("orders", orders), ("payments", payments), ("reservations", reservations)):
        if len(rows) > 1:
            report.violations.append(f"saga {sid}: {len(rows)} {name} (an effect applied twice)")
    if status not in TERMINAL and (saga["now"] - saga["deadline"]).total_seconds() > stuck_after:
        report.violations.append(f"saga {sid}: still {status} {stuck_after:g}s past its deadline")
    if status == "COMPLETED":
        _check_completed(report, sid, orders, payments, reservations)
    elif status == "COMPENSATED":
        if any(o["status"] != "CANCELLED" for o in orders):
            report.violations.append(f"saga {sid}: COMPENSATED but its order is {orders[0]['status']}")
        if any(p["status"] == "CAPTURED" for p in payments):
            report.violations.append(f"saga {sid}: COMPENSATED but money is still captured")
        if any(r["status"] == "RESERVED" for r in reservations):
            report.violations.append(f"saga {sid}: COMPENSATED but stock is still reserved")
    elif status == "FAILED":
        report.failed.append((str(sid), saga["error"] or ""))
        if not saga["error"]:
            report.violations.append(f"saga {sid}: FAILED without a reason")


def _check_completed(report: Report, sid: Any, orders: list[Any], payments: list[Any], reservations: list[Any]) -> None:
    if not orders or orders[0]["status"] != "CONFIRMED":
        report.violations.append(f"saga {sid}: COMPLETED but the order is not CONFIRMED")
        return
    captured = [p for p in payments if p["status"] == "CAPTURED"]
    if len(captured) != 1 or Decimal(captured[0]["amount"]) != Decimal(orders[0]["total_amount"]):
        report.violations.append(f"saga {sid}: COMPLETED but the captured payment does not equal the order total")
    if not any(r["status"] == "RESERVED" for r in reservations):
        report.violations.append(f"saga {sid}: COMPLETED but no stock is reserved")


async def _check_conservation(report: Report, urls: dict[str, str]) -> None:
    accounts = await _fetch(
        urls["payment_service"],
        """SELECT a.customer_id, a.initial_balance, a.balance,
                  coalesce(sum(p.amount), 0) AS captured,
                  coalesce(sum(p.amount) FILTER (WHERE p.status = 'REFUNDED'), 0) AS refunded
           FROM accounts a LEFT JOIN payments p ON p.customer_id = a.customer_id
           GROUP BY a.customer_id, a.initial_balance, a.balance""",
    )
    for a in accounts:
        if a["initial_balance"] != a["balance"] + a["captured"] - a["refunded"]:
            report.violations.append(
                f"customer {a['customer_id']}: initial {a['initial_balance']} != balance {a['balance']}"
                f" + captured {a['captured']} - refunded {a['refunded']}"
            )
    stock = await _fetch(
        urls["inventory_service"],
        """SELECT s.sku, s.initial, s.available, s.reserved,
                  (SELECT coalesce(sum(i.quantity), 0) FROM reservation_items i
                   JOIN reservations r ON r.id = i.reservation_id
                   WHERE i.sku = s.sku AND r.status = 'RESERVED') AS held
           FROM stock s""",
    )
    for s in stock:
        if s["initial"] != s["available"] + s["reserved"] or s["reserved"] != s["held"]:
            report.violations.append(
                f"sku {s['sku']}: initial {s['initial']}, available {s['available']}, reserved {s['reserved']},"
                f" held by reservations {s['held']}"
            )


async def _check_fences(report: Report, url: str) -> None:
    rows = await _fetch(
        url,
        """SELECT saga_id FROM (
             SELECT saga_id, fence < lag(fence) OVER (PARTITION BY saga_id ORDER BY id) AS dropped FROM saga_events
           ) e WHERE dropped GROUP BY saga_id""",
    )
    for row in rows:
        report.violations.append(f"saga {row['saga_id']}: the fencing token decreased in saga_events")


def render(report: Report) -> str:
    """A readable verdict."""
    lines = ["sagas: " + ", ".join(f"{k} {v}" for k, v in report.counts.items() if v)]
    lines += [f"FAILED (needs a person) {sid}: {reason}" for sid, reason in report.failed]
    lines += [f"VIOLATION {v}" for v in report.violations]
    lines.append(
        "verdict: OK, every invariant holds" if report.ok else f"verdict: {len(report.violations)} violation(s)"
    )
    return "\n".join(lines)
