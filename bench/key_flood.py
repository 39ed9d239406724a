"""A flood of distinct keys: resident memory with ``eviction`` on stays bounded.

    .venv/bin/python bench/key_flood.py [--keys 1000000] [--max-keys 10000] [--smoke]

Feeds :class:`anomalyd.pipeline.Pipeline` (the pure core, the default config, records built
in memory) ``--keys`` distinct keys, 3 events each, key after key, in batches of 1024, and
samples RSS (``VmRSS``) every tenth of the stream. Two child processes (freed memory is not
always given back to the OS, so each measurement gets its own): ``eviction.max_keys`` set,
and for contrast no eviction over a fifth of the keys. With eviction the store holds at most
``max_keys`` keys (plus one batch's new ones) and RSS levels off once it is full; without,
RSS grows with every key.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
from common import header, parse_args, quiet_logs, rss_bytes, table

MIB = 1024 * 1024
BATCH = 1024
PER_KEY = 3


def child(keys: int, max_keys: int | None) -> None:
    """Run one flood and print its samples as one JSON line."""
    from anomalyd.config import parse_config
    from anomalyd.events import Event
    from anomalyd.pipeline import Pipeline
    from anomalyd.sources.base import Batch

    quiet_logs()
    pipeline = Pipeline(parse_config({"model": {"device": "cpu"}, "eviction": {"max_keys": max_keys}}))
    total, step = keys * PER_KEY, max(1, keys * PER_KEY // 10)
    samples, evicted, started = [], 0, time.perf_counter()
    base = rss_bytes()
    values = np.array([1.0])
    for begin in range(0, total, BATCH):
        events = [
            Event(f"device-{i // PER_KEY}", str(i), float(i), values, {})
            for i in range(begin, min(begin + BATCH, total))
        ]
        evicted += pipeline.process(Batch(events)).evicted
        done = begin + len(events)
        if done // step != begin // step or done == total:
            samples.append([done // PER_KEY, len(pipeline.states), len(pipeline.windows.names), rss_bytes()])
    seconds = time.perf_counter() - started
    print(json.dumps({"base": base, "samples": samples, "evicted": evicted, "seconds": seconds}))


def run_child(keys: int, max_keys: int | None) -> dict:
    command = [sys.executable, __file__, "--child", str(keys), str(max_keys or 0)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    if "--child" in sys.argv:
        at = sys.argv.index("--child")
        child(int(sys.argv[at + 1]), int(sys.argv[at + 2]) or None)
        return

    def extra(parser):
        parser.add_argument("--keys", type=int, default=1_000_000)
        parser.add_argument("--max-keys", type=int, default=10_000)

    args = parse_args(__doc__.splitlines()[0], extra)
    keys, max_keys = (20_000, 1_000) if args.smoke else (args.keys, args.max_keys)
    header(f"Key flood: {keys:,} distinct keys, {PER_KEY} events each", args.smoke)
    runs = [
        (f"max_keys {max_keys:,}", keys, run_child(keys, max_keys)),
        ("no eviction", keys // 5, run_child(keys // 5, None)),
    ]
    rows = []
    for label, _, got in runs:
        for seen, kept, rows_held, rss in got["samples"]:
            rows.append([label, seen, kept, rows_held, round((rss - got["base"]) / MIB, 1)])
    notes = [
        f"{label}: {got['evicted']:,} evicted, {n * PER_KEY / got['seconds']:,.0f} events/s"
        for label, n, got in runs
    ]
    table(
        "RSS over the flood",
        ["eviction", "keys seen", "keys kept", "rows allocated", "RSS - start, MiB"],
        rows,
        notes,
    )
    late = [(rss - runs[0][2]["base"]) / MIB for *_, rss in runs[0][2]["samples"][5:]]
    print(f"with eviction, RSS - start, second half of the flood: {min(late):.1f} to {max(late):.1f} MiB")


if __name__ == "__main__":
    main()
