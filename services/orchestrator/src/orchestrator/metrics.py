"""The orchestrator's metrics (SPEC section 10). Labels never carry a saga id."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram

_SAGA_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

SAGA_DURATION: Final = Histogram(
    "saga_duration_seconds", "From acceptance to a terminal state.", ["saga_type", "status"], buckets=_SAGA_BUCKETS
)
STEP_DURATION: Final = Histogram(
    "saga_step_duration_seconds", "One attempt of a step's action or compensation.", ["step_name", "status"]
)
SAGA_TOTAL: Final = Counter("saga_total", "Sagas that reached a terminal state.", ["saga_type", "status"])
SAGA_STARTED: Final = Counter("saga_started_total", "Sagas accepted.", ["saga_type"])
RETRIES: Final = Counter("saga_retry_total", "Retries scheduled.", ["step_name", "kind"])
COMPENSATIONS: Final = Counter("saga_compensations_total", "Sagas that began compensating.", ["saga_type", "reason"])
DEADLINES: Final = Counter("saga_deadline_exceeded_total", "Sagas past their deadline.", ["saga_type", "action"])
LEASES_HELD: Final = Gauge("saga_leases_held", "Sagas this instance owns right now.")
TAKEOVERS: Final = Counter("saga_takeovers_total", "Sagas claimed after another owner's lease expired.")
LEASE_LOSSES: Final = Counter("saga_lease_losses_total", "Sagas this instance stopped because its lease was lost.")
OLDEST_LIVE: Final = Gauge("saga_oldest_nonterminal_age_seconds", "Age of the oldest saga not yet terminal.")
FAILED_SAGAS: Final = Gauge("saga_failed_current", "Sagas in FAILED, waiting for a person (not yet resolved).")
PAST_DEADLINE: Final = Gauge("saga_past_deadline_current", "Sagas not yet terminal whose deadline has passed.")
MOST_OVERDUE: Final = Gauge(
    "saga_past_deadline_max_seconds", "How far past its deadline the most overdue non-terminal saga is (0: none)."
)
BREAKER_STATE: Final = Gauge(
    "saga_circuit_breaker_state", "Breaker per downstream service: 0 closed, 1 half-open, 2 open.", ["service"]
)
LAST_POLL: Final = Gauge("saga_last_poll_timestamp_seconds", "Unix time of the last successful poll.")
SAVE_RETRIES: Final = Counter(
    "saga_save_retries_total", "Checkpoints repeated because the database could not confirm them (transient errors)."
)
CLOCK_OFFSET: Final = Gauge(
    "saga_clock_offset_seconds", "The database clock minus this instance's wall clock, at the last reading."
)
LEASE_REFRESHES: Final = Counter(
    "saga_lease_refreshes_total", "Saves made before a call because the run's last save was over half a lease ago."
)
RETENTION_DELETED: Final = Counter(
    "saga_retention_deleted_total",
    "Rows retention deleted: finished sagas, their steps and events, and expired idempotency keys.",
    ["kind"],
)
RETENTION_EXPORTED: Final = Counter(
    "saga_retention_exported_total", "Finished sagas written to the retention export directory before deletion."
)
RETENTION_EXPORT_FAILURES: Final = Counter(
    "saga_retention_export_failures_total", "Retention batches not deleted because their export could not be written."
)
