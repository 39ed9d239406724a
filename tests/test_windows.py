import numpy as np
import pytest

from anomalyd.windows import WindowStore


def push_all(store, key, values):
    idx = store.index(key)
    return [store.push(idx, np.array([float(v)])) for v in values]


def test_window_is_the_newest_values_oldest_first():
    store = WindowStore(length=4, n_features=1, normalise="none")
    push_all(store, "a", range(10))
    assert store.window(store.index("a")).ravel().tolist() == [6.0, 7.0, 8.0, 9.0]


def test_keys_are_independent():
    store = WindowStore(length=3, n_features=1, normalise="none")
    push_all(store, "a", [1, 2, 3])
    push_all(store, "b", [10, 20])
    assert store.window(store.index("a")).ravel().tolist() == [1.0, 2.0, 3.0]
    assert store.count(store.index("b")) == 2


def test_stride_scores_every_nth_full_window():
    store = WindowStore(length=3, n_features=1, stride=2, normalise="none")
    ready = push_all(store, "a", range(9))
    assert [i for i, r in enumerate(ready) if r] == [2, 4, 6, 8]


def test_normalisation_never_looks_ahead():
    values = np.random.default_rng(0).normal(5, 2, 200)
    changed = values.copy()
    changed[150:] += 1000  # a different future must not change the past windows
    a = WindowStore(length=8, n_features=1)
    b = WindowStore(length=8, n_features=1)
    ia, ib = a.index("k"), b.index("k")
    for t in range(150):
        a.push(ia, values[t : t + 1])
        b.push(ib, changed[t : t + 1])
    assert np.array_equal(a.window(ia), b.window(ib))


def test_normalised_values_are_standardised_by_past_stats():
    rng = np.random.default_rng(1)
    store = WindowStore(length=64, n_features=2)
    idx = store.index("k")
    for row in rng.normal([100.0, -3.0], [10.0, 0.5], (2000, 2)):
        store.push(idx, row)
    window = store.window(idx)
    assert np.abs(window.mean(axis=0)).max() < 0.5
    assert window.std(axis=0) == pytest.approx([1.0, 1.0], abs=0.3)


def test_constant_stream_then_jump_stays_finite_and_clipped():
    store = WindowStore(length=4, n_features=1)
    idx = store.index("flat")
    for _ in range(50):
        store.push(idx, np.array([7.0]))
    store.push(idx, np.array([8.0]))
    window = store.window(idx)
    assert np.isfinite(window).all()
    assert window[-1, 0] == 50.0


def test_grows_past_initial_capacity():
    store = WindowStore(length=2, n_features=1, capacity=2, normalise="none")
    for k in range(100):
        push_all(store, f"k{k}", [k, k + 1])
    assert store.window(store.index("k57")).ravel().tolist() == [57.0, 58.0]


def test_window_is_a_copy_in_stream_order():
    store = WindowStore(length=4, n_features=1, normalise="none")
    push_all(store, "a", range(10))  # the ring has wrapped: slot 10 % 4 holds the oldest value
    window = store.window(store.index("a"))
    window[:] = -1.0
    assert store.window(store.index("a")).ravel().tolist() == [6.0, 7.0, 8.0, 9.0]
