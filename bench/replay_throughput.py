"""Events/s end to end through `anomalyd.app.replay`, next to river's HalfSpaceTrees and a rolling z-score.

    .venv/bin/python bench/replay_throughput.py [--smoke] [--profile] [--keys N ...]

Each case is a generated CSV (``key,timestamp,value``, keys round-robin) replayed with the
default model (window 64, LSTM, hidden 32, one feature) in ``shared`` scope, alerts to a
file. Warm-up is one window per key and training ``EPOCHS`` epochs, timed apart. In the
steady state (every event scored) three modes take turns within the same replay: the model
on 1 thread, on 2 threads, and no model (the forward pass replaced by recycled scores).
The baselines run in the same process on the same steady-state events, already parsed:

- river ``HalfSpaceTrees`` behind a ``StandardScaler``: ``score_one`` then ``learn_one`` per
  event, the steps ``compose.Pipeline`` runs; one scaler per key and one shared forest, as
  ``shared`` scope has one model and per-key normalisation;
- a rolling z-score over the key's last 64 values, pure Python, per key.

``--profile`` instead runs the 1,000-key case once under cProfile (model, 1 thread) and
prints the top costs. ``--keys 1 1000`` runs only those cases (the 100,000-key case alone
takes minutes, most of them its warm-up).
"""

from __future__ import annotations

import argparse
import cProfile
import math
import pstats
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import (
    MODEL_1,
    MODEL_2,
    NO_MODEL,
    WINDOW,
    Num,
    ReplayRun,
    detector_option,
    header,
    key_names,
    parse_args,
    quiet_logs,
    ratio,
    replay_config,
    replay_steady,
    stream_values,
    table,
    warm_up_torch,
    write_stream_csv,
)

HST = "river HST + StandardScaler"
ZSCORE = "rolling z-score (pure Python)"
# (keys, post-warm-up events per key): enough steady-state events to time every mode.
FULL = [(1, 150_000), (1_000, 150), (100_000, 2)]
SMOKE = [(1, 2_000), (50, 30), (200, 8)]
BUDGET_S = 40.0  # steady-state seconds per case, at most (2 threads can crawl on a busy machine)
BASELINE_EVENTS = {False: 100_000, True: 3_000}  # events each baseline is timed on
HST_PRIME = 500  # the forest's first two windows (window_size 250) are learnt before timing


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], options)
    quiet_logs()
    if args.profile:
        profile(
            args.smoke, replay_config(1024, args.detector, args.device, args.carry_state, **members(args))
        )
        return
    header(
        f"replay throughput ({args.detector}{', carried state' if args.carry_state else ''}"
        f"{f', {args.members} members' if args.members is not None else ''}, {args.device}): "
        "anomalyd.app.replay vs river HST and a rolling z-score",
        args.smoke,
    )
    cases = [case for case in (SMOKE if args.smoke else FULL) if not args.keys or case[0] in args.keys]
    batch_size, block, budget_s = (256, 2, 0.0) if args.smoke else (1024, 3, BUDGET_S)
    warm_up_torch()
    rates, summary = [], []
    with tempfile.TemporaryDirectory(prefix="anomalyd-bench-") as tmp:
        for keys, steady_per_key in cases:
            values = stream_values(keys, WINDOW + steady_per_key)
            path = Path(tmp) / f"stream-{keys}.csv"
            write_stream_csv(path, values)
            modes = (MODEL_1, MODEL_2, NO_MODEL)
            config = replay_config(batch_size, args.detector, args.device, args.carry_state, **members(args))
            run = replay_steady(path, config, modes, block, Path(tmp), budget_s, 10)
            path.unlink()
            baselines = {
                HST: hst_rate(values, BASELINE_EVENTS[args.smoke]),
                ZSCORE: zscore_rate(values, BASELINE_EVENTS[args.smoke]),
            }
            rates += rate_rows(keys, run, baselines)
            summary.append(summary_row(keys, run))
    table(
        "Steady-state throughput (events/s)",
        ["keys", "method", "events timed", "events/s", "vs HST"],
        rates,
        [
            "anomalyd: end to end (read, parse, windows, scoring, thresholds, alerts to a file), "
            f"modes taking turns every {block} batches of {batch_size} events within one replay; "
            "baselines: the same steady-state events, already parsed, in memory."
        ],
    )
    table(
        "Per case: warm-up, training, model share",
        [
            "keys",
            "events",
            "warm-up events",
            "warm-up s",
            "training s",
            "trained on windows",
            "replay s",
            "alerts",
            "2 threads / 1 thread",
            "non-model share (1 thread)",
        ],
        summary,
        [
            f"training: anomalyd.training.fit, {replay_config().training.epochs} epochs, inside the warm-up "
            "(torch's first-use costs paid before the first case); "
            "non-model share: (1 thread events/s) / (no-model events/s), the part of the 1-thread time "
            "that is not the forward pass; replay s: the whole replay() call, its row-count pass included; "
            f"*: the steady state was cut short after {BUDGET_S:.0f} s (every mode timed long enough)."
        ],
    )


