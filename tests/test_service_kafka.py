"""`anomalyd run` against a real broker (Tansu) over the wire; records produced and alerts
read back with confluent-kafka, a different client than the daemon's kafka-python."""

from __future__ import annotations

import csv
import json
import os
import signal
from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from anomalyd import ReplayOutputs, replay
from anomalyd.config import parse_config

from .daemon import FAST_MODEL, ROOT, Daemon, service_config
from .kafka_helpers import consume_all_confluent, create_topic, produce_confluent, wait_until

EXAMPLE = ROOT / "examples" / "machine.csv"


def example_records(
    start: int = 0, stop: int | None = None, key: bytes = b"machine"
) -> list[tuple[bytes, bytes]]:
    rows = list(csv.DictReader(EXAMPLE.open()))[start:stop]
    return [
        (key, json.dumps({"timestamp": r["timestamp"], "value": float(r["value"])}).encode()) for r in rows
    ]


@pytest.fixture
def daemons(tmp_path):
    started: list[Daemon] = []

    def make(config: dict, name: str = "daemon", env: dict | None = None) -> Daemon:
        daemon = Daemon(config, tmp_path, name)
        started.append(daemon)
        return daemon.start(env)

    yield make
    for daemon in started:
        daemon.kill()


def committed_total(bootstrap: str, group: str) -> int:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        return sum(meta.offset for meta in admin.list_group_offsets(group)[group].values())
    finally:
        admin.close()


RETRAIN_OFTEN = {"every_events": 400, "on_drift": True, "min_windows": 100, "swap_after_events": 50}


@pytest.mark.parametrize("retraining", [{"enabled": False}, RETRAIN_OFTEN], ids=["fixed", "retraining"])
def test_kafka_alerts_equal_replay_alerts(kafka_broker, unique, daemons, tmp_path, retraining):
    bootstrap = kafka_broker.bootstrap
    topic, alerts_topic = f"in-{unique}", f"alerts-{unique}"
    create_topic(bootstrap, topic, 1)
    create_topic(bootstrap, alerts_topic, 1)
    records = example_records()
    produce_confluent(bootstrap, topic, records)

    config = service_config(
        bootstrap,
        topic,
        f"g-{unique}",
        output={"alerts": [{"type": "kafka", "topic": alerts_topic}]},
        retraining=retraining,
    )
    daemon = daemons(config)
    daemon.wait_events(len(records))
    status, _ = daemon.get("/healthz")
    assert status == 200
    lag = f'anomalyd_consumer_lag{{partition="0",topic="{topic}"}} 0.0'
    wait_until(lambda: lag in daemon.get("/metrics")[1], 10, 0.1, "lag gauge at 0")
    assert daemon.get("/nope")[0] == 404
    assert daemon.stop() == 0

    expected = tmp_path / "replay.jsonl"
    replay_config = parse_config({**FAST_MODEL, "retraining": retraining, "output": {"alerts": []}})
    replay([str(EXAMPLE)], replay_config, ReplayOutputs(alerts=expected))
    replayed = [json.loads(line) for line in expected.read_text().splitlines()]
    published = [json.loads(m.value) for m in consume_all_confluent(bootstrap, alerts_topic, idle_s=1.0)]
    assert replayed, "the example has anomalies"
    assert [a["alert_id"] for a in published] == [a["alert_id"] for a in replayed]
    assert published[0]["source"]["topic"] == topic
    assert {m.key for m in consume_all_confluent(bootstrap, alerts_topic, idle_s=0.5)} == {b"machine"}
    names = {e["event"] for e in daemon.events()}
    assert {"started", "partitions_assigned", "alert_published", "stopping", "stopped"} <= names
    if retraining.get("enabled", True):
        retrained = daemon.events("model_retrained")
        assert len(retrained) > 1, "the schedule retrains several times"
        assert max(e["version"] for e in retrained) > 1  # and promotes (the ids above match replay's)


def test_malformed_records_go_to_the_dead_letter_topic_unchanged(kafka_broker, unique, daemons):
    bootstrap = kafka_broker.bootstrap
    topic, dlq = f"in-{unique}", f"dlq-{unique}"
    create_topic(bootstrap, topic, 1)
    create_topic(bootstrap, dlq, 1)
    bad = [
        b"not json at all",
        b'{"timestamp": "2026-03-01 00:00:00"}',
        b'{"timestamp": "yesterday", "value": 1.0}',
        b'{"timestamp": "2026-03-01 00:00:00", "value": "NaN"}',
        b"[1, 2, 3]",
    ]
    good = example_records(0, 300)
    records = good[:100] + [(b"machine", value) for value in bad] + good[100:]
    produce_confluent(bootstrap, topic, records)
    config = service_config(
        bootstrap,
        topic,
        f"g-{unique}",
        output={"alerts": [{"type": "stdout"}], "dead_letter": {"type": "kafka", "topic": dlq}},
    )
    daemon = daemons(config)
    daemon.wait_events(len(good))
    assert daemon.metric("anomalyd_dead_letters_total") == len(bad)
    assert daemon.stop() == 0
    dead = consume_all_confluent(bootstrap, dlq, idle_s=1.0)
    assert [m.value for m in dead] == bad
    assert [int(m.headers["anomalyd.source.offset"]) for m in dead] == list(range(100, 105))
    assert all(m.headers["anomalyd.source.topic"] == topic.encode() for m in dead)
    reasons = [m.headers["anomalyd.reason"].decode() for m in dead]
    assert "not JSON" in reasons[0] and "value" in reasons[1] and "timestamp" in reasons[2]
    assert "not finite" in reasons[3] and "not a JSON object" in reasons[4]


