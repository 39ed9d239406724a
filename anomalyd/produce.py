"""`anomalyd produce`: stream CSV/JSONL records into a Kafka topic (demos, tests, benchmarks).

Each record becomes a JSON object with the configured timestamp, key and value fields,
keyed by its stream key, so the daemon reading the topic with the same config sees the
same events as a replay of the files.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from kafka import KafkaProducer

from anomalyd.config import Config
from anomalyd.events import Event
from anomalyd.kafka_common import client_options
from anomalyd.sources.file import FileSource


def record_of(event: Event, config: Config) -> dict[str, Any]:
    """The JSON record a producer sends for an event (the inverse of RecordParser)."""
    cfg = config.input
    record: dict[str, Any] = dict(zip(cfg.value_fields, event.values.tolist(), strict=True))
    ts = cfg.timestamp
    if ts.split:
        assert ts.date_field is not None and ts.time_field is not None
        date, _, clock = event.timestamp.partition(" ")
        record[ts.date_field], record[ts.time_field] = date, clock
    elif ts.field is not None:
        record[ts.field] = event.timestamp
    if cfg.key_field is not None:
        record[cfg.key_field] = event.key
    return record


def produce(
    paths: Sequence[str],
    topic: str,
    config: Config,
    rate: float | None = None,
    loop: bool = False,
    should_stop: Callable[[], bool] = lambda: False,
) -> int:
    """Send every valid record of ``paths`` (again and again with ``loop``); returns the count."""
    producer = KafkaProducer(acks="all", linger_ms=5, **client_options(config.kafka))
    sent = 0
    started = time.monotonic()
    try:
        while True:
            source = FileSource(paths, config.input)
            for batch in source.batches():
                for event in batch.events:
                    value = orjson.dumps(record_of(event, config))
                    producer.send(topic, key=event.key.encode(), value=value)
                    sent += 1
                    if rate:
                        delay = started + sent / rate - time.monotonic()
                        if delay > 0:
                            time.sleep(delay)
                if should_stop():
                    return sent
            if not loop or should_stop():
                return sent
    finally:
        producer.flush()
        producer.close()
