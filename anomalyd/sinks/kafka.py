"""Publish alerts (JSON, keyed by stream key) and dead letters (unchanged) to Kafka topics.

``flush`` returns only once the broker acknowledged every record added since the last
flush (``acks=all``). Each record is sent until it is acknowledged, and once it is, never
again: after a failure the next ``flush`` recreates the producer (an idempotent producer
whose id the broker forgot never recovers) and sends only the records not acknowledged.

A dead letter that can never be published as it came (over the producer's size limit, or
refused by the broker as too large) is sent cut down: its value truncated, then, refused
still, as origin and reason alone (headers), with ``anomalyd.truncated`` holding the
original size. An error no retry cures (not authorized, an invalid topic) raises
:class:`~anomalyd.errors.PermanentSinkError`, from then on at every flush.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from anomalyd.config import KafkaConfig
from anomalyd.errors import PermanentSinkError, SinkError
from anomalyd.events import Alert, DeadLetter
from anomalyd.kafka_common import (
    client_options,
    connection_failure,
    is_fatal,
    is_refused_record,
    watch_connections,
)
from anomalyd.logs import get_logger
from anomalyd.sinks.base import Record
from anomalyd.sinks.jsonl import dumps

log = get_logger("anomalyd.kafka")

Message = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]

MAX_REQUEST_BYTES = 1_048_576  # kafka-python's max_request_size, which the producer keeps
_RECORD_OVERHEAD = 1024  # room for the batch and record headers around key, value and headers
_BARE_KEY_BYTES = 1024  # a key longer than this is left out of an "origin and reason" record


def to_message(record: Record) -> Message:
    """Key, value and headers for a record: alerts as JSON, dead letters as they came."""
    if isinstance(record, Alert):
        return record.key.encode(), dumps(record).rstrip(b"\n"), []
    if isinstance(record, DeadLetter):
        headers = [("anomalyd.reason", record.reason.encode())]
        headers += [(f"anomalyd.source.{k}", str(v).encode()) for k, v in record.source.items()]
        if record.raw is None and not record.from_kafka:
            return record.raw_key, dumps(record).rstrip(b"\n"), headers
        # A tombstone stays one; Kafka needs a key or a value, so a keyless one gets b"".
        key = b"" if record.raw is None and record.raw_key is None else record.raw_key
        return key, record.raw, headers
    raise TypeError(f"cannot publish {type(record).__name__}")


def message_size(message: Message) -> int:
    key, value, headers = message
    return len(key or b"") + len(value or b"") + sum(len(k) + len(v) for k, v in headers) + _RECORD_OVERHEAD


@dataclass
class _Pending:
    """A record added and not acknowledged yet; ``future`` is None until sent."""

    message: Message
    dead_letter: bool
    future: Any = None
    cut: int = 0  # 0: as it came; 1: value truncated; 2: origin and reason alone


class KafkaSink:
    """At-least-once publishing to one topic; ``on_cut`` is called for each dead letter cut down."""

    def __init__(
        self,
        topic: str,
        connection: KafkaConfig,
        flush_timeout_s: float = 30.0,
        max_message_bytes: int = MAX_REQUEST_BYTES,
    ):
        self.topic = topic
        self.connection = connection
        self.flush_timeout_s = flush_timeout_s
        self.max_message_bytes = max_message_bytes
        self.on_cut: Callable[[], None] | None = None
        self._producer: KafkaProducer | None = None
        self._pending: list[_Pending] = []
        self._sent = 0  # _pending[:_sent] have a future
        self._fatal: PermanentSinkError | None = None

    def _client(self) -> KafkaProducer:
        if self._producer is None:
            watch_connections()
            try:
                self._producer = KafkaProducer(
                    acks="all",
                    linger_ms=5,
                    max_block_ms=10_000,
                    max_request_size=MAX_REQUEST_BYTES,
                    **client_options(self.connection),
                )
            except KafkaError as exc:
                cause = connection_failure()
                if cause is not None:
                    self._fatal = PermanentSinkError(f"cannot connect to Kafka for {self.topic!r}: {cause}")
                    raise self._fatal from exc
                raise SinkError(f"cannot create a Kafka producer for {self.topic!r}: {exc}") from exc
        return self._producer

    def add(self, record: Record) -> None:
        item = _Pending(to_message(record), isinstance(record, DeadLetter))
        if item.dead_letter and message_size(item.message) > self.max_message_bytes:
            self._cut(item, "over the producer's size limit")
        self._pending.append(item)
        if self._sent == len(self._pending) - 1:
            with contextlib.suppress(SinkError):  # no producer now: flush() sends it
                self._send_next()

    def _send_next(self) -> None:
        item = self._pending[self._sent]
        key, value, headers = item.message
        producer = self._client()
        try:
            item.future = producer.send(self.topic, value=value, key=key, headers=headers)
        except KafkaError as exc:
            item.future = exc  # latched: judged by flush()
        except ValueError as exc:  # kafka-python checks topic names itself
            self._fatal = PermanentSinkError(f"cannot publish to {self.topic!r}: {exc}")
            raise self._fatal from exc
        self._sent += 1

    def flush(self) -> None:
        """Wait for every acknowledgement; SinkError (records kept) or PermanentSinkError."""
        if self._fatal is not None:
            raise self._fatal
        for _ in range(4):  # a refused dead letter is cut down and sent again at once
            if not self._pending:
                return
            try:
                while self._sent < len(self._pending):
                    self._send_next()
                self._client().flush(timeout=self.flush_timeout_s)
            except PermanentSinkError:
                raise
            except (KafkaError, SinkError) as exc:
                self._settle()  # what was acknowledged before the failure is done with
                self._failed(exc)
            error = self._settle()
            if error is not None:
                self._failed(error)
        raise SinkError(f"publishing to {self.topic!r} failed: {len(self._pending)} record(s) refused")

    def _settle(self) -> BaseException | None:
        """Drop what was acknowledged, cut down what was refused; the first other failure."""
        kept: list[_Pending] = []
        error: BaseException | None = None
        for item in self._pending:
            failure = _failure(item.future)
            if failure is None:
                continue
            item.future = None
            if is_refused_record(failure) and item.dead_letter and item.cut < 2:
                self._cut(item, str(failure))
            elif is_fatal(failure) or is_refused_record(failure):
                self._fatal = PermanentSinkError(f"publishing to {self.topic!r} is refused: {failure}")
                self._drop_producer()
                raise self._fatal from failure
            else:
                error = error or failure
            kept.append(item)
        self._pending, self._sent = kept, 0
        return error

    def _failed(self, error: BaseException) -> None:
        """Drop the producer, keep every unacknowledged record for the next flush, raise SinkError."""
        log.warning("publish_failed", topic=self.topic, unacknowledged=len(self._pending), error=str(error))
        self._drop_producer()
        for item in self._pending:
            item.future = None
        self._sent = 0
        raise SinkError(f"publishing to {self.topic!r} failed: {error}") from error

    def _cut(self, item: _Pending, why: str) -> None:
        """Truncate a dead letter's value to fit; cut already (or no room): origin and reason alone."""
        key, value, headers = item.message
        first = item.cut == 0
        if first:
            headers = [*headers, ("anomalyd.truncated", str(len(value or b"")).encode())]
        room = self.max_message_bytes - message_size((key, b"", headers))
        if first and room > 0 and value:
            item.message, item.cut = (key, value[:room], headers), 1
        else:
            bare_key = key if key is None or len(key) <= _BARE_KEY_BYTES else None
            item.message, item.cut = (bare_key, b"", headers), 2
        fields = {
            k.replace("anomalyd.", "").replace(".", "_"): v.decode("utf-8", "replace") for k, v in headers
        }
        log.warning("dead_letter_cut", topic=self.topic, why=why, form=item.cut, **fields)
        if first and self.on_cut is not None:
            self.on_cut()

    def _drop_producer(self) -> None:
        if self._producer is not None:
            with contextlib.suppress(KafkaError):
                self._producer.close(timeout=1)
            self._producer = None

    def close(self) -> None:
        if self._producer is not None:
            timeout = 1 if self._fatal is not None else self.flush_timeout_s
            self._producer.close(timeout=timeout)
            self._producer = None


def _failure(future: Any) -> BaseException | None:
    if future is None:
        return TimeoutError("not sent")
    if isinstance(future, BaseException):
        return future
    if not future.is_done:
        return TimeoutError("no acknowledgement in time")
    return future.exception if future.failed() else None
