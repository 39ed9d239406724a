import urllib.error
import urllib.request

import numpy as np

from anomalyd.events import Event
from anomalyd.metrics import HealthServer, Metrics
from anomalyd.pipeline import BatchResult


def fetch(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_health_and_readiness_follow_their_callables():
    state = {"alive": True, "ready": False}
    metrics = Metrics()
    server = HealthServer(metrics, "127.0.0.1", 0, lambda: state["alive"], lambda: state["ready"])
    server.start()
    try:
        host, port = server.address
        assert host == "127.0.0.1"
        assert fetch(port, "/healthz")[0] == 200
        assert fetch(port, "/readyz")[0] == 503
        state["ready"] = True
        assert fetch(port, "/readyz")[0] == 200
        state["alive"] = False
        assert fetch(port, "/healthz")[0] == 503
        assert fetch(port, "/other")[0] == 404
    finally:
        server.close()


def test_metrics_count_a_batch():
    metrics = Metrics()
    events = [Event("k", "t", 0.0, np.array([1.0]), {}) for _ in range(3)]
    grades = np.array([np.nan, 0.95, 0.99995])
    result = BatchResult(
        events, np.zeros(3), grades, np.zeros(3), np.zeros(3, bool), trained=[("", 2)], seconds=0.01
    )
    metrics.observe(result)
    metrics.set_lag({("in", 1): 42})
    text = metrics.exposition().decode()
    assert "anomalyd_events_total 3.0" in text
    assert "anomalyd_model_version 2.0" in text
    assert 'anomalyd_consumer_lag{partition="1",topic="in"} 42.0' in text
    assert "anomalyd_batch_seconds_count 1.0" in text
    # the histogram counts the graded rows only, each in its bucket and every one above
    assert 'anomalyd_grade_bucket{le="0.9"} 0.0' in text
    assert 'anomalyd_grade_bucket{le="0.99"} 1.0' in text
    assert 'anomalyd_grade_bucket{le="0.9999"} 1.0' in text
    assert 'anomalyd_grade_bucket{le="0.99999"} 2.0' in text
    assert "anomalyd_grade_count 2.0" in text


def test_metrics_count_decisions_and_flagged_points():
    """Rows without a threshold (warm-up, calibration) are not decisions."""
    metrics = Metrics()
    events = [Event("k", "t", 0.0, np.array([1.0]), {}) for _ in range(5)]
    thresholds = np.array([np.nan, np.nan, 1.0, 1.0, 1.0])
    flags = np.array([False, False, True, False, True])
    metrics.observe(BatchResult(events, np.ones(5), np.full(5, np.nan), thresholds, flags))
    text = metrics.exposition().decode()
    assert "anomalyd_decisions_total 3.0" in text
    assert "anomalyd_flagged_total 2.0" in text


def test_lag_gauges_of_partitions_no_longer_owned_are_removed():
    metrics = Metrics()
    metrics.set_lag({("in", 0): 5, ("in", 1): 7})
    metrics.set_lag({("in", 0): 0})  # partition 1 was revoked
    text = metrics.exposition().decode()
    assert 'anomalyd_consumer_lag{partition="0",topic="in"} 0.0' in text
    assert 'partition="1"' not in text
    metrics.set_lag({("in", 1): 3})  # and given back
    text = metrics.exposition().decode()
    assert 'partition="0"' not in text and 'anomalyd_consumer_lag{partition="1",topic="in"} 3.0' in text
