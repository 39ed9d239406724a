"""Per-key sliding windows over normalised values, kept in preallocated numpy arrays.

Each value is normalised with its key's running mean and standard deviation *before* the
value itself is counted (Welford's algorithm), so nothing ever looks ahead and a spike does
not soften itself. With ``normalise="warmup"`` a key's statistics stop learning once they
hold its first :meth:`WindowStore.freeze` values: a level shift then stays a shift instead
of being learnt as the new normal. A key's ring holds its last T values, its ``n``-th at
slot ``n % T``, each once: a window is gathered in order (a copy) when it is due.

>>> store = WindowStore(length=3, n_features=1)
>>> k = store.index("sensor-1")
>>> [store.push(k, np.array([float(v)])) for v in (1, 2, 3, 4)]
[False, False, True, True]
>>> store.window(k).shape
(3, 1)

The hot path pushes a whole batch at once: :meth:`WindowStore.push_many` gives the same
rings and statistics as one :meth:`~WindowStore.push` per record, and the windows to score
stacked in one array.

>>> ready, windows = store.push_many(np.array([k, store.index("s2"), k]), np.array([[5.0], [1.0], [6.0]]))
>>> ready.tolist(), windows.shape
([True, False, True], (2, 3, 1))
>>> bool(np.array_equal(windows[1], store.window(k)))
True
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

# A value this many standard deviations out is anomalous beyond doubt; clipping keeps the
# model's inputs in a range where float32 and the network's tanh units stay well behaved.
_CLIP = 50.0
# Welford's updates are sequential within a key, so a batch is normalised rank by rank across
# keys; below this many (key, feature) values at one rank numpy's per-call cost outweighs
# the vectorisation, and the rest of those keys' runs is updated in Python floats instead.
_VECTOR_MIN = 64
# Fewer records than this are pushed one by one: below it numpy's fixed cost per call (some
# 20 calls a batch) outweighs what the vectorisation saves.
_BATCH_MIN = 16
_NEVER = np.iinfo(np.int64).max  # a key whose statistics never stop learning


def key_runs(idx: np.ndarray) -> tuple[np.ndarray, ...]:
    """A batch's records (key rows ``idx``, (N,)) grouped by key, each key's in stream order.

    Returns ``order`` (N,), the records sorted so; ``keys`` (K,), ``first`` (K,) and ``runs``
    (K,), each key's row, its first place in ``order`` and its count; ``owner`` (N,) and
    ``rank`` (N,), each sorted record's key (0 .. K - 1) and its place in that key's run.

    >>> [a.tolist() for a in key_runs(np.array([7, 3, 7]))]
    [[1, 0, 2], [3, 7], [0, 1], [1, 2], [0, 1, 1], [0, 0, 1]]
    """
    order = np.argsort(idx, kind="stable")
    keys, first, runs = np.unique(idx[order], return_index=True, return_counts=True)
    owner = np.repeat(np.arange(len(keys)), runs)
    rank = np.arange(len(idx)) - first[owner]
    return order, keys, first, runs, owner, rank


class WindowStore:
    """Ring buffers, normalisers and counters for every key, in arrays indexed by key."""

    def __init__(
        self, length: int, n_features: int, stride: int = 1, normalise: str = "running", capacity: int = 16
    ):
        self.length = length
        self.n_features = n_features
        self.stride = stride
        self.normalise = normalise != "none"
        self.keys: dict[str, int] = {}
        self.names: list[str] = []  # by row; "" for a row freed by :meth:`evict`
        self.free: list[int] = []  # rows to reuse for new keys
        self._alloc(capacity)

    def _alloc(self, capacity: int) -> None:
        T, F = self.length, self.n_features
        self._ring = np.zeros((capacity, T, F), dtype=np.float32)
        self._count = np.zeros(capacity, dtype=np.int64)
        self._mean = np.zeros((capacity, F), dtype=np.float64)
        self._m2 = np.zeros((capacity, F), dtype=np.float64)
        self._limit = np.full(capacity, _NEVER, dtype=np.int64)  # values the statistics learn from

    def _grow(self) -> None:
        old: tuple[np.ndarray, ...] = (self._ring, self._count, self._mean, self._m2, self._limit)
        self._alloc(2 * len(self._count))
        new: tuple[np.ndarray, ...] = (self._ring, self._count, self._mean, self._m2, self._limit)
        for dst, src in zip(new, old, strict=True):
            dst[: len(src)] = src

    def index(self, key: str) -> int:
        """The key's row in the arrays, created on first sight."""
        idx = self.keys.get(key)
        if idx is None:
            if self.free:
                idx = self.free.pop()
                self.names[idx] = key
            else:
                idx = len(self.names)
                if idx == len(self._count):
                    self._grow()
                self.names.append(key)
            self.keys[key] = idx
        return idx

    def evict(self, rows: list[int]) -> None:
        """Forget the keys of ``rows`` altogether; their rows go to the next new keys."""
        for idx in rows:
            self.reset(idx)
            del self.keys[self.names[idx]]
            self.names[idx] = ""
        self.free.extend(rows)

    def freeze(self, idx: int, after: int) -> None:
        """The key's statistics learn from its first ``after`` values only (``normalise: warmup``)."""
        self._limit[idx] = after

    def push(self, idx: int, values: np.ndarray) -> bool:
        """Add one record; True when a full window ends at it (and the stride says score it)."""
        n = int(self._count[idx])
        if self.normalise:
            mean, m2 = self._mean[idx], self._m2[idx]
            seen = min(n, int(self._limit[idx]))
            if seen >= 2:
                std = np.sqrt(m2 / (seen - 1))
                scaled = np.clip(
                    (values - mean) / np.maximum(std, 1e-8 * (1.0 + np.abs(mean))), -_CLIP, _CLIP
                )
            else:
                scaled = np.zeros_like(values)
            if n < self._limit[idx]:
                delta = values - mean
                mean += delta / (n + 1)
                m2 += delta * (values - mean)
        else:
            scaled = values
        T = self.length
        self._ring[idx, n % T] = scaled
        self._count[idx] = n + 1
        return n + 1 >= T and (n + 1 - T) % self.stride == 0

    def push_many(self, idx: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Add records of keys ``idx`` (N,) with ``values`` (N, F), in stream order.

        Rings, counts and statistics end up as N calls of :meth:`push` leave them, bit for
        bit. Returns which records end a window to score (N,) and those windows, stacked
        (R, T, F) float32 in stream order: a new array, not views of the rings.
        """
        T, n = self.length, len(idx)
        if n < _BATCH_MIN:
            return self._push_each(idx, values)
        order, keys, first, runs, owner, rank = key_runs(idx)
        x = np.asarray(values, dtype=np.float64)[order]
        scaled = self._normalise_runs(keys, first, runs, x) if self.normalise else x
        before = self._count[keys]
        count = before[owner] + rank + 1  # (N,) the key's count once the record is in
        ready = np.empty(n, dtype=bool)
        ready[order] = (count >= T) & ((count - T) % self.stride == 0)
        starts, series = self._series(keys, before, runs, owner, rank, scaled)
        start = np.empty(n, dtype=np.int64)
        start[order] = starts
        windows = _rolling(series, T)[start[ready]]  # (R, T, F), a new array
        # Only a key's last T values are still in its ring after the batch.
        last = rank >= runs[owner] - T
        self._ring[keys[owner[last]], (count[last] - 1) % T] = scaled[last]
        self._count[keys] = before + runs
        return ready, windows

    def _push_each(self, idx: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`push_many` for a few records: :meth:`push` one by one, each window gathered."""
        ready: list[bool] = []
        windows: list[np.ndarray] = []
        for i, row in zip(idx.tolist(), np.asarray(values, dtype=np.float64), strict=True):
            ready.append(self.push(i, row))
            if ready[-1]:
                windows.append(self.window(i))
        stacked = np.stack(windows) if windows else np.zeros((0, self.length, self.n_features), np.float32)
        return np.array(ready, dtype=bool), stacked

    def _series(
        self,
        keys: np.ndarray,
        before: np.ndarray,
        runs: np.ndarray,
        owner: np.ndarray,
        rank: np.ndarray,
        scaled: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per key one block: its T - 1 newest values before the batch, then its new ones.

        The window ending at a key's record of rank ``r`` is its block's rows r .. r + T - 1;
        returns where those windows start (N,) and the blocks end to end (K(T - 1) + N, F).
        Blocks are copied whole through strided views (one copy per key, not one per value).
        """
        T, K = self.length, len(keys)
        block = T - 1 + runs
        offset = np.cumsum(block) - block
        series = np.empty((int(block.sum()), self.n_features), dtype=np.float32)
        # The keys' rings, each twice end to end (K, 2T, F), so that a key's T - 1 newest
        # values, oldest (slot before + 1, mod T) first, are one slice: whole rows are copied
        # (fancy indexing value by value, modulo T, takes several times as long).
        rings = np.empty((K, 2 * T, self.n_features), dtype=np.float32)
        rings[:, :T] = rings[:, T:] = self._ring[keys]
        # (K, T, T - 1, F): item [k, s] is columns s .. s + T - 2 of key k's doubled ring.
        shape, strides = (K, T, T - 1, rings.shape[2]), rings.strides[:2] + rings.strides[1:]
        newest = as_strided(rings, shape, strides, writeable=False)
        _rolling(series, T - 1, writeable=True)[offset] = newest[np.arange(K), (before + 1) % T]
        starts = offset[owner] + rank
        series[starts + T - 1] = scaled
        return starts, series

    def _normalise_runs(
        self, keys: np.ndarray, first: np.ndarray, runs: np.ndarray, x: np.ndarray
    ) -> np.ndarray:
        """:meth:`push`'s Welford step over each key's run of values ``x`` (rows ``first`` ..
        ``first + runs`` for each key), vectorised across keys one rank at a time; the long
        runs of a few keys go on in Python floats. Updates the keys' mean and M2."""
        by_length = np.argsort(-runs, kind="stable")
        keys, first, runs = keys[by_length], first[by_length], runs[by_length]
        n, mean, m2 = self._count[keys], self._mean[keys], self._m2[keys]  # copies
        limit = self._limit[keys]
        out = np.empty_like(x)
        rank, active = 0, len(keys)
        while active and active * x.shape[1] >= _VECTOR_MIN:
            rows = first[:active] + rank
            out[rows] = _welford_step(x[rows], n[:active], mean[:active], m2[:active], limit[:active])
            rank += 1
            active = int(np.count_nonzero(runs[:active] > rank))
        if active:  # the rest of the few longest runs
            starts, lengths = first[:active] + rank, runs[:active] - rank
            rows, cols, stats = _welford_tails(starts, lengths, x, n, mean, m2, limit)
            out[rows, cols] = _scale(x[rows, cols], *stats)
        self._mean[keys], self._m2[keys] = mean, m2
        return out

    def window(self, idx: int) -> np.ndarray:
        """The key's newest window (T, F), oldest value first: a new array."""
        ring, start = self._ring[idx], int(self._count[idx]) % self.length
        return np.concatenate((ring[start:], ring[:start]))

    def reset(self, idx: int) -> None:
        """Forget a key's values and statistics; its row is kept for when it returns."""
        self._count[idx] = 0
        self._mean[idx] = 0.0
        self._m2[idx] = 0.0
        self._limit[idx] = _NEVER

    def count(self, idx: int) -> int:
        return int(self._count[idx])

    def get_state(self) -> dict[str, object]:
        """Keys in index order and their rows of every array, for snapshots: views of the
        store's arrays (no copy of the rings), to save or copy before the store moves on."""
        n = len(self.names)
        return {
            "names": list(self.names),
            "free": np.array(self.free, dtype=np.int64),
            "ring": self._ring[:n],
            "count": self._count[:n],
            "mean": self._mean[:n],
            "m2": self._m2[:n],
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Take over :meth:`get_state`'s rows; also those of an older snapshot, whose rings held
        every value twice (2T long, at slots ``i`` and ``i + T``)."""
        names = list(state["names"])
        ring = np.asarray(state["ring"], dtype=np.float32)
        if ring.shape[1:] == (2 * self.length, self.n_features):
            ring = ring[:, : self.length]
        if ring.shape[1:] != (self.length, self.n_features):
            raise ValueError(
                f"windows shaped {ring.shape[1:]} in the snapshot, {self._ring.shape[1:]} configured"
            )
        self._alloc(max(16, len(names)))
        self.names = names
        self.keys = {name: i for i, name in enumerate(names) if name}
        free = state.get("free")  # absent before eviction existed: no row was free then
        self.free = [] if free is None else np.asarray(free, dtype=np.int64).tolist()
        n = len(names)
        self._ring[:n] = ring
        self._count[:n] = state["count"]
        self._mean[:n] = state["mean"]
        self._m2[:n] = state["m2"]


def _rolling(a: np.ndarray, length: int, writeable: bool = False) -> np.ndarray:
    """A view of ``a`` (N, F) whose item i is rows i .. i + length - 1: (N - length + 1, length, F).

    Items overlap: write through it only to items whose rows do not.
    """
    row, col = a.strides
    return as_strided(a, (len(a) - length + 1, length, a.shape[1]), (row, row, col), writeable=writeable)


def _scale(v: np.ndarray, n: np.ndarray, mean: np.ndarray, m2: np.ndarray) -> np.ndarray:
    """Values scaled by statistics of ``n`` values (0 while n < 2): the same float64
    operations as :meth:`WindowStore.push`, elementwise."""
    std = np.sqrt(m2 / np.maximum(n - 1, 1))
    scaled = np.clip((v - mean) / np.maximum(std, 1e-8 * (1.0 + np.abs(mean))), -_CLIP, _CLIP)
    return np.where(n < 2, 0.0, scaled)


def _welford_step(
    v: np.ndarray, n: np.ndarray, mean: np.ndarray, m2: np.ndarray, limit: np.ndarray
) -> np.ndarray:
    """One value per key (K, F), scaled; ``n`` (K,), ``mean`` and ``m2`` (K, F) updated in
    place, the statistics only of keys that have seen fewer than ``limit`` values."""
    before = n[:, None]
    scaled = _scale(v, np.minimum(before, limit[:, None]), mean, m2)
    learning = before < limit[:, None]
    if learning.all():
        delta = v - mean
        mean += delta / (before + 1)
        m2 += delta * (v - mean)
    elif learning.any():
        rows = learning[:, 0]
        delta = v[rows] - mean[rows]
        mean[rows] += delta / (before[rows] + 1)
        m2[rows] += delta * (v[rows] - mean[rows])
    n += 1
    return scaled


def _welford_tails(
    starts: np.ndarray,
    lengths: np.ndarray,
    x: np.ndarray,
    n: np.ndarray,
    mean: np.ndarray,
    m2: np.ndarray,
    limit: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Welford over rows ``starts[i]`` .. ``+ lengths[i]`` of ``x`` (all features) for key i,
    one value at a time; ``n``, ``mean``, ``m2`` updated in place. Returns the rows and
    columns of ``x`` covered and, for each, the count, mean and M2 before it: what one
    vectorised :func:`_scale` needs."""
    rows: list[int] = []
    cols: list[int] = []
    counts: list[int] = []
    means: list[float] = []
    m2s: list[float] = []
    for i, (start, length) in enumerate(zip(starts.tolist(), lengths.tolist(), strict=True)):
        count, stop = int(n[i]), int(limit[i])
        learnt = max(0, min(length, stop - count))  # values of the run the statistics learn
        for f in range(x.shape[1]):
            column = x[start : start + learnt, f].tolist()
            key_means, key_m2s = _welford_run(column, count, float(mean[i, f]), float(m2[i, f]))
            mean[i, f], m2[i, f] = key_means[-1], key_m2s[-1]
            key_means += [key_means.pop()] * (length - learnt)
            key_m2s += [key_m2s.pop()] * (length - learnt)
            means += key_means
            m2s += key_m2s
            rows += range(start, start + length)
            cols += [f] * length
            counts += (min(c, stop) for c in range(count, count + length))
        n[i] = count + length
    stats = (np.array(counts), np.array(means), np.array(m2s))
    return np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64), stats


def _welford_run(xs: list[float], n: int, mean: float, m2: float) -> tuple[list[float], list[float]]:
    """Welford's updates over one key's run of one feature, in Python floats (IEEE doubles:
    the same results as numpy's float64, without its per-call cost). Returns the mean and
    M2 before each value, then after the last."""
    means, m2s = [mean], [m2]
    for x in xs:
        n += 1
        delta = x - mean
        mean += delta / n
        m2 += delta * (x - mean)
        means.append(mean)
        m2s.append(m2)
    return means, m2s
