"""The drift monitor: block means keep ADWIN quiet on a healthy stream's autocorrelated scores."""

import numpy as np

from anomalyd.retraining import DriftMonitor


def detections(monitor: DriftMonitor, scores: np.ndarray) -> list[int]:
    return [i for i, score in enumerate(scores.tolist()) if monitor.update(score)]


def healthy_scores(n: int, seed: int = 0) -> np.ndarray:
    """A stationary stream whose neighbours are alike, as overlapping windows' scores are."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, 1.0, n)
    level = np.zeros(n)
    for i in range(1, n):
        level[i] = 0.98 * level[i - 1] + noise[i]
    return np.exp(0.3 * level)  # positive and skewed, as squared errors are


def test_block_means_do_not_fire_where_single_scores_do():
    scores = healthy_scores(30_000)
    single = detections(DriftMonitor(0.002, block=1, limit=50_000), scores)
    blocked = detections(DriftMonitor(0.002, block=64, limit=50_000), scores)
    assert len(single) >= 3, single
    assert len(blocked) < len(single) / 3, (blocked, single)


def test_block_means_still_see_a_lasting_shift():
    rng = np.random.default_rng(1)
    scores = np.concatenate([rng.normal(1.0, 0.2, 4096), rng.normal(1.6, 0.2, 4096)])
    found = detections(DriftMonitor(0.002, block=64, limit=50_000), scores)
    assert found and 4096 <= found[0] < 4096 + 2048, found  # within 32 blocks


def test_a_monitor_rebuilt_from_its_history_goes_on_alike():
    scores = healthy_scores(9_000, seed=2)
    live = DriftMonitor(0.002, block=64, limit=4096)
    detections(live, scores[:5_000])
    rebuilt = DriftMonitor(0.002, np.asarray(live.history), limit=4096, block=64)
    assert detections(rebuilt, scores[5_000:]) == detections(live, scores[5_000:])
