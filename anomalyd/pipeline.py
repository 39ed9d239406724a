"""Batch of events -> features -> windows -> scores -> decisions -> alerts. Pure: no I/O.

The same :class:`Pipeline` serves a file replay and the Kafka daemon. Results never depend
on how the stream was cut into batches: events are taken one by one in stream order, and
only the forward passes are batched, split wherever a model is (re)trained.

A key goes through three states:

1. *warming up* (its first ``warmup`` events): windows are kept to train on, nothing is
   scored in the output. When the key's model is trained its threshold is calibrated on
   the scores of those windows.
2. *ready*: each window is scored; the threshold classifies then updates; the alert gate
   turns runs of anomalous points into alerts.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from anomalyd.alerting import AlertGate
from anomalyd.config import Config
from anomalyd.detector import Detector
from anomalyd.events import Alert, DeadLetter, Event, alert_id
from anomalyd.features import FeatureError, FeatureTransform
from anomalyd.sources.base import Batch
from anomalyd.thresholds import Threshold, make_threshold
from anomalyd.windows import WindowStore

TOP_FEATURES = 3


@dataclass(slots=True)
class KeyState:
    index: int
    model_id: str
    warmup: int
    threshold: Threshold
    gate: AlertGate
    sequence: int = 0


@dataclass
class BatchResult:
    """What one batch produced; arrays are aligned with ``events`` (the records that parsed)."""

    events: list[Event]
    scores: np.ndarray
    thresholds: np.ndarray
    anomalous: np.ndarray
    alerts: list[Alert] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    trained: list[tuple[str, int]] = field(default_factory=list)
    seconds: float = 0.0  # time spent in process()


@dataclass(slots=True)
class _Pending:
    position: int
    sequence: int
    state: KeyState
    window: np.ndarray
    decide: bool  # False: calibrate the threshold only (key still warming up)


class Pipeline:
    """Scores events and raises alerts; holds all per-key state.

    ``expected_lengths`` (events per key, known for a replay) lets ``warmup_fraction`` apply.
    """

    def __init__(self, config: Config, expected_lengths: dict[str, int] | None = None):
        self.config = config
        self.features = FeatureTransform(config.input)
        self.windows = WindowStore(
            config.window.length, self.features.n_features, config.window.stride, config.window.normalise
        )
        self.detector = Detector(
            config.model, config.training, self.features.n_features, config.window.length
        )
        self.expected_lengths = expected_lengths or {}
        self.states: dict[str, KeyState] = {}

    def warmup_for(self, key: str) -> int:
        """Events a key learns from before it may alert (NAB: 15% of the file, at most 750)."""
        training = self.config.training
        warmup = training.warmup_events
        total = self.expected_lengths.get(key)
        if training.warmup_fraction is not None and total is not None:
            warmup = min(warmup, math.floor(training.warmup_fraction * total))
        return max(warmup, self.config.window.length)

    def _state(self, key: str, index: int) -> KeyState:
        state = self.states.get(key)
        if state is None:
            alerts = self.config.alerts
            state = self.states[key] = KeyState(
                index=index,
                model_id=self.detector.model_id(key),
                warmup=self.warmup_for(key),
                threshold=make_threshold(self.config.threshold),
                gate=AlertGate(alerts.min_consecutive, alerts.cooldown_events),
            )
        return state

    def forget(self, keys: set[str]) -> None:
        """Drop the state of ``keys`` (their partitions moved to another consumer).

        A key seen again later starts over: warm-up, training (per-key scope), calibration.
        """
        for key in keys:
            state = self.states.pop(key, None)
            if state is None:
                continue
            self.windows.reset(state.index)
            self.features.forget(state.index)
            if self.config.model.scope == "per_key":
                self.detector.slots.pop(state.model_id, None)

    def process(self, batch: Batch) -> BatchResult:
        started = time.perf_counter()
        events: list[Event] = []
        dead = list(batch.dead_letters)
        trained: list[tuple[str, int]] = []
        pending: list[_Pending] = []
        n = len(batch.events)
        scores = np.full(n, np.nan)
        thresholds = np.full(n, np.nan)
        flags = np.zeros(n, dtype=bool)
        alerts: list[Alert] = []
        for event in batch.events:
            index = self.windows.index(event.key)
            try:
                features = self.features.apply(index, event.values)
            except FeatureError as exc:
                dead.append(DeadLetter(str(exc), _record(event), event.source))
                continue
            state = self._state(event.key, index)
            position = len(events)
            events.append(event)
            sequence = state.sequence
            state.sequence += 1
            if not self.windows.push(index, features):
                continue
            window = self.windows.window(index).copy()
            trained_now = self.detector.is_trained(state.model_id)
            if sequence >= state.warmup:
                pending.append(_Pending(position, sequence, state, window, decide=True))
                continue
            self.detector.remember(state.model_id, index, window)
            if trained_now:
                pending.append(_Pending(position, sequence, state, window, decide=False))
            elif sequence == state.warmup - 1:
                self._score_pending(pending, events, scores, thresholds, flags, alerts)
                pending.clear()
                self._train(state.model_id)
                trained.append((state.model_id, self.detector.slot(state.model_id).version))
        self._score_pending(pending, events, scores, thresholds, flags, alerts)
        m = len(events)
        seconds = time.perf_counter() - started
        return BatchResult(events, scores[:m], thresholds[:m], flags[:m], alerts, dead, trained, seconds)

    def _train(self, model_id: str) -> None:
        """Train ``model_id`` on its buffer, then calibrate each key's threshold on its windows."""
        self.detector.train(model_id)
        buffer = self.detector.slot(model_id).buffer
        scores, _ = self.detector.score(model_id, np.stack([w for _, w in buffer]))
        by_index = {s.index: s for s in self.states.values() if s.model_id == model_id}
        for (index, _), score in zip(buffer, scores, strict=True):
            state = by_index.get(index)
            if state is not None:  # None: the key was forgotten after a rebalance
                state.threshold.update(float(score))

    def _score_pending(
        self,
        pending: list[_Pending],
        events: list[Event],
        scores: np.ndarray,
        thresholds: np.ndarray,
        flags: np.ndarray,
        alerts: list[Alert],
    ) -> None:
        if not pending:
            return
        by_model: dict[str, list[int]] = {}
        for i, item in enumerate(pending):
            by_model.setdefault(item.state.model_id, []).append(i)
        item_scores = np.empty(len(pending))
        item_errors = np.empty((len(pending), self.features.n_features))
        for model_id, rows in by_model.items():
            s, e = self.detector.score(model_id, np.stack([pending[i].window for i in rows]))
            item_scores[rows], item_errors[rows] = s, e
        for item, raw_score, errors in zip(pending, item_scores, item_errors, strict=True):
            threshold = item.state.threshold
            score = float(raw_score)
            if not item.decide:
                threshold.update(score)
                continue
            limit = threshold.value
            anomalous = threshold.classify(score)
            threshold.update(score)
            scores[item.position], thresholds[item.position], flags[item.position] = score, limit, anomalous
            if item.state.gate.step(anomalous):
                alerts.append(self._alert(events[item.position], item, score, limit, errors))

    def _alert(self, event: Event, item: _Pending, score: float, limit: float, errors: np.ndarray) -> Alert:
        version = self.detector.slot(item.state.model_id).version
        sequence = item.sequence
        total = float(errors.sum()) or 1.0
        top = np.argsort(-errors, kind="stable")[:TOP_FEATURES]
        return Alert(
            alert_id=alert_id(event.key, sequence, version),
            key=event.key,
            timestamp=event.timestamp,
            score=score,
            threshold=limit,
            values=dict(zip(self.config.input.value_fields, event.values.tolist(), strict=True)),
            top_features=[
                {
                    "feature": self.features.names[i],
                    "error": float(errors[i]),
                    "share": float(errors[i]) / total,
                }
                for i in top
            ],
            model_version=version,
            sequence=sequence,
            source=event.source,
        )


def _record(event: Event) -> dict[str, object]:
    return {"key": event.key, "timestamp": event.timestamp, "values": event.values.tolist()}
