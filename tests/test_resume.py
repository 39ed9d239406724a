"""Exact resume: `kill -9` at random moments, restart, and no alert of an uninterrupted run is
missing (re-sent ones carry the same alert_id). Real processes, a real broker for Kafka."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from anomalyd import ReplayOutputs, replay
from anomalyd.checkpoint import list_models
from anomalyd.config import parse_config

from .daemon import ROOT, service_config
from .kafka_helpers import consume_all_confluent, create_topic, produce_confluent, wait_until
from .test_service_kafka import committed_total

MODEL = {
    "window": {"length": 16},
    "model": {"hidden_size": 8, "device": "cpu", "threads": 1},
    "training": {"warmup_events": 300, "epochs": 4},
    "threshold": {"min_samples": 20, "quantile": 0.99, "window": 500},
    "alerts": {"cooldown_events": 16},
    "retraining": {"every_events": 600, "on_drift": False, "min_windows": 50, "swap_after_events": 150},
}
N = 4000


def write_series(path: Path, start: int = 0, stop: int = N) -> list[dict]:
    """A noisy sine with spikes; rows ``start:stop`` as CSV (appended after a header row)."""
    rng = np.random.default_rng(1)
    t = np.arange(N)
    values = np.sin(2 * np.pi * t / 24) + rng.normal(0, 0.05, N)
    values[[900, 1500, 2200, 2700, 3300, 3800]] += 6
    rows = [{"timestamp": 1_600_000_000 + 60 * i, "value": float(values[i])} for i in range(N)]
    with path.open("a") as handle:
        if start == 0:
            handle.write("timestamp,value\n")
        handle.writelines(f"{r['timestamp']},{r['value']!r}\n" for r in rows[start:stop])
    return rows


def file_config(tmp_path: Path) -> Path:
    config = {
        **MODEL,
        "input": {"timestamp": {"field": "timestamp", "format": "epoch_s"}, "value_fields": ["value"]},
        "service": {"snapshot_interval_s": 0},
        "logging": {"format": "json"},
    }
    config["input"]["batch_size"] = 50
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def ids(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [json.loads(line)["alert_id"] for line in path.read_text().splitlines() if line.strip()]


def replay_cli(data: Path, config: Path, alerts: Path, state: Path, log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "anomalyd.cli", "replay", str(data), "-c", str(config)]
    command += ["--alerts", str(alerts), "--state-dir", str(state), "--no-progress"]
    with log.open("ab") as err:
        return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)


def saved(proc: subprocess.Popen[bytes], log: Path) -> bool:
    return b"snapshot_saved" in log.read_bytes() or proc.poll() is not None


def test_replay_killed_at_random_points_resumes_exactly(tmp_path):
    data, config = tmp_path / "series.csv", file_config(tmp_path)
    write_series(data)
    expected = tmp_path / "expected.jsonl"
    replay([str(data)], parse_config(yaml.safe_load(config.read_text())), ReplayOutputs(alerts=expected))
    assert len(ids(expected)) >= 6

    alerts, state = tmp_path / "alerts.jsonl", tmp_path / "state"
    rng = random.Random(7)
    kills = 0
    for attempt in range(3):
        log = tmp_path / f"run{attempt}.log"
        proc = replay_cli(data, config, alerts, state, log)
        try:
            # this run saved a snapshot of its own; then a random moment later, kill -9
            wait_until(lambda p=proc, f=log: saved(p, f), 60, 0.02, "a snapshot")
            try:
                proc.wait(timeout=rng.uniform(0.05, 1.5))
            except subprocess.TimeoutExpired:
                proc.kill()
                kills += 1
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
    log = tmp_path / "final.log"
    final = replay_cli(data, config, alerts, state, log)
    assert final.wait(timeout=120) == 0, log.read_text()[-2000:]
    assert kills >= 2, "the runs were killed mid-way"
    got = ids(alerts)
    assert set(ids(expected)) <= set(got)  # nothing lost
    assert set(got) <= set(ids(expected))  # a re-sent alert is the same alert
    assert "snapshot_restored" in log.read_text()


def test_rollback_puts_an_old_version_live_as_a_new_one(tmp_path):
    data, config = tmp_path / "series.csv", file_config(tmp_path)
    write_series(data, 0, 2000)
    alerts, state = tmp_path / "alerts.jsonl", tmp_path / "state"
    cli = [sys.executable, "-m", "anomalyd.cli"]
    run = [*cli, "replay", str(data), "-c", str(config), "--alerts", str(alerts), "--state-dir", str(state)]
    subprocess.run(run, cwd=ROOT, check=True, capture_output=True, timeout=120)
    models = list_models(state)
    assert [m["version"] for m in models] == [1, 2, 3]
    # metadata: what it learned from, up to when, how well, for which config
    assert all(m["windows"] > 0 and m["config_hash"] and m["validation_loss"] >= 0 for m in models)
    until = [int(m["data_until"]) for m in models]
    assert until == sorted(until) and 1_600_000_000 < until[0] < 1_600_000_000 + 60 * 2000

    bad = subprocess.run([*cli, "model", "rollback", str(state), "9"], cwd=ROOT, capture_output=True)
    assert bad.returncode == 1 and b"v0009.pt does not exist" in bad.stderr
    ok = subprocess.run([*cli, "model", "rollback", str(state), "1"], cwd=ROOT, capture_output=True)
    assert ok.returncode == 0, ok.stderr

    write_series(data, 2000, 2600)  # more rows arrive; the resumed replay reads only those
    done = subprocess.run(run, cwd=ROOT, check=True, capture_output=True, timeout=120)
    logs = [json.loads(line) for line in done.stderr.decode().splitlines() if line.startswith("{")]
    rolled = [e for e in logs if e.get("event") == "model_rolled_back"]
    # applied on resuming, before any new row: the live v3 makes way for v1's weights as v4
    assert rolled and (rolled[0]["to"], rolled[0]["previous"], rolled[0]["version"]) == (1, 3, 4)
    models = {m["version"]: m for m in list_models(state)}
    assert models[4]["reason"] == "rollback" and models[4]["rolled_back_to"] == 1
    from anomalyd.checkpoint import load_model

    old, _ = load_model(Path(models[1]["path"]))
    new, _ = load_model(Path(models[4]["path"]))
    assert all((a == b).all() for a, b in zip(old.state_dict().values(), new.state_dict().values()))
    later = [json.loads(line) for line in alerts.read_text().splitlines()]
    assert all(a["model_version"] >= 4 for a in later if a["sequence"] >= 2000)


def test_kafka_daemon_killed_at_random_points_resumes_exactly(kafka_broker, unique, tmp_path):
    bootstrap = kafka_broker.bootstrap
    topic, alerts_topic, group = f"in-{unique}", f"alerts-{unique}", f"g-{unique}"
    create_topic(bootstrap, topic, 1)
    create_topic(bootstrap, alerts_topic, 1)
    rows = write_series(tmp_path / "series.csv")
    produce_confluent(bootstrap, topic, [(b"series", json.dumps(r).encode()) for r in rows])

    expected = tmp_path / "expected.jsonl"
    file_cfg = parse_config(yaml.safe_load(file_config(tmp_path).read_text()))
    replay([str(tmp_path / "series.csv")], file_cfg, ReplayOutputs(alerts=expected))

    config = service_config(
        bootstrap,
        topic,
        group,
        **MODEL,
        input={"timestamp": {"field": "timestamp", "format": "epoch_s"}, "value_fields": ["value"]},
        output={"alerts": [{"type": "kafka", "topic": alerts_topic}]},
    )
    config["source"]["kafka"]["max_poll_records"] = 50
    config["service"].update(state_dir=str(tmp_path / "state"), snapshot_interval_s=0, commit_interval_s=0.2)
    from .daemon import Daemon

    rng = random.Random(11)
    kills = 0
    for attempt in range(3):
        daemon = Daemon(config, tmp_path, f"run{attempt}").start()
        try:
            daemon._wait(lambda d=daemon: d.events("snapshot_saved"), 60, "a snapshot")
            target = rng.randrange(200, 1200)
            daemon._wait(lambda d=daemon, t=target: d.metric("anomalyd_events_total") >= t, 60, "events")
            daemon.kill()
            kills += 1
        finally:
            daemon.kill()
    last = Daemon(config, tmp_path, "last").start()
    try:
        wait_until(lambda: committed_total(bootstrap, group) >= N, 120, 0.2, "all offsets committed")
        assert last.stop() == 0
    finally:
        last.kill()
    assert kills == 3
    assert any(e["event"] == "snapshot_restored" for e in last.events())
    got = [
        json.loads(m.value)["alert_id"] for m in consume_all_confluent(bootstrap, alerts_topic, idle_s=1.0)
    ]
    assert set(ids(expected)) <= set(got)
    assert set(got) <= set(ids(expected))
