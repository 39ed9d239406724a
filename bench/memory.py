"""Resident memory per key in ``shared`` scope, and whether it grows over a long run.

    .venv/bin/python bench/memory.py [--threshold quantile spot ...] [--smoke]

Each key count runs in a child process of its own (freed memory is not always given back to
the OS, so one process per measurement keeps them apart). A child imports everything and
reads its RSS (``VmRSS`` of ``/proc/self/status``): the baseline. It then feeds
:class:`anomalyd.pipeline.Pipeline` (the pure core; records built in memory, no parsing)
round-robin events until every key has had a full window and ``threshold.min_samples``
scores, checks that every key's threshold is warm, and reads RSS again: bytes/key = delta
RSS / keys. The marginal bytes/key between two key counts leaves out fixed costs (the
model, the training buffer, allocator pools).

Scoring 30 windows for each of 100,000 keys would take the forward pass minutes, so
``Detector.score`` is replaced by a stub (the squared newest normalised value: a z-score);
the shared model is fixed-size and is trained for real. Runs at 1,000 and 3,000 keys with the
real forward pass show the stub does not change the marginal per-key figure.

The growth check keeps feeding the same keys up to 10x the events and samples RSS.

``--threshold`` names the threshold methods to measure (default: ``spot``, the config's
default); each gets its own children, rows and columns, with the rest of the config the same
(``calibration: live``; ``threshold.min_samples`` 30 as in every benchmark, see
``common.replay_config``: a key is warm after 93 events).
"""

from __future__ import annotations

import gc
import json
import math
import subprocess
import sys
import tempfile
import time
from array import array
from typing import Any

import numpy as np
from common import WINDOW, Num, header, parse_args, quiet_logs, replay_config, rss_bytes, table

from anomalyd.config import ThresholdConfig

FULL = [1_000, 10_000, 100_000]
SMOKE = [20, 100]
GROWTH_KEYS = {False: 1_000, True: 20}
REAL_KEYS = [1_000, 3_000]  # key counts scored with the real forward pass (full size only)
GROWTH_MULTIPLES = [1, 2, 5, 10]
METHODS = ["grade", "quantile", "spot", "likelihood", "ewma", "river_quantile"]
DEFAULT = ThresholdConfig().method  # the config's default threshold
BATCH = 1024
MIB = 1024 * 1024


