"""KafkaSink against a real broker: acknowledged flushes, and recovery across a broker restart."""

import orjson
import pytest

from anomalyd.config import KafkaConfig
from anomalyd.errors import SinkError
from anomalyd.events import Alert, DeadLetter
from anomalyd.sinks.kafka import KafkaSink, to_message

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
