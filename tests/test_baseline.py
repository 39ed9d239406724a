"""`detector: hst`: river's HalfSpaceTrees through the same pipeline as the autoencoder."""

from __future__ import annotations

import numpy as np
import pytest

from anomalyd.errors import ModelError
from anomalyd.pipeline import Pipeline

from .helpers import batches, sine_events, small_config


def hst_config(**threshold):
    return small_config(
        detector="hst",
        retraining={"enabled": False},
        threshold={"method": "river_quantile", "quantile": 0.99, **threshold},
    )


def run(pipeline, events, size):
    return [pipeline.process(b) for b in batches(events, size)]


def test_hst_scores_after_warmup_and_flags_a_spike():
    events = sine_events("k", 1200, spikes=(900,))
    results = run(Pipeline(hst_config()), events, 64)
    scores = np.concatenate([r.scores for r in results])
    assert np.isnan(scores[:150]).all() and np.isfinite(scores[150:]).all()
    assert ((scores >= 0) & (scores <= 1))[150:].all()  # HST's scores are in [0, 1]
    flagged = np.flatnonzero(np.concatenate([r.anomalous for r in results]))
    assert 900 in flagged
    assert scores[900] > np.percentile(scores[150:], 99)


def test_hst_results_do_not_depend_on_batch_size():
    events = sine_events("a", 600, spikes=(400,)) + sine_events("b", 600, spikes=(500,), seed=3)
    events.sort(key=lambda e: e.time)
    first = run(Pipeline(hst_config()), events, 1000)
    second = run(Pipeline(hst_config()), events, 7)
    assert np.array_equal(
        np.concatenate([r.scores for r in first]), np.concatenate([r.scores for r in second]), equal_nan=True
    )


def test_hst_refuses_a_snapshot_clearly():
    pipeline = Pipeline(hst_config())
    run(pipeline, sine_events("k", 300), 64)
    with pytest.raises(ModelError, match="snapshotted: run it without a state directory"):
        pipeline.get_state()


def test_the_minmax_baseline_scores_raw_values_and_flags_a_spike():
    """config/nab-hst-quantile.yaml's scorer: river's MinMaxScaler | HalfSpaceTrees on raw values."""
    cfg = small_config(
        detector="hst",
        hst={"scaler": "minmax"},
        window={"length": 2, "normalise": "none"},
        retraining={"enabled": False},
        threshold={"method": "river_quantile", "quantile": 0.99},
    )
    pipeline = Pipeline(cfg)
    events = sine_events("k", 1200)
    results = run(pipeline, events, 64)
    scores = np.concatenate([r.scores for r in results])
    assert np.isfinite(scores[150:]).all() and ((scores >= 0) & (scores <= 1))[150:].all()
    scaler = pipeline.detector.forests["k"].steps["MinMaxScaler"]
    raw = np.array([e.values[0] for e in events])
    low, high = scaler.min["f0"].get(), scaler.max["f0"].get()
    assert (low, high) == (pytest.approx(raw.min(), rel=1e-6), pytest.approx(raw.max(), rel=1e-6))
