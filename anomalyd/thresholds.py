"""Adaptive thresholds: turn a stream of anomaly scores into yes/no decisions.

Every threshold follows one verb pair: ``classify(score)`` against what it has seen so
far, then ``update(score)``. It says no until it has seen ``min_samples`` scores.

>>> th = QuantileThreshold(quantile=0.9, window=100, min_samples=10)
>>> for s in [1.0, 1.1, 0.9, 1.2, 1.0, 0.95, 1.05, 1.1, 0.9, 1.0]:
...     _ = th.classify(s); th.update(s)
>>> th.classify(5.0), th.classify(1.0)
(True, False)
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import numpy as np

from anomalyd.config import ThresholdConfig


class Threshold(Protocol):
    @property
    def value(self) -> float:
        """The current threshold, NaN while warming up."""
        ...

    def classify(self, score: float) -> bool: ...

    def update(self, score: float) -> None: ...

    def rescale(self, factor: float) -> None:
        """Move to a new model's score scale (scores multiplied by ``factor``)."""
        ...

    def get_state(self) -> dict[str, Any]:
        """Everything that changes as scores come in (numbers and numpy arrays), for snapshots."""
        ...

    def set_state(self, state: dict[str, Any]) -> None: ...


class QuantileThreshold:
    """A high quantile of the most recent ``window`` scores, times ``margin``.

    The quantile is recomputed every ``refresh`` updates (exactly, with numpy, over a ring
    buffer), so its cost per event stays well under a microsecond.
    """

    __slots__ = ("_n", "_ring", "_stale", "_value", "margin", "min_samples", "quantile", "refresh")

    def __init__(
        self, quantile: float = 0.995, window: int = 2000, margin: float = 1.0, min_samples: int = 30
    ):
        self.quantile = quantile
        self.margin = margin
        self.min_samples = min_samples
        self.refresh = max(1, window // 128)
        self._ring = np.zeros(window, dtype=np.float32)
        self._n = 0
        self._value = math.nan
        self._stale = 0

    @property
    def value(self) -> float:
        return self._value

    def classify(self, score: float) -> bool:
        return self._n >= self.min_samples and score > self._value

    def update(self, score: float) -> None:
        self._ring[self._n % self._ring.size] = score
        self._n += 1
        self._stale += 1
        if self._n >= self.min_samples and (self._stale >= self.refresh or self._n <= self._ring.size):
            self._recompute()

    def rescale(self, factor: float) -> None:
        self._ring *= factor
        self._value *= factor

    def get_state(self) -> dict[str, Any]:
        return {"ring": self._ring.copy(), "n": self._n, "value": self._value, "stale": self._stale}

    def set_state(self, state: dict[str, Any]) -> None:
        ring = np.asarray(state["ring"], dtype=np.float32)
        if ring.shape != self._ring.shape:
            raise ValueError(f"threshold window {ring.size} in the snapshot, {self._ring.size} configured")
        self._ring[:] = ring
        self._n, self._value, self._stale = int(state["n"]), float(state["value"]), int(state["stale"])

    def _recompute(self) -> None:
        recent = self._ring[: min(self._n, self._ring.size)]
        self._value = float(np.quantile(recent, self.quantile)) * self.margin
        self._stale = 0


class EwmaThreshold:
    """Exponentially weighted mean + ``k`` standard deviations of the scores.

    Scores above the threshold are clipped to it before they update the averages, so one
    incident does not inflate the threshold and hide the next.

    >>> th = EwmaThreshold(alpha=0.1, k=3.0, min_samples=5)
    >>> for s in [1.0, 1.2, 0.8, 1.1, 0.9, 1.0]:
    ...     th.update(s)
    >>> th.classify(3.0), th.classify(1.1)
    (True, False)
    """

    __slots__ = ("_mean", "_n", "_var", "alpha", "k", "min_samples")

    def __init__(self, alpha: float = 0.01, k: float = 4.0, min_samples: int = 30):
        self.alpha = alpha
        self.k = k
        self.min_samples = min_samples
        self._n = 0
        self._mean = 0.0
        self._var = 0.0

    @property
    def value(self) -> float:
        if self._n < self.min_samples:
            return math.nan
        return self._mean + self.k * math.sqrt(self._var)

    def classify(self, score: float) -> bool:
        return self._n >= self.min_samples and score > self.value

    def update(self, score: float) -> None:
        if self._n >= self.min_samples:
            score = min(score, self.value)
        self._n += 1
        # Early on a plain running mean, so the first scores are not swamped by the zero start.
        alpha = max(self.alpha, 1.0 / self._n)
        delta = score - self._mean
        self._mean += alpha * delta
        self._var = (1.0 - alpha) * (self._var + alpha * delta * delta)

    def rescale(self, factor: float) -> None:
        self._mean *= factor
        self._var *= factor * factor

    def get_state(self) -> dict[str, Any]:
        return {"n": self._n, "mean": self._mean, "var": self._var}

    def set_state(self, state: dict[str, Any]) -> None:
        self._n, self._mean, self._var = int(state["n"]), float(state["mean"]), float(state["var"])


def make_threshold(config: ThresholdConfig) -> Threshold:
    """Build the threshold ``config.method`` names, with its parameters."""
    if config.method == "quantile":
        return QuantileThreshold(config.quantile, config.window, config.margin, config.min_samples)
    if config.method == "ewma":
        return EwmaThreshold(config.alpha, config.k, config.min_samples)
    raise ValueError(f"unknown threshold method {config.method!r}")
