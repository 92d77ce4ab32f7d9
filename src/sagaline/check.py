"""The invariants of SPEC section 8, read straight from the four databases: the oracle of the fault tests.

Each check adds human-readable violations to one `Report`; no violation anywhere is a pass. The checks
only read, so they are safe against a running system. They judge only what no legitimate moment of a
saga can show, so a saga half-way is never a violation:

- per status: COMPLETED and COMPENSATED sagas hold exactly what their status promises; FAILED ones
  are listed for a person with what each participant still holds (money, stock), which is not itself
  a violation, since a person retries them;
- at any status: a CONFIRMED order whose payment or stock is gone (compensated past the point of no
  return), more than one effect per saga or per payment, an effect under a key its compensation had
  already tombstoned, money or stock not conserved, a fencing token that decreases;
- liveness, judged with the database clock (the one leases are written with): a live saga still
  running long past its deadline, or stranded (no live lease, and not due for work soon, so no poller
  will ever take it);
- given a journal of the calls participants received, every call sent by an owner whose lease a
  higher fence had taken over more than `grace` seconds earlier (a write from a lost lease).
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, TypeAlias

import asyncpg

TERMINAL: Final = ("COMPLETED", "COMPENSATED", "FAILED")
_STATUSES: Final = ("PENDING", "EXECUTING", "COMPENSATING", *TERMINAL)

# Every time judgement uses clock_timestamp() (the database clock leases and deadlines are written
# with), never this process's clock, which may be skewed against it.
_SAGAS: Final = """
SELECT id, status, error,
       extract(epoch FROM clock_timestamp() - deadline)::float8 AS overdue,
       (owner_id IS NOT NULL AND lease_expires_at > clock_timestamp()) AS leased,
       extract(epoch FROM next_attempt_at - clock_timestamp())::float8 AS due_in
FROM sagas"""

_ORDERS: Final = "SELECT saga_id, status, total_amount FROM orders"
_PAYMENTS: Final = "SELECT saga_id, status, amount FROM payments"
# Items as one readable string per reservation, e.g. "2 x SKU-WIDGET, 1 x SKU-GADGET".
_RESERVATIONS: Final = """
SELECT r.saga_id, r.status, coalesce(string_agg(i.quantity || ' x ' || i.sku, ', ' ORDER BY i.sku), '') AS items
FROM reservations r LEFT JOIN reservation_items i ON i.reservation_id = r.id
GROUP BY r.id"""

# A refund credits at most once (its UPDATE is guarded by status), but the orchestrator sends one
# compensation key per step: a second refund row for one payment means the compensation ran twice.
_REFUNDS_TWICE: Final = """
SELECT payment_id, min(saga_id::text) AS saga_id, count(*) AS n, array_agg(idempotency_key ORDER BY created_at) AS keys
FROM refunds WHERE payment_id IS NOT NULL
GROUP BY payment_id HAVING count(*) > 1"""

# A tombstone is left only when the compensation found no effect, under the action key's lock, and it
# refuses that key forever: an effect under a tombstoned key was applied after its compensation.
_TOMBSTONED: Final = {
    "order_service": """
        SELECT 'order' AS what, o.saga_id, o.idempotency_key FROM orders o
        JOIN order_tombstones t ON t.action_idempotency_key = o.idempotency_key""",
    "payment_service": """
        SELECT 'payment' AS what, p.saga_id, p.idempotency_key FROM payments p
        JOIN payment_tombstones t ON t.action_idempotency_key = p.idempotency_key""",
    "inventory_service": """
        SELECT 'reservation' AS what, r.saga_id, r.idempotency_key FROM reservations r
        JOIN releases t ON t.action_idempotency_key = r.idempotency_key AND t.reservation_id IS NULL""",
}

_ACCOUNTS: Final = """
SELECT a.customer_id, a.initial_balance, a.balance,
       coalesce(sum(p.amount), 0) AS captured,
       coalesce(sum(p.amount) FILTER (WHERE p.status = 'REFUNDED'), 0) AS refunded
FROM accounts a LEFT JOIN payments p ON p.customer_id = a.customer_id
GROUP BY a.customer_id, a.initial_balance, a.balance"""

_STOCK: Final = """
SELECT s.sku, s.initial, s.available, s.reserved,
       (SELECT coalesce(sum(i.quantity), 0) FROM reservation_items i
        JOIN reservations r ON r.id = i.reservation_id
        WHERE i.sku = s.sku AND r.status = 'RESERVED') AS held
