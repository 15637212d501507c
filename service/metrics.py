"""The gateway's Prometheus metrics, one registry per app (tests create several apps).

Label values stay bounded: `route` is the route template (`/predictions/{model}`), never
the raw path; `model` is a name only once TorchServe has answered for it without a 404 (so
made-up names never become labels), and at most `MAX_MODEL_LABELS` names, then "_other".
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

MAX_MODEL_LABELS = 100
NO_MODEL = ""
OTHER_MODELS = "_other"
UNMATCHED_ROUTE = "unmatched"

# Sub-millisecond buckets: the gateway's own share of a request is a fraction of a ms.
_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024)


class GatewayMetrics:
    """Counters, histograms and gauges of one gateway app, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "gateway_requests",
            "Requests answered, by route template, method, model and status.",
            ["route", "method", "model", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "gateway_request_duration_seconds",
            "Time from request to last response byte, by route template and method.",
            ["route", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.upstream_errors = Counter(
            "gateway_upstream_errors",
            "TorchServe failures and error answers, by kind (the error's type).",
            ["kind"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "gateway_requests_in_flight",
            "Proxied requests (predictions, management) being handled now.",
            registry=self.registry,
        )
        self.upstream_batch_items = Histogram(
            "gateway_upstream_batch_items",
            "Predictions per request sent to TorchServe (more than 1: batched by the gateway).",
            ["model"],
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self._models: set[str] = set()
        # Labelled children, looked up once: `labels()` costs ~1 us a call under its lock,
        # paid on every request otherwise. The label values are bounded (see above).
        self._answered: dict[tuple[str, str, str, int], tuple[Counter, Histogram]] = {}

    def model_label(self, name: str) -> str:
        """The `model` label for a name TorchServe knows; call only after a non-404 answer."""
        if name in self._models:
            return name
        if len(self._models) < MAX_MODEL_LABELS:
            self._models.add(name)
            return name
        return OTHER_MODELS

    def observe(self, route: str, method: str, model: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        key = (route, method, model, status)
        children = self._answered.get(key)
        if children is None:
            children = (
                self.requests.labels(route, method, model, str(status)),
                self.latency.labels(route, method),
            )
            self._answered[key] = children
        count, latency = children
        count.inc()
        latency.observe(seconds)

    def observe_upstream_batch(self, model: str, items: int) -> None:
        """Count one upstream prediction request carrying `items` predictions for `model`
        (a model TorchServe answered for without a 404)."""
        self.upstream_batch_items.labels(self.model_label(model)).observe(items)
