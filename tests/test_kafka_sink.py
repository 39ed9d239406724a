"""KafkaSink against a real broker: acknowledged flushes, and recovery across a broker restart."""

import orjson
import pytest

from anomalyd.config import KafkaConfig
from anomalyd.errors import PermanentSinkError, SinkError
from anomalyd.events import Alert, DeadLetter
from anomalyd.sinks.kafka import MAX_REQUEST_BYTES, KafkaSink, to_message

from .kafka_helpers import consume_all_confluent, create_topic, wait_until


def alert(i: int) -> Alert:
    return Alert(
        f"id{i}", "sensor-1", "t", 2.0, 1.0, {"value": 1.0}, [], 1, i, {"topic": "in", "partition": 0}
    )


def test_alert_message_is_keyed_json():
    key, value, headers = to_message(alert(3))
    assert key == b"sensor-1" and headers == []
    assert orjson.loads(value)["alert_id"] == "id3"


def test_dead_letter_message_is_the_raw_value_with_reason_headers():
    dead = DeadLetter("bad", "x", {"topic": "in", "partition": 2, "offset": 9}, raw=b"\xff raw", raw_key=b"k")
    key, value, headers = to_message(dead)
    assert (key, value) == (b"k", b"\xff raw")
    assert dict(headers) == {
        "anomalyd.reason": b"bad",
        "anomalyd.source.topic": b"in",
        "anomalyd.source.partition": b"2",
        "anomalyd.source.offset": b"9",
    }


def test_flush_waits_for_acks(kafka_broker, unique):
    topic = f"alerts-{unique}"
    create_topic(kafka_broker.bootstrap, topic, 1)
    sink = KafkaSink(topic, KafkaConfig(bootstrap_servers=(kafka_broker.bootstrap,)))
    for i in range(20):
        sink.add(alert(i))
    sink.flush()
    sink.close()
    got = consume_all_confluent(kafka_broker.bootstrap, topic, idle_s=0.5)
    assert [orjson.loads(m.value)["alert_id"] for m in got] == [f"id{i}" for i in range(20)]


def test_unacknowledged_alerts_are_resent_after_a_broker_restart(kafka_broker_factory, unique):
    broker = kafka_broker_factory()
    topic = f"alerts-{unique}"
    create_topic(broker.bootstrap, topic, 1)
    connection = KafkaConfig(bootstrap_servers=(broker.bootstrap,), request_timeout_ms=3000)
    sink = KafkaSink(topic, connection, flush_timeout_s=3)
    sink.add(alert(0))
    sink.flush()
    broker.restart(grace_s=0)  # memory storage: the topic and the producer id are gone
    create_topic(broker.bootstrap, topic, 1)
    sink.add(alert(1))

    def flushed() -> bool:
        try:
            sink.flush()
        except SinkError:
            return False
        return True

    wait_until(flushed, 60, 0.2, "flush succeeds with a new producer")
    sink.close()
    got = consume_all_confluent(broker.bootstrap, topic, idle_s=0.5)
    assert [orjson.loads(m.value)["alert_id"] for m in got] == ["id1"]


def test_unknown_record_type_is_refused():
    with pytest.raises(TypeError):
        to_message(object())  # type: ignore[arg-type]


def big_dead_letter(offset: int, size: int = 1_500_000) -> DeadLetter:
    raw = b"x" * size
    source = {"topic": "in", "partition": 0, "offset": offset}
    return DeadLetter("message value is not JSON", None, source, raw=raw, raw_key=b"k", from_kafka=True)


def test_a_tombstone_is_dead_lettered_as_a_tombstone():
    dead = DeadLetter("null", None, {"topic": "in", "offset": 1}, raw=None, raw_key=b"k", from_kafka=True)
    assert to_message(dead)[:2] == (b"k", None)
    keyless = DeadLetter("null", None, {"topic": "in", "offset": 1}, from_kafka=True)
    assert to_message(keyless)[:2] == (b"", None)  # Kafka takes no record without key and value


def test_a_dead_letter_over_the_size_limit_is_sent_once_cut_down(kafka_broker, unique):
    topic = f"dlq-{unique}"
    create_topic(kafka_broker.bootstrap, topic, 1)
    sink = KafkaSink(topic, KafkaConfig(bootstrap_servers=(kafka_broker.bootstrap,)))
    cut: list[bool] = []
    sink.on_cut = lambda: cut.append(True)
    sink.add(alert(0))
    sink.add(big_dead_letter(7))
    sink.add(alert(1))
    sink.flush()
    sink.close()
    got = consume_all_confluent(kafka_broker.bootstrap, topic, idle_s=0.5)
    assert len(got) == 3 and cut == [True]
    letter = got[1]
    assert letter.headers["anomalyd.truncated"] == b"1500000"
    assert letter.headers["anomalyd.source.offset"] == b"7"
    assert letter.headers["anomalyd.reason"] == b"message value is not JSON"
    assert letter.value is not None and 0 < len(letter.value) < MAX_REQUEST_BYTES
    assert letter.value == b"x" * len(letter.value)


def test_a_refused_send_is_cut_down_and_acknowledged_records_are_not_sent_again(kafka_broker, unique):
    # The sink believes 4 MB fit; the producer's own limit (1 MiB) refuses the record at send().
    topic = f"dlq-{unique}"
    create_topic(kafka_broker.bootstrap, topic, 1)
    connection = KafkaConfig(bootstrap_servers=(kafka_broker.bootstrap,))
    sink = KafkaSink(topic, connection, max_message_bytes=4 * MAX_REQUEST_BYTES)
    for i in range(5):
        sink.add(alert(i))
    sink.flush()
    sink.add(alert(5))
    sink.add(big_dead_letter(3, size=3_000_000))  # cut to fit 4 MB: refused again, then bare
    sink.add(alert(6))
    sink.flush()
    sink.flush()
    sink.close()
    got = consume_all_confluent(kafka_broker.bootstrap, topic, idle_s=0.5)
    alerts = [orjson.loads(m.value)["alert_id"] for m in got if "anomalyd.reason" not in m.headers]
    letters = [m for m in got if "anomalyd.reason" in m.headers]
    assert sorted(alerts) == [f"id{i}" for i in range(7)]  # each exactly once
    assert len(letters) == 1
    assert letters[0].value in (b"", None) and letters[0].headers["anomalyd.truncated"] == b"3000000"


def test_a_permanent_error_is_not_retried(kafka_broker, unique):
    sink = KafkaSink("not a valid topic name!", KafkaConfig(bootstrap_servers=(kafka_broker.bootstrap,)))
    sink.add(alert(0))
    with pytest.raises(PermanentSinkError):
        sink.flush()
    with pytest.raises(PermanentSinkError):
        sink.flush()
    sink.close()
