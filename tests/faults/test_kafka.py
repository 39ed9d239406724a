"""Malformed Kafka records through the daemon and a real broker (Tansu): each one reaches the
dead-letter topic exactly once with its reason, one over the producer's size limit cut down
to fit, a tombstone as a tombstone; the offsets are committed to the end of the topic."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaProducer

from ..daemon import Daemon, service_config
from ..kafka_helpers import consume_all_confluent, create_topic, produce_confluent, wait_until
from ..test_service_kafka import committed_total, example_records

BIG = 1_500_000
BAD: list[tuple[bytes | None, bytes | None, str]] = [
    (b"machine", b"not json at all", "not JSON"),
    (b"machine", b"[1, 2, 3]", "not a JSON object"),
    (b"machine", b'{"timestamp": "2026-03-01 00:00:00"}', "missing field 'value'"),
    (b"machine", b'{"timestamp": "2026-03-01 00:00:00", "value": "NaN"}', "not finite"),
    (b"machine", b'{"timestamp": "yesterday", "value": 1.0}', "bad timestamp"),
    (b"machine", b'{"timestamp": "2026-03-01\\n00:00:00", "value": 1.0}', "bad timestamp"),
    (b"machine", b'{"timestamp": "2026-03-01 00:00:00", "value": 1.0', "not JSON"),
    (b"machine", b"\xff\xfe\x00 binary", "not JSON"),
    (b"machine", None, "tombstone"),
]


@pytest.fixture
def daemon_runner(tmp_path: Path) -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.kill()


def produce_big(bootstrap: str, topic: str) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, max_request_size=4 * BIG)
    try:
        producer.send(topic, key=b"machine", value=b"x" * BIG).get(timeout=30)
    finally:
        producer.close(timeout=5)


def test_malformed_records_are_dead_lettered_once_and_committed(
    kafka_broker, unique, tmp_path, daemon_runner
):
    bootstrap = kafka_broker.bootstrap
    topic, dlq, group = f"in-{unique}", f"dlq-{unique}", f"g-{unique}"
    create_topic(bootstrap, topic, 1)
    create_topic(bootstrap, dlq, 1)
    good = example_records(0, 250)
    produce_confluent(bootstrap, topic, good[:100] + [(k, v) for k, v, _ in BAD])
    produce_big(bootstrap, topic)
    produce_confluent(bootstrap, topic, good[100:])
    total = len(good) + len(BAD) + 1
    bad_offsets = list(range(100, 100 + len(BAD) + 1))

    output = {"alerts": [], "dead_letter": {"type": "kafka", "topic": dlq}}
    daemon = Daemon(service_config(bootstrap, topic, group, output=output), tmp_path).start()
    daemon_runner.append(daemon)
    daemon.wait_events(len(good))
    wait_until(lambda: committed_total(bootstrap, group) == total, 30, 0.2, "offsets committed to the end")
    assert daemon.metric("anomalyd_dead_letters_total") == len(BAD) + 1
    assert daemon.metric("anomalyd_dead_letters_cut_total") == 1
    daemon.wait_ready()
    assert daemon.stop() == 0

    letters = consume_all_confluent(bootstrap, dlq, idle_s=1.0)
    assert [int(m.headers["anomalyd.source.offset"]) for m in letters] == bad_offsets  # each once
    for (key, value, reason), letter in zip(BAD, letters, strict=False):
        assert (letter.key, letter.value) == (key, value)
        assert reason in letter.headers["anomalyd.reason"].decode()
    big = letters[-1]
    assert big.headers["anomalyd.truncated"] == str(BIG).encode()
    assert big.value is not None and 0 < len(big.value) < BIG and set(big.value) == {ord("x")}
    assert not daemon.events("publish_failed") and not daemon.events("flush_failed")
