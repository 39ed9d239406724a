"""The Kafka test fixtures work over the wire: produce, consume, groups, restart, stop."""

from __future__ import annotations

import os
import time

import pytest
from kafka import KafkaAdminClient, KafkaConsumer

from .kafka_broker import BrokerFactory, TansuBroker
from .kafka_helpers import (
    FAST_CONSUMER,
    consume_all_confluent,
    consume_confluent,
    create_topic,
    produce_confluent,
    wait_for_assignment,
    wait_until,
)


def test_keyed_records_round_trip_and_same_key_same_partition(kafka_broker: TansuBroker, unique: str) -> None:
    topic = f"events-{unique}"
    create_topic(kafka_broker.bootstrap, topic, partitions=4)
    records = [(f"key-{i % 5}".encode(), f"value-{i}".encode()) for i in range(40)]

    delivered = produce_confluent(kafka_broker.bootstrap, topic, records, headers={"source": b"test"})
    got = consume_confluent(kafka_broker.bootstrap, topic, n=40, timeout_s=15)

    assert len(delivered) == 40
    assert sorted(r.value for r in got) == sorted(v for _, v in records)
    assert all(r.headers == {"source": b"test"} for r in got)
    partitions_by_key: dict[bytes | None, set[int]] = {}
    for r in got:
        partitions_by_key.setdefault(r.key, set()).add(r.partition)
    assert all(len(p) == 1 for p in partitions_by_key.values()), partitions_by_key
    assert len({p for ps in partitions_by_key.values() for p in ps}) > 1  # keys spread out
    # Per partition, records keep their production order.
    for partition in range(4):
        values = [r.value for r in sorted(got, key=lambda r: r.offset) if r.partition == partition]
        sent = [v for (_, v), (p, _) in zip(records, delivered) if p == partition]
        assert values == sent


def test_quiet_period_read_returns_everything_then_stops(kafka_broker: TansuBroker, unique: str) -> None:
    topic = f"quiet-{unique}"
    create_topic(kafka_broker.bootstrap, topic, partitions=2)
    produce_confluent(kafka_broker.bootstrap, topic, [(None, b"a"), (b"k", b"b")])

    got = consume_all_confluent(kafka_broker.bootstrap, topic, idle_s=0.5, timeout_s=15)

    assert sorted(r.value for r in got) == [b"a", b"b"]


def test_kafka_python_group_gets_all_partitions_fast(kafka_broker: TansuBroker, unique: str) -> None:
    topic = f"group-{unique}"
    create_topic(kafka_broker.bootstrap, topic, partitions=4)
    produce_confluent(kafka_broker.bootstrap, topic, [(b"k", b"before-join")])
    consumer = KafkaConsumer(
        bootstrap_servers=kafka_broker.bootstrap, group_id=f"g-{unique}", **FAST_CONSUMER
    )
    try:
        consumer.subscribe([topic])
        start = time.monotonic()
        records = wait_for_assignment(consumer, partitions=4, timeout_s=10)
        elapsed = time.monotonic() - start

        def fetched() -> list:
            for batch in consumer.poll(timeout_ms=100).values():
                records.extend(batch)
            return records

        wait_until(fetched, timeout_s=5, interval_s=0, message="the record produced before the join")
    finally:
        consumer.close()

    assert elapsed < 5, f"join took {elapsed:.1f} s; FAST_CONSUMER should give ~1 s"
    assert [r.value for r in records] == [b"before-join"]  # auto_offset_reset=earliest


def test_restart_keeps_address_and_loses_topics(kafka_broker_factory: BrokerFactory, unique: str) -> None:
    broker = kafka_broker_factory()
    bootstrap, old_pid = broker.bootstrap, broker.pid
    topic = f"lost-{unique}"
    create_topic(bootstrap, topic, partitions=1)

    broker.restart()

    assert broker.bootstrap == bootstrap
    assert broker.pid != old_pid
    assert _pid_gone(old_pid)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        assert topic not in admin.list_topics()
    finally:
        admin.close()
    create_topic(bootstrap, topic, partitions=1)
    produce_confluent(bootstrap, topic, [(None, b"after-restart")])
    assert [r.value for r in consume_confluent(bootstrap, topic, n=1, timeout_s=15)] == [b"after-restart"]


def test_restart_with_connected_client_is_quick_when_hard(kafka_broker_factory: BrokerFactory) -> None:
    broker = kafka_broker_factory()
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=3000)
    try:
        admin.list_topics()
        start = time.monotonic()
        broker.restart(grace_s=0)  # with a client connected, a SIGTERM stop would linger ~5 s
        elapsed = time.monotonic() - start
    finally:
        admin.close()
    assert broker.running
    assert elapsed < 2


def test_stop_leaves_no_process(kafka_broker_factory: BrokerFactory) -> None:
    broker = kafka_broker_factory()
    pid = broker.pid
    assert pid is not None and broker.running

    broker.stop()
    broker.stop()  # idempotent

    assert not broker.running
    assert _pid_gone(pid)
    assert "ready in" in broker.log_tail()


def test_factory_brokers_are_independent(kafka_broker_factory: BrokerFactory, unique: str) -> None:
    first, second = kafka_broker_factory(), kafka_broker_factory()
    assert first.bootstrap != second.bootstrap
    create_topic(first.bootstrap, f"only-first-{unique}", partitions=1)
    consumer = KafkaConsumer(bootstrap_servers=second.bootstrap, **FAST_CONSUMER)
    try:
        assert f"only-first-{unique}" not in consumer.topics()
    finally:
        consumer.close()


def _pid_gone(pid: int | None) -> bool:
    """True once no process has this pid (our broker was reaped, so the pid is not a zombie)."""
    assert pid is not None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize("partitions", [1, 3])
def test_create_topic_makes_exact_partition_count(
    kafka_broker: TansuBroker, unique: str, partitions: int
) -> None:
    topic = f"layout-{partitions}-{unique}"
    create_topic(kafka_broker.bootstrap, topic, partitions=partitions)
    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.bootstrap)
    try:
        assert consumer.partitions_for_topic(topic) == set(range(partitions))
    finally:
        consumer.close()
