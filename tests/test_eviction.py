"""Eviction (``eviction.max_keys``, ``eviction.idle_ttl_s``): bounded keys, least recently seen first."""

from __future__ import annotations

import numpy as np

from anomalyd.events import Event
from anomalyd.metrics import Metrics
from anomalyd.pipeline import Pipeline
from anomalyd.sources.base import Batch

from .helpers import batches, sine_events, small_config


def flood(keys: int, per_key: int = 3, start: int = 0) -> list[Event]:
    """``per_key`` events for each of ``keys`` distinct keys, key after key."""
    return [
        Event(f"k{k}", str(60 * (k * per_key + i)), 60.0 * (k * per_key + i), np.array([float(i)]), {})
        for k in range(start, start + keys)
        for i in range(per_key)
    ]


def test_the_store_stays_at_max_keys_under_a_flood():
    pipeline = Pipeline(small_config(eviction={"max_keys": 50}))
    metrics = Metrics()
    evicted = 0
    for batch in batches(flood(2000), 64):
        result = pipeline.process(batch)
        metrics.observe(result)
        evicted += result.evicted
        assert len(pipeline.states) <= 50
        assert len(pipeline.windows.keys) <= 50
    # rows are reused: the arrays hold at most max_keys plus one batch's new keys
    assert len(pipeline.windows.names) <= 50 + 64
    assert evicted == 2000 - len(pipeline.states)
    assert f"anomalyd_keys_evicted_total {float(evicted)}" in metrics.exposition().decode()
    pipeline.close()


def test_without_eviction_every_key_stays():
    pipeline = Pipeline(small_config())
    for batch in batches(flood(300), 64):
        assert pipeline.process(batch).evicted == 0
    assert len(pipeline.states) == 300


def test_the_least_recently_seen_keys_go_first():
    pipeline = Pipeline(small_config(eviction={"max_keys": 3}))
    pipeline.process(Batch(flood(3)))  # k0, k1, k2
    pipeline.process(Batch(flood(1, start=0)))  # k0 again: now the most recent
    pipeline.process(Batch(flood(1, start=3)))  # k3 pushes out the least recent: k1
    assert sorted(pipeline.states) == ["k0", "k2", "k3"]
    assert "k1" not in pipeline.windows.keys


def test_idle_keys_go_after_the_ttl_in_event_time_and_come_back_fresh():
    pipeline = Pipeline(small_config(eviction={"idle_ttl_s": 3600}))
    quiet, busy = sine_events("quiet", 200), sine_events("busy", 400)
    pipeline.process(Batch(quiet[:200] + busy[:200]))
    assert pipeline.detector.is_trained("quiet")
    # busy goes on alone; quiet's newest record is at minute 199
    evicted = sum(pipeline.process(b).evicted for b in batches(busy[200:258], 29))
    assert evicted == 0 and "quiet" in pipeline.states  # 58 minutes later: not yet
    evicted = sum(pipeline.process(b).evicted for b in batches(busy[258:], 29))
    assert evicted == 1 and list(pipeline.states) == ["busy"]
    assert "quiet" not in pipeline.detector.slots  # its per-key model went too
    pipeline.process(Batch(sine_events("quiet", 400)[-1:]))  # back, at busy's time
    assert pipeline.states["quiet"].sequence == 1  # seen again: starts over
    assert not pipeline.detector.is_trained("quiet")


def test_a_shared_model_forgets_the_evicted_keys_windows():
    pipeline = Pipeline(small_config(model={"scope": "shared"}, eviction={"max_keys": 2}))
    events = sine_events("a", 200) + sine_events("b", 200, seed=1)
    events.sort(key=lambda e: e.time)
    for batch in batches(events, 50):
        pipeline.process(batch)
    slot = pipeline.detector.slots[""]
    a = pipeline.windows.keys["a"]
    assert any(k == a for k, _ in slot.buffer)
    pipeline.process(Batch(sine_events("c", 1)))  # evicts a or b, whichever was seen first
    gone = {"a", "b"} - set(pipeline.states)
    assert len(gone) == 1
    assert all(pipeline.windows.names[k] in pipeline.states for k, _ in slot.buffer)


def test_eviction_resumes_exactly_from_a_snapshot():
    cfg = small_config(eviction={"max_keys": 20})
    events = flood(100, per_key=5)
    whole = Pipeline(cfg)
    for batch in batches(events, 40):
        whole.process(batch)
    first, second = Pipeline(cfg), Pipeline(cfg)
    for batch in batches(events[:200], 40):
        first.process(batch)
    second.set_state(first.get_state())
    for batch in batches(events[200:], 40):
        second.process(batch)
    assert list(second.states) == list(whole.states)
    assert second.windows.names == whole.windows.names