def stub_score(
    self: Any, model_id: str, windows: np.ndarray, keys: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A z-score in place of the forward pass: the squared newest normalised value."""
    newest = windows[:, -1, :].astype(np.float64)  # (N, F)
    per_feature = newest * newest
    return per_feature.mean(axis=1), per_feature


class Feeder:
    """Round-robin events for ``keys`` keys into a pipeline, in batches of ``BATCH``."""

    def __init__(self, pipeline: Any, keys: int, prefix: str = "sensor"):
        from anomalyd.events import Event
        from anomalyd.sources.base import Batch

        self.pipeline, self.keys, self.Event, self.Batch = pipeline, keys, Event, Batch
        self.names = [f"{prefix}-{k}" for k in range(keys)]
        self.rng = np.random.default_rng(0)
        self.level = self.rng.uniform(10.0, 100.0, keys)
        self.rows = 0  # events per key fed so far

    def feed(self, rows: int) -> None:
        Event, pending = self.Event, []
        for i in range(self.rows, self.rows + rows):
            stamp = f"{1_700_000_000 + 300 * i}"
            values = (self.level * (1.0 + 0.01 * self.rng.standard_normal(self.keys)))[:, None]  # (K, 1)
            for k, name in enumerate(self.names):
                pending.append(Event(name, stamp, 0.0, values[k], {"row": i}))
                if len(pending) == BATCH:
                    self.pipeline.process(self.Batch(pending))
                    pending = []
        if pending:
            self.pipeline.process(self.Batch(pending))
        self.rows += rows


def per_key_arrays(pipeline: Any) -> dict[str, float]:
    """Per-key state from the arrays themselves: bytes allocated per key, by component."""
    store, keys = pipeline.windows, len(pipeline.states)
    arrays = [store._ring, store._count, store._mean, store._m2, store._limit]
    row = sum(a.nbytes // len(a) for a in arrays)
    capacity = len(store._count)
    state = next(iter(pipeline.states.values()))
    data, headers = threshold_arrays(state.threshold)
    objects = sum(sys.getsizeof(o) for o in (state, state.threshold, state.model_id)) + headers
    objects += sys.getsizeof(pipeline.windows.names[0]) + 3 * 8 * 2 + 2 * 8  # key string; dict/list slots
    return {
        "window ring (T x F float32)": store._ring.nbytes // capacity,
        "window count, mean, M2, limit": row - store._ring.nbytes // capacity,
        "window rows allocated but unused": (capacity - keys) * row / keys,
        "threshold arrays (quantile: the score ring, float32 x threshold.window)": data,
        "Python objects (KeyState, threshold, key, index entries; approx.)": objects,
    }


def threshold_arrays(threshold: Any) -> tuple[int, int]:
    """Bytes of the data of a threshold's numpy arrays and lists, and of their object headers."""
    names = getattr(type(threshold), "__slots__", None) or vars(threshold)
    data = headers = 0
    for name in names:
        value = getattr(threshold, name, None)
        if isinstance(value, np.ndarray):
            data += value.nbytes
            headers += sys.getsizeof(value) - (value.nbytes if value.base is None else 0)
        elif isinstance(value, array):  # SPOT's numbers: header and data in one figure
            headers += sys.getsizeof(value)
        elif isinstance(value, (list, tuple, dict)):
            data += sum(sys.getsizeof(v) for v in value)
            headers += sys.getsizeof(value)
    return data, headers


def child(keys: int, method: str, real_model: bool, growth: bool) -> dict[str, Any]:
    import torch

    from anomalyd import detector
    from anomalyd.pipeline import Pipeline

    torch.set_num_threads(1)
    config = replay_config(threshold={"method": method})
    warm = WINDOW + config.threshold.min_samples - 1  # the window, then min_samples scores
    if not real_model:
        detector.Detector.score = stub_score  # type: ignore[method-assign]
    gc.collect()
    base = rss_bytes()
    pipeline = Pipeline(config)
    # Fixed costs: the trained model, torch's first use. The probe's window that trains the
    # shared model is not scored (live calibration), so it needs one event more than the rest.
    Feeder(pipeline, 1, prefix="probe").feed(warm + 1)
    gc.collect()
    fixed = rss_bytes()
    started = time.perf_counter()
    feeder = Feeder(pipeline, keys)
    feeder.feed(warm)
    cold = [key for key, s in pipeline.states.items() if not math.isfinite(s.threshold.value)]
    if cold:
        raise SystemExit(f"{len(cold)} keys still have no threshold after {warm} events each")
    gc.collect()
    out: dict[str, Any] = {
        "keys": keys,
        "method": method,
        "events": keys * warm,
        "base": base,
        "fixed": fixed,
    }
    out["warm"], out["seconds"] = rss_bytes(), time.perf_counter() - started
    out["arrays"] = per_key_arrays(pipeline)
    if growth:
        samples = [[1, warm, out["warm"]]]
        for multiple in GROWTH_MULTIPLES[1:]:
            feeder.feed(multiple * warm - feeder.rows)
            gc.collect()
            samples.append([multiple, feeder.rows, rss_bytes()])
        out["growth"] = samples
        ring = getattr(next(iter(pipeline.states.values())).threshold, "_ring", None)
        out["ring"] = 0 if ring is None else ring.size  # a quantile threshold's window of scores
    return out


class Child:
    """One measurement in a process of its own; children run side by side (RSS is per process)."""

    def __init__(self, keys: int, method: str, smoke: bool, real_model: bool = False, growth: bool = False):
        cmd = [sys.executable, __file__, "--child", str(keys), "--threshold", method]
        cmd += ["--real-model"] * real_model + ["--growth"] * growth + ["--smoke"] * smoke
        self.keys, self.method = keys, method
        self.stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - read and closed in result()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.stderr, text=True)

    def result(self) -> dict[str, Any]:
        out, _ = self.proc.communicate(timeout=3600)
        self.stderr.seek(0)
        errors = self.stderr.read()
        self.stderr.close()
        if self.proc.returncode != 0:
            raise SystemExit(f"child for {self.keys} keys ({self.method}) failed:\n{errors[-3000:]}")
        return json.loads(out.strip().splitlines()[-1])


