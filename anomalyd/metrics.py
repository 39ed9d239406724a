"""Prometheus metrics, liveness and readiness over HTTP, on 127.0.0.1 unless configured.

``/metrics`` (Prometheus text format), ``/healthz`` (200 while the main loop made progress
recently: a wedged loop is not alive),
``/readyz`` (200 while partitions are assigned and consumed, and sinks accept writes).
Labels carry only topics and partitions: never a secret, never a per-key label.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from anomalyd.pipeline import BatchResult


class GradeHistogram:
    """``anomalyd_grade``: the grades of the scored events, counted a batch at a time with
    numpy (a Histogram's ``observe`` per event would cost a lock and a call each). The
    buckets are where a grade's meaning lives: one in 10, 100 ... 100,000 normal events."""

    BOUNDS = (0.5, 0.9, 0.99, 0.999, 0.9999, 0.99999)

    def __init__(self, registry: CollectorRegistry):
        self._lock = threading.Lock()
        self._counts = np.zeros(len(self.BOUNDS) + 1, dtype=np.int64)  # per bucket, not cumulative
        self._sum = 0.0
        registry.register(self)

    def observe(self, grades: np.ndarray) -> None:
        graded = grades[np.isfinite(grades)]
        if not graded.size:
            return
        where = np.searchsorted(np.array(self.BOUNDS), graded, side="left")
        with self._lock:
            self._counts += np.bincount(where, minlength=self._counts.size)
            self._sum += float(graded.sum())

    def collect(self) -> list[HistogramMetricFamily]:
        with self._lock:
            cumulative, total = np.cumsum(self._counts).tolist(), self._sum
        buckets = [(repr(b), c) for b, c in zip(self.BOUNDS, cumulative, strict=False)]
        family = HistogramMetricFamily("anomalyd_grade", "Grades of the scored events (0 to 1)")
        family.add_metric([], [*buckets, ("+Inf", cumulative[-1])], total)
        return [family]


class Metrics:
    """The daemon's metrics in a registry of their own (tests may build several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter("anomalyd_events", "Events scored or warming up", registry=r)
        self.alerts = Counter("anomalyd_alerts", "Alerts raised", registry=r)
        # flagged / decisions is the share of points above their key's threshold: near the
        # threshold's risk (spot) or 1 - quantile while it is calibrated as it should be.
        self.decisions = Counter(
            "anomalyd_decisions",
            "Events a calibrated threshold decided on (past warm-up and calibration)",
            registry=r,
        )
        self.flagged = Counter("anomalyd_flagged", "Events above their key's threshold", registry=r)
        self.dead_letters = Counter("anomalyd_dead_letters", "Records dead-lettered", registry=r)
        self.grades = GradeHistogram(r)
        self.dead_letters_cut = Counter(
            "anomalyd_dead_letters_cut",
            "Dead letters published cut down (value truncated, or origin and reason alone) to fit",
            registry=r,
        )
        self.batch_seconds = Histogram(
            "anomalyd_batch_seconds",
            "Time to process one polled batch",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.lag = Gauge(
            "anomalyd_consumer_lag", "Messages behind the high watermark", ["topic", "partition"], registry=r
        )
        self.model_version = Gauge("anomalyd_model_version", "Highest live model version", registry=r)
        self.models = Gauge("anomalyd_models", "Trained models (one per key with scope per_key)", registry=r)
        self.model_age = Gauge(
            "anomalyd_model_age_seconds", "Seconds since the last model was trained", registry=r
        )
        self.trainings = Counter("anomalyd_trainings", "Models trained", registry=r)
        self.retrains = Counter(
            "anomalyd_retrains", "Retrainings judged, by outcome", ["outcome"], registry=r
        )
        self.keys = Gauge("anomalyd_keys", "Keys with state in this process", registry=r)
        self.evicted = Counter("anomalyd_keys_evicted", "Keys evicted (eviction.*)", registry=r)
        self.ready = Gauge("anomalyd_ready", "1 when assigned, consuming and publishing", registry=r)
        self._last_training: float | None = None
        self._lag_labels: set[tuple[str, str]] = set()
        self._max_version = 0
        self.model_age.set_function(self._model_age)

    def _model_age(self) -> float:
        return time.time() - self._last_training if self._last_training is not None else float("nan")

    def observe(self, result: BatchResult) -> None:
        self.events.inc(len(result.events))
        self.alerts.inc(len(result.alerts))
        self.decisions.inc(int(np.isfinite(result.thresholds).sum()))
        self.flagged.inc(int(result.anomalous.sum()))
        self.grades.observe(result.grades)
        self.dead_letters.inc(len(result.dead_letters))
        self.evicted.inc(result.evicted)
        if result.events or result.dead_letters:
            self.batch_seconds.observe(result.seconds)
        for outcome in result.retrained:
            self.retrains.labels("promoted" if outcome.promoted else "rejected").inc()
            self._last_training = time.time()
            self._max_version = max(self._max_version, outcome.version)
            self.model_version.set(self._max_version)
        if result.trained:
            self.trainings.inc(len(result.trained))
            self._last_training = time.time()
            self._max_version = max(self._max_version, *(v for _, v in result.trained))
            self.model_version.set(self._max_version)

    def set_lag(self, lags: dict[tuple[str, int], int]) -> None:
        """Lag of the partitions owned now; the gauges of partitions no longer owned go."""
        labels = {(topic, str(partition)): lag for (topic, partition), lag in lags.items()}
        for gone in self._lag_labels - labels.keys():
            self.lag.remove(*gone)
        for label, lag in labels.items():
            self.lag.labels(*label).set(lag)
        self._lag_labels = set(labels)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class HealthServer:
    """A small threaded HTTP server; ``alive`` and ``ready`` are callables read per request."""

    def __init__(
        self, metrics: Metrics, host: str, port: int, alive: Callable[[], bool], ready: Callable[[], bool]
    ):
        self.metrics = metrics
        handler = _handler(metrics, alive, ready)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="anomalyd-http", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(
    metrics: Metrics, alive: Callable[[], bool], ready: Callable[[], bool]
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._reply(200, metrics.exposition(), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                ok = alive()
                self._reply(200 if ok else 503, b"ok\n" if ok else b"stalled\n")
            elif path == "/readyz":
                ok = ready()
                self._reply(200 if ok else 503, b"ready\n" if ok else b"not ready\n")
            else:
                self._reply(404, b"not found\n")

        def _reply(self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    return Handler