def members(args: argparse.Namespace) -> dict[str, dict[str, int]]:
    """The ``model.members`` section for ``--members`` (nothing without it: the default)."""
    return {} if args.members is None else {"model": {"members": args.members}}


def options(parser: argparse.ArgumentParser) -> None:
    detector_option(parser)
    parser.add_argument(
        "--members",
        type=int,
        default=None,
        help="model.members: networks averaged per score (default: the config's, 3)",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the 1,000-key case instead")
    parser.add_argument(
        "--keys",
        type=int,
        nargs="+",
        choices=[keys for keys, _ in FULL + SMOKE],
        help="run only the cases with these key counts (default: all)",
    )


def rate_rows(keys: int, run: ReplayRun, baselines: dict[str, tuple[int, float]]) -> list[list[Any]]:
    hst = baselines[HST][0] / baselines[HST][1]
    rows: list[list[Any]] = []
    for mode in (MODEL_1, MODEL_2, NO_MODEL):
        events = int(run.steady[mode][0])
        rows.append([keys, mode, events, run.rate(mode), ratio(run.rate(mode), hst)])
    for name, (events, seconds) in baselines.items():
        rows.append([keys, name, events, events / seconds, ratio(events / seconds, hst)])
    return rows


def summary_row(keys: int, run: ReplayRun) -> list[Any]:
    return [
        keys,
        Num(run.events, "{:,.0f}*" if run.cut_short else "{:,.0f}"),
        run.warmup_events,
        Num(run.warmup_seconds, "{:.1f}"),
        Num(run.train_seconds, "{:.2f}"),
        run.train_windows,
        Num(run.seconds, "{:.1f}"),
        run.alerts,
        ratio(run.rate(MODEL_2), run.rate(MODEL_1)),
        Num(100 * run.rate(MODEL_1) / run.rate(NO_MODEL), "{:.0f}%"),
    ]


def steady_segment(values: np.ndarray, limit: int) -> tuple[list[str], list[float]]:
    """The first ``limit`` post-warm-up events, in stream order (keys round-robin)."""
    keys = values.shape[1]
    names = key_names(keys)
    flat = values[WINDOW:].ravel()[:limit]
    return [names[i % keys] for i in range(len(flat))], flat.tolist()


def hst_rate(values: np.ndarray, limit: int) -> tuple[int, float]:
    """HalfSpaceTrees behind a per-key StandardScaler; state primed on the warm-up events, untimed."""
    from river import anomaly, preprocessing

    names = key_names(values.shape[1])
    scalers = {}
    for name, column in zip(names, values[WINDOW - 2 : WINDOW].T.tolist(), strict=True):
        scaler = scalers[name] = preprocessing.StandardScaler()
        for value in column:
            scaler.learn_one({"value": value})
    forest = anomaly.HalfSpaceTrees(seed=42)
    warm = values[:WINDOW].ravel()[-HST_PRIME:].tolist()
    offset = values[:WINDOW].size - len(warm)
    for i, value in enumerate(warm):
        forest.learn_one(scalers[names[(offset + i) % len(names)]].transform_one({"value": value}))
    keys, stream = steady_segment(values, limit)
    total = 0.0
    started = time.perf_counter()
    for key, value in zip(keys, stream, strict=True):
        x = {"value": value}
        scaler = scalers[key]
        total += forest.score_one(scaler.transform_one(x))
        scaler.learn_one(x)
        forest.learn_one(scaler.transform_one(x))
    return len(stream), time.perf_counter() - started


def zscore_rate(values: np.ndarray, limit: int) -> tuple[int, float]:
    """|x - mean| / std over the key's previous 64 values (running sums); primed, untimed."""
    names = key_names(values.shape[1])
    window = values[:WINDOW]
    sums, squares = window.sum(axis=0).tolist(), (window * window).sum(axis=0).tolist()
    state = {
        name: [ring, 0, s, ss]
        for name, ring, s, ss in zip(names, window.T.tolist(), sums, squares, strict=True)
    }
    keys, stream = steady_segment(values, limit)
    n = float(WINDOW)
    flagged = 0
    started = time.perf_counter()
    for key, x in zip(keys, stream, strict=True):
        st = state[key]
        ring, pos, s, ss = st
        mean = s / n
        var = ss / n - mean * mean
        z = (x - mean) / math.sqrt(var) if var > 1e-12 else 0.0
        flagged += abs(z) > 4.0
        old = ring[pos]
        ring[pos] = x
        st[1] = pos + 1 if pos + 1 < WINDOW else 0
        st[2] = s + x - old
        st[3] = ss + x * x - old * old
    return len(stream), time.perf_counter() - started


def profile(smoke: bool, config: Any) -> None:
    """cProfile over one replay of the 1,000-key case (model, 1 thread): the top costs by own time."""
    keys, steady_per_key = SMOKE[1] if smoke else FULL[1]
    header(f"replay profile: {keys} keys, model on 1 thread, cProfile", smoke)
    with tempfile.TemporaryDirectory(prefix="anomalyd-bench-") as tmp:
        path = Path(tmp) / "stream.csv"
        write_stream_csv(path, stream_values(keys, WINDOW + steady_per_key))
        profiler = cProfile.Profile()
        profiler.enable()
        run = replay_steady(path, config, (MODEL_1,), 10**9, Path(tmp))
        profiler.disable()
    stats = pstats.Stats(profiler)
    total = sum(entry[2] for entry in stats.stats.values())  # type: ignore[attr-defined]
    rows = []
    ranked = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)  # type: ignore[attr-defined]
    for (file, line, name), (_, calls, own, cumulative, _) in ranked[:20]:
        where = f"{Path(file).name}:{line}" if line else file
        rows.append(
            [
                f"{name} ({where})",
                calls,
                Num(own, "{:.2f}"),
                Num(100 * own / total, "{:.1f}%"),
                Num(cumulative, "{:.2f}"),
            ]
        )
    table(
        f"Top own-time costs over {run.events:,} events ({run.seconds:.1f} s under the profiler)",
        ["function", "calls", "own s", "share", "cumulative s"],
        rows,
    )
    table(
        "Inclusive costs of the hot path's parts",
        ["part", "calls", "cumulative s", "share of Pipeline.process"],
        inclusive_rows(stats),
        [
            "cumulative: the time inside the function and all it calls (summed over functions of that "
            "name in that file); the rest of Pipeline.process is its own bookkeeping and the alert gate."
        ],
    )


