"""What the benchmark scripts share: arguments, tables, machine facts, generated streams, the replay harness.

Every script runs as ``.venv/bin/python bench/NAME.py [--smoke]``; this module sits next to
them, so ``import common`` finds it. Timings on a shared, noisy machine are only comparable
within one run, so the scripts print ratios measured side by side, and the load average.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # for `tests.kafka_broker` and friends
    sys.path.insert(0, str(ROOT))

WINDOW = 64  # the default window length; warm-up is set to it so training stays a small part
EPOCHS = 2


def parse_args(description: str, extra: Callable[[argparse.ArgumentParser], None] | None = None) -> Any:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks that the script runs")
    if extra is not None:
        extra(parser)
    return parser.parse_args()


def quiet_logs() -> None:
    """anomalyd's structlog output off the table: warnings and errors only, JSON on stderr."""
    from anomalyd.logs import setup_logging

    setup_logging("warning", "json")


def machine() -> str:
    """One line: when, where, on what; the load average tells how noisy the run was."""
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    if "torch" in sys.modules:  # importing torch only to say so costs seconds
        torch = sys.modules["torch"]
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    else:
        gpu = "GPU: nvidia-smi found" if shutil.which("nvidia-smi") else "no GPU"
    return (
        f"{dt.datetime.now().isoformat(timespec='seconds')} | {os.cpu_count()} cores, {gpu} | "
        f"Python {platform.python_version()}, torch {metadata.version('torch')} | load average {load}"
    )


def warm_up_torch() -> None:
    """Pay torch's first-use costs (autograd, Adam, thread pools: seconds) outside any timing."""
    import torch

    from anomalyd.config import TrainingConfig
    from anomalyd.model import ModelArgs
    from anomalyd.training import fit

    windows = np.zeros((2, WINDOW, 1), dtype=np.float32)
    fit(
        ModelArgs(n_features=1, window_length=WINDOW),
        windows,
        TrainingConfig(epochs=1),
        0,
        torch.device("cpu"),
    )


def header(title: str, smoke: bool) -> None:
    print(f"# {title}{' (smoke sizes: numbers mean nothing)' if smoke else ''}")
    print(machine())
    print()


def table(
    title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], notes: Sequence[str] = ()
) -> None:
    """Print a plain-text (Markdown) table: text left-aligned, numbers right-aligned."""
    cells = [[str(c) for c in columns]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    numeric = [all(_is_number(row[i]) for row in rows) and bool(rows) for i in range(len(columns))]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "| " + " | ".join(parts) + " |"

    print(f"## {title}")
    print()
    print(line(cells[0]))
    print(
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if num else ("-" * (w + 2)) for w, num in zip(widths, numeric, strict=True)
        )
        + "|"
    )
    for row in cells[1:]:
        print(line(row))
    for note in notes:
        print(f"\n{note}")
    print(flush=True)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Num) and not isinstance(value, bool)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


@dataclass(frozen=True)
class Num:
    """A number with its own format, e.g. ``Num(0.53, "{:.2f}x")``; right-aligned in tables."""

    value: float
    fmt: str = "{:.2f}"

    def __str__(self) -> str:
        return "n/a" if math.isnan(self.value) else self.fmt.format(self.value)


def ratio(a: float, b: float) -> Num:
    return Num(a / b if b > 0 else math.nan, "{:.2f}x")


