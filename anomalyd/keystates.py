"""The pipeline's per-key state: one small object per key, kept by the key's window-store row.

The window store already maps each key to its row (:attr:`WindowStore.keys`); a second dict
from key to state would cost some 50 bytes a key more than a list by row. :class:`KeyStates`
is that list, read as a mapping from key to state.

>>> from anomalyd.thresholds import EwmaThreshold
>>> store = WindowStore(length=3, n_features=1)
>>> states = KeyStates(store)
>>> _ = store.index("a"), store.index("b")  # rows 0 and 1
>>> _ = states.add(KeyState(1, "shared", 10, EwmaThreshold()))
>>> list(states), len(states), "a" in states, states["b"].index
(['b'], 1, False, 1)
>>> states.drop("b").index, len(states), states.get("b")
(1, 0, None)
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from anomalyd.grading import Grader
from anomalyd.thresholds import GradeThreshold, Threshold
from anomalyd.windows import WindowStore


@dataclass(slots=True)
class KeyState:
    index: int  # the key's row in the window store
    model_id: str
    warmup: int
    threshold: Threshold
    sequence: int = 0
    # The key's newest record time and the sequence its run of records with that time began
    # at: an alert's ``occurrence`` in :func:`anomalyd.events.alert_id`.
    last_time: float = math.nan
    run_start: int = 0
    quarantine: int = 0  # windows of this key before this sequence overlap a flagged point
    # The alert gate's counters (anomalyd.alerting.step); its settings are the pipeline's.
    run: int = 0
    quiet: int = 0
    # The key's grader when ``threshold`` decides on something else (a grade threshold holds
    # its own): every scored event is graded, whatever decides.
    own_grader: Grader | None = None

    @property
    def grader(self) -> Grader | None:
        """What grades this key's scores (None: not graded)."""
        threshold = self.threshold
        return threshold.grader if isinstance(threshold, GradeThreshold) else self.own_grader

    def learn(self, score: float) -> None:
        """Feed ``score`` to the threshold and the grader."""
        self.threshold.update(score)
        if self.own_grader is not None:
            self.own_grader.update(score)

    def rescale(self, factor: float) -> None:
        """Move the threshold and the grader to a new model's score scale."""
        self.threshold.rescale(factor)
        if self.own_grader is not None:
            self.own_grader.rescale(factor)

    def get_state(self) -> dict[str, Any]:
        """This key's state as numbers (a snapshot's ``keys`` entry, :mod:`anomalyd.snapshot`)."""
        return {
            "index": self.index,
            "model_id": self.model_id,
            "warmup": self.warmup,
            "sequence": self.sequence,
            "quarantine": self.quarantine,
            "gate": [self.run, self.quiet],
            "run_start": [self.last_time, self.run_start],
            "threshold": self.threshold.get_state(),
            **({"grader": self.own_grader.get_state()} if self.own_grader is not None else {}),
        }

    def set_state(self, saved: dict[str, Any]) -> None:
        """Take over what :meth:`get_state` gave (the row, ``index``, is the caller's to place)."""
        self.model_id = str(saved["model_id"])
        self.warmup, self.sequence = int(saved["warmup"]), int(saved["sequence"])
        self.quarantine = int(saved["quarantine"])
        self.run, self.quiet = (int(v) for v in saved["gate"])
        if "run_start" in saved:  # absent from snapshots older than record-based alert ids
            self.last_time, self.run_start = float(saved["run_start"][0]), int(saved["run_start"][1])
        self.threshold.set_state(saved["threshold"])
        if self.own_grader is not None and "grader" in saved:  # older snapshots have none
            self.own_grader.set_state(saved["grader"])


class KeyStates(Mapping[str, KeyState]):
    """Each key's :class:`KeyState` in ``rows``, a list by the key's row in ``windows``
    (None: a row whose key has no state, not yet or no longer).

    For eviction, arrays by row say which rows hold a state (``live``), when each key was
    last seen (``seen``: the stream's event count then) and its newest record time (``time``).
    """

    __slots__ = ("_count", "live", "rows", "seen", "time", "windows")

    def __init__(self, windows: WindowStore):
        self.windows = windows
        self.rows: list[KeyState | None] = []
        self._count = 0
        self.live = np.zeros(0, dtype=bool)
        self.seen = np.zeros(0, dtype=np.int64)
        self.time = np.zeros(0, dtype=np.float64)

    def __getitem__(self, key: str) -> KeyState:
        state = self.at(self.windows.keys[key])
        if state is None:
            raise KeyError(key)
        return state

    def __iter__(self) -> Iterator[str]:
        names = self.windows.names
        return (names[state.index] for state in self.rows if state is not None)

    def __len__(self) -> int:
        return self._count

    def at(self, row: int) -> KeyState | None:
        """The state of the key at window-store row ``row``, if it has one."""
        return self.rows[row] if row < len(self.rows) else None

    def reserve(self) -> None:
        """A place in ``rows`` for every row of the window store (hot path: index ``rows``)."""
        missing = len(self.windows.names) - len(self.rows)
        if missing > 0:
            self.rows.extend([None] * missing)
        if len(self.live) < len(self.rows):
            size = max(16, 2 * len(self.rows))
            self.live = np.concatenate((self.live, np.zeros(size - len(self.live), dtype=bool)))
            self.seen = np.concatenate((self.seen, np.zeros(size - len(self.seen), dtype=np.int64)))
            self.time = np.concatenate((self.time, np.full(size - len(self.time), np.nan)))

    def touch(self, rows: np.ndarray, seen: np.ndarray, times: np.ndarray) -> None:
        """Records of keys ``rows`` (N,) at stream counts ``seen`` and times ``times``."""
        np.maximum.at(self.seen, rows, seen)
        np.fmax.at(self.time, rows, times)  # NaN (no timestamp) leaves the time as it was

    def evictable(self, max_keys: int | None, newest: float, ttl: float | None) -> np.ndarray:
        """Rows to evict: keys idle for over ``ttl`` before ``newest`` (event time), then
        the least recently seen beyond ``max_keys``; ascending by last sight."""
        live = self.live[: len(self.rows)]
        idle = np.zeros(0, dtype=np.int64)
        if ttl is not None and newest == newest:
            idle = np.flatnonzero(live & (self.time[: len(live)] < newest - ttl))
        extra = 0 if max_keys is None else self._count - len(idle) - max_keys
        if extra <= 0:
            return idle[np.argsort(self.seen[idle], kind="stable")]
        rest = live.copy()
        rest[idle] = False
        candidates = np.flatnonzero(rest)
        oldest = candidates[np.argpartition(self.seen[candidates], extra - 1)[:extra]]
        chosen = np.concatenate((idle, oldest))
        return chosen[np.argsort(self.seen[chosen], kind="stable")]

    def add(self, state: KeyState) -> KeyState:
        """Keep ``state`` at its row (replacing the one there)."""
        self.reserve()
        if self.rows[state.index] is None:
            self._count += 1
        self.rows[state.index] = state
        self.live[state.index] = True
        self.seen[state.index], self.time[state.index] = 0, np.nan
        return state

    def drop(self, key: str) -> KeyState | None:
        """Take ``key``'s state out (None when it has none); its row stays the key's."""
        row = self.windows.keys.get(key)
        state = None if row is None else self.at(row)
        if state is not None:
            self.rows[state.index] = None
            self.live[state.index] = False
            self._count -= 1
        return state

    def clear(self) -> None:
        self.rows.clear()
        self._count = 0
        self.live[:] = False
