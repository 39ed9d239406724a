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

    ADWIN keeps no serialisable state, so the monitor keeps the scores it was fed since its
    last reset (at most ``limit``; past that it restarts on the newest half). Feeding the
    same history to a fresh ADWIN gives the same detector: that is how snapshots restore it.
    """

    def __init__(self, delta: float, history: np.ndarray | None = None, limit: int = 8192):
        self.delta = delta
        self.limit = limit
        self.history = array("d")
        self._adwin = ADWIN(delta=delta)
        if history is not None:
            self._refeed(history.tolist())

    def _refeed(self, scores: list[float]) -> bool:
        self.history = array("d", scores)
        self._adwin = ADWIN(delta=self.delta)
        for score in scores:
            self._adwin.update(score)
        return bool(self._adwin.drift_detected)

    def update(self, score: float) -> bool:
        """Feed one score; True when ADWIN detects a change at it."""
        self.history.append(score)
        if len(self.history) > self.limit:
            return self._refeed(self.history[-(self.limit // 2) :].tolist())
        self._adwin.update(score)
        return bool(self._adwin.drift_detected)


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
