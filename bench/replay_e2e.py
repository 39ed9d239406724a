"""The whole `anomalyd replay` CLI, timed as a user runs it, next to river's HST + StandardScaler.

    .venv/bin/python bench/replay_e2e.py [--smoke] [--configs config/nab.yaml ...]
        [--keys 1 10 1000] [--threads 1 2] [--rows-per-key N] [--device cpu|cuda]

Each case runs ``anomalyd replay`` as a child process (start-up, reading, warm-up training,
retraining, scoring, alerts to a file) with a shipped config, pinned to 1 or 2 cores
(``taskset``) with ``OMP_NUM_THREADS`` and ``model.threads`` set to match. Its JSON logs say
what training cost: the CPU seconds of every first training (``model_trained``) and every
judged retraining (``model_retrained``), summed; the training share is that over the wall
time. Start-up is the wall time before the replay loop (imports, config, row counting).

The events are NAB's development files (``../shared/datasets/nab``), longest first, one key
per file; 1,000 keys repeat the 25 files under new names, each cut to ``--rows-per-key``.
Without the data set the cases use generated streams (``bench/common.py``) and say so.

river's ``StandardScaler | HalfSpaceTrees`` runs in this process on the same values, pinned
to the first core: ``score_one`` then ``learn_one`` per event, one scaler per key and one
forest (one forest per key costs the same per event and a gigabyte at 1,000 keys). Its
events/s is the denominator of every ratio.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from common import ROOT, Num, header, parse_args, ratio, stream_values, table

NAB = ROOT.parent / "shared" / "datasets" / "nab" / "data"
CONFIGS = ["config/default.yaml", "config/nab.yaml"]
FULL = {"keys": [1, 10, 1000], "threads": [1, 2], "rows": 1_000}
SMOKE = {"keys": [2], "threads": [1], "rows": 300}
# Smoke sizes: a tiny network and a short warm-up, so that every case trains and scores.
SMOKE_OVERRIDES: dict[str, dict[str, Any]] = {
    "window": {"length": 16},
    "model": {"hidden_size": 8},
    "training": {"warmup_events": 100, "warmup_fraction": None, "epochs": 2},
    "threshold": {"min_samples": 30},
}
HST_MAX_EVENTS = 300_000  # the baseline's rate is steady long before this
COLUMNS = [
    "config", "keys", "threads", "events", "wall s", "events/s", "vs HST", "start-up", "training",
    "scoring etc.", "first trainings", "retrainings", "retrains / 10k events",
]  # fmt: skip


@dataclass
class Streams:
    """Per key, its name and values; what the case's files hold."""

    names: list[str]
    values: list[np.ndarray]
    source: str

    @property
    def events(self) -> int:
        return sum(len(v) for v in self.values)


@dataclass
class CliRun:
    wall_s: float
    events: int = 0
    run_s: float = 0.0
    train_s: float = 0.0
    trainings: int = 0
    retrains: dict[str, int] = field(default_factory=dict)
    promoted: int = 0


def nab_files() -> list[Path]:
    files = sorted(NAB.glob("*/*.csv")) if NAB.is_dir() else []
    return sorted(files, key=lambda p: (-p.stat().st_size, str(p)))


def load_streams(keys: int, rows: int | None) -> Streams:
    """``keys`` streams: NAB files longest first (repeated under new names when there are
    fewer), each cut to ``rows`` rows; generated streams when the data set is absent."""
    files = nab_files()
    if not files:
        generated = stream_values(keys, rows or 5_000)
        return Streams(
            [f"gen{i:04d}" for i in range(keys)], list(generated.T), "generated (no ../shared NAB)"
        )
    cache: dict[Path, np.ndarray] = {}
    names, values = [], []
    for i in range(keys):
        path = files[i % len(files)]
        if path not in cache:
            cache[path] = np.loadtxt(path, delimiter=",", skiprows=1, usecols=1, ndmin=1)
        names.append(f"k{i:04d}_{path.stem}")
        values.append(cache[path][:rows])
    return Streams(names, values, f"NAB dev files ({len(files)}), longest first")


def write_files(streams: Streams, folder: Path) -> list[str]:
    """One ``timestamp,value`` CSV per key (five-minute steps), named after the key."""
    start = np.datetime64("2024-01-01T00:00:00")
    paths = []
    for name, values in zip(streams.names, streams.values, strict=True):
        stamps = (start + np.arange(len(values)) * np.timedelta64(5, "m")).astype(str)
        path = folder / f"{name}.csv"
        with path.open("w") as out:
            out.write("timestamp,value\n")
            out.writelines(
                f"{t.replace('T', ' ')},{v!r}\n" for t, v in zip(stamps, values.tolist(), strict=True)
            )
        paths.append(str(path))
    return paths


