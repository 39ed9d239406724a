"""Training time, and scoring latency while a training runs in the background.

    .venv/bin/python bench/retraining.py [--smoke]

- ``anomalyd.training.fit`` on 10,000 and 100,000 random windows (64 x 1, the default model:
  LSTM, hidden 32, Adam, batch 64, a tenth held back for validation), one epoch, on 1 torch
  thread (and on 2 for 10,000): seconds and windows/s. Each fit runs in a child process of
  its own, stopped after 120 s (2 threads on a busy 2-core machine can crawl).
- Scoring latency of one batch of 512 windows (``window_errors``, from numpy and
  back, as ``Detector.score`` does), p50/p99 over many batches: idle, then while a training
  loops in a background thread, then idle again. Scoring and training each get one torch
  thread (``torch.set_num_threads(1)`` in both threads): 1+1 threads on the 2 cores.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np
from common import WINDOW, Num, header, parse_args, percentile, ratio, table

# (windows, threads): 2 threads on a busy 2-core machine can be many times slower, so only the smaller size.
FITS = {False: [(10_000, 1), (10_000, 2), (100_000, 1)], True: [(64, 2)]}
FIT_TIMEOUT_S = {False: 120.0, True: 30.0}  # 2 threads on a busy 2-core machine can take 100x longer
EPOCHS = 1
SCORE_BATCH = 512
BATCHES = {False: 150, True: 5}  # scoring batches per phase
BACKGROUND_WINDOWS = {False: 4_096, True: 256}  # training.max_windows: what a retraining trains on


def windows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, WINDOW, 1)).astype(np.float32)


def setup() -> tuple[Any, Any, Any]:
    import torch

    from anomalyd.config import TrainingConfig
    from anomalyd.model import ModelArgs

    return (
        ModelArgs(n_features=1, window_length=WINDOW, hidden_size=32),
        TrainingConfig(epochs=EPOCHS),
        torch.device("cpu"),
    )


def fit_once(n: int, threads: int) -> dict[str, float]:
    """In a child process: one untimed small fit (first use of autograd), then the timed one."""
    import torch

    from anomalyd.training import fit

    args, config, device = setup()
    torch.set_num_threads(threads)
    fit(args, windows(64, 0), config, 0, device)
    started = time.perf_counter()
    _, report = fit(args, windows(n, seed=n), config, 0, device)
    return {"seconds": time.perf_counter() - started, "windows": report.windows, "loss": report.train_loss}


def time_fit(n: int, threads: int, timeout_s: float) -> list[Any]:
    """A fit in a child process of its own (fresh thread pools); stopped after ``timeout_s``."""
    cmd = [sys.executable, __file__, "--child-fit", str(n), str(threads)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=True)
    except subprocess.TimeoutExpired:
        return [n, threads, EPOCHS, f"> {timeout_s:.0f} (stopped)", f"< {n * EPOCHS / timeout_s:,.0f}", "-"]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    seconds = result["seconds"]
    return [
        n,
        threads,
        EPOCHS,
        Num(seconds, "{:.1f}"),
        Num(result["windows"] * EPOCHS / seconds, "{:,.0f}"),
        Num(result["loss"], "{:.3f}"),
    ]


class Trainer(threading.Thread):
    """Fits models one after another on ``windows`` until stopped (a retraining that never ends)."""

    def __init__(self, data: np.ndarray):
        super().__init__(daemon=True)
        self.data = data
        self.stop = threading.Event()
        self.fits = 0
        self.windows = 0

    def run(self) -> None:
        import torch

        from anomalyd.training import fit

        torch.set_num_threads(1)
        args, config, device = setup()
        while not self.stop.is_set():
            fit(args, self.data, config, self.fits, device)
            self.fits += 1
            self.windows += len(self.data)


def score_latencies(model: Any, data: np.ndarray, batches: int) -> tuple[list[float], float]:
    """Milliseconds per batch of ``SCORE_BATCH`` windows, and the phase's wall seconds."""
    import torch

    from anomalyd.model import window_errors

    times, started = [], time.perf_counter()
    for i in range(batches):
        chunk = data[(i * SCORE_BATCH) % len(data) :][:SCORE_BATCH]
        t = time.perf_counter()
        scores, per_feature = window_errors(model, torch.from_numpy(chunk))
        scores.numpy(), per_feature.numpy()
        times.append(1000 * (time.perf_counter() - t))
    return times, time.perf_counter() - started


def main() -> None:
    args = parse_args(
        __doc__.splitlines()[0],
        lambda p: p.add_argument("--child-fit", nargs=2, type=int, help=argparse.SUPPRESS),
    )
    if args.child_fit:
        print(json.dumps(fit_once(*args.child_fit)))
        return
    header("retraining: training time, scoring latency while training", args.smoke)
    import torch

    from anomalyd.training import fit

    fits = [time_fit(n, threads, FIT_TIMEOUT_S[args.smoke]) for n, threads in FITS[args.smoke]]
    model_args, config, device = setup()
    torch.set_num_threads(1)
    torch.set_num_threads(1)
    model, _ = fit(model_args, windows(BACKGROUND_WINDOWS[args.smoke], 1), config, 0, device)
    data = windows(8 * SCORE_BATCH, 2)
    score_latencies(model, data, 2)  # first calls: allocations
    phases: list[tuple[str, list[float], float, float]] = []
    for phase in ("idle", "training in the background", "idle again"):
        trainer = None
        if phase.startswith("training"):
            trainer = Trainer(windows(BACKGROUND_WINDOWS[args.smoke], 3))
            trainer.start()
            time.sleep(0.5)  # let it get into its stride
            before = trainer.windows, time.perf_counter()
        times, seconds = score_latencies(model, data, BATCHES[args.smoke])
        trained = 0.0
        if trainer is not None:
            trained = (trainer.windows - before[0]) / (time.perf_counter() - before[1])
            trainer.stop.set()
            trainer.join()
        phases.append((phase, times, seconds, trained))
    table(
        f"Training: anomalyd.training.fit, {EPOCHS} epoch, batch 64, LSTM hidden 32",
        ["windows", "threads", "epochs", "seconds", "windows/s", "train loss"],
        fits,
        ["windows/s: windows given to fit x epochs / seconds (nine tenths trained on, one tenth validated)."],
    )
    idle = percentile(phases[0][1], 50)
    table(
        f"Scoring one batch of {SCORE_BATCH} windows: 1 scoring thread + 1 training thread",
        [
            "phase",
            "batches",
            "p50 ms",
            "p99 ms",
            "p50 vs idle",
            "windows/s scored",
            "windows/s trained meanwhile",
        ],
        [
            [
                phase,
                len(times),
                Num(percentile(times, 50), "{:.1f}"),
                Num(percentile(times, 99), "{:.1f}"),
                ratio(percentile(times, 50), idle),
                len(times) * SCORE_BATCH / seconds,
                trained if trained else "-",
            ]
            for phase, times, seconds, trained in phases
        ],
        [
            f"The background thread fits {BACKGROUND_WINDOWS[args.smoke]:,} windows "
            f"(training.max_windows) again and again, {EPOCHS} epoch each."
        ],
    )


if __name__ == "__main__":
    main()
