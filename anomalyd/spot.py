"""SPOT and DSPOT, the extreme-value threshold (``threshold.method: spot``), with the
settings its thresholds share and the rows their calibration scores are kept in.

Part of the :mod:`anomalyd.thresholds` family (same ``classify``/``update`` interface); a
module of its own for its size.
"""

from __future__ import annotations

import functools
import math
import mmap
from array import array
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Shared by every threshold that holds no scores of that kind yet: a fresh empty array would
# cost each key an object of its own. Never written to: replaced by the first scores.
_NO_SCORES = np.zeros(0, dtype=np.float64)
_NO_SCORES.flags.writeable = False

# A threshold's numbers, in one array of doubles (``SpotThreshold._v``): one object of 128
# bytes where eight attributes took eight float and int objects of their own (24-32 bytes
# each, and the counters pass Python's shared small ints after 256 scores).
_N, _K, _S1, _S2, _T, _Z, _GAMMA, _SIGMA = range(8)
# scores since calibration began (peaks included), peaks, sums of the peaks' excesses and of
# their squares, the calibration quantile t, the threshold z, the fitted tail's shape and scale
_FRESH = array("d", [0.0, 0.0, 0.0, 0.0, math.nan, math.nan, 0.0, math.nan])


class CalibrationRows:
    """Calibration scores of the SPOT thresholds still calibrating, a row of ``width`` doubles
    each in one array, in anonymous memory of its own (mmap) that goes back to the OS whole
    when no threshold calibrates any more; rows given back before that are taken again.

    Keys start together (a replay, a restart), so all of them calibrate at once. Kept by each
    threshold (an array object and its buffer, some 300 bytes a key), the scores left the
    allocator's pools fragmented once freed: some 150 bytes a key resident for good.

    >>> rows = CalibrationRows(width=3)
    >>> a, b = rows.take(), rows.take()
    >>> rows.scores[a, 0] = 1.5
    >>> rows.give_back(a); rows.take() == a
    True
    >>> rows.give_back(a); rows.give_back(b); rows.scores.shape  # none left: memory released
    (0, 3)
    """

    __slots__ = ("_free", "_none", "_spare", "scores", "used")

    def __init__(self, width: int):
        self._none = (np.zeros((0, width)), np.zeros(0, dtype=np.int64))
        self._release()

    def _release(self) -> None:
        self.scores, self._free = self._none  # (rows, width) float64; rows not taken: the first _spare
        self._spare = self.used = 0

    def take(self) -> int:
        if not self._spare:
            self._grow()
        self._spare -= 1
        self.used += 1
        return int(self._free[self._spare])

    def give_back(self, row: int) -> None:
        self.used -= 1
        if not self.used:
            self._release()
            return
        self._free[self._spare] = row
        self._spare += 1

    def _grow(self) -> None:
        """Twice the rows (all are taken); the new ones, lowest first, are not."""
        rows, width = self.scores.shape
        capacity = max(64, 2 * rows)
        # Zeros, resident once written, unmapped when dropped; private: a forked child has its own.
        memory = mmap.mmap(-1, capacity * width * 8, flags=mmap.MAP_PRIVATE)
        grown = np.frombuffer(memory, dtype=np.float64).reshape(capacity, width)
        grown[:rows] = self.scores
        self.scores = grown
        self._free = np.zeros(capacity, dtype=np.int64)
        self._spare = capacity - rows
        self._free[: self._spare] = np.arange(capacity - 1, rows - 1, -1)


@dataclass(frozen=True, slots=True)
class SpotSettings:
    """What a :class:`SpotThreshold` is configured with, shared by thresholds configured alike,
    and where they keep their calibration scores."""

    risk: float
    level: float
    min_samples: int
    depth: int
    calibrating: CalibrationRows = field(compare=False, repr=False)


@functools.cache
def _spot_settings(risk: float, level: float, min_samples: int, depth: int) -> SpotSettings:
    return SpotSettings(risk, level, min_samples, depth, CalibrationRows(min_samples))


