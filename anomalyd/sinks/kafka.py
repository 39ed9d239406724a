"""Publish alerts (JSON, keyed by stream key) and dead letters (unchanged) to Kafka topics.

``flush`` returns only once the broker acknowledged every record added since the last
flush (``acks=all``). A failed send latches; the next ``flush`` recreates the producer (an
idempotent producer whose id the broker forgot never recovers) and sends everything
unacknowledged again, so nothing is lost; duplicates keep their ``alert_id``.
"""

from __future__ import annotations

import contextlib
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from anomalyd.config import KafkaConfig
from anomalyd.errors import SinkError
from anomalyd.events import Alert, DeadLetter
from anomalyd.kafka_common import client_options
from anomalyd.logs import get_logger
from anomalyd.sinks.base import Record
from anomalyd.sinks.jsonl import dumps

log = get_logger("anomalyd.kafka")

Message = tuple[bytes | None, bytes, list[tuple[str, bytes]]]


def to_message(record: Record) -> Message:
    """Key, value and headers for a record: alerts as JSON, dead letters as they came."""
    if isinstance(record, Alert):
        return record.key.encode(), dumps(record).rstrip(b"\n"), []
    if isinstance(record, DeadLetter):
        headers = [("anomalyd.reason", record.reason.encode())]
        headers += [(f"anomalyd.source.{k}", str(v).encode()) for k, v in record.source.items()]
        value = record.raw if record.raw is not None else dumps(record).rstrip(b"\n")
        return record.raw_key, value, headers
    raise TypeError(f"cannot publish {type(record).__name__}")


class KafkaSink:
    """At-least-once publishing to one topic."""

    def __init__(self, topic: str, connection: KafkaConfig, flush_timeout_s: float = 30.0):
        self.topic = topic
        self.connection = connection
        self.flush_timeout_s = flush_timeout_s
        self._producer: KafkaProducer | None = None
        self._unacked: list[Message] = []
        self._futures: list[Any] = []

    def _client(self) -> KafkaProducer:
        if self._producer is None:
            try:
                self._producer = KafkaProducer(
                    acks="all",
                    linger_ms=5,
                    max_block_ms=10_000,
                    **client_options(self.connection),
                )
            except KafkaError as exc:
                raise SinkError(f"cannot create a Kafka producer for {self.topic!r}: {exc}") from exc
        return self._producer

    def add(self, record: Record) -> None:
        self._unacked.append(to_message(record))
        if len(self._futures) == len(self._unacked) - 1:
            with contextlib.suppress(SinkError):  # no producer now: flush() sends it
                self._send(self._unacked[-1])

    def _send(self, message: Message) -> None:
        key, value, headers = message
        try:
            self._futures.append(self._client().send(self.topic, value=value, key=key, headers=headers))
        except KafkaError as exc:
            self._futures.append(exc)  # latched: flush() raises and the next flush re-sends

    def flush(self) -> None:
        """Wait for every acknowledgement; on a failure drop the producer and raise SinkError.

        The unacknowledged records stay queued: the next flush sends them all again
        through a new producer.
        """
        if not self._unacked:
            return
        error: BaseException | None = None
        try:
            for message in self._unacked[len(self._futures) :]:
                self._send(message)
            self._client().flush(timeout=self.flush_timeout_s)
            error = next(filter(None, map(_failure, self._futures)), None)
        except (KafkaError, SinkError) as exc:
            error = exc
        if error is None:
            self._unacked.clear()
            self._futures.clear()
            return
        log.warning("publish_failed", topic=self.topic, unacknowledged=len(self._unacked), error=str(error))
        self._drop_producer()
        raise SinkError(f"publishing to {self.topic!r} failed: {error}") from error

    def _drop_producer(self) -> None:
        if self._producer is not None:
            with contextlib.suppress(KafkaError):
                self._producer.close(timeout=1)
            self._producer = None
        self._futures = []

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=self.flush_timeout_s)
            self._producer = None


def _failure(future: Any) -> BaseException | None:
    if isinstance(future, BaseException):
        return future
    if not future.is_done:
        return TimeoutError("no acknowledgement in time")
    return future.exception if future.failed() else None
