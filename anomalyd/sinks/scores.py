"""The per-event scores CSV: one row per event, so every point can be evaluated."""

from __future__ import annotations

import csv
import io
import math
import os
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

    An observer of each batch (``writer(result)``) that keeps its rows in memory until
    :meth:`flush`, which the loop calls at its commit step before offsets are committed:
    the file then holds exactly the rows of the committed batches, so a run resumed from
    them neither misses nor repeats a row (rows after the last snapshot excepted, see
    docs/operations.md). With ``append`` (a resumed replay) rows are added to an existing
    file.
    """

    def __init__(self, path: str | Path, append: bool = False):
        self.path = Path(path)
        self.append = append
        self._file: IO[str] | None = None
        self._pending = io.StringIO()
        self._rows = csv.writer(self._pending)

    def __call__(self, result: BatchResult) -> None:
        self.write(result)

    def write(self, result: BatchResult) -> None:
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

    def _open(self) -> IO[str]:
        if self._file is None:
            header = not (self.append and self.path.exists() and self.path.stat().st_size > 0)
            try:
                self._file = open(self.path, "a" if self.append else "w", newline="", encoding="utf-8")  # noqa: SIM115 - closed in close()
            except OSError as exc:
                raise SinkError(f"cannot open {self.path}: {exc.strerror}") from exc
            if header:
                csv.writer(self._file).writerow(HEADER)
        return self._file

    def flush(self) -> None:
        """Write the rows kept so far and fsync; SinkError if the file cannot take them."""
        text = self._pending.getvalue()
        handle = self._open()
        try:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        except OSError as exc:
            raise SinkError(f"cannot write {self.path}: {exc.strerror}") from exc
        self._pending.seek(0)
        self._pending.truncate()

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None
