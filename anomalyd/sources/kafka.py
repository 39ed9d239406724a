"""Consume a Kafka consumer group as batches of events.

Message values are JSON objects parsed by the same :class:`RecordParser` as files. The
stream key is ``input.key_field`` when set, else the message key, else the topic. Offsets
are never committed automatically: the loop commits the positions of processed batches,
after the alerts for them are acknowledged (see ``app.run``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import KafkaConnectionError, KafkaError, RetriableError
from kafka.structs import OffsetAndMetadata

from anomalyd.config import InputConfig, KafkaConfig, KafkaSourceConfig
from anomalyd.errors import SourceError
from anomalyd.events import DeadLetter, Event
from anomalyd.kafka_common import client_options, connection_failure, describe, is_fatal, watch_connections
from anomalyd.logs import get_logger
from anomalyd.parsing import RecordParser
from anomalyd.sources.base import Batch

log = get_logger("anomalyd.kafka")

Partition = tuple[str, int]
PartitionHook = Callable[[list[Partition]], None]


class _Listener(ConsumerRebalanceListener):
    def __init__(self, source: KafkaSource):
        self.source = source

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.source._revoked([(tp.topic, tp.partition) for tp in revoked])

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.source._assigned([(tp.topic, tp.partition) for tp in assigned])


class KafkaSource:
    """A consumer group member. Rebalance hooks let the app flush, commit and drop state.

    ``on_revoke`` runs inside ``poll`` before partitions go away: every batch handed out
    before has been processed by then, so the app can commit them. ``on_assign`` runs when
    new partitions arrive.
    """

    def __init__(
        self,
        config: KafkaSourceConfig,
        connection: KafkaConfig,
        input_config: InputConfig,
        should_stop: Callable[[], bool] = lambda: False,
        retry_backoff_s: float = 0.5,
        retry_backoff_max_s: float = 30.0,
    ):
        self.config = config
        self.connection = connection
        self.parser = RecordParser(input_config)
        self.should_stop = should_stop
        self.retry_backoff_s = retry_backoff_s
        self.retry_backoff_max_s = retry_backoff_max_s
        self.on_revoke: PartitionHook | None = None
        self.on_assign: PartitionHook | None = None
        self.assigned: set[Partition] = set()
        self.positions: dict[Partition, int] = {}
        self.keys_by_partition: dict[Partition, set[str]] = {}
        self.last_poll = 0.0
        self.commit_ok = True  # the last offset commit was accepted
        self._missing_since: float | None = None  # when a configured topic was first unknown
        self._consumer: KafkaConsumer | None = None
        self._resume: dict[Partition, int] = {}  # a snapshot's offsets, sought on assignment

    # -- lifecycle -------------------------------------------------------------------
    def _connect(self) -> KafkaConsumer | None:
        """Build the consumer, retrying with backoff while the broker is unreachable."""
        delay = self.retry_backoff_s
        while not self.should_stop():
            watch_connections()
            try:
                consumer = KafkaConsumer(
                    group_id=self.config.group_id,
                    enable_auto_commit=False,
                    auto_offset_reset=self.config.auto_offset_reset,
                    session_timeout_ms=self.config.session_timeout_ms,
                    heartbeat_interval_ms=self.config.heartbeat_interval_ms,
                    max_poll_interval_ms=self.config.max_poll_interval_ms,
                    fetch_max_wait_ms=self.config.fetch_max_wait_ms,
                    max_poll_records=self.config.max_poll_records,
                    **client_options(self.connection),
                )
            except (RetriableError, KafkaConnectionError) as exc:
                cause = connection_failure()
                if cause is not None:  # the broker answers and refuses us: no retry helps
                    raise SourceError(f"cannot connect to Kafka: {cause}") from exc
                log.warning("broker_unavailable", retry_in_s=delay, **describe(self.connection))
                _sleep_unless(self.should_stop, delay)
                delay = min(delay * 2, self.retry_backoff_max_s)
                continue
            except KafkaError as exc:
                raise SourceError(f"cannot create the Kafka consumer: {exc}") from exc
            listener = _Listener(self)
            if self.config.topic_pattern:
                consumer.subscribe(pattern=self.config.topic_pattern, listener=listener)
            else:
                consumer.subscribe(topics=list(self.config.topics), listener=listener)
            log.info("consumer_started", group_id=self.config.group_id, **describe(self.connection))
            return consumer
        return None

    def close(self) -> None:
        """Leave the group. The loop made its final commit already, so no hook runs now."""
        self.on_revoke = self.on_assign = None
        if self._consumer is not None:
            self._consumer.close(autocommit=False)
            self._consumer = None

    # -- the Source protocol -----------------------------------------------------------
    def expected_lengths(self) -> dict[str, int] | None:
        return None

    def batches(self) -> Iterator[Batch]:
        """Poll until stopped; an idle poll yields an empty batch so the loop can tick."""
        self._consumer = self._connect()
        while self._consumer is not None and not self.should_stop():
            try:
                polled = self._consumer.poll(
                    timeout_ms=self.config.poll_timeout_ms, max_records=self.config.max_poll_records
                )
            except KafkaError as exc:
                if is_fatal(exc):
                    raise SourceError(f"cannot consume {self._topics()}: {exc}") from exc
                log.warning("poll_failed", error=str(exc))
                _sleep_unless(self.should_stop, self.retry_backoff_s)
                continue
            self.last_poll = time.monotonic()
            if not self.assigned:
                self._check_topics()
            events: list[Event] = []
            dead: list[DeadLetter] = []
            for tp, messages in polled.items():
                part = (tp.topic, tp.partition)
                keys = self.keys_by_partition.setdefault(part, set())
                for message in messages:
                    parsed = self._parse(message)
                    if isinstance(parsed, Event):
                        events.append(parsed)
                        keys.add(parsed.key)
                    else:
                        dead.append(parsed)
                if messages:
                    self.positions[part] = messages[-1].offset + 1
            yield Batch(events, dead, dict(self.positions))

    def _parse(self, message: Any) -> Event | DeadLetter:
        source = {"topic": message.topic, "partition": message.partition, "offset": message.offset}
        key = message.key.decode("utf-8", "replace") if message.key is not None else message.topic
        if message.value is None:
            return _dead("message value is null (a tombstone)", message, source)
        try:
            record = orjson.loads(message.value)
        except orjson.JSONDecodeError as exc:
            return _dead(f"message value is not JSON: {exc}", message, source)
        if not isinstance(record, dict):
            return _dead(f"message value is not a JSON object: {type(record).__name__}", message, source)
        parsed = self.parser.parse(record, source, default_key=key)
        if isinstance(parsed, DeadLetter):
            return _dead(parsed.reason, message, source)
        return parsed

    def commit(self, positions: dict[Any, Any]) -> None:
        """Commit processed offsets of the partitions still assigned to this member."""
        if self._consumer is None:
            return
        offsets = {
            TopicPartition(topic, partition): OffsetAndMetadata(offset, "", -1)
            for (topic, partition), offset in positions.items()
            if (topic, partition) in self.assigned
        }
        if not offsets:
            return
        try:
            self._consumer.commit(offsets)
        except KafkaError as exc:
            if is_fatal(exc):
                raise SourceError(f"cannot commit offsets of {self._topics()}: {exc}") from exc
            # Typically the group rebalanced under us (CommitFailedError): the partitions'
            # next owner re-reads from the last commit, so nothing is lost, some is re-sent.
            log.warning("commit_failed", error=str(exc), error_type=type(exc).__name__)
            self.commit_ok = False
            return
        self.commit_ok = True
        log.debug("committed", offsets={f"{t.topic}:{t.partition}": o.offset for t, o in offsets.items()})

    def _check_topics(self) -> None:
        """SourceError when a configured topic stays unknown to the cluster (auto-create off).

        Read from the consumer's metadata cache (no request): a broker that creates topics
        on subscription lists it after the first refresh.
        """
        cluster = getattr(self._consumer, "_cluster", None)
        known = cluster.topics() if cluster is not None and cluster.brokers() else None
        missing = sorted(set(self.config.topics) - known) if known is not None else []
        if not missing:
            self._missing_since = None
            return
        now = time.monotonic()
        if self._missing_since is None:
            self._missing_since = now
        elif now - self._missing_since > self.connection.request_timeout_ms / 1000:
            names = ", ".join(repr(t) for t in missing)
            raise SourceError(f"topic {names} does not exist on the brokers (and is not created on use)")

    def _topics(self) -> str:
        return self.config.topic_pattern or ", ".join(self.config.topics)

    # -- snapshots --------------------------------------------------------------------
    def identity(self) -> str:
        """What a snapshot's offsets refer to: this consumer group on these topics."""
        topics = self.config.topic_pattern or ",".join(sorted(self.config.topics))
        return f"kafka:{self.config.group_id}:{topics}"

    def encode_positions(self, positions: dict[Partition, int]) -> dict[str, Any]:
        """Offsets, and the keys seen on each partition, as plain lists."""
        return {
            "partitions": [
                [topic, partition, int(offset), sorted(self.keys_by_partition.get((topic, partition), ()))]
                for (topic, partition), offset in sorted(positions.items())
            ]
        }

    def seek(self, saved: dict[str, Any]) -> None:
        """Resume from a snapshot: each partition, once assigned, from the snapshot's offset.

        Partitions of the snapshot that the group assigns to another member are treated as
        revoked on the first assignment (``on_revoke`` drops their keys' state).
        """
        for topic, partition, offset, part_keys in saved["partitions"]:
            part = (str(topic), int(partition))
            self._resume[part] = int(offset)
            self.positions[part] = int(offset)
            self.keys_by_partition[part] = set(part_keys)

    # -- rebalancing and metrics ---------------------------------------------------------
    def _revoked(self, partitions: list[Partition]) -> None:
        if partitions and self.on_revoke is not None:
            self.on_revoke(partitions)
        for part in partitions:
            self.assigned.discard(part)
            self.positions.pop(part, None)
            self.keys_by_partition.pop(part, None)
        log.info("partitions_revoked", partitions=_names(partitions))

    def _assigned(self, partitions: list[Partition]) -> None:
        self.assigned.update(partitions)
        log.info("partitions_assigned", partitions=_names(partitions))
        for part in partitions:
            offset = self._resume.pop(part, None)
            if offset is not None and self._consumer is not None:
                # The snapshot's state is as of this offset: go on from exactly there.
                self._consumer.seek(TopicPartition(*part), offset)
                self.positions[part] = offset
                log.info("partition_resumed", partition=f"{part[0]}:{part[1]}", offset=offset)
        elsewhere = sorted(set(self._resume) - set(partitions))
        if elsewhere:
            # The group gave these to another member: the snapshot's state for them goes.
            for part in elsewhere:
                del self._resume[part]
            self._revoked(elsewhere)
        if self.on_assign is not None:
            self.on_assign(partitions)

    def lag(self) -> dict[Partition, int]:
        """Messages behind the high watermark, per assigned partition (from the last fetch)."""
        lags: dict[Partition, int] = {}
        if self._consumer is None:
            return lags
        for topic, partition in list(self.assigned):
            tp = TopicPartition(topic, partition)
            high = self._consumer.highwater(tp)
            if high is None:
                continue
            position = self.positions.get((topic, partition))
            if position is None:
                continue
            lags[(topic, partition)] = max(0, high - position)
        return lags

    @property
    def ready(self) -> bool:
        """Assigned partitions, a poll within the last few poll timeouts, the last commit
        accepted, and the group coordinator answering heartbeats (a frozen broker does not)."""
        now = time.monotonic()
        recent = now - self.last_poll < max(5.0, 10 * self.config.poll_timeout_ms / 1000)
        return bool(self.assigned) and recent and self.commit_ok and self._heard_from_broker(now)

    def _heard_from_broker(self, now: float) -> bool:
        # kafka-python keeps when the last heartbeat was answered on its coordinator (a
        # background thread sends them every heartbeat_interval_ms, also between polls).
        heartbeat = getattr(getattr(self._consumer, "_coordinator", None), "heartbeat", None)
        answered = getattr(heartbeat, "last_receive", None)
        if not isinstance(answered, float) or answered == float("-inf"):
            return True  # not known (yet): the other checks decide
        return now - answered < 2 * self.config.heartbeat_interval_ms / 1000 + 1.0


def _dead(reason: str, message: Any, source: dict[str, Any]) -> DeadLetter:
    value: bytes | None = message.value
    text = value.decode("utf-8", "replace") if value is not None else None
    return DeadLetter(reason, text, source, raw=value, raw_key=message.key, from_kafka=True)


def _names(partitions: list[Partition]) -> list[str]:
    return sorted(f"{t}:{p}" for t, p in partitions)


def _sleep_unless(should_stop: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not should_stop() and time.monotonic() < deadline:
        time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
