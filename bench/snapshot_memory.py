"""Peak memory of writing one snapshot, beyond the state itself.

    .venv/bin/python bench/snapshot_memory.py [--keys 50000] [--smoke]

Builds a :class:`anomalyd.pipeline.Pipeline` with ``--keys`` keys in ``shared`` scope (every
key with a full window; the default config, scoring stubbed as in ``memory.py``: the state,
not the forward pass, is measured), resets the process's peak RSS (``/proc/self/clear_refs``)
and writes one snapshot with :class:`anomalyd.snapshot.SnapshotStore`, as the commit step
does, twice (the first write also pays one-off allocations), then loads it back. Prints the
snapshot's size and each step's peak RSS above the RSS before it (``VmHWM`` - ``VmRSS``),
also as a multiple of the file size: how many copies of the state it holds at once.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from common import header, parse_args, quiet_logs, table
from memory import Feeder, stub_score

MIB = 1024 * 1024


def status(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def main() -> None:
    def extra(parser):
        parser.add_argument("--keys", type=int, default=50_000)

    args = parse_args(__doc__.splitlines()[0], extra)
    keys = 2_000 if args.smoke else args.keys
    header(f"Snapshot write: peak memory at {keys:,} keys", args.smoke)
    quiet_logs()
    from anomalyd.config import parse_config
    from anomalyd.detector import Detector
    from anomalyd.pipeline import Pipeline
    from anomalyd.snapshot import SnapshotStore

    Detector.score = stub_score  # type: ignore[method-assign]
    pipeline = Pipeline(
        parse_config({"model": {"scope": "shared", "device": "cpu"}, "training": {"epochs": 1}})
    )
    Feeder(pipeline, keys).feed(pipeline.config.window.length + 2)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        store = SnapshotStore(Path(folder))
        for _ in range(2):
            Path("/proc/self/clear_refs").write_text("5")  # the peak starts from here
            before = status("VmRSS")
            started = time.perf_counter()
            path = store.save({"positions": None, "state": pipeline.get_state()}, "h", "s")
            seconds = time.perf_counter() - started
            peak = status("VmHWM") - before
            size = path.stat().st_size
            rows.append(
                [
                    "write",
                    round(size / MIB, 1),
                    round(peak / MIB, 1),
                    round(peak / size, 2),
                    round(seconds, 2),
                ]
            )
        Path("/proc/self/clear_refs").write_text("5")
        before = status("VmRSS")
        started = time.perf_counter()
        loaded = store.load(path)
        seconds = time.perf_counter() - started
        peak = status("VmHWM") - before
        rows.append(
            ["load", round(size / MIB, 1), round(peak / MIB, 1), round(peak / size, 2), round(seconds, 2)]
        )
        del loaded
    pipeline.close()
    table(
        "One snapshot",
        ["step", "file MiB", "peak RSS above before, MiB", "peak / file", "seconds"],
        rows,
    )
    assert all(np.isfinite(row[3]) for row in rows)


if __name__ == "__main__":
    main()
