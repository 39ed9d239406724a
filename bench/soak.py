"""Steady load on the daemon: does its resident memory stay flat?

    .venv/bin/python bench/soak.py [--rate 2000] [--keys 3] [--seconds 240] [--smoke]

Starts a Tansu broker (``tests/kafka_broker.py``) and one ``anomalyd run`` with the default
model, a state directory (the shipped ``snapshot_interval_s: 30``) and a Kafka alert
topic, then produces ``--rate`` events/s round-robin over ``--keys`` keys (a noisy sine per
key, spikes now and then) for ``--seconds``, and samples the daemon's RSS (``VmRSS`` of
``/proc/PID/status``) and its counters every 10 s. The table ends with the RSS growth over
the second half of the run, after warm-up and the first retrainings: flat means within a
few percent.
"""

from __future__ import annotations

import json
import math
import tempfile
import threading
import time
import uuid
from pathlib import Path

from common import header, parse_args, table

from tests.daemon import Daemon, service_config
from tests.kafka_broker import TansuBroker, find_tansu_binary
from tests.kafka_helpers import create_topic

MIB = 1024 * 1024


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def produce(
    bootstrap: str, topic: str, rate: float, keys: int, seconds: float, stop: threading.Event
) -> None:
    """Paced, in bursts of a tenth of a second."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    started, sent = time.monotonic(), 0
    while not stop.is_set() and time.monotonic() - started < seconds:
        due = int((time.monotonic() - started) * rate)
        for i in range(sent, due):
            key, n = i % keys, i // keys
            value = math.sin(2 * math.pi * n / 50 + key) + 0.05 * math.sin(7.3 * n)
            value += 6.0 if n % 5000 == 4999 else 0.0
            body = json.dumps({"timestamp": 1_700_000_000 + n, "value": value}).encode()
            producer.produce(topic, key=f"sensor-{key}".encode(), value=body)
        sent = max(sent, due)
        producer.poll(0)
        time.sleep(0.1)
    producer.flush(10)


def main() -> None:
    def extra(parser):
        parser.add_argument("--rate", type=float, default=2000)
        parser.add_argument("--keys", type=int, default=3)
        parser.add_argument("--seconds", type=float, default=240)

    args = parse_args(__doc__.splitlines()[0], extra)
    rate, seconds = (200.0, 12.0) if args.smoke else (args.rate, args.seconds)
    if find_tansu_binary() is None:
        raise SystemExit("the Tansu broker is not installed (dev extra)")
    header(f"Soak: {rate:,.0f} events/s over {args.keys} keys for {seconds:.0f} s", args.smoke)
    model = {"model": {"device": "cpu", "threads": 1}}
    if args.smoke:
        model = {"window": {"length": 16}, "model": {"hidden_size": 8, "device": "cpu", "threads": 1}}
        model["training"] = {"warmup_events": 200, "epochs": 2}
    with (
        tempfile.TemporaryDirectory(prefix="anomalyd-soak-") as tmp,
        TansuBroker(find_tansu_binary(), Path(tmp) / "broker.log") as broker,
    ):
        work = Path(tmp)
        unique = uuid.uuid4().hex[:8]
        topic, alerts = f"in-{unique}", f"alerts-{unique}"
        create_topic(broker.bootstrap, topic, 1)
        create_topic(broker.bootstrap, alerts, 1)
        config = service_config(broker.bootstrap, topic, f"g-{unique}", **model)
        for name in ("window", "training"):
            if name not in model:
                config.pop(name, None)  # the defaults, not the tests' fast model
        config["model"] = model["model"]
        config["output"] = {"alerts": [{"type": "kafka", "topic": alerts}]}
        config["input"] = {
            "timestamp": {"field": "timestamp", "format": "epoch_s"},
            "value_fields": ["value"],
        }
        config["service"].update(state_dir=str(work / "state"), snapshot_interval_s=30, commit_interval_s=5)
        config["logging"] = {"format": "json", "level": "warning"}
        daemon = Daemon(config, work).start()
        stop = threading.Event()
        try:
            daemon.wait_ready(60)
            assert daemon.proc is not None
            pid = daemon.proc.pid
            producer = threading.Thread(
                target=produce, args=(broker.bootstrap, topic, rate, args.keys, seconds, stop), daemon=True
            )
            started = time.monotonic()
            producer.start()
            rows = []
            while time.monotonic() - started < seconds:
                time.sleep(min(3.0 if args.smoke else 10.0, max(0.0, seconds - (time.monotonic() - started))))
                version = daemon.metric("anomalyd_model_version")
                events = daemon.metric("anomalyd_events_total")
                rows.append(
                    [
                        round(time.monotonic() - started),
                        round(rss(pid) / MIB, 1),
                        0 if math.isnan(events) else int(events),
                        0 if math.isnan(version) else int(version),
                    ]
                )
            stop.set()
            producer.join(30)
        finally:
            stop.set()
            daemon.kill()
    table(
        "Daemon RSS under steady load",
        ["seconds", "RSS MiB", "events taken in", "highest model version"],
        rows,
    )
    half = rows[len(rows) // 2 :]
    first, last = half[0][1], half[-1][1]
    print(f"second half: RSS {first} -> {last} MiB ({100 * (last - first) / first:+.1f}%)")


if __name__ == "__main__":
    main()