def test_graceful_stop_commits_and_restart_resumes_without_realerting(kafka_broker, unique, daemons):
    bootstrap = kafka_broker.bootstrap
    topic, alerts_topic, group = f"in-{unique}", f"alerts-{unique}", f"g-{unique}"
    create_topic(bootstrap, topic, 1)
    create_topic(bootstrap, alerts_topic, 1)
    first, second = example_records(0, 1800), example_records(1800)
    produce_confluent(bootstrap, topic, first)
    output = {"alerts": [{"type": "kafka", "topic": alerts_topic}]}
    daemon = daemons(service_config(bootstrap, topic, group, output=output), "first")
    daemon.wait_events(len(first))
    assert daemon.stop() == 0
    assert committed_total(bootstrap, group) == len(first)
    before = consume_all_confluent(bootstrap, alerts_topic, idle_s=0.5)

    produce_confluent(bootstrap, topic, second)
    again = daemons(service_config(bootstrap, topic, group, output=output), "second")
    again.wait_events(len(second))
    assert again.stop() == 0
    events_seen = sum(e["events"] for e in again.events("stopped"))
    assert events_seen == len(second)  # nothing committed was read again
    assert committed_total(bootstrap, group) == len(first) + len(second)
    after = consume_all_confluent(bootstrap, alerts_topic, idle_s=0.5)
    new = [json.loads(m.value) for m in after[len(before) :]]
    assert all(a["source"]["offset"] >= len(first) for a in new)


def test_two_daemons_in_one_group_share_the_partitions(kafka_broker, unique, daemons, tmp_path):
    bootstrap = kafka_broker.bootstrap
    topic, group = f"in-{unique}", f"g-{unique}"
    create_topic(bootstrap, topic, 4)
    keys = [f"sensor-{i}".encode() for i in range(16)]
    per_key = 260
    records = [r for i in range(per_key) for r in (example_records(i, i + 1, key)[0] for key in keys)]

    def config(name: str) -> dict:
        return service_config(
            bootstrap,
            topic,
            group,
            model={"scope": "shared"},
            output={"alerts": [], "scores": str(tmp_path / f"{name}.csv")},
        )

    a = daemons(config("a"), "a")
    a.wait_ready()
    b = daemons(config("b"), "b")

    def split() -> bool:
        latest = [d.events("partitions_assigned") for d in (a, b)]
        return all(x and len(x[-1]["partitions"]) == 2 for x in latest)

    wait_until(split, 30, 0.1, "two partitions each")
    a.wait_ready()
    b.wait_ready()
    produce_confluent(bootstrap, topic, records)
    wait_until(
        lambda: a.metric("anomalyd_events_total") + b.metric("anomalyd_events_total") >= len(records),
        60,
        0.2,
        "all events scored",
    )
    assert a.stop() == 0 and b.stop() == 0
    rows = {name: list(csv.DictReader((tmp_path / f"{name}.csv").open())) for name in "ab"}
    keys_a, keys_b = ({r["key"] for r in rows[n]} for n in "ab")
    assert keys_a and keys_b and not keys_a & keys_b
    assert keys_a | keys_b == {k.decode() for k in keys}
    assert len(rows["a"]) + len(rows["b"]) == len(records)


def test_broker_down_at_start_is_retried_and_reported_not_ready(kafka_broker_factory, unique, daemons):
    broker = kafka_broker_factory()
    bootstrap = broker.bootstrap
    broker.stop(grace_s=0)
    topic = f"in-{unique}"
    daemon = daemons(service_config(bootstrap, topic, f"g-{unique}", output={"alerts": []}))
    wait_until(lambda: daemon.events("broker_unavailable"), 30, 0.1, "broker_unavailable logged")
    assert daemon.get("/healthz")[0] == 200
    assert daemon.get("/readyz")[0] == 503
    broker.restart(grace_s=0)
    create_topic(bootstrap, topic, 1)
    produce_confluent(bootstrap, topic, example_records(0, 50))
    daemon.wait_ready(timeout_s=60)
    daemon.wait_events(50)
    assert daemon.stop() == 0


