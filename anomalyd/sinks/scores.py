"""The per-event scores CSV: one row per event, so every point can be evaluated."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import IO

from anomalyd.errors import SinkError
from anomalyd.pipeline import BatchResult

HEADER = ("file", "key", "timestamp", "score", "grade", "threshold", "is_anomaly")


def _number(x: float) -> str:
    return "" if math.isnan(x) else repr(x)


class ScoresWriter:
    """``file,key,timestamp,score,grade,threshold,is_anomaly``; warm-up rows have an empty
    score, and rows the key's grader is not ready for an empty grade.

    With ``append`` (a resumed replay) rows are added to an existing file: rows between the
    snapshot and a crash then appear twice, with the same values.
    """

    def __init__(self, path: str | Path, append: bool = False):
        self.path = Path(path)
        self.append = append
        self._file: IO[str] | None = None

    def write(self, result: BatchResult) -> None:
        if self._file is None:
            header = not (self.append and self.path.exists() and self.path.stat().st_size > 0)
            try:
                self._file = open(self.path, "a" if self.append else "w", newline="", encoding="utf-8")  # noqa: SIM115 - closed in close()
            except OSError as exc:
                raise SinkError(f"cannot open {self.path}: {exc.strerror}") from exc
            self._rows = csv.writer(self._file)
            if header:
                self._rows.writerow(HEADER)
        rows = self._rows
        for event, score, grade, limit, flag in zip(
            result.events,
            result.scores.tolist(),
            result.grades.tolist(),
            result.thresholds.tolist(),
            result.anomalous.tolist(),
            strict=True,
        ):
            origin = event.source.get("file") or event.source.get("topic", "")
            rows.writerow(
                (
                    origin,
                    event.key,
                    event.timestamp,
                    _number(score),
                    _number(grade),
                    _number(limit),
                    int(flag),
                )
            )

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
