"""Retraining's bookkeeping: the drift monitor of a model's scores, a retraining in flight,
and what it came to. :class:`~anomalyd.detector.Detector` schedules and judges retrainings
with these; :mod:`anomalyd.training` trains and challenges the candidates.
"""

from __future__ import annotations

from array import array
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
from river.drift import ADWIN

from anomalyd.training import Candidate


@dataclass
class RetrainJob:
    future: Future[Candidate]
    swap_at: int  # the slot's `scored` count after which the candidate is judged and swapped in
    reason: str
    data: np.ndarray  # what the candidate trains on (kept so a snapshot can restart the job)
    seed: int


class DriftMonitor:
    """river's ADWIN over a model's score stream, rebuilt on demand from its own history.

    ADWIN assumes independent values. Scores of overlapping windows are not: a window shares
    all but one value with the next, so a stretch of high scores on a healthy stream looks
    like a change of mean and ADWIN fires on normal variation. With ``block`` (a window's
    length) ADWIN sees the mean of each ``block`` consecutive scores instead: means of
    windows that do not overlap.

    ADWIN keeps no serialisable state, so the monitor keeps the scores it was fed since its
    last reset (at most ``limit``; past that it restarts on the newest half). Feeding the
    same history to a fresh ADWIN gives the same detector: that is how snapshots restore it.
    """

    def __init__(self, delta: float, history: np.ndarray | None = None, limit: int = 8192, block: int = 1):
        self.delta = delta
        self.limit = limit
        self.block = block
        self.history = array("d")
        self._adwin = self._new_adwin()
        self._sum, self._count = 0.0, 0
        if history is not None:
            self._refeed(history.tolist())

    def _new_adwin(self) -> ADWIN:
        # ADWIN tests for a change every ``clock`` values: as often, counted in scores, as unblocked.
        return ADWIN(delta=self.delta, clock=max(1, 32 // self.block))

    def _refeed(self, scores: list[float]) -> bool:
        self.history = array("d", scores)
        self._adwin = self._new_adwin()
        self._sum, self._count = 0.0, 0
        drifted = False
        for score in scores:
            drifted = self._add(score)
        return drifted

    def _add(self, score: float) -> bool:
        self._sum += score
        self._count += 1
        if self._count < self.block:
            return False
        self._adwin.update(self._sum / self.block)
        self._sum, self._count = 0.0, 0
        return bool(self._adwin.drift_detected)

    def update(self, score: float) -> bool:
        """Feed one score; True when ADWIN detects a change at it (at the end of a block)."""
        self.history.append(score)
        if len(self.history) > self.limit:
            return self._refeed(self.history[-(self.limit // 2) :].tolist())
        return self._add(score)


@dataclass(frozen=True)
class RetrainOutcome:
    """What one retraining came to; the pipeline reports it, the service logs it."""

    model_id: str
    version: int  # the live version afterwards
    promoted: bool
    reason: str
    windows: int
    validation_loss: float
    champion_loss: float
    scale: float
    steps: int = 0  # the candidate's optimizer steps
    seconds: float = 0.0  # and its training's CPU seconds
