"""WindowStore.push_many is push, record by record: the same windows, rings and statistics, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from anomalyd.windows import WindowStore


def index_of(store: WindowStore, key: str, freeze: dict[str, int] | None = None) -> int:
    """The key's row; a new key's statistics freeze after ``freeze[key]`` values when given."""
    new = key not in store.keys
    idx = store.index(key)
    if new and freeze and key in freeze:
        store.freeze(idx, freeze[key])
    return idx


def push_one_by_one(store: WindowStore, keys: list[str], values: np.ndarray, freeze=None):
    ready, windows = [], []
    for key, row in zip(keys, values, strict=True):
        idx = index_of(store, key, freeze)
        ready.append(store.push(idx, row))
        if ready[-1]:
            windows.append(store.window(idx).copy())
    shape = (0, store.length, store.n_features)
    return ready, np.stack(windows) if windows else np.zeros(shape, dtype=np.float32)


def push_batch(store: WindowStore, keys: list[str], values: np.ndarray, freeze=None):
    idx = np.array([index_of(store, key, freeze) for key in keys], dtype=np.int64)
    ready, windows = store.push_many(idx, values)
    return ready.tolist(), windows


def assert_same_state(a: WindowStore, b: WindowStore) -> None:
    sa, sb = a.get_state(), b.get_state()
    assert sa["names"] == sb["names"]
    for name in ("ring", "count", "mean", "m2"):
        assert np.array_equal(sa[name], sb[name]), name


def assert_equivalent(batches, length=5, n_features=1, stride=1, normalise="running", freeze=None) -> None:
    one = WindowStore(length, n_features, stride, normalise, capacity=2)
    many = WindowStore(length, n_features, stride, normalise, capacity=2)
    for keys, values in batches:
        ready_one, windows_one = push_one_by_one(one, keys, values, freeze)
        ready_many, windows_many = push_batch(many, keys, values, freeze)
        assert ready_many == ready_one
        assert windows_many.dtype == np.float32 and windows_many.flags.c_contiguous
        assert windows_many.shape == windows_one.shape
        assert np.array_equal(windows_many, windows_one)
    assert_same_state(one, many)


def random_batches(rng, n_keys, sizes, n_features=1, scale=100.0):
    batches = []
    for size in sizes:
        keys = [f"k{int(k)}" for k in rng.integers(0, n_keys, size)]
        level = rng.uniform(-scale, scale, n_features)
        batches.append((keys, rng.normal(level, rng.uniform(0.01, 10.0), (size, n_features))))
    return batches


@pytest.mark.parametrize("seed", range(12))
def test_random_batches_match_one_at_a_time(seed):
    rng = np.random.default_rng(seed)
    length, n_features, stride = int(rng.integers(2, 12)), int(rng.integers(1, 4)), int(rng.integers(1, 4))
    batches = random_batches(rng, int(rng.integers(1, 80)), rng.integers(0, 300, 6).tolist(), n_features)
    assert_equivalent(batches, length, n_features, stride)
    assert_equivalent(batches, length, n_features, stride, normalise="none")
    # Statistics frozen after each key's first few values (``normalise: warmup``), some keys
    # freezing inside a batch, some before it, some never.
    freeze = {f"k{k}": int(rng.integers(0, 120)) for k in range(0, 80, 2)}
    assert_equivalent(batches, length, n_features, stride, normalise="warmup", freeze=freeze)


def test_one_key_long_runs_use_python_floats_and_match():
    rng = np.random.default_rng(1)
    batches = [(["only"] * n, rng.normal(1e6, 0.5, (n, 1))) for n in (1, 3, 700, 64, 2000)]
    assert_equivalent(batches, length=64)


def test_many_keys_one_value_each_match():
    rng = np.random.default_rng(2)
    keys = [f"k{i}" for i in range(500)]
    batches = [(keys, rng.normal(5.0, 2.0, (500, 1))) for _ in range(8)]
    assert_equivalent(batches, length=4)


def test_skewed_runs_mix_vector_and_scalar_paths():
    rng = np.random.default_rng(3)
    batches = []
    for _ in range(5):
        keys = [f"k{i}" for i in range(200)] + ["hot"] * 300
        order = rng.permutation(len(keys))
        batches.append(([keys[i] for i in order], rng.normal(0.0, 3.0, (len(keys), 2))))
    assert_equivalent(batches, length=8, n_features=2)


def test_new_keys_mid_batch_and_constant_streams():
    keys = ["a"] * 10 + ["b", "a", "c"] * 6 + ["d"] * 9
    values = np.array([[7.0]] * 28 + [[8.0]] + [[3.0]] * 8)
    assert len(keys) == len(values)
    assert_equivalent([(keys, values), (["a", "e", "d"], np.array([[9.0], [1.0], [1e9]]))], length=4)


def test_stride_counts_across_batch_boundaries():
    rng = np.random.default_rng(4)
    batches = [(["a", "b"] * n, rng.normal(0, 1, (2 * n, 1))) for n in (1, 2, 5, 3, 7, 1, 11)]
    assert_equivalent(batches, length=3, stride=3)


def test_empty_batch():
    store = WindowStore(length=3, n_features=2)
    ready, windows = store.push_many(np.zeros(0, dtype=np.int64), np.zeros((0, 2)))
    assert ready.shape == (0,) and windows.shape == (0, 3, 2)


def test_reset_key_starts_over():
    one, many = WindowStore(3, 1), WindowStore(3, 1)
    values = np.arange(10.0)[:, None]
    push_one_by_one(one, ["a"] * 10, values)
    push_batch(many, ["a"] * 10, values)
    one.reset(one.index("a"))
    many.reset(many.index("a"))
    ready_one, windows_one = push_one_by_one(one, ["a"] * 4, values[:4] * 3)
    ready_many, windows_many = push_batch(many, ["a"] * 4, values[:4] * 3)
    assert ready_many == ready_one == [False, False, True, True]
    assert np.array_equal(windows_many, windows_one)


def test_state_restored_mid_stream_continues_identically():
    rng = np.random.default_rng(5)
    first, second = random_batches(rng, 20, [150]), random_batches(rng, 25, [150])
    whole = WindowStore(6, 1)
    push_batch(whole, *first[0])
    resumed = WindowStore(6, 1)
    resumed.set_state(whole.get_state())
    assert np.array_equal(push_batch(resumed, *second[0])[1], push_batch(whole, *second[0])[1])
    assert_same_state(whole, resumed)


def test_state_of_an_older_snapshot_with_doubled_rings_continues_identically():
    """Snapshots written before the single ring hold every value twice, at slots i and i + T."""
    rng = np.random.default_rng(6)
    first, second = random_batches(rng, 20, [150]), random_batches(rng, 25, [150])
    whole = WindowStore(6, 1)
    push_batch(whole, *first[0])
    state = whole.get_state()
    state["ring"] = np.concatenate([state["ring"], state["ring"]], axis=1)  # (n, 2T, F)
    resumed = WindowStore(6, 1)
    resumed.set_state(state)
    assert np.array_equal(push_batch(resumed, *second[0])[1], push_batch(whole, *second[0])[1])
    assert_same_state(whole, resumed)


def test_state_of_another_window_length_is_refused():
    store = WindowStore(6, 1)
    push_batch(store, *random_batches(np.random.default_rng(7), 5, [40])[0])
    with pytest.raises(ValueError, match="windows shaped"):
        WindowStore(5, 1).set_state(store.get_state())


def test_frozen_statistics_keep_a_level_shift_visible():
    """After the freeze a shifted level stays as far out as on its first value."""
    rng = np.random.default_rng(5)
    before, after = rng.normal(0.0, 1.0, (300, 1)), rng.normal(6.0, 1.0, (300, 1))
    values = np.concatenate([before, after])
    scaled = {}
    for normalise in ("running", "warmup"):
        store = WindowStore(4, 1, normalise=normalise)
        idx = store.index("k")
        if normalise == "warmup":
            store.freeze(idx, 300)
        _, windows = store.push_many(np.full(len(values), idx), values)
        scaled[normalise] = windows[:, -1, 0]  # each window's newest value, scaled
    assert scaled["warmup"][-50:].mean() > 5.0  # still about 6 standard deviations out
    assert scaled["running"][-50:].mean() < 2.0  # the running statistics learnt the new level
    assert np.array_equal(scaled["warmup"][:297], scaled["running"][:297])  # same until the freeze
