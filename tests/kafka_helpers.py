"""Client-side helpers for tests against the Tansu broker (see ``tests/kafka_broker.py``).

The daemon talks Kafka through kafka-python; tests check what it did through **confluent-kafka**
(librdkafka), an independent client, so a bug shared by the daemon and its test client cannot
hide itself. Every wait here has a deadline.

Known broker gaps (``shared/BROKER.md``) that tests must not rely on:

- LATEST offsets are wrong on non-empty partitions: ``end_offsets``, ``seek_to_end``,
  ``list_partition_offsets(LATEST)``, confluent's ``get_watermark_offsets`` and
  ``auto_offset_reset="latest"``. Count consumed records or use kafka-python's ``highwater()``;
  test "start from latest" on empty topics only.
- ``delete_records``, ``create_partitions``, ``describe_groups``, ``offsets_for_times``,
  out-of-range / position-reset behaviour, aborted transactions under ``read_committed``.
- Producing to or subscribing to an unknown topic silently creates it with 4 partitions,
  whatever ``allow_auto_create_topics`` says: create topics explicitly with :func:`create_topic`.
- A group keeps the session timeout of its first member, and the broker holds each JoinGroup
  for half of it: use a fresh group id per consumer (see :func:`unique_group`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .kafka_broker import missing_dev_extra

try:
    from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
    from confluent_kafka.admin import AdminClient, NewTopic
except ModuleNotFoundError:
    missing_dev_extra("confluent-kafka is not installed")

T = TypeVar("T")

# kafka-python consumer settings for tests: a 1 s JoinGroup hold (session / 2, 1 s floor) instead
# of 23 s with the defaults, and ~25 ms fetch latency instead of ~130 ms. max_poll_interval_ms
# is client side only. Unpack into KafkaConsumer or the daemon's consumer config.
FAST_CONSUMER: dict[str, Any] = {
    "session_timeout_ms": 2000,
    "heartbeat_interval_ms": 500,
    "max_poll_interval_ms": 30000,
    "fetch_max_wait_ms": 100,
    "auto_offset_reset": "earliest",
    "enable_auto_commit": False,
}

# confluent-kafka consumer settings used by the readers below; a join takes about 3 s.
CONFLUENT_CONSUMER: dict[str, Any] = {
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 1000,
    "fetch.wait.max.ms": 100,
    "auto.offset.reset": "earliest",
}

ADMIN_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ConsumedRecord:
    """One consumed record. Headers become a dict (a repeated header name keeps its last value)."""

    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes] = field(default_factory=dict)
    partition: int = 0
    offset: int = 0


def unique_group(prefix: str = "test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def wait_until(
    predicate: Callable[[], T], timeout_s: float, interval_s: float = 0.05, message: str = ""
) -> T:
    """Call ``predicate`` until it returns something truthy and return that; TimeoutError after ``timeout_s``.

    The predicate is always called at least once, and once more at the deadline.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if result:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"not true within {timeout_s:.1f} s: {message or predicate!r}")
        time.sleep(min(interval_s, remaining))


def wait_for_assignment(consumer: Any, partitions: int, timeout_s: float = 10.0) -> list[Any]:
    """Poll a subscribed kafka-python ``consumer`` until it owns ``partitions`` partitions.

    Returns the records those polls fetched, so none is lost. ~10 s covers a few 1 s join holds
    at FAST_CONSUMER settings.

    The polls run back to back, never with a sleep between them: kafka-python 3.0.12 throws
    away a JoinGroup/SyncGroup round that completes while no ``poll()`` is running and sends a
    fresh JoinGroup (``BaseCoordinator.join_group_async`` replaces a *done* ``_join_task``).
    The broker holds each JoinGroup ~1 s, so a loop whose poll timeout is not longer than
    that hold, plus any pause between polls, can rejoin forever.
    """
    records: list[Any] = []

    def owns_all() -> bool:
        for batch in consumer.poll(timeout_ms=100).values():
            records.extend(batch)
        return len(consumer.assignment()) == partitions

    wait_until(owns_all, timeout_s, interval_s=0, message=f"consumer owns {partitions} partitions")
    return records


