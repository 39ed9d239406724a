"""Scoring sees a few batch shapes whatever the batch sizes: oneDNN keeps kernels and buffers
per input shape, so batches of ever other sizes (Kafka polls) grew memory without bound."""

from __future__ import annotations

import numpy as np

import anomalyd.detector as detector_module
from anomalyd.detector import make_detector

from .helpers import small_config


def trained_detector():
    detector = make_detector(small_config(model={"score_batch_size": 64}), 1)
    rng = np.random.default_rng(0)
    for _ in range(100):
        detector.remember("k", 0, rng.random((16, 1), dtype=np.float32))
    detector.train("k")
    return detector


def test_forward_passes_see_a_bounded_set_of_shapes(monkeypatch):
    detector = trained_detector()
    shapes = set()
    forward = detector_module.window_errors

    def spy(model, windows):
        shapes.add(tuple(windows.shape))
        return forward(model, windows)

    monkeypatch.setattr(detector_module, "window_errors", spy)
    rng = np.random.default_rng(1)
    for n in range(1, 300):
        scores, errors = detector.score("k", rng.random((n, 16, 1), dtype=np.float32))
        assert scores.shape == (n,) and errors.shape == (n, 1)
    assert {s[0] for s in shapes} <= {1, 2, 4, 8, 16, 32, 64}  # 299 sizes, 7 shapes


def test_padding_leaves_every_window_its_own_score():
    detector = trained_detector()
    windows = np.random.default_rng(2).random((37, 16, 1), dtype=np.float32)
    together, _ = detector.score("k", windows)
    alone = np.concatenate([detector.score("k", windows[i : i + 1])[0] for i in range(37)])
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-7)
