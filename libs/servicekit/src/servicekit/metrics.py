"""The metrics every process exports, defined once so their names and labels never drift."""

from __future__ import annotations

from typing import Final

from prometheus_client import Histogram

_LATENCY_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

GRPC_REQUEST_DURATION: Final = Histogram(
    "grpc_request_duration_seconds",
    "gRPC call duration, server side (role=server) and client side (role=client).",
    ["role", "service", "method", "code"],
    buckets=_LATENCY_BUCKETS,
)

DB_QUERY_DURATION: Final = Histogram(
    "db_query_duration_seconds",
    "PostgreSQL statement duration by statement kind.",
    ["operation"],
    buckets=_LATENCY_BUCKETS,
)