def rss_bytes() -> int:
    """Resident set size now (VmRSS), not the peak."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    import resource  # no /proc: the peak is the best there is

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if len(values) else math.nan


# -- generated streams ------------------------------------------------------------------------


def stream_values(keys: int, events_per_key: int, seed: int = 0) -> np.ndarray:
    """(events_per_key, keys) values: per key a level, a daily cycle, noise and rare spikes.

    Rounded to 3 decimals, so what the CSV holds and what baselines read are the same numbers.
    """
    rng = np.random.default_rng(seed)
    level = rng.uniform(10.0, 100.0, keys)
    phase = rng.uniform(0.0, 2 * np.pi, keys)
    t = np.arange(events_per_key, dtype=np.float64)[:, None]
    values = level * (1.0 + 0.2 * np.sin(2 * np.pi * t / 288 + phase))  # 288 five-minute steps a day
    values += rng.normal(0.0, 1.0, (events_per_key, keys)) * (0.02 * level)
    spikes = rng.random((events_per_key, keys)) < 0.0005
    values[spikes] += 0.5 * np.broadcast_to(level, values.shape)[spikes]
    return np.round(values, 3)


def key_names(keys: int) -> list[str]:
    return [f"sensor-{k}" for k in range(keys)]


def write_stream_csv(path: Path, values: np.ndarray) -> None:
    """``key,timestamp,value`` rows, round-robin over keys: row ``i`` is key ``i % keys``."""
    events, keys = values.shape
    names = key_names(keys)
    start = dt.datetime(2024, 1, 1)
    with path.open("w") as out:
        out.write("key,timestamp,value\n")
        for i in range(events):
            stamp = (start + dt.timedelta(minutes=5 * i)).isoformat(sep=" ")
            out.write("".join([f"{k},{stamp},{v}\n" for k, v in zip(names, values[i].tolist(), strict=True)]))


# -- the replay harness -----------------------------------------------------------------------

MODEL_1 = "anomalyd, model, 1 thread"
MODEL_2 = "anomalyd, model, 2 threads"
NO_MODEL = "anomalyd, no model"
MODE_THREADS = {MODEL_1: 1, MODEL_2: 2, NO_MODEL: 1}


def detector_option(parser: argparse.ArgumentParser) -> None:
    """``--detector``: time the autoencoder (the default) or the forecaster; ``--device``."""
    parser.add_argument(
        "--detector", choices=["autoencoder", "forecaster"], default="autoencoder", help="the model timed"
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the model runs")
    parser.add_argument(
        "--carry-state", action="store_true", help="with model.carry_state: one step per event (forecaster)"
    )


def replay_config(
    batch_size: int = 1024,
    detector: str = "autoencoder",
    device: str = "cpu",
    carry_state: bool = False,
    **sections: dict[str, Any],
) -> Any:
    """The default config (window 64, hidden 32, one feature), shared scope, a short warm-up;
    ``detector`` the model that scores, on ``device``.

    Warm-up is one window (``training.warmup_events`` = the window length) and training takes
    ``EPOCHS`` epochs, so training is a small part of a run, timed apart. The threshold
    calibrates on 30 scores (``threshold.min_samples``; the default's 200 would outlast the
    1,000-key stream's 150 scored events per key): what an event costs once a key's threshold
    is calibrated does not depend on how many scores that took. Online retraining,
    where this version of anomalyd has it, is off: the scoring path is measured on its own
    (``bench/retraining.py`` measures scoring while a training runs).
    """
    from anomalyd.config import Config, parse_config

    data: dict[str, Any] = {
        "input": {"key_field": "key", "batch_size": batch_size},
        "model": {"scope": "shared", "threads": 1, "device": device, "carry_state": carry_state},
        "training": {"warmup_events": WINDOW, "epochs": EPOCHS},
        "threshold": {"min_samples": 30},
        "output": {"alerts": []},
        "logging": {"level": "warning"},
        "detector": detector,
    }
    if "retraining" in Config.model_fields:
        data["retraining"] = {"enabled": False}
    for name, value in sections.items():
        data[name] = {**data.get(name, {}), **value}
    return parse_config(data)


@dataclass
class ReplayRun:
    """One replay: warm-up (fill, training) and, per mode, steady-state events and seconds."""

    events: int = 0
    alerts: int = 0
    cut_short: bool = False  # ended by the time budget before the end of the file
    seconds: float = 0.0  # the whole replay() call, row counting included
    warmup_events: int = 0
    warmup_seconds: float = 0.0
    train_seconds: float = 0.0
    train_windows: int = 0
    steady: dict[str, list[float]] = field(default_factory=dict)  # mode -> [events, seconds, batches]

    def rate(self, mode: str) -> float:
        events, seconds, _ = self.steady.get(mode, [0, 0.0, 0])
        return events / seconds if seconds > 0 else math.nan


class _Switch:
    """Wraps ``Detector.score`` and ``anomalyd.detector.fit`` for the length of one replay.

    ``use_model`` False: the forward pass is skipped and the last real scores are handed back
    again (resized), so thresholds and alert rates stay as they were: the pipeline without
    the model. ``fit`` is timed.
    """

    def __init__(self, run: ReplayRun):
        self.run = run
        self.use_model = True
        self.workers = 1  # the detector's scoring threads (``model.threads``)
        self.last: tuple[np.ndarray, np.ndarray] | None = None

    @contextmanager
    def installed(self) -> Iterator[None]:
        from anomalyd import detector

        original_score, original_fit = detector.Detector.score, detector.fit
        switch = self

        def score(
            self: Any, model_id: str, windows: np.ndarray, keys: np.ndarray | None = None
        ) -> tuple[np.ndarray, np.ndarray]:
            if switch.use_model or switch.last is None:
                self.workers = switch.workers
                switch.last = original_score(self, model_id, windows, keys)
                return switch.last
            scores, errors = switch.last
            n = len(windows)
            return np.resize(scores, n), np.resize(errors, (n, errors.shape[1]))

        def fit(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            model, report = original_fit(*args, **kwargs)
            switch.run.train_seconds += time.perf_counter() - started
            switch.run.train_windows += report.windows
            return model, report

        detector.Detector.score, detector.fit = score, fit  # type: ignore[method-assign]
        try:
            yield
        finally:
            detector.Detector.score, detector.fit = original_score, original_fit  # type: ignore[method-assign]


class _BudgetSpentError(Exception):
    """Raised by the observer to end a replay once every mode has been timed long enough."""


def replay_steady(
    path: Path,
    config: Any,
    modes: Sequence[str],
    block: int,
    workdir: Path,
    budget_s: float = math.inf,
    min_batches: int = 1,
) -> ReplayRun:
    """Replay ``path`` through ``anomalyd.app.replay`` (alerts to a file) and time it per batch.

    A batch is timed from the end of the previous one (observer to observer): reading,
    parsing, windows, scoring, thresholds, alerts, the commit tick. Warm-up lasts until a
    batch has every event scored; from then on the modes take turns, ``block`` batches each
    (the first batch after a switch is not counted), so every mode sees the same stretch of
    the stream and the same machine noise. A mode's threads are the detector's scoring
    threads, each with one torch thread: what ``model.threads`` sets.

    The steady state ends with the file, or once it has lasted ``budget_s`` and every mode
    has ``min_batches`` timed batches: a slow mode on a busy machine cannot stretch the run.
    """
    import torch

    from anomalyd.app import ReplayOutputs, replay

    run = ReplayRun(steady={mode: [0, 0.0, 0] for mode in modes})
    switch = _Switch(run)
    clock = {"last": 0.0, "steady": -1, "since": 0.0}

    def set_mode(mode: str) -> None:
        switch.workers = MODE_THREADS[mode]
        switch.use_model = mode != NO_MODEL

    def on_start(_rows: int) -> None:
        clock["last"] = time.perf_counter()

    def observe(result: Any) -> None:
        now = time.perf_counter()
        elapsed, clock["last"] = now - clock["last"], now
        n = len(result.events)
        run.events += n
        run.alerts += len(result.alerts)
        k = clock["steady"]
        if k < 0:
            run.warmup_events += n
            run.warmup_seconds += elapsed
            if n and bool(np.isfinite(result.scores).all()):
                clock["steady"], clock["since"] = 0, now
                set_mode(modes[0])
            return
        if k % block:
            totals = run.steady[modes[(k // block) % len(modes)]]
            totals[0] += n
            totals[1] += elapsed
            totals[2] += 1
        clock["steady"] = k = k + 1
        if now - clock["since"] >= budget_s and all(t[2] >= min_batches for t in run.steady.values()):
            raise _BudgetSpentError
        set_mode(modes[(k // block) % len(modes)])

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    started = time.perf_counter()
    try:
        with switch.installed():
            stats = replay(
                [str(path)], config, ReplayOutputs(alerts=workdir / "alerts.jsonl"), [observe], on_start
            )
            assert stats.events == run.events
    except _BudgetSpentError:  # the replay's ExitStack closed the source and the sinks on the way out
        run.cut_short = True
    finally:
        torch.set_num_threads(threads)
    run.seconds = time.perf_counter() - started
    return run
