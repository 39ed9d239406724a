"""The types that cross module lines: Event in, Alert and DeadLetter out.

>>> values = np.array([84.266])
>>> alert_id("sensor-1", 1.7e9, values, 0) == alert_id("sensor-1", 1.7e9, values.copy(), 0)
True
>>> alert_id("sensor-1", 1.7e9, values, 0) != alert_id("sensor-1", 1.7e9, values, 1)
True
>>> len(alert_id("sensor-1", 1.7e9, values, 0))
20
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ALERT_SCHEMA_VERSION = 1


@dataclass(slots=True)
class Event:
    """One record of one stream.

    ``values`` holds the raw value fields in config order (float64). ``source`` says where
    the record came from: ``{"file": ..., "row": ...}`` for files (``row`` counts data rows
    from 0, header excluded), ``{"topic": ..., "partition": ..., "offset": ...}`` for Kafka.
    """

    key: str
    timestamp: str
    time: float
    values: np.ndarray
    source: dict[str, Any]


@dataclass(slots=True)
class DeadLetter:
    """A record that could not be processed, kept unchanged with the reason."""

    reason: str
    record: Any
    source: dict[str, Any]
    raw: bytes | None = None  # the message value exactly as received (Kafka), for a DLQ topic
    raw_key: bytes | None = None
    from_kafka: bool = False  # raw and raw_key are a message's own (raw None: a tombstone)

    def to_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "source": self.source, "record": self.record}


@dataclass(slots=True)
class Alert:
    """An anomaly raised for one event; serialised as one JSON object (docs/alerts.md)."""

    alert_id: str
    key: str
    timestamp: str
    score: float
    threshold: float
    values: dict[str, float]
    top_features: list[dict[str, float | str]]
    model_version: int
    sequence: int
    source: dict[str, Any]
    grade: float = math.nan  # the score's grade for its key, in [0, 1]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": ALERT_SCHEMA_VERSION,
            "alert_id": self.alert_id,
            "key": self.key,
            "timestamp": self.timestamp,
            "score": self.score,
            "grade": self.grade,
            "threshold": self.threshold,
            "values": self.values,
            "top_features": self.top_features,
            "model_version": self.model_version,
            "sequence": self.sequence,
            "source": self.source,
            **self.extra,
        }


def alert_id(key: str, time: float, values: np.ndarray, occurrence: int) -> str:
    """Deterministic id from the record itself: its key, its time (epoch seconds, NaN without
    a timestamp), its raw values, and ``occurrence``, how many records of the key came
    before it in its run of records with the same time (0 for almost every record; without
    a timestamp the whole stream is one run, so it is the record's place in its key's stream).

    Nothing here counts what one process has seen, so a replay and a consumer of the same
    records, a restarted daemon (with or without its state) and a partition's next owner
    give a record the same id, and a re-sent alert keeps it.
    """
    identity = struct.pack("<dq", time, occurrence) + np.ascontiguousarray(values, dtype="<f8").tobytes()
    digest = hashlib.blake2b(key.encode() + b"\x1f" + identity, digest_size=10)
    return digest.hexdigest()
