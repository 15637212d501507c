"""`bench.stack.upstream_batch_items`: the gateway's batching read from a real exposition."""

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from bench.stack import UPSTREAM_ITEMS_METRIC, upstream_batch_items


def exposition(*observations: tuple[str, int]) -> str:
    """What a registry holding the gateway's histogram (and a neighbour) serves on /metrics."""
    registry = CollectorRegistry()
    items = Histogram(
        UPSTREAM_ITEMS_METRIC, "items", ["model"], buckets=(1, 4, 16), registry=registry
    )
    Counter("gateway_requests", "requests", ["model"], registry=registry).labels("m").inc(7)
    for model, count in observations:
        items.labels(model).observe(count)
    return generate_latest(registry).decode()


def test_sum_and_count_per_model() -> None:
    text = exposition(("m", 1), ("m", 16), ("m", 10), ("n", 3))
    assert upstream_batch_items(text) == {"m": (27.0, 3.0), "n": (3.0, 1.0)}


def test_absent_metric_or_unparsable_text_gives_nothing() -> None:
    assert upstream_batch_items(exposition()) == {}  # declared, never observed
    assert upstream_batch_items('gateway_requests_total{model="m"} 7.0\n') == {}
    assert upstream_batch_items('{"code": 404, "type": "NotFound"}') == {}
    assert upstream_batch_items("") == {}
