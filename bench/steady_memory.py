"""Resident memory under a steady stream cut into batches of varying size, as Kafka polls are.

    .venv/bin/python bench/steady_memory.py [--events 300000] [--keys 3] [--smoke]

Feeds :class:`anomalyd.pipeline.Pipeline` (the default config: model, retraining, SPOT) a
noisy sine per key, round-robin over ``--keys`` keys, in batches of a random size between 1
and 1,000 records (what a consumer's polls of a steady stream return), and samples RSS
(``VmRSS``) every tenth of the stream. A flat second half means nothing grows per batch or
per event; ``bench/soak.py`` does the same through the daemon and a broker.
"""

from __future__ import annotations

import gc
import time

import numpy as np
from common import header, parse_args, quiet_logs, rss_bytes, table

MIB = 1024 * 1024


def main() -> None:
    def extra(parser):
        parser.add_argument("--events", type=int, default=300_000)
        parser.add_argument("--keys", type=int, default=3)

    args = parse_args(__doc__.splitlines()[0], extra)
    quiet_logs()
    from anomalyd.config import parse_config
    from anomalyd.events import Event
    from anomalyd.pipeline import Pipeline
    from anomalyd.sources.base import Batch

    total = 20_000 if args.smoke else args.events
    header(f"Steady stream: {total:,} events over {args.keys} keys, batches of 1-1,000", args.smoke)
    overrides: dict = {"model": {"device": "cpu", "threads": 1}}
    if args.smoke:
        overrides.update(window={"length": 16}, training={"warmup_events": 200, "epochs": 2})
        overrides["retraining"] = {"every_events": 2000, "min_windows": 100, "swap_after_events": 200}
    pipeline = Pipeline(parse_config(overrides))
    rng = np.random.default_rng(0)
    step, done, rows, started = total // 10, 0, [], time.perf_counter()
    while done < total:
        size = min(int(rng.integers(1, 1001)), total - done)
        events = []
        for i in range(done, done + size):
            key, n = i % args.keys, i // args.keys
            value = np.array([np.sin(2 * np.pi * n / 50 + key) + rng.normal(0, 0.05)])
            events.append(Event(f"sensor-{key}", str(n), float(n), value, {}))
        pipeline.process(Batch(events))
        if (done + size) // step != done // step:
            gc.collect()
            versions = max(slot.version for slot in pipeline.detector.slots.values())
            rows.append(
                [done + size, round(rss_bytes() / MIB, 1), versions, round(time.perf_counter() - started)]
            )
        done += size
    pipeline.close()
    table("RSS over the stream", ["events", "RSS MiB", "highest model version", "seconds"], rows)
    half = rows[len(rows) // 2 :]
    first, last = half[0][1], half[-1][1]
    print(f"second half: RSS {first} -> {last} MiB ({100 * (last - first) / first:+.1f}%)")


if __name__ == "__main__":
    main()
