"""Per-key sliding windows over normalised values, kept in preallocated numpy arrays.

Each value is normalised with its key's running mean and standard deviation *before* the
value itself is counted (Welford's algorithm), so nothing ever looks ahead and a spike does
not soften itself. Each key's ring is written twice (at ``i`` and ``i + T``), so the
newest window is always one contiguous slice: no copy, no wrap-around.

>>> store = WindowStore(length=3, n_features=1)
>>> k = store.index("sensor-1")
>>> [store.push(k, np.array([float(v)])) for v in (1, 2, 3, 4)]
[False, False, True, True]
>>> store.window(k).shape
(3, 1)
"""

from __future__ import annotations

from typing import Any

import numpy as np

# A value this many standard deviations out is anomalous beyond doubt; clipping keeps the
# model's inputs in a range where float32 and the network's tanh units stay well behaved.
_CLIP = 50.0


class WindowStore:
    """Ring buffers, normalisers and counters for every key, in arrays indexed by key."""

    def __init__(
        self, length: int, n_features: int, stride: int = 1, normalise: str = "running", capacity: int = 16
    ):
        self.length = length
        self.n_features = n_features
        self.stride = stride
        self.normalise = normalise == "running"
        self.keys: dict[str, int] = {}
        self.names: list[str] = []
        self._alloc(capacity)

    def _alloc(self, capacity: int) -> None:
        T, F = self.length, self.n_features
        self._ring = np.zeros((capacity, 2 * T, F), dtype=np.float32)
        self._count = np.zeros(capacity, dtype=np.int64)
        self._mean = np.zeros((capacity, F), dtype=np.float64)
        self._m2 = np.zeros((capacity, F), dtype=np.float64)

    def _grow(self) -> None:
        old: tuple[np.ndarray, ...] = (self._ring, self._count, self._mean, self._m2)
        self._alloc(2 * len(self._count))
        new: tuple[np.ndarray, ...] = (self._ring, self._count, self._mean, self._m2)
        for dst, src in zip(new, old, strict=True):
            dst[: len(src)] = src

    def index(self, key: str) -> int:
        """The key's row in the arrays, created on first sight."""
        idx = self.keys.get(key)
        if idx is None:
            idx = len(self.names)
            if idx == len(self._count):
                self._grow()
            self.keys[key] = idx
            self.names.append(key)
        return idx

    def push(self, idx: int, values: np.ndarray) -> bool:
        """Add one record; True when a full window ends at it (and the stride says score it)."""
        n = int(self._count[idx])
        if self.normalise:
            mean, m2 = self._mean[idx], self._m2[idx]
            if n >= 2:
                std = np.sqrt(m2 / (n - 1))
                scaled = np.clip(
                    (values - mean) / np.maximum(std, 1e-8 * (1.0 + np.abs(mean))), -_CLIP, _CLIP
                )
            else:
                scaled = np.zeros_like(values)
            delta = values - mean
            mean += delta / (n + 1)
            m2 += delta * (values - mean)
        else:
            scaled = values
        T = self.length
        slot = n % T
        ring = self._ring[idx]
        ring[slot] = scaled
        ring[slot + T] = scaled
        self._count[idx] = n + 1
        return n + 1 >= T and (n + 1 - T) % self.stride == 0

    def window(self, idx: int) -> np.ndarray:
        """The key's newest window (T, F), oldest value first: a view, copy it to keep it."""
        start = int(self._count[idx]) % self.length
        return self._ring[idx, start : start + self.length]

    def reset(self, idx: int) -> None:
        """Forget a key's values and statistics; its row is kept for when it returns."""
        self._count[idx] = 0
        self._mean[idx] = 0.0
        self._m2[idx] = 0.0

    def count(self, idx: int) -> int:
        return int(self._count[idx])

    def get_state(self) -> dict[str, object]:
        """Keys in index order and their rows of every array (copies), for snapshots."""
        n = len(self.names)
        return {
            "names": list(self.names),
            "ring": self._ring[:n].copy(),
            "count": self._count[:n].copy(),
            "mean": self._mean[:n].copy(),
            "m2": self._m2[:n].copy(),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        names = list(state["names"])
        ring = np.asarray(state["ring"], dtype=np.float32)
        if ring.shape[1:] != (2 * self.length, self.n_features):
            raise ValueError(
                f"windows shaped {ring.shape[1:]} in the snapshot, {self._ring.shape[1:]} configured"
            )
        self._alloc(max(16, len(names)))
        self.names = names
        self.keys = {name: i for i, name in enumerate(names)}
        n = len(names)
        self._ring[:n] = ring
        self._count[:n] = state["count"]
        self._mean[:n] = state["mean"]
        self._m2[:n] = state["m2"]