def test_bad_config_fails_at_start(tmp_path, daemons):
    config = service_config("127.0.0.1:1", "t", "g", source={"type": "kafka", "kafka": {"topics": []}})
    daemon = daemons(config)
    assert daemon.proc is not None
    assert daemon.proc.wait(timeout=30) == 2
    assert "source.kafka: set exactly one of topics" in daemon.log_path.read_text()


def test_a_refused_sasl_login_ends_in_exit_1_naming_the_cause_without_the_secret(
    kafka_broker, unique, daemons
):
    config = service_config(kafka_broker.bootstrap, f"in-{unique}", f"g-{unique}", output={"alerts": []})
    config["kafka"]["request_timeout_ms"] = 3000
    config["kafka"]["security"] = {
        "protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_username": "svc",
        "sasl_password": "${ANOMALYD_TEST_SECRET}",
    }
    daemon = daemons(config, env={"ANOMALYD_TEST_SECRET": "hunter2-s3cret"})
    assert daemon.proc is not None
    assert daemon.proc.wait(timeout=30) == 1  # Tansu refuses the SASL handshake
    text = Path(daemon.log_path).read_text()
    assert "hunter2-s3cret" not in text
    assert not daemon.events("broker_unavailable")
    last = text.strip().splitlines()[-1]
    assert last.startswith("anomalyd: error: cannot connect to Kafka: ") and "Sasl" in last


def slow_file_daemon(daemons, tmp_path, deadline_s: float, liveness_timeout_s: float = 300) -> Daemon:
    """A daemon fed from a file whose first batch trains for minutes: a stop must interrupt it."""
    config = service_config("127.0.0.1:1", "unused", "unused")
    config["source"] = {"type": "file", "paths": [str(EXAMPLE)]}
    config["training"] = {"warmup_events": 750, "epochs": 10_000, "max_steps": None, "patience": None}
    config["output"] = {"alerts": [{"type": "file", "path": str(tmp_path / "alerts.jsonl")}]}
    config["service"]["shutdown_deadline_s"] = deadline_s
    config["service"]["liveness_timeout_s"] = liveness_timeout_s
    daemon = daemons(config)
    wait_until(lambda: daemon.get("/healthz")[0] == 200, 30, 0.1, "healthz")
    return daemon


def test_healthz_says_not_alive_while_the_loop_is_stuck(daemons, tmp_path):
    daemon = slow_file_daemon(daemons, tmp_path, deadline_s=600, liveness_timeout_s=2.0)
    wait_until(lambda: daemon.get("/healthz")[0] == 503, 30, 0.1, "healthz 503 in the long first training")
    assert daemon.get("/healthz")[1] == "stalled\n"


def test_readyz_is_not_ready_while_the_broker_is_frozen(kafka_broker_factory, unique, daemons):
    broker = kafka_broker_factory()
    topic = f"in-{unique}"
    create_topic(broker.bootstrap, topic, 1)
    produce_confluent(broker.bootstrap, topic, example_records(0, 300))
    config = service_config(broker.bootstrap, topic, f"g-{unique}", output={"alerts": []})
    config["kafka"]["request_timeout_ms"] = 2000
    daemon = daemons(config)
    daemon.wait_events(300)
    daemon.wait_ready()
    assert broker.pid is not None
    os.kill(broker.pid, signal.SIGSTOP)
    try:
        wait_until(lambda: daemon.get("/readyz")[0] == 503, 10, 0.1, "not ready with the broker frozen")
        assert daemon.get("/healthz")[0] == 200  # alive: the loop goes on, it cannot fetch
    finally:
        os.kill(broker.pid, signal.SIGCONT)
    daemon.wait_ready(timeout_s=60)
    produce_confluent(broker.bootstrap, topic, example_records(300, 400))
    daemon.wait_events(400)
    assert daemon.stop() == 0


def test_second_signal_exits_at_once(daemons, tmp_path):
    daemon = slow_file_daemon(daemons, tmp_path, deadline_s=600)
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: daemon.events("stopping"), 30, 0.1, "stopping logged")
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert daemon.events("stopped_at_once")


def test_shutdown_deadline_bounds_a_graceful_stop(daemons, tmp_path):
    daemon = slow_file_daemon(daemons, tmp_path, deadline_s=1.0)
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGINT)
    assert daemon.proc.wait(timeout=30) == 1
    assert daemon.events("shutdown_deadline_exceeded")


def test_file_source_service_runs_to_the_end(daemons, tmp_path):
    config = service_config("127.0.0.1:1", "unused", "unused")
    config["source"] = {"type": "file", "paths": [str(EXAMPLE)]}
    config["output"] = {"alerts": [{"type": "file", "path": str(tmp_path / "alerts.jsonl")}]}
    daemon = daemons(config)
    assert daemon.proc is not None
    assert daemon.proc.wait(timeout=120) == 0
    expected = tmp_path / "replay.jsonl"
    replay(
        [str(EXAMPLE)], parse_config({**FAST_MODEL, "output": {"alerts": []}}), ReplayOutputs(alerts=expected)
    )
    assert (tmp_path / "alerts.jsonl").read_text() == expected.read_text()
