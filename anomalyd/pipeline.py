"""Batch of events -> features -> windows -> scores -> decisions -> alerts. Pure: no I/O.

The same :class:`Pipeline` serves a file replay and the Kafka daemon. Results never depend
on how the stream was cut into batches: features and windows of a whole batch are computed
with array operations that give the numbers one event at a time would, the forward passes
are batched (split wherever a model is (re)trained), and the decisions are taken window by
window in stream order.

A key goes through three states:

1. *warming up* (its first ``warmup`` events): windows are kept to train on, nothing is
   scored in the output. With ``threshold.calibration: warmup``, when the key's model is
   trained its threshold is calibrated on the scores of those windows.
2. *calibrating* (``calibration: live``, the default): the first ``threshold.min_samples``
   scores after warm-up only feed the threshold; no row is flagged.
3. *ready*: each window is scored; the threshold classifies then updates; the alert gate
   turns runs of anomalous points into alerts.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from anomalyd import alerting
from anomalyd.columns import from_columns, to_columns
from anomalyd.config import Config, EvictionConfig
from anomalyd.detector import make_detector
from anomalyd.events import Alert, DeadLetter, Event, alert_id
from anomalyd.features import FeatureTransform
from anomalyd.keystates import KeyState, KeyStates
from anomalyd.model import WindowModel
from anomalyd.retraining import RetrainOutcome
from anomalyd.sources.base import Batch
from anomalyd.thresholds import GradeThreshold, make_grader, make_threshold
from anomalyd.windows import WindowStore

TOP_FEATURES = 3
_NO_EVICTION = EvictionConfig()
_STATE_SECTIONS = (
    "input", "window", "detector", "model", "hst", "training", "retraining", "threshold", "alerts",
)  # fmt: skip


@dataclass
class BatchResult:
    """What one batch produced; arrays are aligned with ``events`` (the records that parsed)."""

    events: list[Event]
    scores: np.ndarray
    grades: np.ndarray  # the score's grade for its key, in [0, 1] (NaN: not graded yet)
    thresholds: np.ndarray
    anomalous: np.ndarray
    alerts: list[Alert] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    trained: list[tuple[str, int]] = field(default_factory=list)
    seconds: float = 0.0  # time spent in process()
    retrained: list[RetrainOutcome] = field(default_factory=list)
    evicted: int = 0  # keys evicted after this batch (``eviction``)


@dataclass(slots=True)
class _Outputs:
    scores: np.ndarray
    grades: np.ndarray
    thresholds: np.ndarray
    flags: np.ndarray
    alerts: list[Alert]
    retrained: list[RetrainOutcome]


@dataclass(slots=True)
class _Windows:
    """A batch's windows to score, stacked, and per window (row) the record it ends at."""

    stack: np.ndarray  # (R, T, F) float32
    positions: list[int]  # the record's place in the batch's events
    sequences: list[int]  # the record's sequence in its key's stream
    occurrences: list[int]  # its place in its key's run of records with the same time
    states: list[KeyState]


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
        self.detector = make_detector(config, self.features.n_features)
        self.expected_lengths = expected_lengths or {}
        # What a checkpoint's model depends on: features, window and model sections.
        self.config_hash = _hash(config, ("input", "window", "model"))
        # What a snapshot of the per-key state depends on: all that decides the stream's alerts.
        self.state_hash = _hash(config, _STATE_SECTIONS)
        self.states = KeyStates(self.windows)
        # ``eviction``: events seen and the newest record time, the clocks keys age by
        self.seen, self.newest = 0, math.nan

    def warmup_for(self, key: str) -> int:
        """Events a key learns from before it may alert (NAB: 15% of the file, at most 750)."""
        training = self.config.training
        warmup = training.warmup_events
        total = self.expected_lengths.get(key)
        if training.warmup_fraction is not None and total is not None:
            warmup = min(warmup, math.floor(training.warmup_fraction * total))
        return max(warmup, self.config.window.length)

    def _new_state(self, key: str, index: int) -> KeyState:
        state = self.states.add(
            KeyState(
                index=index,
                model_id=self.detector.model_id(key),
                warmup=self.warmup_for(key),
                threshold=make_threshold(self.config.threshold),
                own_grader=None
                if self.config.threshold.method == "grade"
                else make_grader(self.config.threshold),
            )
        )
        if self.config.window.normalise == "warmup":
            self.windows.freeze(index, state.warmup)
        return state

    def forget(self, keys: set[str]) -> None:
        """Drop the state of ``keys`` (their partitions moved to another consumer).

        A key seen again later starts over: warm-up, training (per-key scope), calibration.
        """
        for key in keys:
            state = self.states.drop(key)
            if state is None:
                continue
            self.windows.reset(state.index)
            self.features.forget(state.index)
            if self.config.model.scope == "per_key":
                self.detector.discard(state.model_id)  # a retraining in flight is of no use now
                self.detector.slots.pop(state.model_id, None)
            else:
                self.detector.forget_keys(state.model_id, [state.index])

    def _evict(self) -> int:
        """Evict keys per ``eviction`` (idle past the TTL, then the least recently seen past
        ``max_keys``): their state, rows and per-key models go; one seen again starts over."""
        cfg = self.config.eviction
        if cfg.max_keys is None and cfg.idle_ttl_s is None:
            return 0
        rows = self.states.evictable(cfg.max_keys, self.newest, cfg.idle_ttl_s).tolist()
        if not rows:
            return 0
        names = self.windows.names
        self.forget({names[row] for row in rows})
        self.windows.evict(rows)
        if self.config.model.scope == "shared" and self.detector.is_trained(""):
            # the shared model's recent windows of these keys would count for the rows' next keys
            gone, slot = set(rows), self.detector.slots[""]
            kept = [item for item in slot.buffer if item[0] not in gone]
            slot.buffer = deque(kept, maxlen=slot.buffer.maxlen)
        return len(rows)

    def process(self, batch: Batch) -> BatchResult:
        """Features, windows and forward passes for the whole batch at once (arrays); then
        the decisions, window by window in stream order (thresholds and gates are stateful)."""
        started = time.perf_counter()
        dead = list(batch.dead_letters)
        events, indices, values = self._features(batch.events, dead)
        windows = self._windows(events, indices, values)
        n = len(events)
        out = _Outputs(
            np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan), np.zeros(n, dtype=bool), [], []
        )
        trained = self._walk(windows, events, out)
        evicted = self._evict()
        seconds = time.perf_counter() - started
        return BatchResult(
            events, out.scores, out.grades, out.thresholds, out.flags, out.alerts, dead, trained, seconds,
            out.retrained, evicted,
        )  # fmt: skip

    def _features(
        self, records: list[Event], dead: list[DeadLetter]
    ) -> tuple[list[Event], list[int], np.ndarray]:
        """The records whose features are finite, their keys' rows and their features (N, F);
        the others go to ``dead``. Every record's key gets its row, as it always has."""
        index = self.windows.index
        indices = [index(event.key) for event in records]
        raw = np.array([event.values for event in records], dtype=np.float64)
        raw = raw.reshape(len(records), len(self.config.input.value_fields))
        values, errors = self.features.apply_many(indices, raw)
        if not errors:
            return records, indices, values
        for i in errors:
            dead.append(DeadLetter(errors[i], _record(records[i]), records[i].source))
        kept = [i for i in range(len(records)) if i not in errors]
        return [records[i] for i in kept], [indices[i] for i in kept], values[kept]

    def _windows(self, events: list[Event], indices: list[int], values: np.ndarray) -> _Windows:
        """Count every event in its key's stream and push them all; the windows due, stacked."""
        sequences, occurrences, states = [], [], []
        self.states.reserve()
        known = self.states.rows
        for event, index in zip(events, indices, strict=True):
            state = known[index] or self._new_state(event.key, index)
            sequence, moment = state.sequence, event.time
            if moment != state.last_time and moment == moment:  # a new time (NaN: no timestamps)
                state.last_time, state.run_start = moment, sequence
            sequences.append(sequence)
            occurrences.append(sequence - state.run_start)
            state.sequence = sequence + 1
            states.append(state)
        rows = np.array(indices, dtype=np.int64)
        if self.config.eviction != _NO_EVICTION and events:
            times = np.fromiter((e.time for e in events), dtype=np.float64, count=len(events))
            self.states.touch(rows, np.arange(self.seen, self.seen + len(events)), times)
            self.seen += len(events)
            if np.isfinite(times).any():
                self.newest = float(np.fmax(self.newest, np.nanmax(times)))
        ready, stack = self.windows.push_many(rows, values)
        positions = np.flatnonzero(ready).tolist()
        return _Windows(
            stack,
            positions,
            [sequences[p] for p in positions],
            [occurrences[p] for p in positions],
            [states[p] for p in positions],
        )

    def _walk(self, windows: _Windows, events: list[Event], out: _Outputs) -> list[tuple[str, int]]:
        """Each window in stream order: decided after warm-up; during it kept to train on and,
        once the key's model is trained, scored to calibrate the threshold. Pending windows
        are scored together, before a model trains mid-batch and at the end."""
        trained: list[tuple[str, int]] = []
        rows: list[int] = []
        decide: list[bool] = []
        length = self.config.window.length
        is_trained = self.detector.is_trained
        for row, (sequence, state) in enumerate(zip(windows.sequences, windows.states, strict=True)):
            model_id = state.model_id
            if sequence >= state.warmup and is_trained(model_id):
                rows.append(row)
                decide.append(True)
                continue
            # A key's last warm-up window, or with a stride the first window past it, trains.
            last = sequence >= state.warmup - 1
            if sequence >= 2 * length - 1 or last:
                # The first windows are normalised with the statistics of a handful of values;
                # they would teach the model (and its thresholds) noise.
                self.detector.remember(model_id, state.index, windows.stack[row])
            if is_trained(model_id):
                rows.append(row)
                decide.append(False)  # calibrate the threshold only (key still warming up)
            elif last:
                self._score_pending(rows, decide, windows, events, out)
                rows, decide = [], []
                self._train(model_id)
                trained.append((model_id, self.detector.slot(model_id).version))
        self._score_pending(rows, decide, windows, events, out)
        return trained

    def get_state(self) -> dict[str, Any]:
        """All per-key and per-model state, as numbers, arrays and tensors (see :mod:`anomalyd.snapshot`)."""
        names = self.windows.names
        live = [st for st in self.states.rows if st is not None]
        return {
            # one column per field across keys, not a dict per key (:mod:`anomalyd.columns`)
            "key_columns": {
                "names": [names[st.index] for st in live],
                "columns": to_columns([st.get_state() for st in live]),
            },
            "windows": self.windows.get_state(),
            "features": self.features.get_state(),
            "models": self.detector.get_state(),
            "eviction": {
                "seen": self.states.seen[: len(names)].copy(),
                "time": self.states.time[: len(names)].copy(),
                "clock": [self.seen, self.newest],
            },
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Take over the state :meth:`get_state` gave (of a pipeline with the same ``state_hash``)."""
        self.windows.set_state(state["windows"])
        self.features.set_state(state["features"])
        self.states.clear()
        if "key_columns" in state:
            names = state["key_columns"]["names"]
            saved_keys = zip(names, from_columns(state["key_columns"]["columns"], len(names)), strict=True)
        else:  # a snapshot made before key columns: a dict per key
            saved_keys = state["keys"].items()
        for key, saved in saved_keys:
            self._new_state(key, int(saved["index"])).set_state(saved)
        self.detector.set_state(state["models"])
        ages = state.get("eviction")  # absent from snapshots made before eviction existed
        if ages is not None:
            n = len(ages["seen"])
            self.states.seen[:n], self.states.time[:n] = ages["seen"], ages["time"]
            self.seen, self.newest = int(ages["clock"][0]), float(ages["clock"][1])

    def close(self) -> None:
        """Stop the retraining worker (a training in progress is abandoned)."""
        self.detector.close()

    def _train(self, model_id: str) -> None:
        """Train ``model_id`` on its buffer, then calibrate each key's threshold on its windows
        (unless ``threshold.calibration`` is ``live``: thresholds then learn from new data only)."""
        self.detector.train(model_id)
        if self.config.threshold.calibration == "live":
            return
        buffer = self.detector.slot(model_id).buffer
        scores, _ = self.detector.score(model_id, np.stack([w for _, w in buffer]))
        self._calibrate(model_id, zip((index for index, _ in buffer), scores.tolist(), strict=True))

    def _calibrate(self, model_id: str, scored: Iterable[tuple[int, float]]) -> None:
        """Feed each (key row, score) to that key's threshold, in order; keys forgotten after a
        rebalance, or now on another model, are passed over."""
        for index, score in scored:
            state = self.states.at(index)
            if state is not None and state.model_id == model_id:
                state.learn(score)

    def _score_pending(
        self, rows: list[int], decide: list[bool], windows: _Windows, events: list[Event], out: _Outputs
    ) -> None:
        """Score windows ``rows`` (one forward pass per model), then decide them in order.

        When a retrained model is due at one of these windows, it is judged and swapped in
        right after that window, and the model's later windows here are scored again.
        """
        if not rows:
            return
        by_model, item_scores, errors = self._score_rows(rows, windows)
        states, positions, sequences = windows.states, windows.positions, windows.sequences
        views, observe = list(windows.stack), self.detector.observe  # one view per window, made in C
        slots, normalise = self.detector.slots, self.config.model.normalise_errors
        min_run, cooldown = self.config.alerts.min_consecutive, self.config.alerts.cooldown_events
        decided: list[tuple[int, float, float, float, bool]] = []  # written to ``out`` at the end
        for i, (row, decides) in enumerate(zip(rows, decide, strict=True)):
            state, score = states[row], item_scores[i]
            if normalise and slots[state.model_id].measuring is not None:
                self._measure(state, i, by_model[state.model_id], item_scores, errors)
                if not decides:
                    continue
                score, grade, limit, anomalous = math.nan, math.nan, math.nan, False  # no scale yet
            elif not decides:
                state.learn(score)
                continue
            else:
                grade, limit, anomalous = _decide(state, score)
            position, sequence = positions[row], sequences[row]
            decided.append((position, score, grade, limit, anomalous))
            state.run, state.quiet, alert = alerting.step(
                state.run, state.quiet, anomalous, min_run, cooldown
            )
            if alert:
                place = (sequence, windows.occurrences[row])
                out.alerts.append(
                    self._alert(events[position], state, place, (score, grade, limit), errors[i])
                )
            # A flagged point stays inside the key's next windows: none of them is learned from.
            if anomalous:
                state.quarantine = sequence + self.config.window.length
            learnable = not anomalous and sequence >= state.quarantine
            if observe(state.model_id, score, learnable, state.index, views[row]):
                model_id = state.model_id
                outcome = self._swap(model_id)
                out.retrained.append(outcome)
                # A new live model scores the rest of the batch again (a kept one already has;
                # with carried states, scoring again would read those values twice).
                rest = [j for j in by_model[model_id] if j > i] if outcome.promoted else []
                if rest:
                    rescored, errors[rest] = self._forward(model_id, [rows[j] for j in rest], windows)
                    for j, value in zip(rest, rescored.tolist(), strict=True):
                        item_scores[j] = value
        if decided:
            at, values, grades, limits, flags = zip(*decided, strict=True)
            where = list(at)
            out.scores[where], out.grades[where], out.thresholds[where] = values, grades, limits
            out.flags[where] = flags

    def _measure(
        self, state: KeyState, i: int, items: list[int], scores: list[float], errors: np.ndarray
    ) -> None:
        """Count window ``i`` towards its model's error scale. The window that completes it
        calibrates the thresholds on the counted windows' scores under the scale (the same
        windows ``threshold.calibration: live`` would have used) and puts the model's later
        windows of this batch, ``items`` after ``i``, on it."""
        model_id = state.model_id
        needed = self.config.threshold.min_samples
        measured = self.detector.measure(model_id, state.index, errors[i], needed)
        if measured is None:
            return
        self._calibrate(model_id, measured)
        later = [j for j in items if j > i]
        if later:
            errors[later] /= self.detector.error_scale(model_id)
            for j in later:
                scores[j] = float(errors[j].mean())

    def _score_rows(
        self, rows: list[int], windows: _Windows
    ) -> tuple[dict[str, list[int]], list[float], np.ndarray]:
        """Windows ``rows`` grouped by model (positions in ``rows``), scored: one forward pass
        per model. Scores as Python floats (the decisions read them one at a time)."""
        by_model: dict[str, list[int]] = {}
        for i, row in enumerate(rows):
            by_model.setdefault(windows.states[row].model_id, []).append(i)
        errors = np.empty((len(rows), self.features.n_features))
        scores = np.empty(len(rows))
        requests = [
            self._request(model_id, [rows[i] for i in items], windows) for model_id, items in by_model.items()
        ]
        for items, (s, e) in zip(by_model.values(), self.detector.score_many(requests), strict=True):
            scores[items], errors[items] = s, e
        return by_model, scores.tolist(), errors

    def _forward(self, model_id: str, rows: list[int], windows: _Windows) -> tuple[np.ndarray, np.ndarray]:
        """Scores and per-feature errors of windows ``rows`` (increasing): its keys' live windows."""
        return self.detector.score(*self._request(model_id, rows, windows))

    def _request(
        self, model_id: str, rows: list[int], windows: _Windows
    ) -> tuple[str, np.ndarray, np.ndarray]:
        """What scoring windows ``rows`` under ``model_id`` takes: all of them in order is the
        stack itself, not a copy; the keys' rows say they are live windows."""
        stack = windows.stack if len(rows) == len(windows.stack) else windows.stack[rows]
        keys = np.fromiter((windows.states[r].index for r in rows), dtype=np.int64, count=len(rows))
        return model_id, stack, keys

    def _swap(self, model_id: str) -> RetrainOutcome:
        """Swap in a due candidate and move its keys' thresholds to its score scale.

        Every key's threshold is rescaled by the mean score ratio measured at promotion; a
        key with enough recent normal windows in the model's buffer gets a threshold rebuilt
        from the new model's scores of those windows instead, when that one is higher (the
        new model errs differently, not only more). So the swap itself raises no alerts.
        """
        outcome = self.detector.swap(model_id)
        if outcome.promoted:
            self._recalibrate(model_id, outcome.scale)
        return outcome

    def install(self, model_id: str, model: WindowModel) -> int:
        """Make ``model`` live for ``model_id`` as a new version (a rollback); returns the version.

        Thresholds move to its score scale as on a promotion, the scale measured on the
        model's buffer of recent normal windows. A retraining in flight is discarded: its
        candidate was judged against the model being replaced.
        """
        self.detector.discard(model_id)
        slot = self.detector.slots[model_id]
        windows = np.stack([w for _, w in slot.buffer]) if slot.buffer else None
        before = self.detector.score(model_id, windows)[0].mean() if windows is not None else 1.0
        if self.config.model.normalise_errors:
            self.detector.hand_over_scale(model_id, model, windows)
        slot.model = model
        slot.version += 1
        after = self.detector.score(model_id, windows)[0].mean() if windows is not None else 1.0
        self._recalibrate(model_id, float(after / before) if before > 0 else 1.0)
        return slot.version

    def _recalibrate(self, model_id: str, scale: float) -> None:
        buffer = self.detector.slots[model_id].buffer
        recent: dict[int, list[float]] = {}
        if buffer:
            scores, _ = self.detector.score(model_id, np.stack([w for _, w in buffer]))
            for (index, _), score in zip(buffer, scores.tolist(), strict=True):
                recent.setdefault(index, []).append(score)
        scale = scale if math.isfinite(scale) and scale > 0 else 1.0
        for state in self.states.rows:
            if state is None or state.model_id != model_id:
                continue
            state.rescale(scale)
            grader = state.grader
            if grader is not None:
                # Half the grader's window from the new model's scores of the key's recent normal
                # windows, beside the old model's rescaled: where it errs, not only how much.
                grader.absorb(recent.get(state.index, [])[-self.config.threshold.grade_window // 2 :])
            if self.config.threshold.method == "grade":
                continue
            own = recent.get(state.index, [])[-self.config.threshold.window :]
            if len(own) < self.config.threshold.min_samples:
                continue
            rebuilt = make_threshold(self.config.threshold)
            for score in own:
                rebuilt.update(score)
            # The buffer holds normal windows only, so a rebuilt threshold may sit low; the
            # higher of the two keeps a swap from raising alerts.
            if not rebuilt.value <= state.threshold.value:
                state.threshold = rebuilt

    def _alert(
        self,
        event: Event,
        state: KeyState,
        place: tuple[int, int],  # the record's sequence and occurrence
        decision: tuple[float, float, float],  # its score, grade and threshold
        errors: np.ndarray,
    ) -> Alert:
        score, grade, limit = decision
        version = self.detector.slot(state.model_id).version
        sequence, occurrence = place
        return Alert(
            alert_id=alert_id(event.key, event.time, event.values, occurrence),
            key=event.key,
            timestamp=event.timestamp,
            score=score,
            grade=grade,
            threshold=limit,
            values=dict(zip(self.config.input.value_fields, event.values.tolist(), strict=True)),
            top_features=alerting.top_features(errors, self.features.names, TOP_FEATURES),
            model_version=version,
            sequence=sequence,
            source=event.source,
        )


# Keys added to a section after snapshots and checkpoints of it existed, left out of the hash
# at the value that means "as before", so an upgrade keeps the saved state: ``members`` at 1
# (the default is 3 now: a one-network snapshot does not fit three), ``hst.scaler`` at none,
# the grade's keys at their defaults. The training budgets, warm starts and drift blocks are
# left out at their current defaults: they change how later trainings run, not what the saved
# state means.
_ADDED_KEYS: dict[str, dict[str, Any]] = {
    "model": {"members": 1, "group_networks": "auto"},
    "hst": {"scaler": "none"},
    "training": {"max_steps": 400, "patience": None},
    "retraining": {"warm_start": True, "max_steps": 100, "drift_block": None},
    "threshold": {"grade": 0.9999, "grade_window": 1000},
}


def _hash(config: Config, sections: tuple[str, ...]) -> str:
    dumped = config.model_dump(mode="json")
    shape = {k: dumped[k] for k in sections}
    for section, added in _ADDED_KEYS.items():
        for key, before in added.items():
            if section in shape and shape[section].get(key) == before:
                del shape[section][key]
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]


def _decide(state: KeyState, score: float) -> tuple[float, float, bool]:
    """A ready key's grade of ``score``, its threshold and whether ``score`` is anomalous;
    then the key learns the score."""
    threshold, grader = state.threshold, state.grader
    grade = grader.grade(score) if grader is not None else math.nan
    limit = threshold.value
    # A grade threshold decides on the grade just computed; the others on the raw score.
    anomalous = (
        grade > threshold.grader.cut if isinstance(threshold, GradeThreshold) else threshold.classify(score)
    )
    state.learn(score)
    return grade, limit, anomalous


def _record(event: Event) -> dict[str, object]:
    return {"key": event.key, "timestamp": event.timestamp, "values": event.values.tolist()}
