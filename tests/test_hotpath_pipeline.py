"""The batched hot path gives the same numbers whatever the batch size, bit for bit.

A fake detector scores each window by a fixed function of its values, so the scores say
exactly which windows reached the model; the real forward pass rounds differently at batch
size 1 (tests/test_pipeline.py covers that within float32 rounding).
"""

from __future__ import annotations

import numpy as np
import pytest

from anomalyd.detector import Detector
from anomalyd.events import Event
from anomalyd.pipeline import Pipeline

from .helpers import batches, sine_events, small_config


class WindowSumDetector(Detector):
    """Scores a window by its mean square (per feature: the errors); trains as usual.
    Every model through :meth:`score`: no stacked passes (``model.group_networks``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.grouped = None

    def score(
        self, model_id: str, windows: np.ndarray, keys: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.slots[model_id].model is None:
            raise RuntimeError(f"model {model_id!r} has not been trained")
        per_feature = (windows.astype(np.float64) ** 2).mean(axis=1)
        return per_feature.mean(axis=1), per_feature


def stream(keys: int, length: int, late: int = 0) -> list[Event]:
    """``keys`` interleaved sine streams; key i starts ``i * late`` events in (new keys mid-batch)."""
    per_key = [sine_events(f"k{i}", length, spikes=(length - 40,), seed=i) for i in range(keys)]
    events = []
    for t in range(length + keys * late):
        for i, own in enumerate(per_key):
            if 0 <= t - i * late < length:
                events.append(own[t - i * late])
    return events


def run(config, events, size):
    pipeline = Pipeline(config)
    pipeline.detector = WindowSumDetector(
        config.model, config.training, pipeline.features.n_features, config.window.length, config.retraining
    )
    results = [pipeline.process(batch) for batch in batches(events, size)]
    return {
        "scores": np.concatenate([r.scores for r in results]),
        "thresholds": np.concatenate([r.thresholds for r in results]),
        "flags": np.concatenate([r.anomalous for r in results]),
        "alerts": [a.to_dict() for r in results for a in r.alerts],
        "dead": [d.to_dict() for r in results for d in r.dead_letters],
        "trained": [t for r in results for t in r.trained],
        "windows": pipeline.windows.get_state(),
    }


def assert_same(a, b):
    for name in ("scores", "thresholds", "flags"):
        assert np.array_equal(a[name], b[name], equal_nan=True), name
    assert a["alerts"] == b["alerts"]
    assert a["dead"] == b["dead"]
    assert a["trained"] == b["trained"]
    for name in ("ring", "count", "mean", "m2"):
        assert np.array_equal(a["windows"][name], b["windows"][name]), name


@pytest.mark.parametrize(
    "sections",
    [
        {"model": {"scope": "shared"}},
        {"model": {"scope": "per_key"}},
        {"model": {"scope": "shared"}, "window": {"length": 16, "stride": 2}},
    ],
    ids=["shared", "per-key", "stride-2"],
)
def test_batch_size_changes_nothing(sections):
    config = small_config(**sections)
    events = stream(keys=3, length=400, late=50)
    reference = run(config, events, size=1)
    assert reference["alerts"] and reference["trained"]
    for size in (7, 64, 5000):
        assert_same(run(config, events, size), reference)


def test_many_keys_take_the_vectorised_path_and_change_nothing():
    config = small_config(model={"scope": "shared"}, training={"warmup_events": 20, "epochs": 1})
    events = stream(keys=90, length=60, late=1)
    reference = run(config, events, size=1)
    assert np.isfinite(reference["scores"]).sum() > 2000
    for size in (100, 1024):
        assert_same(run(config, events, size), reference)


def test_rejected_records_are_dead_lettered_in_order_whatever_the_batch():
    config = small_config(
        input={"features": [{"name": "r", "op": "log_return", "field": "value"}]}, model={"scope": "shared"}
    )
    events = stream(keys=2, length=300, late=30)
    for i, event in enumerate(events):
        event.values = event.values + 3.0
        if i % 53 == 7:
            event.values = np.array([-1.0])  # log of a negative ratio
    reference = run(config, events, size=1)
    assert len(reference["dead"]) == len(range(7, len(events), 53))
    for size in (10, 64, 5000):
        assert_same(run(config, events, size), reference)
