"""The metrics every process exports, defined once so their names and labels never drift."""

from __future__ import annotations

from typing import Any, Final, TypeVar

from prometheus_client import Histogram
from prometheus_client.metrics import MetricWrapperBase

_M = TypeVar("_M", bound=MetricWrapperBase)
_CHILDREN_CACHED: Final = 4096
_children: dict[tuple[MetricWrapperBase, tuple[str, ...]], Any] = {}


def labelled(metric: _M, *values: str) -> _M:
    """`metric.labels(*values)`, remembered: the hot paths ask for the same few children on every call.

    `labels` validates, converts and locks each time; a dictionary hit costs a tenth of that. Bounded,
    so a label with unexpected variety costs only the uncached path, never memory.
    """
    key = (metric, values)
    child = _children.get(key)
    if child is None:
        child = metric.labels(*values)
        if len(_children) < _CHILDREN_CACHED:
            _children[key] = child
    return child


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
