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
from anomalyd.errors import ModelError
from anomalyd.grading import Grader
from anomalyd.spot import SpotThreshold

__all__ = [
    "EwmaThreshold",
    "GradeThreshold",
    "LikelihoodThreshold",
    "QuantileThreshold",
    "RiverQuantileThreshold",
    "SpotThreshold",
    "Threshold",
    "make_grader",
    "make_threshold",
    "quantile",
]


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


def _ewm_step(mean: float, var: float, x: float, alpha: float, n: int) -> tuple[float, float]:
    """Exponentially weighted mean and variance after the ``n``-th value ``x``.

    Early on (``n < 1/alpha``) a plain running mean, so the first values are not swamped by
    the zero start.
    """
    alpha = max(alpha, 1.0 / n)
    delta = x - mean
    return mean + alpha * delta, (1.0 - alpha) * (var + alpha * delta * delta)


class GradeThreshold:
    """Anomalous when the key's grade of the score (:class:`~anomalyd.grading.Grader`)
    exceeds ``cut``: the same ``cut`` means the same rarity on every key and every model.

    >>> th = GradeThreshold(Grader(window=100, min_samples=20, cut=0.999))
    >>> for s in np.linspace(1.0, 2.0, 50):
    ...     th.update(float(s))
    >>> th.classify(30.0), th.classify(1.5), 2.0 < th.value < 30.0
    (True, False, True)
    """

    __slots__ = ("grader",)

    def __init__(self, grader: Grader):
        self.grader = grader

    @property
    def value(self) -> float:
        return self.grader.score_at(self.grader.cut)

    def classify(self, score: float) -> bool:
        return self.grader.grade(score) > self.grader.cut

    def update(self, score: float) -> None:
        self.grader.update(score)

    def rescale(self, factor: float) -> None:
        self.grader.rescale(factor)

    def get_state(self) -> dict[str, Any]:
        return self.grader.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        self.grader.set_state(state)