# (file, function) pairs whose inclusive time the profile reports, the replay loop's parts.
PARTS = [
    ("pipeline.py", "process", "Pipeline.process"),
    ("detector.py", "score", "Detector.score (forward pass)"),
    ("thresholds.py", "update", "Threshold.update (QuantileThreshold: np.quantile)"),
    ("detector.py", "observe", "Detector.observe (buffer, drift)"),
    ("pipeline.py", "_train", "Pipeline._train (warm-up training)"),
    ("windows.py", "push", "WindowStore.push (one record)"),
    ("windows.py", "push_many", "WindowStore.push_many (a batch)"),
    ("pipeline.py", "_alert", "Pipeline._alert"),
    ("file.py", "_csv_chunks", "FileSource._csv_chunks (outside process)"),
    ("parsing.py", "parse_many", "RecordParser.parse_many (outside process)"),
]


def inclusive_rows(stats: pstats.Stats) -> list[list[Any]]:
    found: dict[str, list[float]] = {label: [0, 0.0] for _, _, label in PARTS}
    for (file, _, name), (_, calls, _, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        for part_file, part_name, label in PARTS:
            if name == part_name and Path(file).name == part_file:
                found[label][0] += calls
                found[label][1] += cumulative
    process = found[PARTS[0][2]][1]
    return [
        [label, int(calls), Num(seconds, "{:.2f}"), Num(100 * seconds / process, "{:.0f}%")]
        for label, (calls, seconds) in found.items()
    ]


if __name__ == "__main__":
    main()