def extra(parser: Any) -> None:
    parser.add_argument("--child", type=int, help=argparse_hidden())
    parser.add_argument("--real-model", action="store_true", help=argparse_hidden())
    parser.add_argument("--growth", action="store_true", help=argparse_hidden())
    parser.add_argument(
        "--threshold",
        nargs="+",
        choices=METHODS,
        default=[DEFAULT],
        metavar="METHOD",
        help=f"threshold methods to measure, each in children of its own (default: {DEFAULT}; of {METHODS})",
    )


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], extra)
    quiet_logs()
    methods = list(dict.fromkeys(args.threshold))
    if args.child is not None:
        print(json.dumps(child(args.child, methods[0], args.real_model, args.growth)))
        return
    header("memory: resident bytes per key, shared scope", args.smoke)
    sizes = SMOKE if args.smoke else FULL
    growth_keys = GROWTH_KEYS[args.smoke]
    children = [
        (f"{method}, stub", Child(keys, method, args.smoke, growth=keys == growth_keys))
        for method in methods
        for keys in reversed(sizes)
    ]
    # The real forward pass at two key counts: its working memory (activations of a batch of
    # 512 windows) is a fixed cost, so compare marginal bytes/key with the stub's.
    if not args.smoke:
        children += [
            (f"{method}, real", Child(keys, method, args.smoke, real_model=True))
            for method in methods
            for keys in REAL_KEYS
        ]
    results = [(label, child.result()) for label, child in children]
    labelled = sorted(
        results, key=lambda lr: (methods.index(lr[1]["method"]), "real" in lr[0], lr[1]["keys"])
    )
    rss_table(labelled)
    stubs = [run for label, run in labelled if label.endswith("stub")]
    largest = [run for run in stubs if run["keys"] == max(sizes)]
    arrays = {run["method"]: run["arrays"] for run in largest}
    table(
        f"Per-key state from the arrays ({max(sizes):,} keys)",
        ["component", *(f"{method}: bytes/key allocated" for method in arrays)],
        [[name, *(Num(a[name], "{:,.0f}") for a in arrays.values())] for name in next(iter(arrays.values()))]
        + [["total", *(Num(sum(a.values()), "{:,.0f}") for a in arrays.values())]],
        [
            "Allocated is not resident: numpy takes fresh pages lazily (a quantile threshold's "
            "ring is written whole when its key first appears, so it is resident from then on)."
        ],
    )
    for run in stubs:
        if "growth" in run:
            growth_table(run)


def rss_table(labelled: list[tuple[str, dict[str, Any]]]) -> None:
    rows, previous = [], {}
    for label, run in labelled:
        marginal: Any = math.nan
        if label in previous:
            before = previous[label]
            marginal = (run["warm"] - run["fixed"] - before["warm"] + before["fixed"]) / (
                run["keys"] - before["keys"]
            )
        previous[label] = run
        rows.append(
            [
                run["method"],
                run["keys"],
                "real forward pass" if label.endswith("real") else "stub",
                run["events"],
                Num(run["base"] / MIB, "{:.0f}"),
                Num(run["fixed"] / MIB, "{:.0f}"),
                Num(run["warm"] / MIB, "{:.0f}"),
                (run["warm"] - run["base"]) / run["keys"],
                (run["warm"] - run["fixed"]) / run["keys"],
                marginal,
                Num(run["seconds"], "{:.1f}"),
            ]
        )
    warm_events = labelled[0][1]["events"] // labelled[0][1]["keys"]
    table(
        "RSS after every key has a full window and a warm threshold",
        [
            "threshold",
            "keys",
            "scoring",
            "events",
            "after imports MiB",
            "after 1 key MiB",
            "after all keys MiB",
            "bytes/key vs imports",
            "bytes/key vs 1 key",
            "marginal bytes/key",
            "s",
        ],
        rows,
        [
            f"{warm_events} events per key ({WINDOW} for the window, then threshold.min_samples scores). "
            "After 1 key: one key warmed first, so the fixed costs (the trained model, torch's "
            "first forward and backward passes, allocator pools) are paid; marginal: from the previous row "
            "with the same threshold and scoring; "
            "s: feeding the keys, with every child running at once."
        ],
    )


def growth_table(run: dict[str, Any]) -> None:
    keys, ring = run["keys"], run["ring"]
    first = run["growth"][0][2]
    table(
        f"Growth over a long run ({run['method']}): the same {keys:,} keys, up to "
        f"{GROWTH_MULTIPLES[-1]}x the events",
        [
            "x events",
            "events per key",
            "RSS MiB",
            "growth since 1x, bytes/key",
            "threshold ring filled, bytes/key",
        ],
        [
            [
                f"{multiple}x",
                per_key,
                Num(rss / MIB, "{:.1f}"),
                (rss - first) / keys,
                4 * min(per_key - WINDOW + 1, ring),
            ]
            for multiple, per_key, rss in run["growth"]
        ],
        [
            f"A quantile threshold's ring holds the last {ring} scores; it is full after "
            f"{WINDOW - 1 + ring} events and must not grow after that."
            if ring
            else "This threshold keeps no ring of scores: a fixed handful of numbers per key."
        ],
    )


if __name__ == "__main__":
    main()