class QuantileThreshold:
    """A high quantile of the most recent ``window`` scores, times ``margin``.

    The quantile is recomputed every ``refresh`` updates (``window // 128``; exactly, with
    numpy, over a ring buffer), so its cost per event stays around a microsecond; between
    refreshes the threshold lags by at most ``refresh - 1`` scores.
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
        if self._n >= self.min_samples and (self._stale >= self.refresh or self._n == self.min_samples):
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
        self._value = float(quantile(recent, self.quantile)) * self.margin
        self._stale = 0


def quantile(values: np.ndarray, q: float) -> np.floating[Any]:
    """``np.quantile(values, q)`` (method ``linear``), bit for bit, a tenth of its cost.

    numpy's generic version spends most of its time on bookkeeping for ``axis``, ``out``
    and array-valued ``q``; this is its arithmetic for one ``q`` over a 1-D array: partition
    around the two neighbours of the virtual index ``(n - 1) q`` (and the last element, where
    a NaN would sort), then the same two-sided interpolation.

    >>> x = np.array([3.0, 1.0, 4.0, 1.0, 5.0], dtype=np.float32)
    >>> bool(quantile(x, 0.9) == np.quantile(x, 0.9))
    True
    """
    n = values.size
    virtual = (n - 1) * q
    below = math.floor(virtual)
    if below >= n - 1:  # the largest value (or a NaN)
        return np.partition(values, -1)[-1]
    part = np.partition(values, (below, below + 1, n - 1))
    if np.isnan(part[-1]):
        return part[-1]
    previous, following = part[below], part[below + 1]
    gamma = virtual - below
    diff = following - previous
    return following - diff * (1 - gamma) if gamma >= 0.5 else previous + diff * gamma


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
        self._mean, self._var = _ewm_step(self._mean, self._var, score, self.alpha, self._n)

    def rescale(self, factor: float) -> None:
        self._mean *= factor
        self._var *= factor * factor

    def get_state(self) -> dict[str, Any]:
        return {"n": self._n, "mean": self._mean, "var": self._var}

    def set_state(self, state: dict[str, Any]) -> None:
        self._n, self._mean, self._var = int(state["n"]), float(state["mean"]), float(state["var"])


class LikelihoodThreshold:
    """Numenta's anomaly likelihood (Ahmad et al., 2017) as a threshold on raw scores.

    The mean of the last ``short`` scores is compared with the long-run distribution of such
    means (a normal fit, exponentially weighted with ``alpha``): anomalous when its upper
    tail probability is below ``risk``, i.e. when the likelihood exceeds ``1 - risk``. One
    high score counts for ``1/short`` of the mean, a sustained rise for all of it. Means of
    anomalous points do not update the long-run fit. In score units the threshold is the
    score that would lift the short mean to the cut-off.

    >>> th = LikelihoodThreshold(risk=1e-4, short=5, alpha=0.01, min_samples=50)
    >>> rng = np.random.default_rng(0)
    >>> for s in rng.normal(1.0, 0.1, 500):
    ...     th.update(float(s))
    >>> th.classify(1.1), th.classify(3.0)
    (False, True)
    """

    __slots__ = ("_mean", "_n", "_recent", "_var", "_z", "alpha", "min_samples", "risk", "short")

    def __init__(self, risk: float = 1e-4, short: int = 10, alpha: float = 0.001, min_samples: int = 30):
        from statistics import NormalDist

        self.risk = risk
        self.short = short
        self.alpha = alpha
        self.min_samples = min_samples
        self._z = NormalDist().inv_cdf(1.0 - risk)
        self._recent = np.zeros(0, dtype=np.float64)  # the last short - 1 scores
        self._n = 0
        self._mean = 0.0
        self._var = 0.0

    @property
    def value(self) -> float:
        if self._n < self.min_samples:
            return math.nan
        cutoff = self._mean + self._z * math.sqrt(self._var)
        held = self._recent[-(self.short - 1) :] if self.short > 1 else self._recent[:0]
        return self.short * cutoff - float(held.sum()) - (self.short - 1 - held.size) * self._mean

    def classify(self, score: float) -> bool:
        return self._n >= self.min_samples and score > self.value

    def update(self, score: float) -> None:
        if math.isnan(score):
            return
        anomalous = self.classify(score)
        window = np.append(self._recent, score)[-self.short :]
        self._recent = window[1:] if window.size == self.short else window
        if anomalous:
            return
        self._n += 1
        self._mean, self._var = _ewm_step(self._mean, self._var, float(window.mean()), self.alpha, self._n)

    def rescale(self, factor: float) -> None:
        self._recent = self._recent * factor
        self._mean *= factor
        self._var *= factor * factor

    def get_state(self) -> dict[str, Any]:
        return {"recent": self._recent.copy(), "numbers": [self._n, self._mean, self._var]}

    def set_state(self, state: dict[str, Any]) -> None:
        self._recent = np.asarray(state["recent"], dtype=np.float64)
        n, mean, var = state["numbers"]
        self._n, self._mean, self._var = int(n), float(mean), float(var)


class RiverQuantileThreshold:
    """river's ``QuantileFilter`` rule: anomalous when the score is at or above the running
    ``quantile`` of every score so far (river's streaming estimate). The baseline's filter.

    river's estimator keeps no state that loads with ``weights_only``: no snapshots.
    """

    __slots__ = ("_n", "_q", "min_samples")

    def __init__(self, quantile: float = 0.995, min_samples: int = 30):
        from river import stats

        self._q = stats.Quantile(quantile)
        self._n = 0
        self.min_samples = min_samples

    @property
    def value(self) -> float:
        got = self._q.get()
        return math.nan if self._n < self.min_samples or got is None else float(got)

    def classify(self, score: float) -> bool:
        return self._n >= self.min_samples and score >= self.value

    def update(self, score: float) -> None:
        self._q.update(score)
        self._n += 1

    def rescale(self, factor: float) -> None:
        raise NotImplementedError("river's quantile estimator cannot be rescaled")

    def get_state(self) -> dict[str, Any]:
        raise ModelError("threshold 'river_quantile' cannot be snapshotted: run it without a state directory")

    def set_state(self, state: dict[str, Any]) -> None:
        raise ModelError("threshold 'river_quantile' cannot be snapshotted: run it without a state directory")


def make_grader(config: ThresholdConfig) -> Grader:
    """A key's grader, with the threshold section's window, sample count and cut."""
    return Grader(config.grade_window, config.min_samples, config.grade)


def make_threshold(config: ThresholdConfig) -> Threshold:
    """Build the threshold ``config.method`` names, with its parameters."""
    if config.method == "grade":
        return GradeThreshold(make_grader(config))
    if config.method == "quantile":
        return QuantileThreshold(config.quantile, config.window, config.margin, config.min_samples)
    if config.method == "ewma":
        return EwmaThreshold(config.alpha, config.k, config.min_samples)
    if config.method == "spot":
        return SpotThreshold(config.risk, config.level, config.min_samples, config.depth)
    if config.method == "likelihood":
        return LikelihoodThreshold(config.risk, config.short, config.alpha, config.min_samples)
    if config.method == "river_quantile":
        return RiverQuantileThreshold(config.quantile, config.min_samples)
    raise ValueError(f"unknown threshold method {config.method!r}")
