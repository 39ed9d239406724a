"""The model's forward pass alone, and how much of it the full pipeline keeps.

    .venv/bin/python bench/model_ceiling.py [--detector autoencoder|forecaster] [--smoke]

``anomalyd.model.window_errors`` on random windows (64 x 1, default model: LSTM,
hidden 32; the autoencoder unless ``--detector forecaster``) at several batch sizes, on 1
and 2 torch threads: windows/s, the median of rounds that alternate thread counts (half
before, half after the replay below). Then a
short replay of one key in the same process (``bench/common.py``'s harness, 1 and 2 threads
taking turns): every steady-state event scores one window, so its events/s over the ceiling
at ``model.score_batch_size`` (512) is the fraction of the ceiling the pipeline keeps.

"2 threads" is what ``model.threads: 2`` does: the batch split in two parts, each scored in
its own thread of one torch thread. A child process shows the other way, one call on two
torch (OpenMP) threads, with ``OMP_WAIT_POLICY=PASSIVE`` (read once, when OpenMP starts):
OpenMP threads spin while they wait, which on two shared cores can cost more than the
second thread gives.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import (
    MODEL_1,
    MODEL_2,
    WINDOW,
    Num,
    detector_option,
    header,
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

BATCHES = [1, 32, 128, 512, 2048]
SMOKE_BATCHES = [1, 4]  # a slow 2-thread pass at 2048 windows takes seconds on a busy machine
THREADS = [1, 2]
SCORE_BATCH = 512  # model.score_batch_size: the largest forward pass the pipeline makes


def measure(batch: int, threads: int, seconds: float) -> float:
    """Windows/s of window_errors at ``batch`` on ``threads`` threads, over about ``seconds``:
    as ``Detector.score`` does it, the batch split in ``threads`` parts scored in as many
    threads of one torch thread each (``--intra-op``: one call on ``threads`` torch threads)."""
    import torch

    from anomalyd.model import window_errors

    x = torch.randn(batch, WINDOW, 1, generator=torch.Generator().manual_seed(batch))
    if INTRA_OP or threads == 1 or batch < 2 * threads:
        torch.set_num_threads(threads)

        def score() -> None:
            window_errors(MODEL[0], x)
    else:
        torch.set_num_threads(1)
        parts = x.chunk(threads)

        def score() -> None:
            list(POOL[threads].map(lambda part: window_errors(MODEL[0], part), parts))

    score()  # first call at this size: allocations, thread start
    calls, started = 0, time.perf_counter()
    while True:
        score()
        calls += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds and calls >= 2:
            return calls * batch / elapsed


def grid(
    rounds: int, seconds: float, threads: list[int], batches: list[int]
) -> dict[tuple[int, int], list[float]]:
    results: dict[tuple[int, int], list[float]] = {}
    for _ in range(rounds):
        for t in threads:
            for b in batches:
                results.setdefault((b, t), []).append(measure(b, t, seconds))
    return results


MODEL: list = []
POOL: dict[int, ThreadPoolExecutor] = {}
INTRA_OP = False


def build_model(kind: str) -> None:
    import torch

    from anomalyd.model import ModelArgs, build_model

    args = ModelArgs(n_features=1, window_length=WINDOW, hidden_size=32, kind=kind)  # type: ignore[arg-type]
    MODEL.append(build_model(args, torch.Generator().manual_seed(0)).eval())


def passive_grid(smoke: bool) -> dict[int, float]:
    """The 2-thread grid on torch's intra-op threads in a child process with
    OMP_WAIT_POLICY=PASSIVE: median windows/s per batch."""
    cmd = [sys.executable, __file__, "--child-passive", "--intra-op", "--detector", MODEL[0].args.kind]
    cmd += ["--smoke"] if smoke else []
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, timeout=600).stdout
    return {int(b): rate for b, rate in json.loads(out.strip().splitlines()[-1]).items()}


def main() -> None:
    args = parse_args(
        __doc__.splitlines()[0],
        lambda p: (
            p.add_argument("--child-passive", action="store_true"),
            p.add_argument("--intra-op", action="store_true", help="2 threads: torch's intra-op threads"),
            detector_option(p),
        ),
    )
    rounds, seconds, steady = (2, 0.01, 128) if args.smoke else (6, 0.3, 40_000)
    batches = SMOKE_BATCHES if args.smoke else BATCHES
    build_model(args.detector)
    global INTRA_OP
    INTRA_OP = args.intra_op
    import torch

    POOL.update({t: ThreadPoolExecutor(t, initializer=torch.set_num_threads, initargs=(1,)) for t in THREADS})
    if args.child_passive:
        results = grid(rounds, seconds, [2], batches)
        print(json.dumps({b: statistics.median(results[(b, 2)]) for b in batches}))
        return
    quiet_logs()
    header(f"model ceiling ({args.detector}): the forward pass alone vs the pipeline", args.smoke)
    warm_up_torch()
    results = grid(rounds // 2, seconds, THREADS, batches)
    batch_size, block, budget_s = (32, 2, 0.0) if args.smoke else (1024, 3, 30.0)
    with tempfile.TemporaryDirectory(prefix="anomalyd-bench-") as tmp:
        path = Path(tmp) / "stream.csv"
        write_stream_csv(path, stream_values(1, WINDOW + steady))
        modes = (MODEL_1, MODEL_2)
        config = replay_config(batch_size, args.detector)
        run = replay_steady(path, config, modes, block, Path(tmp), budget_s, 5)
    for key, rates in grid(rounds - rounds // 2, seconds, THREADS, batches).items():
        results[key] += rates
    ceiling = {key: statistics.median(rates) for key, rates in results.items()}
    passive = passive_grid(args.smoke)
    policy = os.environ.get("OMP_WAIT_POLICY", "unset (libgomp: spin, then sleep)")
    table(
        "Forward pass alone: windows/s (64 x 1, LSTM hidden 32)",
        ["batch", "1 thread", "2 threads", "2 / 1", "2 torch threads, one call, OMP_WAIT_POLICY=PASSIVE"],
        [
            [b, ceiling[(b, 1)], ceiling[(b, 2)], ratio(ceiling[(b, 2)], ceiling[(b, 1)]), passive[b]]
            for b in batches
        ],
        [f"median of {rounds} rounds; OMP_WAIT_POLICY of this process: {policy}; PASSIVE: a child process."],
    )
    rows = []
    at = SCORE_BATCH if SCORE_BATCH in batches else batches[-1]
    for mode, t in ((MODEL_1, 1), (MODEL_2, 2)):
        best = max(batches, key=lambda b, t=t: ceiling[(b, t)])
        rows.append(
            [
                t,
                run.rate(mode),
                ceiling[(at, t)],
                Num(100 * run.rate(mode) / ceiling[(at, t)], "{:.0f}%"),
                f"{ceiling[(best, t)]:,.0f} (batch {best})",
                Num(100 * run.rate(mode) / ceiling[(best, t)], "{:.0f}%"),
            ]
        )
    table(
        "Pipeline vs ceiling",
        [
            "threads",
            "pipeline events/s",
            f"ceiling at batch {at}",
            "kept",
            "best ceiling",
            "kept of best",
        ],
        rows,
        [
            f"pipeline: replay of 1 key, {run.events:,} events ({WINDOW} warm-up), steady state only "
            f"(at most {budget_s:.0f} s of it), "
            "1 window scored per event; threads taking turns within the replay."
        ],
    )


if __name__ == "__main__":
    main()
