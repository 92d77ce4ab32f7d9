from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from servicekit import metrics


def _counter(name: str) -> tuple[Counter, CollectorRegistry]:
    registry = CollectorRegistry()
    return Counter(name, "test counter", ["kind"], registry=registry), registry


def test_a_remembered_child_is_the_one_labels_returns_and_counts_into_the_same_series() -> None:
    counter, registry = _counter("labelled_same_total")

    metrics.labelled(counter, "a").inc()
    metrics.labelled(counter, "a").inc(2)

    assert metrics.labelled(counter, "a") is counter.labels("a")
    assert registry.get_sample_value("labelled_same_total", {"kind": "a"}) == 3


def test_two_metrics_with_the_same_label_values_keep_their_own_children() -> None:
    first, first_registry = _counter("labelled_first_total")
    second, second_registry = _counter("labelled_second_total")

    metrics.labelled(first, "x").inc()

    assert metrics.labelled(second, "x") is not metrics.labelled(first, "x")
    assert second_registry.get_sample_value("labelled_second_total", {"kind": "x"}) == 0
    assert first_registry.get_sample_value("labelled_first_total", {"kind": "x"}) == 1


def test_the_memory_is_bounded_and_values_past_the_bound_still_count(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    counter, registry = _counter("labelled_bound_total")
    monkeypatch.setattr(metrics, "_children", {})
    monkeypatch.setattr(metrics, "_CHILDREN_CACHED", 2)

    for value in ("a", "b", "c", "d", "c"):
        metrics.labelled(counter, value).inc()

    assert len(metrics._children) == 2
    assert registry.get_sample_value("labelled_bound_total", {"kind": "c"}) == 2
