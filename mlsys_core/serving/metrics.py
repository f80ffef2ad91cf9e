"""Prometheus metrics of the service, per variant, in a registry of its own.

A registry per service (not the process-global default) lets several apps live in one
process (tests, a bench) without their series colliding.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Throughput:
    """Records per second over the last ``window_s`` seconds, per variant (one-second bins)."""

    def __init__(self, window_s: int = 10) -> None:
        self.window_s = window_s
        self._bins: dict[str, deque[list[float]]] = defaultdict(deque)
        self._lock = threading.Lock()

    def add(self, variant: str, n: int, now: float | None = None) -> None:
        second = float(int(now if now is not None else time.monotonic()))
        with self._lock:
            bins = self._bins[variant]
            if bins and bins[-1][0] == second:
                bins[-1][1] += n
            else:
                bins.append([second, float(n)])
            while bins and bins[0][0] <= second - self.window_s:
                bins.popleft()

    def rates(self, now: float | None = None) -> dict[str, float]:
        horizon = (now if now is not None else time.monotonic()) - self.window_s
        with self._lock:
            return {
                v: sum(n for t, n in bins if t > horizon) / self.window_s
                for v, bins in self._bins.items()
            }


class _ThroughputCollector:
    def __init__(self, throughput: Throughput) -> None:
        self.throughput = throughput

    def collect(self):  # noqa: ANN201 -- the prometheus_client collector protocol
        family = GaugeMetricFamily(
            "mlsys_serving_throughput_records_per_second",
            "Records scored per second over the last 10 s, by variant.",
            labels=["variant"],
        )
        for variant, rate in sorted(self.throughput.rates().items()):
            family.add_metric([variant], rate)
        yield family


# From a second (a stream's micro-batch) to a week (a daily batch materialization gone stale).
FEATURE_AGE_BUCKETS = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 86400, 604800)


class ServiceMetrics:
    """Request count, latency, errors and throughput by variant, plus rollout events."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "mlsys_serving_requests", "Records scored, by variant.", ["variant"], registry=r
        )
        self.errors = Counter(
            "mlsys_serving_errors",
            "Records a variant failed to score (a failed challenger record is rescored by "
            "the champion), by variant.",
            ["variant"],
            registry=r,
        )
        self.latency = Histogram(
            "mlsys_serving_latency_seconds",
            "Time from a validated record's arrival in the scoring queue to its prediction, "
            "by variant (shadow copies: the challenger's scoring time).",
            ["variant"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.http = Counter(
            "mlsys_serving_http_responses", "HTTP responses by status code.", ["status"], registry=r
        )
        self.batch_size = Histogram(
            "mlsys_serving_micro_batch_records",
            "Records per model call (concurrent requests are scored together).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=r,
        )
        self.model_version = Gauge(
            "mlsys_serving_model_version",
            "The registered version each variant serves (absent: none loaded).",
            ["variant"],
            registry=r,
        )
        self.reloads = Counter(
            "mlsys_serving_reloads", "Alias moves picked up, by variant.", ["variant"], registry=r
        )
        self.rollbacks = Counter(
            "mlsys_serving_canary_rollbacks", "Automatic canary rollbacks.", registry=r
        )
        self.canary_active = Gauge(
            "mlsys_serving_canary_active",
            "1 while a challenger takes canary traffic, 0 after a rollback or without one.",
            registry=r,
        )
        self.shadow_dropped = Counter(
            "mlsys_serving_shadow_dropped",
            "Shadow copies dropped because the shadow backlog was full.",
            registry=r,
        )
        self.log_rows = Counter(
            "mlsys_serving_prediction_log_rows", "Rows written to the prediction log.", registry=r
        )
        self.log_failures = Counter(
            "mlsys_serving_prediction_log_failures", "Failed prediction-log flushes.", registry=r
        )
        self.online_lookups = Counter(
            "mlsys_serving_online_lookups",
            "Records looked up in the online store, by source (feature view or table).",
            ["source"],
            registry=r,
        )
        self.online_misses = Counter(
            "mlsys_serving_online_misses",
            "Online lookups that found no row for the record's key (or had no key), by "
            "source: those inputs are imputed, or take a view's empty-history values.",
            ["source"],
            registry=r,
        )
        self.feature_age = Histogram(
            "mlsys_serving_feature_age_seconds",
            "Age of a feature view's online values at request time (request time minus the "
            "event time they are exact as of; 0 when the store is ahead of the request), by "
            "view.",
            ["view"],
            buckets=FEATURE_AGE_BUCKETS,
            registry=r,
        )
        self.stale = Counter(
            "mlsys_serving_stale_features",
            "Records whose feature-view values were older than the view's ttl at request "
            "time, so treated as missing (imputed), by view.",
            ["view"],
            registry=r,
        )
        self.imputed = Counter(
            "mlsys_serving_imputed_inputs",
            "Model inputs that reached the model missing (imputed as in training), by input.",
            ["input"],
            registry=r,
        )
        self.unseen = Counter(
            "mlsys_serving_unseen_categories",
            "Categorical inputs whose value the serving version never saw in training (scored "
            "as an unknown category), by input: a caller writing a value otherwise than the "
            "data does shows here.",
            ["input"],
            registry=r,
        )
        self.throughput = Throughput()
        r.register(_ThroughputCollector(self.throughput))

    def scored(self, variant: str, latencies_s: list[float], failed: int = 0) -> None:
        n = len(latencies_s)
        self.requests.labels(variant).inc(n)
        if failed:
            self.errors.labels(variant).inc(failed)
        hist = self.latency.labels(variant)
        for seconds in latencies_s:
            hist.observe(seconds)
        self.throughput.add(variant, n)
