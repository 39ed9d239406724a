"""The anomaly grade: a raw score turned into how unusual it is for its key, in [0, 1].

A detector's raw score (a reconstruction error) means something different on every key and
after every retraining. The grade is ``1 - p``, with ``p`` the probability that a normal
score of the same key is at least as high, learnt online from the key's recent scores:

- below the ``tail`` of the recent scores, ``p`` is the conformal rank
  ``(#{recent >= s} + 1) / (m + 1)`` (Vovk et al., 2005), which needs no distribution;
- in the tail it is an exponential fitted to the excesses of the top ``k`` recent scores
  over the ``k``-th largest (peaks over threshold with shape 0, Pickands, 1975; the
  exponential fallback of SPOT, Siffer et al., 2017), so grades keep ranking scores beyond
  anything seen recently, and a cut at ``1 - 1e-4`` means "one normal score in 10,000".

Scores are kept as logarithms: a new model that errs twice as much shifts them all by
``log 2`` (:meth:`Grader.rescale`), and a tail in logs is a power law in scores, as heavy as
reconstruction errors' tails are. A score the grader itself grades above ``cut`` is not
learnt, so an incident does not teach the grader that it is normal; once scores have been
above the cut for a tenth of the window in a row, the change has lasted and they are learnt.

>>> g = Grader(window=500, min_samples=50, cut=0.999)
>>> rng = np.random.default_rng(0)
>>> for s in rng.lognormal(0.0, 0.3, 400):
...     g.update(float(s))
>>> 0.3 < g.grade(1.0) < 0.7, g.grade(20.0) > 0.9999
(True, True)
>>> g.rescale(10.0); 0.3 < g.grade(10.0) < 0.7  # the same grade on the new model's scale
True
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

_FLOOR = 1e-12  # scores of 0 (a perfectly reconstructed window) are logged as this
# The tail's scale in logs never falls below this (5%): on a flat line every score is the
# same and an unfloored fit would grade the next rounding error as certain.
_MIN_SCALE = 0.1
_TAIL, _MIN_TAIL = 0.1, 10  # the top tenth of the recent scores, at least ten, is the tail
_REFIT = 16  # the tail is fitted again every this many scores


class Grader:
    """One key's grade of its raw scores: :meth:`grade`, then :meth:`update` (score first).

    Silent (NaN) until it has ``min_samples`` scores; keeps the last ``window`` of them.
    """

    __slots__ = ("_fit", "_n", "_ring", "_streak", "cut", "min_samples")

    def __init__(self, window: int = 1000, min_samples: int = 64, cut: float = 0.9999):
        self.cut = cut
        self.min_samples = min_samples
        self._ring = np.zeros(window, dtype=np.float32)  # log scores, oldest overwritten
        self._n = 0
        self._streak = 0  # scores above the cut in a row, not learnt
        self._fit = [math.nan, 1.0, 0.0]  # the tail: its start u (log), scale, share of scores

    @property
    def ready(self) -> bool:
        return self._n >= self.min_samples

    def grade(self, score: float) -> float:
        """How anomalous ``score`` is for this key: NaN until ready (or for a NaN score)."""
        if self._n < self.min_samples or math.isnan(score):
            return math.nan
        return 1.0 - self._p(math.log(max(score, _FLOOR)))

    def _p(self, x: float) -> float:
        start, scale, share = self._fit
        if x > start:
            return share * math.exp((start - x) / scale)
        m = min(self._n, self._ring.size)
        above = int(np.count_nonzero(self._ring[:m] >= x))
        return (above + 1) / (m + 1)

    def score_at(self, grade: float) -> float:
        """The raw score graded ``grade`` (in the tail): the threshold in score units."""
        if self._n < self.min_samples:
            return math.nan
        start, scale, share = self._fit
        return math.exp(start + scale * math.log(share / (1.0 - grade))) if grade > 1 - share else math.nan

    def update(self, score: float) -> None:
        """Learn ``score`` (a NaN is ignored); one above the cut only once such scores lasted."""
        if math.isnan(score):
            return
        x = math.log(max(score, _FLOOR))
        if self._n >= self.min_samples and 1.0 - self._p(x) > self.cut:
            self._streak += 1
            if self._streak <= self._ring.size // 10:
                return
        else:
            self._streak = 0
        self._ring[self._n % self._ring.size] = x
        self._n += 1
        if self._n >= self.min_samples and (self._n - self.min_samples) % _REFIT == 0:
            self._refit()

    def _refit(self) -> None:
        m = min(self._n, self._ring.size)
        k = min(m, max(_MIN_TAIL, int(_TAIL * m)))
        top = np.partition(self._ring[:m], m - k)[m - k :]
        start = float(top.min())
        scale = max(float(top.mean()) - start, _MIN_SCALE)
        self._fit = [start, scale, k / (m + 1)]

    def rescale(self, factor: float) -> None:
        """Move to a new model's scale: its scores are ``factor`` times the old model's."""
        if factor > 0 and math.isfinite(factor):
            shift = math.log(factor)
            self._ring += np.float32(shift)
            self._fit[0] += shift

    def absorb(self, scores: list[float]) -> None:
        """Learn ``scores`` as normal, unjudged: a new model's scores of recent normal windows,
        so the grades know how it errs, not only how much (its errors may peak elsewhere)."""
        for score in scores:
            if not math.isnan(score):
                self._ring[self._n % self._ring.size] = math.log(max(score, _FLOOR))
                self._n += 1
        if self._n >= self.min_samples:
            self._refit()

    def get_state(self) -> dict[str, Any]:
        return {"ring": self._ring.copy(), "n": [self._n, self._streak], "fit": list(self._fit)}

    def set_state(self, state: dict[str, Any]) -> None:
        ring = np.asarray(state["ring"], dtype=np.float32)
        if ring.shape != self._ring.shape:
            raise ValueError(f"grade window {ring.size} in the snapshot, {self._ring.size} configured")
        self._ring[:] = ring
        self._n, self._streak = (int(v) for v in state["n"])
        self._fit = [float(v) for v in state["fit"]]
