"""SKAB's point-wise metrics: F1, false-alarm rate (FAR) and missed-alarm rate (MAR).

The benchmark's protocol (``../shared/datasets/skab/README.md``): per file, the first 400 rows
are for fitting; every later row is scored. F1 is reported per file and pooled over all files
(counts summed, then the ratios), with FAR = false alarms / actual normals and MAR = missed /
actual anomalies.

>>> labels = np.array([0, 0, 1, 1, 0], dtype=bool)
>>> counts = point_counts(labels, np.array([0, 1, 1, 0, 0], dtype=bool), skip=1)
>>> counts, counts.f1, counts.far, counts.mar
(Counts(tp=1, fp=1, fn=1, tn=1), 0.5, 0.5, 0.5)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

FIT_ROWS = 400  # SKAB's protocol: each file's first 400 rows train the model


@dataclass(frozen=True)
class Counts:
    """Confusion counts of anomaly points; a ratio with an empty denominator is None."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)

    @property
    def rows(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    @property
    def anomalies(self) -> int:
        return self.tp + self.fn

    @property
    def alarms(self) -> int:
        return self.tp + self.fp

    @property
    def f1(self) -> float | None:
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def far(self) -> float | None:
        return _ratio(self.fp, self.fp + self.tn)

    @property
    def mar(self) -> float | None:
        return _ratio(self.fn, self.fn + self.tp)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "tn": self.tn,
            "f1": self.f1,
            "far": self.far,
            "mar": self.mar,
        }


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def point_counts(labels: np.ndarray, predicted: np.ndarray, skip: int = FIT_ROWS) -> Counts:
    """Count one file's rows from ``skip`` on; ``labels`` and ``predicted`` are aligned booleans."""
    if labels.shape != predicted.shape:
        raise ValueError(f"{predicted.shape[0]} predictions for {labels.shape[0]} labelled rows")
    y, p = labels[skip:].astype(bool), predicted[skip:].astype(bool)
    return Counts(int((y & p).sum()), int((~y & p).sum()), int((y & ~p).sum()), int((~y & ~p).sum()))


@dataclass(frozen=True)
class SkabReport:
    """Per-file counts (in file order) and their pool."""

    files: tuple[tuple[str, Counts], ...]

    @property
    def pooled(self) -> Counts:
        total = Counts()
        for _, counts in self.files:
            total = total + counts
        return total

    def to_dict(self) -> dict[str, Any]:
        return {
            "fit_rows": FIT_ROWS,
            "files": [{"file": name, **c.to_dict()} for name, c in self.files],
            "pooled": self.pooled.to_dict(),
        }
