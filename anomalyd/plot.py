"""Draw a replay: each key's series with its alerts, and its score against the threshold."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from anomalyd.pipeline import BatchResult


class _Series:
    __slots__ = ("alerts", "score", "threshold", "value", "x")

    def __init__(self) -> None:
        self.x: list[float] = []
        self.value: list[float] = []
        self.score: list[float] = []
        self.threshold: list[float] = []
        self.alerts: list[float] = []


class PlotCollector:
    """Keeps what the plot needs for the first ``max_keys`` keys of a replay."""

    def __init__(self, value_names: Sequence[str], max_keys: int = 4):
        self.value_names = list(value_names)
        self.max_keys = max_keys
        self.series: dict[str, _Series] = {}

    def add(self, result: BatchResult) -> None:
        alerted = {(a.key, a.source.get("row"), a.timestamp) for a in result.alerts}
        for event, score, limit in zip(
            result.events, result.scores.tolist(), result.thresholds.tolist(), strict=True
        ):
            series = self.series.get(event.key)
            if series is None:
                if len(self.series) >= self.max_keys:
                    continue
                series = self.series[event.key] = _Series()
            x = event.time if event.time == event.time else float(len(series.x))
            series.x.append(x)
            series.value.append(float(event.values[0]))
            series.score.append(score)
            series.threshold.append(limit)
            if (event.key, event.source.get("row"), event.timestamp) in alerted:
                series.alerts.append(x)

    def save(self, path: str | Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.dates as mdates
        import matplotlib.pyplot as plt

        keys = list(self.series)
        fig, axes = plt.subplots(
            2 * max(1, len(keys)), 1, figsize=(12, 3.2 * max(1, len(keys))), sharex=False, squeeze=False
        )
        for i, key in enumerate(keys):
            s = self.series[key]
            use_dates = bool(s.x) and s.x[0] > 1e8
            x = [datetime.fromtimestamp(t, UTC) for t in s.x] if use_dates else s.x
            top, bottom = axes[2 * i, 0], axes[2 * i + 1, 0]
            top.plot(x, s.value, lw=0.7, color="tab:blue")
            top.set_title(
                f"{key}: {self.value_names[0] if self.value_names else 'value'} with alerts", loc="left"
            )
            for t in s.alerts:
                top.axvline(
                    datetime.fromtimestamp(t, UTC) if use_dates else t, color="tab:red", lw=1, alpha=0.7
                )
            score = np.asarray(s.score)
            bottom.plot(x, score, lw=0.7, color="tab:gray", label="score")
            bottom.plot(x, s.threshold, lw=1.0, color="tab:orange", label="threshold")
            if np.isfinite(score).any() and np.nanmin(score) > 0:
                bottom.set_yscale("log")
            bottom.legend(loc="upper left", fontsize=8)
            bottom.set_title(f"{key}: reconstruction error (score) and threshold", loc="left", fontsize=9)
            if use_dates:
                for ax in (top, bottom):
                    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(mdates.AutoDateLocator()))
        if not keys:
            axes[0, 0].text(0.5, 0.5, "no events", ha="center")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