class SpotThreshold:
    """Streaming peaks-over-threshold (SPOT; DSPOT with ``depth`` > 0), Siffer et al., KDD 2017.

    The first ``min_samples`` scores calibrate: ``t`` is their ``level`` quantile, the
    excesses over ``t`` (the peaks) are fitted with a generalised Pareto distribution, and
    the threshold is the score exceeded with probability ``risk``:
    ``z = t + sigma / gamma * ((risk * n / peaks) ** -gamma - 1)``. Then each score that is
    updates the fit: a peak when above ``t``, else only the count ``n``. An anomalous score
    (the first of a run; the rest of an incident is left out) counts as a peak of the size
    the fitted tail expects beyond the threshold, so an incident does not raise the bar for
    the next and the alerts of a quiet stream do not lower it.

    The fit uses the method of moments on running sums of the excesses, so the state is a
    handful of numbers whatever the stream's length. DSPOT scores the distance from the
    mean of the last ``depth`` normal scores instead, which follows a drifting level.

    >>> th = SpotThreshold(risk=1e-3, min_samples=5000)
    >>> rng = np.random.default_rng(0)
    >>> for s in rng.exponential(1.0, 5000):
    ...     th.update(float(s))
    >>> round(th.value, 1)  # exponential(1): the 1e-3 tail starts at ln(1000) = 6.9
    7.1
    >>> th.classify(9.0), th.classify(3.0)
    (True, False)
    """

    __slots__ = ("_in_run", "_ma", "_row", "_settings", "_v")

    def __init__(self, risk: float = 1e-4, level: float = 0.98, min_samples: int = 200, depth: int = 0):
        # One settings object for every threshold built with the same ones (each key has a
        # threshold): a pointer per key instead of four.
        self._settings = _spot_settings(risk, level, min_samples, depth)
        # Calibrating: the row of ``_settings.calibrating`` that holds the calibration scores
        # (the first ``n``, ``_v[_N]``), taken with the first score (-1 before it); None once calibrated.
        self._row: int | None = -1
        self._ma = _NO_SCORES  # DSPOT: the last `depth` normal scores
        self._v = array("d", _FRESH)  # n, k, s1, s2, t, z, gamma, sigma: see _N .. _SIGMA
        self._in_run = False  # the last score was anomalous

    @property
    def risk(self) -> float:
        return self._settings.risk

    @property
    def level(self) -> float:
        return self._settings.level

    @property
    def min_samples(self) -> int:
        return self._settings.min_samples

    @property
    def depth(self) -> int:
        return self._settings.depth

    def _local(self) -> float:
        return float(self._ma.mean()) if self._settings.depth and self._ma.size else 0.0

    @property
    def value(self) -> float:
        return self._v[_Z] + self._local()

    def classify(self, score: float) -> bool:
        return self._row is None and score > self.value

    def update(self, score: float) -> None:
        if self._row is not None:
            self._collect(score)
            return
        x = score - self._local()
        if math.isnan(x):
            return
        v = self._v
        anomalous = x > v[_Z]
        run = anomalous and self._in_run
        self._in_run = anomalous
        if run:  # an incident goes on: only its first score counts
            return
        v[_N] += 1.0
        if x > v[_T]:
            # The first anomalous score of a run counts as a peak of the size the fitted tail
            # expects beyond the threshold: left out, the tail the fit sees would be cut and
            # the threshold would sink with every alert; taken as is, an incident would raise
            # the bar for the next.
            excess = self._expected_beyond() if anomalous else x - v[_T]
            v[_K] += 1.0
            v[_S1] += excess
            v[_S2] += excess * excess
            self._fit()
        if not anomalous:
            self._remember(score)

    def _collect(self, score: float) -> None:
        """Keep a calibration score; calibrate on the ``min_samples``-th."""
        assert self._row is not None
        rows = self._settings.calibrating
        if self._row < 0:
            self._row = rows.take()
        n = int(self._v[_N])
        rows.scores[self._row, n] = score
        self._v[_N] = n + 1
        if n + 1 >= self._settings.min_samples:
            row = self._row
            self._calibrate(self._calibration_scores())
            rows.give_back(row)

    def _calibration_scores(self) -> np.ndarray:
        """The calibration scores so far: a view of their row (read-only while there are none)."""
        if self._row is None or self._row < 0:
            return _NO_SCORES
        return self._settings.calibrating.scores[self._row, : int(self._v[_N])]

    def __del__(self) -> None:
        row = getattr(self, "_row", None)
        if row is not None and row >= 0:  # dropped while calibrating (a key forgotten, a reset)
            self._settings.calibrating.give_back(row)

    def __reduce__(self) -> Any:
        # A copy would share the row of calibration scores: copy with get_state/set_state.
        raise TypeError("a SpotThreshold is copied with get_state and set_state")

    def _remember(self, score: float) -> None:
        depth = self._settings.depth
        if depth:
            self._ma = np.append(self._ma, score)[-depth:]

    def _calibrate(self, scores: np.ndarray) -> None:
        depth, level = self._settings.depth, self._settings.level
        if depth:
            # DSPOT: each score against the mean of the `depth` before it
            c = np.concatenate([[0.0], np.cumsum(scores)])
            idx = np.arange(len(scores))
            lo = np.maximum(idx - depth, 0)
            means = np.where(idx > 0, (c[idx] - c[lo]) / np.maximum(idx - lo, 1), 0.0)
            residuals = (scores - means)[depth:] if len(scores) > depth else scores - means
            self._ma = scores[-depth:].astype(np.float64)
        else:
            residuals = scores
        v = self._v
        t = v[_T] = float(np.quantile(residuals, level))
        excesses = residuals[residuals > t] - t
        v[_N], v[_K] = len(residuals), len(excesses)
        v[_S1], v[_S2] = float(excesses.sum()), float((excesses**2).sum())
        self._row = None
        self._fit()

    def _expected_beyond(self) -> float:
        """E[excess | score > z] under the fitted tail: (z - t) + the mean excess over z."""
        v = self._v
        over = v[_Z] - v[_T]
        sigma, gamma = v[_SIGMA], min(v[_GAMMA], 0.9)
        return over + max(sigma + gamma * over, 0.0) / (1.0 - gamma)

    def _fit(self) -> None:
        v = self._v
        k, t = v[_K], v[_T]
        if k == 0:
            v[_Z] = t
            return
        mean = v[_S1] / k
        var = max(v[_S2] / k - mean * mean, 0.0)
        ratio = self._settings.risk * v[_N] / k
        if var <= 0.0 or mean <= 0.0:  # too few peaks: an exponential tail
            gamma, sigma = 0.0, mean
        else:
            gamma = 0.5 * (1.0 - mean * mean / var)
            sigma = 0.5 * mean * (mean * mean / var + 1.0)
        v[_GAMMA], v[_SIGMA] = gamma, sigma
        if abs(gamma) < 1e-6:
            v[_Z] = t - sigma * math.log(ratio)
        else:
            v[_Z] = t + sigma / gamma * (ratio**-gamma - 1.0)

    def rescale(self, factor: float) -> None:
        if self._row is not None:
            scores = self._calibration_scores()
            if scores.size:
                scores *= factor  # in place: the same doubles as multiplying each float
            return
        v = self._v
        v[_T] *= factor
        v[_Z] *= factor
        v[_SIGMA] *= factor
        v[_S1] *= factor
        v[_S2] *= factor * factor
        self._ma = self._ma * factor

    def get_state(self) -> dict[str, Any]:
        v = self._v
        return {
            "init": None if self._row is None else self._calibration_scores().copy(),
            "ma": self._ma.copy(),
            "numbers": [int(v[_N]), int(v[_K]), v[_S1], v[_S2], v[_T], v[_Z], self._in_run],
        }

    def set_state(self, state: dict[str, Any]) -> None:
        init = state["init"]
        ma = np.asarray(state["ma"], dtype=np.float64)
        self._ma = ma if ma.size else _NO_SCORES
        n, k, s1, s2, t, z, in_run = state["numbers"]
        v = self._v
        v[_N], v[_K], self._in_run = int(n), int(k), bool(in_run)
        v[_S1], v[_S2], v[_T], v[_Z] = float(s1), float(s2), float(t), float(z)
        if self._row is not None and self._row >= 0:
            self._settings.calibrating.give_back(self._row)
        if init is None:
            self._row = None
            self._fit()
            return
        # Calibrating: ``_n`` counts the scores (older snapshots said 0).
        scores = np.asarray(init, dtype=np.float64).ravel()
        self._row, v[_N] = -1, 0
        if scores.size >= self._settings.min_samples:  # never saved so: calibrate on them all
            v[_N] = scores.size
            self._calibrate(scores)
            return
        if scores.size:
            self._row = self._settings.calibrating.take()
            self._settings.calibrating.scores[self._row, : scores.size] = scores
            v[_N] = scores.size
