"""SIGKILL probe: kill `anomalyd replay --state-dir` at random moments, resume, compare alert ids.

    .venv/bin/python bench/kill_probe.py [--kills 30] [--seed 7] [--source replay|kafka] [--smoke]

One uninterrupted replay (in process) gives the expected alert ids. Then the same replay
runs as a child process with ``--state-dir`` and the shipped ``snapshot_interval_s: 30``
(longer than any life here: only the first commit step of a life and the end snapshot),
and is killed with SIGKILL ``--kills`` times, at a moment drawn per kill from one of three
phases in turn:

- ``start-up``: within the first second after spawn (imports, config, snapshot loading);
- ``pre-snapshot``: within 0.6 s after ``replay_started``, mostly before the life's first
  ``snapshot_saved``;
- ``running``: within 0.6 s after the life's first snapshot.

A life that ends on its own before its kill is left to finish (the probe then starts over
from a fresh state directory for the next kills: a finished replay has nothing left to
read). Finally one life runs to the end. The alert file of all lives together must hold every
expected id (none missing) and no other (none foreign). Prints one row per life and a
summary; exits 1 on a missing or foreign id. ``tests/faults/test_kill.py`` runs it with
10 kills.

``--source kafka`` runs ``anomalyd run`` instead, on a Tansu broker it starts: the rows on a
topic, alerts to a Kafka topic, ``commit_interval_s: 0.5``; ``pre-snapshot`` then means up to 4 s after
``partitions_assigned``. Its last life runs until every offset is committed; the ids read back
from the alert topic are compared with the replay's.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PHASES = ("start-up", "pre-snapshot", "running")
CONFIG = {
    "window": {"length": 16},
    "model": {"hidden_size": 8, "device": "cpu", "threads": 1},
    "training": {"warmup_events": 300, "epochs": 4},
    "threshold": {"min_samples": 20, "quantile": 0.99, "window": 500},
    "alerts": {"cooldown_events": 16},
    "retraining": {"every_events": 600, "on_drift": False, "min_windows": 50, "swap_after_events": 150},
    "input": {
        "timestamp": {"field": "timestamp", "format": "epoch_s"},
        "value_fields": ["value"],
        "batch_size": 50,
    },
    "service": {"snapshot_interval_s": 30},
    "logging": {"format": "json"},
}


def write_series(path: Path, rows: int) -> None:
    """A noisy sine with a spike every 500 rows."""
    rng = np.random.default_rng(1)
    t = np.arange(rows)
    values = np.sin(2 * np.pi * t / 24) + rng.normal(0, 0.05, rows)
    values[np.arange(700, rows, 500)] += 6
    with path.open("w") as handle:
        handle.write("timestamp,value\n")
        handle.writelines(f"{1_600_000_000 + 60 * i},{float(values[i])!r}\n" for i in range(rows))


def alert_ids(path: Path) -> list[str]:
    """Ids in an alert file; a line that is not JSON is a failure of its own (a torn write)."""
    if not path.exists():
        return []
    return [json.loads(line)["alert_id"] for line in path.read_text().splitlines() if line.strip()]


@dataclass
class Life:
    phase: str
    delay_s: float
    killed: bool
    snapshots: int
    restored: bool
    seconds: float


class Probe:
    def __init__(self, folder: Path, rows: int, seed: int):
        self.folder = folder
        self.data, self.config = folder / "series.csv", folder / "config.yaml"
        write_series(self.data, rows)
        self.config.write_text(yaml.safe_dump(CONFIG))
        self.rng = random.Random(seed)
        self.alerts, self.state = folder / "alerts.jsonl", folder / "state"
        self.collected: list[str] = []  # ids of alert files of earlier, finished rounds
        self.markers = {"pre-snapshot": b"replay_started", "running": b"snapshot_saved"}
        self.spread = {"start-up": 1.0, "pre-snapshot": 0.6, "running": 0.6}  # seconds after the marker
        self.lives: list[Life] = []

    def expected(self) -> list[str]:
        from anomalyd import ReplayOutputs, replay
        from anomalyd.config import parse_config
        from anomalyd.logs import setup_logging

        setup_logging("warning", "json")
        out = self.folder / "expected.jsonl"
        replay([str(self.data)], parse_config(CONFIG), ReplayOutputs(alerts=out))
        return alert_ids(out)

    def spawn(self, log: Path) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "anomalyd.cli", "replay", str(self.data), "-c", str(self.config)]
        command += ["--alerts", str(self.alerts), "--state-dir", str(self.state), "--no-progress"]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        with log.open("wb") as err:
            return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, env=env)

    def life(self, number: int, phase: str | None) -> Life:
        log = self.folder / f"life{number:03d}.log"
        started = time.monotonic()
        proc = self.spawn(log)
        delay, killed = 0.0, False
        try:
            if phase is not None:
                delay = self.rng.uniform(0.0, self.spread[phase])
                marker = None if phase == "start-up" else self.markers[phase]
                # A life with nothing left to read never snapshots: past the shipped interval
                # (and some), it is killed without its marker.
                deadline = started + 45
                while marker is not None and marker not in log.read_bytes() and proc.poll() is None:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.01)
                try:
                    proc.wait(timeout=delay)
                except subprocess.TimeoutExpired:
                    proc.send_signal(signal.SIGKILL)
                    killed = True
            rc = proc.wait(timeout=300)
            if not killed and rc != 0:
                raise RuntimeError(f"life {number} exited {rc}: {log.read_text()[-2000:]}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        text = log.read_bytes()
        return Life(
            phase or "to the end",
            delay,
            killed,
            text.count(b'"snapshot_saved"'),
            b"snapshot_restored" in text,
            time.monotonic() - started,
        )

    def run(self, kills: int) -> tuple[list[str], list[str]]:
        expected = self.expected()
        done = 0
        while done < kills:
            phase = PHASES[done % len(PHASES)]
            life = self.life(len(self.lives), phase)
            self.lives.append(life)
            if life.killed:
                done += 1
            else:  # it finished first: keep its alerts, start over for the next kills
                self.collected += alert_ids(self.alerts)
                self.alerts.unlink(missing_ok=True)
                shutil.rmtree(self.state, ignore_errors=True)
                got = set(self.collected)
                self.collected = []
                self.check(expected, got)
        self.lives.append(self.life(len(self.lives), None))
        return expected, alert_ids(self.alerts)

    @staticmethod
    def check(expected: list[str], got: set[str]) -> None:
        if set(expected) - got or got - set(expected):
            raise AssertionError(
                f"missing {sorted(set(expected) - got)}, foreign {sorted(got - set(expected))}"
            )


class KafkaProbe(Probe):
    """The same against ``anomalyd run`` on a Tansu broker: the rows on a 1-partition topic,
    alerts to a Kafka topic; the last life runs until every offset is committed."""

    def __init__(self, folder: Path, rows: int, seed: int, bootstrap: str):
        super().__init__(folder, rows, seed)
        from tests.daemon import service_config
        from tests.kafka_helpers import create_topic, produce_confluent

        self.bootstrap, self.rows = bootstrap, rows
        unique = f"{seed}-{int(time.time() * 1000)}"
        self.topic, self.alert_topic, self.group = f"in-{unique}", f"alerts-{unique}", f"g-{unique}"
        create_topic(bootstrap, self.topic, 1)
        create_topic(bootstrap, self.alert_topic, 1)
        lines = self.data.read_text().splitlines()[1:]
        records = [
            (b"series", json.dumps({"timestamp": int(t), "value": float(v)}).encode())
            for t, v in (line.split(",") for line in lines)
        ]
        produce_confluent(bootstrap, self.topic, records)
        config = service_config(
            bootstrap, self.topic, self.group, **{k: v for k, v in CONFIG.items() if k != "service"}
        )
        config["output"] = {"alerts": [{"type": "kafka", "topic": self.alert_topic}]}
        config["source"]["kafka"]["max_poll_records"] = 50
        config["service"].update(state_dir=str(self.state), snapshot_interval_s=30, commit_interval_s=0.5)
        self.config.write_text(yaml.safe_dump(config))
        self.markers = {"pre-snapshot": b"partitions_assigned", "running": b"snapshot_saved"}
        # a kill in the first seconds of consuming falls after the first offset commits
        self.spread = {"start-up": 1.0, "pre-snapshot": 4.0, "running": 2.0}

    def spawn(self, log: Path) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "anomalyd.cli", "run", "-c", str(self.config)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        with log.open("wb") as err:
            return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, env=env)

    def finish(self, number: int) -> Life:
        from tests.test_service_kafka import committed_total

        log = self.folder / f"life{number:03d}.log"
        started = time.monotonic()
        proc = self.spawn(log)
        try:
            deadline = started + 300
            while (
                b"consumer_started" not in log.read_bytes()
                or committed_total(self.bootstrap, self.group) < self.rows
            ):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"last life: offsets not committed: {log.read_text()[-2000:]}")
                time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            if proc.wait(timeout=60) != 0:
                raise RuntimeError(f"last life exited {proc.returncode}: {log.read_text()[-2000:]}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        text = log.read_bytes()
        return Life(
            "to the end",
            0.0,
            False,
            text.count(b'"snapshot_saved"'),
            b"snapshot_restored" in text,
            time.monotonic() - started,
        )

    def run(self, kills: int) -> tuple[list[str], list[str]]:
        from tests.kafka_helpers import consume_all_confluent

        expected = self.expected()
        for done in range(kills):
            self.lives.append(self.life(len(self.lives), PHASES[done % len(PHASES)]))
        self.lives.append(self.finish(len(self.lives)))
        got = [
            json.loads(m.value)["alert_id"]
            for m in consume_all_confluent(self.bootstrap, self.alert_topic, idle_s=1.0)
        ]
        return expected, got


def table(lives: list[Life]) -> str:
    lines = ["| life | phase | kill after (s) | killed | snapshots saved | resumed | seconds |"]
    lines.append("| --- | --- | --- | --- | --- | --- | --- |")
    for i, life in enumerate(lives):
        lines.append(
            f"| {i} | {life.phase} | {life.delay_s:.2f} | {'yes' if life.killed else 'no'} | "
            f"{life.snapshots} | {'yes' if life.restored else 'no'} | {life.seconds:.1f} |"
        )
    return "\n".join(lines)


def probe(
    folder: Path, kills: int, rows: int, seed: int, bootstrap: str | None = None
) -> tuple[list[str], list[str], list[Life]]:
    """Run the probe in ``folder`` (on Kafka with ``bootstrap``); the expected ids, the ids
    the killed lives wrote, the lives."""
    runner = Probe(folder, rows, seed) if bootstrap is None else KafkaProbe(folder, rows, seed, bootstrap)
    expected, got = runner.run(kills)
    return expected, got, runner.lives


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=30)
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--source", choices=["replay", "kafka"], default="replay")
    parser.add_argument("--smoke", action="store_true", help="3 kills on 2,000 rows")
    args = parser.parse_args()
    kills, rows = (3, 2000) if args.smoke else (args.kills, args.rows)
    with tempfile.TemporaryDirectory(prefix="anomalyd-kill-") as tmp:
        if args.source == "kafka":
            from tests.kafka_broker import TansuBroker, find_tansu_binary

            binary = find_tansu_binary()
            if binary is None:
                raise SystemExit("the Tansu broker is not installed (dev extra)")
            with TansuBroker(binary, Path(tmp) / "broker.log") as broker:
                expected, got, lives = probe(Path(tmp), kills, rows, args.seed, broker.bootstrap)
        else:
            expected, got, lives = probe(Path(tmp), kills, rows, args.seed)
    print(table(lives))
    missing, foreign = set(expected) - set(got), set(got) - set(expected)
    killed = sum(life.killed for life in lives)
    print(
        f"\n{killed} kills; expected {len(set(expected))} alert ids: "
        f"{len(missing)} missing, {len(foreign)} foreign, {len(got) - len(set(got))} re-sent"
    )
    return 1 if missing or foreign else 0


if __name__ == "__main__":
    sys.exit(main())
