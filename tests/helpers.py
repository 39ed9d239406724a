"""Small builders shared by tests."""

from __future__ import annotations

import numpy as np

from anomalyd.config import Config, parse_config
from anomalyd.events import Event
from anomalyd.sources.base import Batch


def small_config(**sections: dict) -> Config:
    """A fast config for tests: short windows, one small network, few epochs."""
    base: dict = {
        "window": {"length": 16},
        "model": {"hidden_size": 8, "device": "cpu", "members": 1},
        "training": {"warmup_events": 150, "epochs": 8},
        # The quantile threshold calibrated on the warm-up windows: alerts soon after warm-up.
        "threshold": {
            "method": "quantile",
            "calibration": "warmup",
            "min_samples": 20,
            "quantile": 0.99,
            "window": 500,
        },
        "alerts": {"cooldown_events": 16},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values} if isinstance(values, dict) else values
    return parse_config(base)


def sine_events(
    key: str, n: int, spikes: tuple[int, ...] = (), features: int = 1, seed: int = 0
) -> list[Event]:
    """A noisy sine per feature; ``spikes`` add +8 to feature ``features - 1`` at those positions."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    values = np.stack([np.sin(2 * np.pi * t / 24 + f) for f in range(features)], axis=1)
    values += rng.normal(0, 0.05, values.shape)
    for s in spikes:
        values[s, features - 1] += 8.0
    return [
        Event(
            key=key,
            timestamp=str(1_700_000_000 + 60 * i),
            time=1_700_000_000.0 + 60 * i,
            values=values[i],
            source={"file": f"{key}.csv", "row": i},
        )
        for i in range(n)
    ]


def batches(events: list[Event], size: int) -> list[Batch]:
    return [Batch(events=events[i : i + size]) for i in range(0, len(events), size)]
