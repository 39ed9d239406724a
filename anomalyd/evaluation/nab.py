"""NAB scoring (Numenta Anomaly Benchmark v1.1): windows, scaled sigmoid, profiles, threshold sweep.

Pure: row indices and arrays in, numbers out; reading files is :mod:`anomalyd.evaluation.data`'s job.
The rules (``../shared/datasets/nab/SCORING.md``, after NAB's ``sweeper.py``):

- the first ``min(floor(0.15 N), 750)`` rows of a file are probation: not scored at all;
- a window earns ``tpWeight`` times the credit of its earliest detection, ``f(x) / f(-1)`` with
  ``f(x) = 2 / (1 + exp(5x)) - 1`` and ``x = -(end - i + 1) / width``: 1.0 at its first row;
- an undetected window costs ``fnWeight``;
- a detection outside every window costs ``fpWeight * c``: ``c = -1`` before the first window,
  else ``c = f((i - end) / (width - 1))`` relative to the latest window before it;
- the corpus score is ``100 * (raw - null) / (perfect - null)``, ``null = -fnWeight * windows``
  (never alert), ``perfect = tpWeight * windows`` (alert once, at every window's first row).

>>> corpus = [LabelledFile("demo/a.csv", 100, (Window(40, 49),))]
>>> perfect = np.zeros(100, dtype=bool)
>>> perfect[40] = True
>>> score_corpus(corpus, [perfect]).normalised(STANDARD)
100.0
>>> score_corpus(corpus, [np.zeros(100, dtype=bool)]).normalised(STANDARD)
0.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

# Rows past a window beyond which a false positive costs the full weight (NAB's scaledSigmoid).
_FAR_PAST = 3.0


@dataclass(frozen=True)
class Profile:
    """One NAB application profile: the weights of a detected window, a false positive, a miss."""

    name: str
    tp: float
    fp: float
    fn: float


STANDARD = Profile("standard", 1.0, 0.11, 1.0)
PROFILES = (
    STANDARD,
    Profile("reward_low_FP_rate", 1.0, 0.22, 1.0),
    Profile("reward_low_FN_rate", 1.0, 0.11, 2.0),
)


def probation_rows(rows: int) -> int:
    """NAB's probationary period: 15% of a file's rows, at most 15% of 5000.

    >>> probation_rows(4032), probation_rows(22695), probation_rows(0)
    (604, 750, 0)
    """
    return min(math.floor(0.15 * rows), 750)


def scaled_sigmoid(x: np.ndarray) -> np.ndarray:
    """``2 / (1 + exp(5x)) - 1``, and exactly -1 where ``x > 3``.

    >>> scaled_sigmoid(np.array([-1.0, 0.0, 3.5])).round(5).tolist()
    [0.98661, 0.0, -1.0]
    """
    x = np.asarray(x, dtype=np.float64)
    value = 2.0 / (1.0 + np.exp(5.0 * np.minimum(x, 2 * _FAR_PAST))) - 1.0
    return np.where(x > _FAR_PAST, -1.0, value)


F_START = float(scaled_sigmoid(np.array(-1.0)))  # f(-1) = 0.98661: a window's first row earns 1.0


@dataclass(frozen=True, order=True)
class Window:
    """A labelled anomaly window as rows of its file, both ends inclusive."""

    start: int
    end: int

    @property
    def width(self) -> int:
        return self.end - self.start + 1


@dataclass(frozen=True)
class LabelledFile:
    """One data file of a corpus: its name (``category/file.csv``), row count and windows.

    Windows must be sorted, disjoint and inside the file. A window that ends inside the
    probationary period does not exist for scoring (NAB's labels have none).
    """

    name: str
    rows: int
    windows: tuple[Window, ...] = ()

    def __post_init__(self) -> None:
        last = -1
        for w in self.windows:
            if not last < w.start <= w.end < self.rows:
                raise ValueError(
                    f"{self.name}: window rows {w.start}..{w.end} overlap or leave 0..{self.rows - 1}"
                )
            last = w.end

    @property
    def category(self) -> str:
        return self.name.rsplit("/", 1)[0] if "/" in self.name else ""

    @property
    def probation(self) -> int:
        return probation_rows(self.rows)

    @property
    def scored_windows(self) -> tuple[Window, ...]:
        return tuple(w for w in self.windows if w.end >= self.probation)

    @cached_property
    def row_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """Per row: the scored window it lies in (-1: none), and its weight.

        Inside a window the weight is the credit ``f(x) / f(-1)`` in (0, 1]; outside, ``c`` in
        [-1, 0). A window one row wide leaves no ``width - 1`` to scale by: rows after it cost -1.
        """
        window_of = np.full(self.rows, -1, dtype=np.int64)
        weight = np.full(self.rows, -1.0)
        rows = np.arange(self.rows)
        windows = self.scored_windows
        for k, w in enumerate(windows):
            inside = rows[w.start : w.end + 1]
            window_of[inside] = k
            weight[inside] = scaled_sigmoid(-(w.end - inside + 1) / w.width) / F_START
            after = rows[w.end + 1 : windows[k + 1].start if k + 1 < len(windows) else self.rows]
            if w.width > 1:
                weight[after] = scaled_sigmoid((after - w.end) / (w.width - 1))
        return window_of, weight


@dataclass(frozen=True)
class FileOutcome:
    """What one set of detections achieved on one file (after probation), for every profile."""

    name: str
    windows: int
    detected: int  # windows with at least one detection
    credit: float  # sum over detected windows of their earliest detection's credit
    fp_detections: int  # detections outside every window
    fp_cost: float  # sum of their weights c, each in [-1, 0)
    tp_rows: int
    fp_rows: int
    fn_rows: int
    tn_rows: int

    @property
    def category(self) -> str:
        return self.name.rsplit("/", 1)[0] if "/" in self.name else ""

    @property
    def missed(self) -> int:
        return self.windows - self.detected

    def raw(self, profile: Profile) -> float:
        return profile.tp * self.credit - profile.fn * self.missed + profile.fp * self.fp_cost


def score_file(file: LabelledFile, detected: np.ndarray) -> FileOutcome:
    """Score a boolean detection per row of ``file``; probationary rows are ignored."""
    if detected.shape != (file.rows,):
        raise ValueError(f"{file.name}: {detected.shape[0]} detections for {file.rows} rows")
    window_of, weight = file.row_weights
    scored = np.arange(file.rows) >= file.probation
    hits = detected.astype(bool) & scored
    inside = window_of >= 0
    windows = len(file.scored_windows)
    best = np.full(windows, -np.inf)
    tp = hits & inside
    np.maximum.at(best, window_of[tp], weight[tp])  # the earliest detection has the highest credit
    found = np.isfinite(best)
    fp = hits & ~inside
    return FileOutcome(
        name=file.name,
        windows=windows,
        detected=int(found.sum()),
        credit=float(best[found].sum()),
        fp_detections=int(fp.sum()),
        fp_cost=float(weight[fp].sum()),
        tp_rows=int(tp.sum()),
        fp_rows=int(fp.sum()),
        fn_rows=int((scored & inside & ~hits).sum()),
        tn_rows=int((scored & ~inside & ~hits).sum()),
    )


def normalised_score(raw: float, windows: int, profile: Profile) -> float | None:
    """``100 * (raw - null) / (perfect - null)``; None without windows (the score is undefined)."""
    null, perfect = -profile.fn * windows, profile.tp * windows
    return None if windows == 0 else 100.0 * (raw - null) / (perfect - null)


@dataclass(frozen=True)
class NabScore:
    """The outcome of one set of detections on every file; ``threshold`` when a sweep chose them."""

    files: tuple[FileOutcome, ...]
    threshold: float | None = None

    def subset(self, category: str) -> NabScore:
        return NabScore(tuple(f for f in self.files if f.category == category), self.threshold)

    @property
    def categories(self) -> list[str]:
        return sorted({f.category for f in self.files})

    def total(self, name: str) -> int:
        """The sum of an integer field (``windows``, ``detected``, ``tp_rows`` ...) over the files."""
        return int(sum(getattr(f, name) for f in self.files))

    def raw(self, profile: Profile) -> float:
        return float(sum(f.raw(profile) for f in self.files))

    def normalised(self, profile: Profile) -> float | None:
        return normalised_score(self.raw(profile), self.total("windows"), profile)

    def to_dict(self) -> dict[str, Any]:
        counts = (
            "windows",
            "detected",
            "missed",
            "fp_detections",
            "tp_rows",
            "fp_rows",
            "fn_rows",
            "tn_rows",
        )
        scores = {p.name: {"raw": self.raw(p), "score": self.normalised(p)} for p in PROFILES}
        categories = {
            c: {
                **{n: self.subset(c).total(n) for n in counts},
                "scores": {p.name: self.subset(c).normalised(p) for p in PROFILES},
            }
            for c in self.categories
        }
        files = [
            {"file": f.name, **{n: getattr(f, n) for n in counts}, "credit": f.credit} for f in self.files
        ]
        totals = {n: self.total(n) for n in counts}
        return {
            "threshold": self.threshold,
            **totals,
            "scores": scores,
            "categories": categories,
            "files": files,
        }


def score_corpus(files: Sequence[LabelledFile], detections: Sequence[np.ndarray]) -> NabScore:
    """Score one boolean detection array per file (binary detectors: the daemon's alerts)."""
    return NabScore(tuple(score_file(f, d) for f, d in zip(files, detections, strict=True)))


@dataclass(frozen=True)
class SweepCurve:
    """The corpus's score parts for every candidate threshold, highest first (``inf``: no detection).

    Per profile, ``raw = tp * credit - fn * (windows - detected) + fp * fp_cost``.
    """

    thresholds: np.ndarray
    credit: np.ndarray
    detected: np.ndarray
    fp_cost: np.ndarray
    windows: int

    def raw(self, profile: Profile) -> np.ndarray:
        return (
            profile.tp * self.credit - profile.fn * (self.windows - self.detected) + profile.fp * self.fp_cost
        )

    def best(self, profile: Profile) -> float:
        """The threshold of the highest raw score; on a tie the highest one (np.argmax takes the first)."""
        return float(self.thresholds[int(np.argmax(self.raw(profile)))])


def _ranked_rows(
    files: Sequence[LabelledFile], scores: Sequence[np.ndarray]
) -> tuple[list[float], list[int], list[float], int]:
    """Every scored row after probation, highest score first: score, window (corpus-wide, -1:
    none) and weight; and the number of windows."""
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    offset = 0
    for file, values in zip(files, scores, strict=True):
        if values.shape != (file.rows,):
            raise ValueError(f"{file.name}: {values.shape[0]} scores for {file.rows} rows")
        window_of, weight = file.row_weights
        rows = np.arange(file.probation, file.rows)
        rows = rows[~np.isnan(values[rows])]
        windows = np.where(window_of[rows] >= 0, window_of[rows] + offset, -1)
        found.append((values[rows].astype(np.float64), windows, weight[rows]))
        offset += len(file.scored_windows)
    ranked = np.concatenate([np.empty(0), *(f[0] for f in found)])
    order = np.argsort(-ranked, kind="stable")
    windows = np.concatenate([np.empty(0, np.int64), *(f[1] for f in found)])[order]
    weights = np.concatenate([np.empty(0), *(f[2] for f in found)])[order]
    return ranked[order].tolist(), windows.tolist(), weights.tolist(), offset


def sweep_curve(files: Sequence[LabelledFile], scores: Sequence[np.ndarray]) -> SweepCurve:
    """Every threshold NAB's sweep tries, in one pass over the scored rows sorted by score.

    A row is a detection when ``score >= threshold``; NaN (no score yet) never is. Lowering the
    threshold to the next distinct score adds that score's rows: a false positive adds its
    weight, a row in a window raises the window's credit to the row's if higher. So the whole
    curve costs one sort, O(rows log rows), instead of one scoring per threshold.
    """
    ranked, windows, weights, count = _ranked_rows(files, scores)
    best = [-1.0] * count  # credit of each window's best detection so far; -1: none yet
    credit, detected, fp_cost = 0.0, 0, 0.0
    curve: list[tuple[float, float, int, float]] = [(math.inf, 0.0, 0, 0.0)]
    for j, (value, window, w) in enumerate(zip(ranked, windows, weights, strict=True)):
        if window < 0:
            fp_cost += w
        elif best[window] < 0:
            best[window] = w
            credit += w
            detected += 1
        elif w > best[window]:
            credit += w - best[window]
            best[window] = w
        if j + 1 == len(ranked) or ranked[j + 1] != value:
            curve.append((value, credit, detected, fp_cost))
    thresholds, credits, hits, costs = (np.array(c) for c in zip(*curve, strict=True))
    return SweepCurve(thresholds, credits, hits, costs, count)


def sweep(files: Sequence[LabelledFile], scores: Sequence[np.ndarray]) -> dict[str, NabScore]:
    """Per profile, the corpus-wide threshold that maximises the raw score, and its outcome."""
    curve = sweep_curve(files, scores)
    result = {}
    for profile in PROFILES:
        threshold = curve.best(profile)
        with np.errstate(invalid="ignore"):
            detections = [s >= threshold for s in scores]
        result[profile.name] = NabScore(score_corpus(files, detections).files, threshold)
    return result