FROM stock s"""

# Events are appended in id order by whoever holds the lease, so a fence lower than its predecessor's
# is a write from an owner that had already lost the saga.
_FENCE_DROPS: Final = """
SELECT saga_id FROM (
  SELECT saga_id, fence < lag(fence) OVER (PARTITION BY saga_id ORDER BY id) AS dropped FROM saga_events
) e WHERE dropped GROUP BY saga_id"""

# When each fence of the journal's sagas first appeared: a claim writes `lease_acquired` with the new
# fence in its own transaction, so this is the moment that fence took the saga over.
_FENCE_STARTS: Final = """
SELECT saga_id, fence, extract(epoch FROM min(created_at))::float8 AS since
FROM saga_events WHERE saga_id = ANY($1::uuid[])
GROUP BY saga_id, fence"""


@dataclass
class Report:
    """What the checker saw. `ok` is the verdict; every other field is there to explain it.

    Attributes:
        counts: sagas per status.
        violations: every broken invariant, one readable line each.
        failed: (saga id, reason) of every FAILED saga.
        needs_person: per FAILED saga, what each participant still holds (money, stock), for the
            person who retries or undoes it.
        stranded: ids of live sagas nobody holds and no poller will take soon (also violations).
        stale_calls: journal calls sent from a lost lease (also violations).
        calls_judged: journal calls looked at (0 without a journal).
    """

    counts: dict[str, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    needs_person: list[str] = field(default_factory=list)
    stranded: list[str] = field(default_factory=list)
    stale_calls: int = 0
    calls_judged: int = 0

    @property
    def ok(self) -> bool:
        """True when no invariant is violated (FAILED sagas needing a person are not violations)."""
        return not self.violations


@dataclass(frozen=True)
class Call:
    """One participant call from the journal, stamped by the receiver's clock (unix seconds)."""

    service: str
    method: str
    saga_id: str
    owner: str
    fence: int
    at: float

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> Call:
        """Parse one journal entry.

        Raises:
            ValueError: a field is missing or of the wrong kind; a journal the oracle cannot read must
                not pass as one with no stale call.
        """
        try:
            return cls(
                service=str(raw["service"]),
                method=str(raw["method"]),
                saga_id=str(uuid.UUID(str(raw["saga_id"]))),
                owner=str(raw["owner"]),
                fence=int(raw["fence"]),
                at=float(raw["at"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"bad journal entry {raw!r}: {exc}") from exc


Journal: TypeAlias = Iterable[Mapping[str, Any]] | str | Path


def read_journal(path: str | Path) -> list[Call]:
    """The calls in one JSON-lines file, or in every `*.jsonl` file of a directory (blank lines skipped)."""
    path = Path(path)
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    return [Call.of(json.loads(line)) for f in files for line in f.read_text().splitlines() if line.strip()]


@dataclass
class _Held:
    """What the three participants hold for one saga."""

    orders: list[Any] = field(default_factory=list)
    payments: list[Any] = field(default_factory=list)
    reservations: list[Any] = field(default_factory=list)


async def _fetch(url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def run(
    urls: dict[str, str],
    stuck_after: float = 75.0,
    *,
    due_slack: float = 15.0,
    journal: Journal | None = None,
    grace: float = 1.0,
) -> Report:
    """Check every invariant against the databases named by role in `urls`.

    Args:
        urls: connection URL per role (`saga_orchestrator`, `order_service`, ...).
        stuck_after: seconds past its deadline a live saga may still run (deadline + lease TTL + poll
            interval + retry backoff).
        due_slack: how far in the future `next_attempt_at` of an unleased live saga may lie before it
            counts as stranded; it must cover the longest wait an owner may release a saga with (the
            longest retry backoff, 10 s, plus margin).
        journal: participant calls to judge for lost leases: entries as mappings, or a JSON-lines
            file (or a directory of `*.jsonl`); None skips the check.
        grace: seconds a call may arrive after a newer fence took over (in flight at the takeover,
            plus clock skew between the receiver and the database).
    """
    report = Report()
    sagas = await _fetch(urls["saga_orchestrator"], _SAGAS)
    held = await _holdings(urls)
    report.counts = {status: sum(1 for s in sagas if s["status"] == status) for status in _STATUSES}
    for saga in sagas:
        _check_saga(report, saga, held.get(saga["id"], _Held()), stuck_after, due_slack)
    await _check_effects(report, urls)
    await _check_conservation(report, urls)
    await _check_fences(report, urls["saga_orchestrator"])
    if journal is not None:
        calls = read_journal(journal) if isinstance(journal, str | Path) else [Call.of(c) for c in journal]
        await _check_calls(report, urls["saga_orchestrator"], calls, grace)
    return report


async def _holdings(urls: dict[str, str]) -> dict[uuid.UUID, _Held]:
    held: dict[uuid.UUID, _Held] = defaultdict(_Held)
    for row in await _fetch(urls["order_service"], _ORDERS):
        held[row["saga_id"]].orders.append(row)
    for row in await _fetch(urls["payment_service"], _PAYMENTS):
        held[row["saga_id"]].payments.append(row)
    for row in await _fetch(urls["inventory_service"], _RESERVATIONS):
        held[row["saga_id"]].reservations.append(row)
    return held


def _check_saga(report: Report, saga: Any, held: _Held, stuck_after: float, due_slack: float) -> None:
    sid = saga["id"]
    for name, rows in (("orders", held.orders), ("payments", held.payments), ("reservations", held.reservations)):
        if len(rows) > 1:
            report.violations.append(f"saga {sid}: {len(rows)} {name} (an effect applied twice)")
    _check_liveness(report, saga, stuck_after, due_slack)
    _check_point_of_no_return(report, saga, held)
    judge = _BY_STATUS.get(saga["status"])
    if judge is not None:
        judge(report, saga, held)


def _check_liveness(report: Report, saga: Any, stuck_after: float, due_slack: float) -> None:
    """A live saga must end in time, and someone must be able to take it: a live lease, or due soon."""
    sid, status = saga["id"], saga["status"]
    if status in TERMINAL:
        return
    if saga["overdue"] > stuck_after:
        report.violations.append(f"saga {sid}: still {status} {stuck_after:g}s past its deadline")
    if not saga["leased"] and saga["due_in"] > due_slack:
        report.stranded.append(str(sid))
        report.violations.append(
            f"saga {sid}: stranded {status}, no live lease and not due for {saga['due_in']:.0f}s (no poller takes it)"
        )


def _check_point_of_no_return(report: Report, saga: Any, held: _Held) -> None:
    """A CONFIRMED order is final (confirm has no compensation): its payment and stock must still be kept.

    Confirmation comes after payment and reservation, so at no moment of a healthy saga, whatever its
    status, is an order confirmed without them: missing or undone, they were compensated past the
    point of no return, and the customer gets goods unpaid or an order with nothing behind it.
    """
    if not any(o["status"] == "CONFIRMED" for o in held.orders):
        return
    lost = []
    if not any(p["status"] == "CAPTURED" for p in held.payments):
        lost.append(_payments(held) or "no payment")
    if not any(r["status"] == "RESERVED" for r in held.reservations):
        lost.append(_stock(held) or "no stock reserved")
    for what in lost:
        report.violations.append(
            f"saga {saga['id']} ({saga['status']}): order CONFIRMED but {what}"
            " (compensated past the point of no return)"
        )


def _check_completed(report: Report, saga: Any, held: _Held) -> None:
    sid, orders = saga["id"], held.orders
    if not orders or orders[0]["status"] != "CONFIRMED":
        report.violations.append(f"saga {sid}: COMPLETED but the order is not CONFIRMED")
        return
    captured = [p for p in held.payments if p["status"] == "CAPTURED"]
    if len(captured) != 1 or Decimal(captured[0]["amount"]) != Decimal(orders[0]["total_amount"]):
        report.violations.append(f"saga {sid}: COMPLETED but the captured payment does not equal the order total")
    if not any(r["status"] == "RESERVED" for r in held.reservations):
        report.violations.append(f"saga {sid}: COMPLETED but no stock is reserved")


def _check_compensated(report: Report, saga: Any, held: _Held) -> None:
    sid = saga["id"]
    if any(o["status"] != "CANCELLED" for o in held.orders):
        report.violations.append(f"saga {sid}: COMPENSATED but its order is {held.orders[0]['status']}")
    if any(p["status"] == "CAPTURED" for p in held.payments):
        report.violations.append(f"saga {sid}: COMPENSATED but money is still captured")
    if any(r["status"] == "RESERVED" for r in held.reservations):
        report.violations.append(f"saga {sid}: COMPENSATED but stock is still reserved")


def _check_failed(report: Report, saga: Any, held: _Held) -> None:
    """A FAILED saga waits for a person: say what each participant still holds, so they know what to undo."""
    sid = saga["id"]
    report.failed.append((str(sid), saga["error"] or ""))
    if not saga["error"]:
        report.violations.append(f"saga {sid}: FAILED without a reason")
    orders = ", ".join(f"order {o['status']}" for o in held.orders) or "no order"
    parts = (orders, _payments(held) or "no payment", _stock(held) or "no stock reserved")
    report.needs_person.append(f"FAILED saga {sid}: {', '.join(parts)}")


_BY_STATUS: Final = {"COMPLETED": _check_completed, "COMPENSATED": _check_compensated, "FAILED": _check_failed}


def _payments(held: _Held) -> str:
    """E.g. `payment CAPTURED 12.00 (still held)`; empty without a payment."""
    return ", ".join(
        f"payment {p['status']} {p['amount']}" + (" (still held)" if p["status"] == "CAPTURED" else "")
        for p in held.payments
    )


def _stock(held: _Held) -> str:
    """E.g. `stock reserved (2 x SKU-WIDGET)`; empty without a reservation."""
    return ", ".join(f"stock {r['status'].lower()} ({r['items']})" for r in held.reservations)


async def _check_effects(report: Report, urls: dict[str, str]) -> None:
    """Effects the per-saga view cannot see: a payment refunded twice, an effect past its tombstone.

    One row per idempotency key needs no check: orders, payments and reservations hold their key
    under a UNIQUE constraint, and releases and receipts under their primary keys.
    """
    for r in await _fetch(urls["payment_service"], _REFUNDS_TWICE):
        report.violations.append(
            f"saga {r['saga_id']}: payment {r['payment_id']} refunded {r['n']} times (keys {', '.join(r['keys'])})"
        )
    for role, query in _TOMBSTONED.items():
        for r in await _fetch(urls[role], query):
            report.violations.append(
                f"saga {r['saga_id']}: {r['what']} applied under key {r['idempotency_key']}"
                " after its compensation left a tombstone"
            )


async def _check_conservation(report: Report, urls: dict[str, str]) -> None:
    for a in await _fetch(urls["payment_service"], _ACCOUNTS):
        if a["initial_balance"] != a["balance"] + a["captured"] - a["refunded"]:
            report.violations.append(
                f"customer {a['customer_id']}: initial {a['initial_balance']} != balance {a['balance']}"
                f" + captured {a['captured']} - refunded {a['refunded']}"
            )
    for s in await _fetch(urls["inventory_service"], _STOCK):
        if s["initial"] != s["available"] + s["reserved"] or s["reserved"] != s["held"]:
            report.violations.append(
                f"sku {s['sku']}: initial {s['initial']}, available {s['available']}, reserved {s['reserved']},"
                f" held by reservations {s['held']}"
            )


async def _check_fences(report: Report, url: str) -> None:
    for row in await _fetch(url, _FENCE_DROPS):
        report.violations.append(f"saga {row['saga_id']}: the fencing token decreased in saga_events")


async def _check_calls(report: Report, url: str, calls: list[Call], grace: float) -> None:
    """Flag each call received more than `grace` seconds after a higher fence took its saga over.

    A participant cannot refuse such a call by itself (it does not know the fence), so a stale call
    means the sender kept acting on a lease it had lost, and only idempotency keys stood between it
    and a duplicated effect.
    """
    report.calls_judged += len(calls)
    ids = sorted({uuid.UUID(c.saga_id) for c in calls})
    starts: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for row in await _fetch(url, _FENCE_STARTS, ids):
        starts[str(row["saga_id"])].append((row["fence"], row["since"]))
    for call in calls:
        taken = [(since, fence) for fence, since in starts[call.saga_id] if fence > call.fence]
        if not taken:
            continue
        since, fence = min(taken)
        late = call.at - since
        if late > grace:
            report.stale_calls += 1
            report.violations.append(
                f"saga {call.saga_id}: {call.service}.{call.method} from {call.owner} fence {call.fence}"
                f" received {late:.3f}s after fence {fence} took over"
            )


def render(report: Report) -> str:
    """A readable verdict: counts, sagas needing a person with what they hold, violations, the verdict."""
    lines = ["sagas: " + ", ".join(f"{k} {v}" for k, v in report.counts.items() if v)]
    lines += [f"FAILED (needs a person) {sid}: {reason}" for sid, reason in report.failed]
    if report.needs_person:
        lines.append("still held by FAILED sagas (for the person who retries or undoes them):")
        lines += [f"  {line}" for line in report.needs_person]
    if report.stranded:
        lines.append(f"stranded sagas (no lease, not due): {len(report.stranded)}")
    if report.calls_judged:
        lines.append(f"journal: {report.calls_judged} call(s) judged, {report.stale_calls} after a lost lease")
    lines += [f"VIOLATION {v}" for v in report.violations]
    lines.append(
        "verdict: OK, every invariant holds" if report.ok else f"verdict: {len(report.violations)} violation(s)"
    )
    return "\n".join(lines)
