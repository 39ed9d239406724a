"""The model on a GPU (``model.device: cuda``): skipped where torch sees no CUDA device.

The CPU suite covers the logic; these check what only a GPU run can break: tensors moved
to and from the device, training in the worker thread on it, snapshots and checkpoints of
its weights read back on the CPU, and scores that agree with the CPU's.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anomalyd.checkpoint import load_model, save_model
from anomalyd.pipeline import Pipeline
from anomalyd.snapshot import SnapshotStore

from .helpers import batches, sine_events, small_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA device")

SPIKES = (400, 700)
RETRAIN = {"every_events": 250, "on_drift": False, "min_windows": 50, "swap_after_events": 60}


def events():
    merged = sine_events("a", 1000, spikes=SPIKES) + sine_events("b", 1000, spikes=SPIKES, seed=1)
    return sorted(merged, key=lambda e: e.time)


def run(pipeline, stream):
    return [pipeline.process(b) for b in batches(stream, 64)]


def config(device: str, detector: str = "autoencoder", carry: bool = False, **sections):
    return small_config(detector=detector, model={"device": device, "carry_state": carry}, **sections)


@pytest.mark.parametrize(
    ("detector", "carry"), [("autoencoder", False), ("forecaster", False), ("forecaster", True)]
)
def test_cuda_scores_agree_with_the_cpu_and_find_the_spikes(detector, carry):
    scores = {}
    for device in ("cpu", "cuda"):
        pipeline = Pipeline(config(device, detector, carry))
        results = run(pipeline, events())
        pipeline.close()
        assert pipeline.detector.device.type == device
        scores[device] = np.concatenate([r.scores for r in results])
        sequences = {(a.key, a.sequence) for r in results for a in r.alerts}
        for key in ("a", "b"):
            assert any((key, s) in sequences for s in SPIKES), (device, sorted(sequences))
    # Different kernels (cuDNN vs MKL) train to slightly different weights: close, not equal.
    ready = np.isfinite(scores["cpu"])
    assert np.array_equal(ready, np.isfinite(scores["cuda"]))
    ratio = scores["cuda"][ready] / scores["cpu"][ready]
    assert abs(np.median(ratio) - 1.0) < 0.1
    assert np.corrcoef(scores["cuda"][ready], scores["cpu"][ready])[0, 1] > 0.95


@pytest.mark.parametrize("carry", [False, True])
def test_cuda_retraining_snapshot_resume_and_checkpoint(tmp_path, carry):
    cfg = config("cuda", "forecaster" if carry else "autoencoder", carry, retraining=RETRAIN)
    stream = events()
    whole = Pipeline(cfg)
    results = run(whole, stream)
    whole.close()
    expected = [a.alert_id for r in results for a in r.alerts]
    promoted = [o for r in results for o in r.retrained if o.promoted]
    assert promoted, "no retraining was promoted on the GPU"

    cut = 900
    first = Pipeline(cfg)
    before = [a.alert_id for r in run(first, stream[:cut]) for a in r.alerts]
    store = SnapshotStore(tmp_path / "snapshots")
    store.save({"state": first.get_state(), "positions": None}, first.state_hash, "test")
    model = first.detector.slots["a"].model
    assert model is not None and next(model.parameters()).is_cuda
    path = save_model(tmp_path, "a", 1, model, {})
    first.close()

    loaded, _ = load_model(path)  # read on the CPU, as a machine without a GPU would
    assert not next(loaded.parameters()).is_cuda
    for p, q in zip(loaded.parameters(), model.parameters(), strict=True):
        assert torch.equal(p, q.cpu())

    found = store.latest(first.state_hash, "test")
    assert found is not None
    second = Pipeline(cfg)
    second.set_state(found.payload["state"])
    after = [a.alert_id for r in run(second, stream[cut:]) for a in r.alerts]
    second.close()
    assert before + after == expected


def test_cuda_normalised_errors_measure_transfer_and_resume(tmp_path):
    check_normalised_errors("cuda", tmp_path)


def check_normalised_errors(device, tmp_path):
    """``model.normalise_errors`` on ``device``: the scale is measured there, a promoted
    retraining takes it over, a snapshot resumes it, and a checkpoint of it reads back on the
    CPU."""
    a = sine_events("a", 1000, spikes=SPIKES, features=3)
    stream = sorted(a + sine_events("b", 1000, spikes=SPIKES, features=3, seed=1), key=lambda e: e.time)
    cfg = small_config(
        model={"device": device, "normalise_errors": True},
        input={"value_fields": ["x", "y", "z"]},
        threshold={"calibration": "live"},
        retraining=RETRAIN,
    )
    whole = Pipeline(cfg)
    results = run(whole, stream)
    whole.close()
    assert [o for r in results for o in r.retrained if o.promoted], "no retraining was promoted"
    model = whole.detector.slots["a"].model
    assert model is not None and model.error_scale.device.type == device
    assert torch.isfinite(model.error_scale).all()
    scores = np.concatenate([r.scores for r in results])
    alerts = [a for r in results for a in r.alerts]
    spiked = {(a.key, a.top_features[0]["feature"]) for a in alerts if a.sequence in SPIKES}
    assert spiked == {("a", "z"), ("b", "z")}, [(a.key, a.sequence) for a in alerts]

    cut = 900
    first = Pipeline(cfg)
    before = run(first, stream[:cut])
    state = first.get_state()
    live = first.detector.slots["a"].model
    path = save_model(tmp_path, "a", 1, live, {})
    first.close()
    loaded, _ = load_model(path)  # read on the CPU
    assert torch.equal(loaded.error_scale, live.error_scale.cpu())
    second = Pipeline(cfg)
    second.set_state(state)
    after = run(second, stream[cut:])
    second.close()
    # A retraining after the cut runs again; GPU kernels may train to slightly different weights.
    resumed = np.concatenate([r.scores for r in before + after])
    np.testing.assert_allclose(resumed, scores, rtol=1e-3, equal_nan=True)
    assert [a.alert_id for r in before + after for a in r.alerts] == [a.alert_id for a in alerts]
