"""Replay a benchmark's files through anomalyd and score what it wrote (`anomalyd evaluate`).

NAB: the daemon's alerts are a binary detector (scored as they are) and its per-row scores a
continuous one (scored at NAB's oracle threshold, swept per profile). SKAB: the per-row
``is_anomaly`` decisions against the files' ``anomaly`` column.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from anomalyd.config import Config
from anomalyd.evaluation.data import (
    EvaluationError,
    align_rows,
    load_nab,
    nab_detections,
    nab_scores,
    read_alerts,
    read_scores,
    read_skab_labels,
)
from anomalyd.evaluation.nab import NabScore, score_corpus, sweep
from anomalyd.evaluation.skab import SkabReport, point_counts

Suite = Literal["nab", "skab"]
OnFile = Callable[[int, int, str], None]  # (index from 1, number of files, file name)

NAB_LABELS = Path("labels") / "combined_windows.json"


@dataclass(frozen=True)
class NabReport:
    """NAB scores of the alerts (None: not given) and, per profile, of the swept scores and
    the swept grades (None: no scores, or no grades in them)."""

    alerts: NabScore | None
    swept: dict[str, NabScore] | None
    swept_grade: dict[str, NabScore] | None = None

    def to_dict(self) -> dict[str, Any]:
        def profiles(swept: dict[str, NabScore] | None) -> dict[str, Any] | None:
            return None if swept is None else {p: s.to_dict() for p, s in swept.items()}

        return {
            "suite": "nab",
            "alerts": None if self.alerts is None else self.alerts.to_dict(),
            "swept": profiles(self.swept),
            "swept_grade": profiles(self.swept_grade),
        }


def score_nab(
    labels: Path, alerts: Path | None, scores: Path | None, data_dir: Path | None = None
) -> NabReport:
    """Score an alerts JSONL and/or a scores CSV against NAB's windows file and its data files.

    ``data_dir`` holds ``<category>/<file>.csv``; by default ``data/`` beside the labels' folder.
    """
    corpus = load_nab(labels, data_dir)
    files = [d.file for d in corpus]
    by_alerts = score_corpus(files, nab_detections(read_alerts(alerts), corpus)) if alerts else None
    if not scores:
        return NabReport(by_alerts, None)
    rows = read_scores(scores)
    grades = nab_scores(rows, corpus, "grades")
    graded = any(np.isfinite(g).any() for g in grades)
    return NabReport(
        by_alerts, sweep(files, nab_scores(rows, corpus)), sweep(files, grades) if graded else None
    )


def score_skab(scores: Path, data_dir: Path | None = None) -> SkabReport:
    """SKAB metrics of a scores CSV's ``is_anomaly``; labels come from the data files it names.

    Rows without a score row (dead-lettered) count as not anomalous. Files are named relative
    to ``data_dir`` when given.
    """
    files = []
    for path, rows in read_scores(scores).items():
        timestamps, labels = read_skab_labels(Path(path))
        predicted = np.zeros(labels.size, dtype=bool)
        predicted[align_rows(timestamps, rows.timestamps, path)] = rows.anomalous
        name = os.path.relpath(path, data_dir) if data_dir is not None else path
        files.append((name, point_counts(labels, predicted)))
    if not files:
        raise EvaluationError(f"{scores} holds no scored rows")
    return SkabReport(tuple(files))


def skab_files(data_dir: Path) -> list[Path]:
    """``valve2/*.csv`` if there is such a folder, else every CSV below ``data_dir`` but anomaly-free ones."""
    if (data_dir / "valve2").is_dir():
        return sorted((data_dir / "valve2").glob("*.csv"))
    found = sorted(data_dir.rglob("*.csv"))
    return [p for p in found if "anomaly-free" not in p.relative_to(data_dir).parts]


def replay_each(
    paths: Sequence[Path], config: Config, workdir: Path, on_file: OnFile | None = None
) -> tuple[Path, Path]:
    """Replay each file on its own (its own key and model), then join the outputs.

    Returns ``workdir/alerts.jsonl`` and ``workdir/scores.csv``; per-file outputs and dead
    letters stay in ``workdir/runs``.
    """
    from anomalyd.app import ReplayOutputs, replay

    runs = workdir / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    alerts, scores = [], []
    for i, path in enumerate(paths):
        if on_file is not None:
            on_file(i + 1, len(paths), str(path))
        stem = f"{i:03d}-{path.stem}"
        outputs = ReplayOutputs(
            alerts=runs / f"{stem}.alerts.jsonl",
            scores=runs / f"{stem}.scores.csv",
            dead_letter=runs / f"{stem}.dead.jsonl",
        )
        replay([str(path)], config, outputs)
        alerts.append(outputs.alerts)
        scores.append(outputs.scores)
    return _join(alerts, workdir / "alerts.jsonl", header=False), _join(
        scores, workdir / "scores.csv", header=True
    )


def _join(parts: Sequence[Path | None], target: Path, header: bool) -> Path:
    with target.open("w", encoding="utf-8", newline="") as out:
        for i, part in enumerate(parts):
            if part is None or not part.exists():
                continue
            with part.open(encoding="utf-8", newline="") as src:
                if header and i > 0:
                    src.readline()
                shutil.copyfileobj(src, out)
    return target


def evaluate_suite(
    kind: Suite, data_dir: Path, config: Config, workdir: Path | None = None, on_file: OnFile | None = None
) -> NabReport | SkabReport:
    """Replay every data file of a benchmark folder with ``config`` and score the outputs.

    NAB: the files ``labels/combined_windows.json`` names, from ``data/`` (all of
    ``data/**/*.csv``). SKAB: see :func:`skab_files`. Outputs go to ``workdir`` (default: a
    temporary folder, removed afterwards).
    """
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="anomalyd-evaluate-") as tmp:
            return evaluate_suite(kind, data_dir, config, Path(tmp), on_file)
    workdir.mkdir(parents=True, exist_ok=True)
    if kind == "nab":
        labels = data_dir / NAB_LABELS
        corpus = load_nab(labels, data_dir / "data")
        alerts, scores = replay_each([d.path for d in corpus], config, workdir, on_file)
        return score_nab(labels, alerts, scores, data_dir / "data")
    paths = skab_files(data_dir)
    if not paths:
        raise EvaluationError(f"no SKAB data files (*.csv) below {data_dir}")
    _, scores = replay_each(paths, config, workdir, on_file)
    return score_skab(scores, data_dir)
