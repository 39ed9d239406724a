"""threshold.calibration: from the warm-up windows' scores, or from live scores only."""

from __future__ import annotations

import numpy as np
import pytest

from anomalyd.pipeline import Pipeline

from .helpers import batches, sine_events, small_config

pytestmark = pytest.mark.kernels


def decided(calibration: str, spikes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    cfg = small_config(
        threshold={"method": "spot", "min_samples": 100, "risk": 1e-3, "calibration": calibration},
        retraining={"enabled": False},
    )
    pipeline = Pipeline(cfg)
    results = [pipeline.process(b) for b in batches(sine_events("k", 600, spikes=spikes), 64)]
    thresholds = np.concatenate([r.thresholds for r in results])
    flags = np.concatenate([r.anomalous for r in results])
    return thresholds, flags


def test_warmup_calibration_decides_from_the_first_event_after_warmup():
    thresholds, flags = decided("warmup", (200, 500))
    assert np.isfinite(thresholds[150:]).all()
    assert flags[200] and flags[500]


def test_live_calibration_waits_for_min_samples_new_scores():
    thresholds, flags = decided("live", (300, 500))
    assert np.isnan(thresholds[:250]).all() and not flags[:250].any()  # 150 warm-up + 100 live
    assert np.isfinite(thresholds[250:]).all()
    assert flags[300] and flags[500]
