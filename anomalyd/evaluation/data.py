"""Read what scoring needs: data files, NAB labels, the daemon's alerts JSONL and scores CSV.

Outputs are matched to data rows without trusting their order blindly: an alert names its
file and row (``source``); a scores CSV row names its file and timestamp, and is aligned to the
data file's rows in order, skipping data rows it lacks (dead-lettered records have no score).
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import numpy as np

from anomalyd.errors import AnomalydError
from anomalyd.evaluation.nab import LabelledFile, Window


class EvaluationError(AnomalydError):
    """Labels, data files and outputs do not fit together (or cannot be read)."""


def _open(path: Path) -> IO[str]:
    try:
        if path.name.endswith(".gz"):
            return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
        return open(path, encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise EvaluationError(f"cannot read {path}: {exc.strerror or exc}") from exc


def read_columns(path: Path, columns: Iterable[str], delimiter: str = ",") -> dict[str, list[str]]:
    """The named columns of a CSV file, as text, one entry per non-blank data row."""
    names = list(columns)
    with _open(path) as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        missing = [c for c in names if c not in (reader.fieldnames or [])]
        if missing:
            raise EvaluationError(f"{path} has no column {', '.join(repr(c) for c in missing)}")
        out: dict[str, list[str]] = {c: [] for c in names}
        for row in reader:
            for c in names:
                out[c].append(row[c])
    return out


def _moment(text: str, where: str) -> datetime:
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        raise EvaluationError(f"{where}: {text!r} is not an ISO timestamp") from None


def windows_to_rows(name: str, timestamps: list[str], windows: Iterable[Iterable[str]]) -> tuple[Window, ...]:
    """Map ``[start, end]`` timestamp pairs to rows: start to its first row, end to its last.

    Timestamps may repeat (or step back), so they are matched exactly, not by order.
    """
    first: dict[datetime, int] = {}
    last: dict[datetime, int] = {}
    for row, text in enumerate(timestamps):
        moment = _moment(text, f"{name} row {row}")
        first.setdefault(moment, row)
        last[moment] = row
    rows = []
    for start, end in windows:
        a, b = _moment(start, name), _moment(end, name)
        if a not in first or b not in last:
            raise EvaluationError(
                f"{name}: window [{start}, {end}] does not start and end on a row's timestamp"
            )
        rows.append(Window(first[a], last[b]))
    try:
        return LabelledFile(name, len(timestamps), tuple(sorted(rows))).windows
    except ValueError as exc:
        raise EvaluationError(str(exc)) from None


@dataclass(frozen=True)
class NabData:
    """One NAB file: its labels as rows, where it lives, and its timestamps (to align scores)."""

    file: LabelledFile
    path: Path
    timestamps: list[str]


def load_nab(labels: Path, data_dir: Path | None = None) -> list[NabData]:
    """Every file named in NAB's ``combined_windows.json``, read from ``data_dir`` (default:
    ``data/`` beside the labels' folder, NAB's own layout), in the labels' (sorted) order."""
    try:
        table = json.loads(labels.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EvaluationError(f"cannot read labels {labels}: {exc}") from exc
    if not isinstance(table, dict):
        raise EvaluationError(f"{labels}: expected an object of file -> windows")
    data_dir = data_dir if data_dir is not None else labels.resolve().parent.parent / "data"
    corpus = []
    for name in sorted(table):
        path = data_dir / name
        timestamps = read_columns(path, ["timestamp"])["timestamp"]
        windows = windows_to_rows(name, timestamps, table[name])
        corpus.append(NabData(LabelledFile(name, len(timestamps), windows), path, timestamps))
    return corpus


def match_name(path: str, names: Iterable[str]) -> str | None:
    """The corpus name (``category/file.csv``) that ``path`` ends with, if any.

    >>> match_name("../nab/data/realTraffic/speed_7578.csv", ["realTraffic/speed_7578.csv"])
    'realTraffic/speed_7578.csv'
    """
    posix = "/" + path.replace("\\", "/").lstrip("/")
    found = [n for n in names if posix.endswith("/" + n)]
    return max(found, key=len) if found else None


def read_alerts(path: Path) -> Iterator[dict[str, Any]]:
    """The alert objects of a JSON-lines file (blank lines skipped)."""
    with _open(path) as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    record = json.loads(line)
                except ValueError:
                    raise EvaluationError(f"{path} line {number} is not JSON") from None
                if not isinstance(record, dict):
                    raise EvaluationError(f"{path} line {number} is not a JSON object")
                yield record


def _source_of(alert: Mapping[str, Any]) -> tuple[str, int]:
    source = alert.get("source")
    if not isinstance(source, dict) or not isinstance(source.get("row"), int) or "file" not in source:
        raise EvaluationError(f"alert {alert.get('alert_id')!r} has no source file and row")
    return str(source["file"]), source["row"]


def nab_detections(alerts: Iterable[Mapping[str, Any]], corpus: list[NabData]) -> list[np.ndarray]:
    """One boolean array per corpus file: the rows the alerts name (``source.file``/``source.row``)."""
    names = [d.file.name for d in corpus]
    detections = {d.file.name: np.zeros(d.file.rows, dtype=bool) for d in corpus}
    for alert in alerts:
        path, row = _source_of(alert)
        name = match_name(path, names)
        if name is None:
            raise EvaluationError(f"alerts name {path!r}, a file that is not in the labels")
        if not 0 <= row < detections[name].size:
            raise EvaluationError(
                f"an alert names row {row} of {path!r}, which has {detections[name].size} rows"
            )
        detections[name][row] = True
    return [detections[n] for n in names]


@dataclass
class ScoredRows:
    """The rows of one file in a scores CSV, in order."""

    timestamps: list[str]
    scores: list[float]
    anomalous: list[bool]
    grades: list[float]  # NaN where a row has none (or the CSV has no grade column)


def read_scores(path: Path) -> dict[str, ScoredRows]:
    """A scores CSV (``file,key,timestamp,score,grade,threshold,is_anomaly``; ``grade`` may be
    missing) by file; an empty score or grade is NaN."""
    out: dict[str, ScoredRows] = {}
    with _open(path) as handle:
        reader = csv.DictReader(handle)
        if not {"file", "timestamp", "score", "is_anomaly"} <= set(reader.fieldnames or []):
            raise EvaluationError(
                f"{path} is not a scores CSV (file,key,timestamp,score,threshold,is_anomaly)"
            )
        for number, row in enumerate(reader, 2):
            rows = out.setdefault(row["file"], ScoredRows([], [], [], []))
            rows.scores.append(_cell(row, "score", path, number))
            rows.grades.append(_cell(row, "grade", path, number))
            rows.timestamps.append(row["timestamp"])
            rows.anomalous.append(row["is_anomaly"].strip() not in ("", "0"))
    return out


def _cell(row: Mapping[str, str | None], column: str, path: Path, number: int) -> float:
    text = row.get(column) or ""
    try:
        return float(text) if text else float("nan")
    except ValueError:
        raise EvaluationError(f"{path} line {number}: {column} {text!r} is not a number") from None


def align_rows(data: list[str], scored: list[str], where: str) -> np.ndarray:
    """The data row of each scored row: in order, skipping data rows without a score.

    >>> align_rows(["a", "b", "c", "c"], ["a", "c", "c"], "x").tolist()
    [0, 2, 3]
    """
    if len(data) == len(scored) and data == scored:
        return np.arange(len(data))
    rows = np.empty(len(scored), dtype=np.int64)
    row = 0
    for i, stamp in enumerate(scored):
        while row < len(data) and data[row] != stamp:
            row += 1
        if row == len(data):
            raise EvaluationError(f"{where}: scored row {i} ({stamp}) matches no remaining data row")
        rows[i] = row
        row += 1
    return rows


def nab_scores(
    scores: Mapping[str, ScoredRows], corpus: list[NabData], column: str = "scores"
) -> list[np.ndarray]:
    """One float array per corpus file (NaN where a row has no score) from a grouped scores
    CSV: its ``scores`` or its ``grades``."""
    names = [d.file.name for d in corpus]
    values = {d.file.name: np.full(d.file.rows, np.nan) for d in corpus}
    for path, rows in scores.items():
        name = match_name(path, names)
        if name is None:
            raise EvaluationError(f"scores name {path!r}, a file that is not in the labels")
        data = corpus[names.index(name)]
        values[name][align_rows(data.timestamps, rows.timestamps, path)] = getattr(rows, column)
    return [values[n] for n in names]


def read_skab_labels(path: Path) -> tuple[list[str], np.ndarray]:
    """A SKAB file's ``datetime`` and ``anomaly`` columns (``;``-separated)."""
    columns = read_columns(path, ["datetime", "anomaly"], delimiter=";")
    try:
        labels = np.array([float(x) >= 0.5 for x in columns["anomaly"]], dtype=bool)
    except ValueError:
        raise EvaluationError(f"{path}: the anomaly column holds a value that is not a number") from None
    return columns["datetime"], labels