def create_topic(bootstrap: str, name: str, partitions: int, timeout_s: float = ADMIN_TIMEOUT_S) -> None:
    """Create ``name`` with ``partitions`` partitions and wait until metadata shows all of them."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1)], request_timeout=timeout_s
    )
    futures[name].result(timeout=timeout_s)

    def visible() -> bool:
        topic = admin.list_topics(topic=name, timeout=timeout_s).topics.get(name)
        return topic is not None and topic.error is None and len(topic.partitions) == partitions

    wait_until(visible, timeout_s, interval_s=0.05, message=f"topic {name} with {partitions} partitions")


def produce_confluent(
    bootstrap: str,
    topic: str,
    records: list[tuple[bytes | None, bytes]],
    headers: dict[str, str | bytes] | None = None,
    timeout_s: float = 10.0,
) -> list[tuple[int, int]]:
    """Send ``(key, value)`` records with acks=all; return ``(partition, offset)`` per record, in order.

    ``headers`` go on every record. Raises KafkaException on any delivery error and
    TimeoutError if the producer cannot flush within ``timeout_s``.
    """
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": int(timeout_s * 1000),
        }
    )
    delivered: list[tuple[int, int] | None] = [None] * len(records)
    errors: list[str] = []

    def report(index: int) -> Callable[[KafkaError | None, Any], None]:
        def on_delivery(err: KafkaError | None, msg: Any) -> None:
            if err is not None:
                errors.append(f"record {index}: {err}")
            else:
                delivered[index] = (msg.partition(), msg.offset())

        return on_delivery

    deadline = time.monotonic() + timeout_s
    for index, (key, value) in enumerate(records):
        _produce_one(producer, deadline, topic, key, value, headers, report(index))
    remaining = producer.flush(max(deadline - time.monotonic(), 0.0))
    if remaining:
        raise TimeoutError(f"{remaining} of {len(records)} records to {topic} not delivered in {timeout_s} s")
    if errors:
        raise KafkaException(f"delivery to {topic} failed: " + "; ".join(errors[:5]))
    return [d for d in delivered if d is not None]


def _produce_one(
    producer: Producer,
    deadline: float,
    topic: str,
    key: bytes | None,
    value: bytes,
    headers: dict[str, str | bytes] | None,
    on_delivery: Callable[[KafkaError | None, Any], None],
) -> None:
    while True:
        try:
            producer.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery)
            producer.poll(0)
            return
        except BufferError:  # local queue full: serve delivery reports, then retry
            if time.monotonic() >= deadline:
                raise TimeoutError(f"producer queue for {topic} stayed full") from None
            producer.poll(0.1)


def consume_confluent(
    bootstrap: str, topic: str, n: int, timeout_s: float = 15.0, group_id: str | None = None
) -> list[ConsumedRecord]:
    """Read exactly ``n`` records from ``topic`` (earliest first) in a consumer group.

    ``group_id`` defaults to a fresh one, so every call starts at the beginning. Offsets of the
    returned records are committed on close, so passing the same ``group_id`` again continues
    after them. Raises TimeoutError saying how many arrived if fewer than ``n`` do in
    ``timeout_s`` (which includes the ~3 s group join).
    """
    consumer = _subscribed_consumer(bootstrap, topic, group_id)
    got: list[ConsumedRecord] = []
    last_error = None
    try:
        deadline = time.monotonic() + timeout_s
        while len(got) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"got {len(got)} of {n} records from {topic} in {timeout_s} s (last error: {last_error})"
                )
            msg = consumer.poll(min(remaining, 0.2))
            if msg is None:
                continue
            if msg.error():
                last_error = _check_error(msg.error())
                continue
            got.append(_received(msg))
    finally:
        consumer.close()
    return got


def consume_all_confluent(
    bootstrap: str, topic: str, idle_s: float = 1.0, timeout_s: float = 15.0
) -> list[ConsumedRecord]:
    """Everything on ``topic`` from the beginning, read until nothing new arrives for ``idle_s``.

    This is a bounded quiet-period check, not proof that nothing more will ever come: use it
    for "no further alerts" after the producer under test has had time to act. The quiet period
    is timed from the group assignment, so the join hold does not count as quiet. Raises
    TimeoutError if there is no assignment, or the topic never goes quiet, within ``timeout_s``.
    Uses a fresh group and commits nothing.
    """
    assigned: list[bool] = []
    consumer = _subscribed_consumer(
        bootstrap, topic, None, on_assign=lambda c, parts: assigned.append(True), commit=False
    )
    got: list[ConsumedRecord] = []
    last_error = None
    try:
        deadline = time.monotonic() + timeout_s
        quiet_since: float | None = None
        while True:
            now = time.monotonic()
            if assigned and quiet_since is None:
                quiet_since = now
            if quiet_since is not None and now - quiet_since >= idle_s:
                return got
            if now >= deadline:
                state = "never assigned" if not assigned else f"still receiving after {len(got)} records"
                raise TimeoutError(
                    f"{topic} not quiet within {timeout_s} s: {state} (last error: {last_error})"
                )
            msg = consumer.poll(min(0.1, max(deadline - now, 0.0)))
            if msg is None:
                continue
            if msg.error():
                last_error = _check_error(msg.error())
                continue
            got.append(_received(msg))
            quiet_since = time.monotonic()
    finally:
        consumer.close()


def _subscribed_consumer(
    bootstrap: str,
    topic: str,
    group_id: str | None,
    on_assign: Callable[[Any, Any], None] | None = None,
    commit: bool = True,
) -> Consumer:
    consumer = Consumer(
        {
            **CONFLUENT_CONSUMER,
            "bootstrap.servers": bootstrap,
            "group.id": group_id or unique_group("reader"),
            "enable.auto.commit": commit,
        }
    )
    if on_assign is None:
        consumer.subscribe([topic])
    else:
        consumer.subscribe([topic], on_assign=on_assign)
    return consumer


def _check_error(error: KafkaError) -> KafkaError:
    """Raise fatal consumer errors; hand back transient ones (librdkafka retries those itself)."""
    if error.fatal():
        raise KafkaException(error)
    return error


def _received(msg: Any) -> ConsumedRecord:
    return ConsumedRecord(
        key=msg.key(),
        value=msg.value(),
        headers=dict(msg.headers() or []),
        partition=msg.partition(),
        offset=msg.offset(),
    )