def case_config(config: str, threads: int, device: str, folder: Path, smoke: bool) -> Path:
    data = yaml.safe_load((ROOT / config).read_text()) or {}
    sections = {
        "model": {"threads": threads, "device": device},
        "input": {"timestamp": {"field": "timestamp", "format": "iso"}},
        "output": {"alerts": [{"type": "file", "path": str(folder / "alerts.jsonl")}]},
        "logging": {"level": "info", "format": "json"},
    }
    for overrides in (sections, SMOKE_OVERRIDES if smoke else {}):
        for name, values in overrides.items():
            data[name] = {**(data.get(name) or {}), **values}
    path = folder / f"{Path(config).stem}-{threads}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run_cli(paths: list[str], config: Path, threads: int) -> CliRun:
    """``anomalyd replay`` in a child on ``threads`` cores; wall time and what its logs say."""
    cli = str(Path(sys.executable).parent / "anomalyd")
    pin = ["taskset", "-c", ",".join(str(c) for c in range(threads))] if shutil.which("taskset") else []
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    command = [*pin, cli, "replay", *paths, "-c", str(config), "--no-progress"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    run = CliRun(time.perf_counter() - started)
    if done.returncode != 0:
        raise SystemExit(f"anomalyd replay failed ({done.returncode}):\n{done.stderr[-3000:]}")
    for line in done.stderr.splitlines():
        if line.startswith("{"):
            read_log(run, json.loads(line))
    return run


def read_log(run: CliRun, entry: dict[str, Any]) -> None:
    event = entry.get("event")
    if event == "model_trained":
        run.trainings += 1
        run.train_s += float(entry.get("seconds") or 0.0)
    elif event == "model_retrained":
        reason = str(entry.get("reason"))
        run.retrains[reason] = run.retrains.get(reason, 0) + 1
        run.promoted += bool(entry.get("promoted"))
        run.train_s += float(entry.get("seconds") or 0.0)
    elif event == "replay_finished":
        run.events, run.run_s = int(entry["events"]), float(entry["seconds"])


def hst_rate(streams: Streams) -> float:
    """Events/s of a per-key StandardScaler and one HalfSpaceTrees on the first core."""
    from river import anomaly, preprocessing

    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if affinity is not None:
        os.sched_setaffinity(0, {min(affinity)})
    try:
        scalers = [preprocessing.StandardScaler() for _ in streams.names]
        forest = anomaly.HalfSpaceTrees(seed=42)
        pairs = [(k, v) for k, values in enumerate(streams.values) for v in values.tolist()]
        pairs = pairs[:HST_MAX_EVENTS]
        started = time.perf_counter()
        for key, value in pairs:  # as compose.Pipeline: score, then learn the scaler, then the forest
            x, scaler = {"value": value}, scalers[key]
            forest.score_one(scaler.transform_one(x))
            scaler.learn_one(x)
            forest.learn_one(scaler.transform_one(x))
        return len(pairs) / (time.perf_counter() - started)
    finally:
        if affinity is not None:
            os.sched_setaffinity(0, affinity)


def row(config: str, keys: int, threads: int, run: CliRun, hst: float) -> list[Any]:
    rate = run.events / run.wall_s
    retrains = sum(run.retrains.values())
    per_10k = 1e4 * retrains / max(run.events, 1)
    drift = run.retrains.get("drift", 0)
    return [
        Path(config).name,
        keys,
        threads,
        run.events,
        Num(run.wall_s, "{:.1f}"),
        rate,
        ratio(rate, hst),
        Num(100 * (run.wall_s - run.run_s) / run.wall_s, "{:.0f}%"),
        Num(100 * run.train_s / run.wall_s, "{:.0f}%"),
        Num(100 * max(run.run_s - run.train_s, 0.0) / run.wall_s, "{:.0f}%"),
        run.trainings,
        f"{retrains} ({drift} drift, {run.promoted} promoted)",
        Num(per_10k, "{:.2f}"),
    ]


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], options)
    sizes = SMOKE if args.smoke else FULL
    keys_list = args.keys or sizes["keys"]
    threads_list = args.threads or sizes["threads"]
    header("whole-CLI replay (anomalyd replay, a child process) vs river HST + StandardScaler", args.smoke)
    rows: list[list[Any]] = []
    sources = set()
    for keys in keys_list:
        rows_per_key = args.rows_per_key or (sizes["rows"] if args.smoke or keys > 25 else None)
        streams = load_streams(keys, rows_per_key)
        sources.add(streams.source)
        hst = hst_rate(streams)
        with tempfile.TemporaryDirectory(prefix="anomalyd-e2e-") as tmp:
            folder = Path(tmp)
            paths = write_files(streams, folder)
            for config in args.configs or CONFIGS:
                for threads in threads_list:
                    cfg = case_config(config, threads, args.device, folder, args.smoke)
                    rows.append(row(config, keys, threads, run_cli(paths, cfg, threads), hst))
        blank = Num(math.nan)
        events = min(streams.events, HST_MAX_EVENTS)
        rows.append(
            ["river HST + StandardScaler", keys, 1, events, blank, hst, ratio(hst, hst)] + [blank] * 6
        )
    table(
        "Whole-CLI replay",
        COLUMNS,
        rows,
        [
            f"events: {'; '.join(sorted(sources))}. training: CPU seconds of every first training and "
            "judged retraining over the wall time; scoring etc.: the replay loop's time less training "
            "(reading, windows, forward passes, thresholds, alerts); start-up: the wall time before it. "
            "HST: the same values in memory, already parsed, on one core."
        ],
    )


def options(parser: Any) -> None:
    parser.add_argument("--configs", nargs="+", help=f"configs to replay (default: {' '.join(CONFIGS)})")
    parser.add_argument("--keys", type=int, nargs="+", help="key counts (default 1 10 1000)")
    parser.add_argument("--threads", type=int, nargs="+", choices=[1, 2], help="cores (default 1 2)")
    parser.add_argument("--rows-per-key", type=int, help="cut every stream to this many rows")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="model.device")


if __name__ == "__main__":
    main()
