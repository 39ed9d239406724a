import math

import numpy as np
import pytest
import torch

from anomalyd.errors import ConfigError
from anomalyd.events import Event
from anomalyd.pipeline import Pipeline
from anomalyd.sources.base import Batch

from .helpers import batches, sine_events, small_config


def run(pipeline, events, size=64):
    out = []
    for batch in batches(events, size):
        out.append(pipeline.process(batch))
    scores = np.concatenate([r.scores for r in out])
    flags = np.concatenate([r.anomalous for r in out])
    alerts = [a for r in out for a in r.alerts]
    return scores, flags, alerts, out


def test_warmup_rows_have_no_score_then_every_row_is_scored():
    events = sine_events("k", 400)
    scores, _, _, _ = run(Pipeline(small_config()), events)
    assert np.isnan(scores[:150]).all()
    assert np.isfinite(scores[150:]).all()


def test_spike_after_warmup_raises_an_alert_near_it():
    events = sine_events("k", 500, spikes=(300,))
    _, _, alerts, _ = run(Pipeline(small_config()), events)
    positions = [a.sequence for a in alerts]
    assert any(300 <= p <= 302 for p in positions), positions
    alert = next(a for a in alerts if 300 <= a.sequence <= 302)
    assert alert.score > alert.threshold
    assert alert.source == {"file": "k.csv", "row": alert.sequence}


def test_no_alert_during_warmup_even_for_a_spike():
    events = sine_events("k", 300, spikes=(100,))
    _, _, alerts, _ = run(Pipeline(small_config()), events)
    assert all(a.sequence >= 150 for a in alerts)


@pytest.mark.parametrize("scope", ["per_key", "shared"])
def test_results_do_not_depend_on_batch_size(scope):
    events = [
        e for pair in zip(sine_events("a", 300, (200,)), sine_events("b", 300, (250,), seed=1)) for e in pair
    ]
    cfg = small_config(model={"scope": scope})
    ref_scores, ref_flags, ref_alerts, _ = run(Pipeline(cfg), events, size=1000)
    for size in (1, 37):
        scores, flags, alerts, _ = run(Pipeline(cfg), events, size=size)
        np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, equal_nan=True)
        assert [a.alert_id for a in alerts] == [a.alert_id for a in ref_alerts]


def test_per_key_scope_trains_one_model_per_key_shared_trains_one():
    events = [e for pair in zip(sine_events("a", 200), sine_events("b", 200, seed=1)) for e in pair]
    per_key = Pipeline(small_config())
    run(per_key, events)
    assert sorted(per_key.detector.slots) == ["a", "b"]
    shared = Pipeline(small_config(model={"scope": "shared"}))
    _, _, _, results = run(shared, events)
    assert list(shared.detector.slots) == [""]
    assert sum(len(r.trained) for r in results) == 1


def test_alert_ids_are_deterministic_and_unique():
    events = sine_events("k", 500, spikes=(300, 420))
    _, _, first, _ = run(Pipeline(small_config()), events)
    _, _, second, _ = run(Pipeline(small_config()), events)
    assert first and [a.alert_id for a in first] == [a.alert_id for a in second]
    assert all(a.model_version == 1 for a in first)
    assert len({a.alert_id for a in first}) == len(first)


def test_an_alert_id_does_not_depend_on_what_the_process_has_seen():
    """A daemon restarted without its state (or a partition's next owner) starts counting the
    key's events again at another record: the same record still gets the same id."""
    events = sine_events("k", 900, spikes=(400, 800))
    _, _, whole, _ = run(Pipeline(small_config()), events)
    _, _, restarted, _ = run(Pipeline(small_config()), events[300:])
    by_row = {a.source["row"]: a for a in whole}
    common = [a for a in restarted if a.source["row"] in by_row]
    assert any(a.source["row"] == 800 for a in common), "both lives flag the late spike"
    assert all(a.sequence == by_row[a.source["row"]].sequence - 300 for a in common)
    assert [a.alert_id for a in common] == [by_row[a.source["row"]].alert_id for a in common]
    others = {a.alert_id for a in restarted if a.source["row"] not in by_row}
    assert not others & {a.alert_id for a in whole}  # a new alert never takes an old one's id


def test_occurrence_counts_records_of_a_key_at_the_same_time():
    pipeline = Pipeline(small_config())
    events = sine_events("k", 6) + sine_events("j", 3)
    times = [1.0, 1.0, 2.0, 2.0, 2.0, 3.0, math.nan, math.nan, math.nan]
    got = []
    for event, moment in zip(events, times, strict=True):
        event.time = moment
        pipeline.process(Batch(events=[event]))  # one by one: a run goes on across batches
        state = pipeline.states[event.key]
        got.append(state.sequence - 1 - state.run_start)  # the occurrence of the newest record
    # a key without timestamps is one run: the occurrence is the record's sequence
    assert got == [0, 1, 0, 1, 2, 0, 0, 1, 2]
    restored = Pipeline(small_config())
    restored.set_state(pipeline.get_state())  # a snapshot keeps the run going
    assert restored.states["k"].run_start == 5 and restored.states["k"].last_time == 3.0


def test_top_features_point_at_the_anomalous_feature():
    events = sine_events("k", 500, spikes=(320,), features=3)
    _, _, alerts, _ = run(Pipeline(small_config(input={"value_fields": ["a", "b", "c"]})), events)
    alert = next(a for a in alerts if 320 <= a.sequence <= 322)
    assert alert.top_features[0]["feature"] == "c"
    assert sum(f["share"] for f in alert.top_features) == pytest.approx(1.0)
    assert set(alert.values) == {"a", "b", "c"}


def test_warmup_fraction_uses_known_lengths():
    cfg = small_config(training={"warmup_events": 750, "warmup_fraction": 0.15})
    pipeline = Pipeline(cfg, expected_lengths={"short": 1000, "long": 100_000})
    assert pipeline.warmup_for("short") == 150
    assert pipeline.warmup_for("long") == 750
    assert pipeline.warmup_for("unknown") == 750
    assert pipeline.warmup_for("tiny") == 750
    assert Pipeline(cfg, expected_lengths={"tiny": 20}).warmup_for("tiny") == 16  # at least one window


def test_cooldown_limits_alerts_per_incident():
    def incident_alerts(cooldown):
        events = sine_events("k", 600)
        for e in events[300:340]:
            e.values = e.values + 8.0
        cfg = small_config(alerts={"cooldown_events": cooldown}, retraining={"enabled": False})
        _, flags, alerts, _ = run(Pipeline(cfg), events)
        return flags[300:340].sum(), [a for a in alerts if 300 <= a.sequence < 340]

    flagged, without = incident_alerts(0)
    assert flagged > 2 and len(without) == flagged
    _, with_cooldown = incident_alerts(100)
    assert len(with_cooldown) <= 1


def test_a_forgotten_key_starts_over_in_its_row_and_snapshots_without_it():
    pipeline = Pipeline(small_config(retraining={"enabled": False}))
    run(pipeline, [e for pair in zip(sine_events("a", 200), sine_events("b", 200)) for e in pair])
    row = pipeline.states["a"].index
    pipeline.forget({"a", "never-seen"})
    assert "a" not in pipeline.states and list(pipeline.states) == ["b"] and len(pipeline.states) == 1
    assert pipeline.windows.keys["a"] == row  # the row stays the key's
    restored = Pipeline(small_config(retraining={"enabled": False}))
    restored.set_state(pipeline.get_state())
    assert list(restored.states) == ["b"] and restored.states["b"].sequence == 200
    scores, _, _, _ = run(restored, sine_events("a", 200))
    assert restored.states["a"].index == row and restored.states["a"].sequence == 200
    assert np.isnan(scores[:150]).all() and np.isfinite(scores[150:]).all()  # warming up again


def test_bad_derived_feature_is_dead_lettered_and_the_rest_processed():
    cfg = small_config(
        input={"value_fields": ["close"], "features": [{"name": "ret", "op": "log_return", "field": "close"}]}
    )
    events = [
        Event("p", str(i), float(i), np.array([100.0 + i if i != 5 else -1.0]), {"file": "p.csv", "row": i})
        for i in range(10)
    ]
    result = Pipeline(cfg).process(Batch(events))
    assert [d.source["row"] for d in result.dead_letters] == [5]
    assert "ret" in result.dead_letters[0].reason
    assert len(result.events) == 9


def test_multivariate_windows_and_gru_cell():
    events = sine_events("k", 300, features=4)
    cfg = small_config(input={"value_fields": ["a", "b", "c", "d"]}, model={"cell": "gru"})
    scores, _, _, _ = run(Pipeline(cfg), events)
    assert np.isfinite(scores[150:]).all()


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_forecaster_alerts_at_the_spike_itself(cell):
    events = sine_events("k", 500, spikes=(300,))
    cfg = small_config(detector="forecaster", model={"cell": cell})
    scores, _, alerts, _ = run(Pipeline(cfg), events)
    # The newest value's prediction error: the spike scores in full the moment it arrives.
    assert 300 in [a.sequence for a in alerts]
    assert scores[300] > 10 * np.nanmedian(scores[150:300])


def test_warmup_normalisation_keeps_flagging_a_lasting_shift():
    """A level shift after warm-up: running statistics learn it, frozen ones keep seeing it."""
    events = sine_events("k", 1500)
    for e in events[400:]:
        e.values = e.values + 3.0
    flagged = {}
    spot = {"method": "spot", "risk": 1e-3, "min_samples": 100, "calibration": "live"}
    for normalise in ("running", "warmup"):
        cfg = small_config(window={"normalise": normalise}, threshold=spot)
        _, flags, _, _ = run(Pipeline(cfg), events)
        flagged[normalise] = flags[1100:].mean()  # the shift's last 400 events
    assert flagged["warmup"] > 0.9
    assert flagged["running"] < 0.5 * flagged["warmup"]


def test_scoring_threads_split_batches_and_change_nothing():
    """``model.threads: 2`` scores each batch in two parts in two threads: the same alerts."""
    events = [
        e for pair in zip(sine_events("a", 600, (300,)), sine_events("b", 600, (450,), seed=1)) for e in pair
    ]
    threads = torch.get_num_threads()
    try:
        results = {}
        for n in (1, 2):
            pipeline = Pipeline(small_config(model={"scope": "shared", "threads": n}))
            assert pipeline.detector.workers == n
            results[n] = run(pipeline, events, size=512)
            pipeline.close()
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_allclose(results[2][0], results[1][0], rtol=1e-5, equal_nan=True)
    assert [a.alert_id for a in results[2][2]] == [a.alert_id for a in results[1][2]]
    assert results[1][2], "the spikes raise alerts"


def test_a_stride_that_skips_the_last_warmup_event_still_trains():
    """Warm-up 150, windows of 16 every 3rd event: no window ends at event 149, the first
    one past it trains the model, and scoring goes on every 3rd event."""
    events = sine_events("k", 500, spikes=(400,))
    pipeline = Pipeline(small_config(window={"stride": 3}))
    scores, _, alerts, results = run(pipeline, events)
    assert [t for r in results for t in r.trained] == [("k", 1)]
    scored = np.flatnonzero(np.isfinite(scores))
    assert scored[0] > 150 and set(np.diff(scored)) == {3}
    assert any(400 <= a.sequence <= 402 for a in alerts)


def carried_config(**sections):
    return small_config(
        detector="forecaster", model={"carry_state": True, **sections.pop("model", {})}, **sections
    )


def test_carried_state_scores_the_first_event_as_the_window_mode_then_goes_on():
    events = sine_events("k", 500, spikes=(300,))
    window_scores, _, _, _ = run(Pipeline(small_config(detector="forecaster")), events)
    carried = Pipeline(carried_config())
    scores, _, alerts, _ = run(carried, events)
    first = int(np.flatnonzero(np.isfinite(scores))[0])
    # The state is primed from the window at the first scored event: the same computation.
    assert scores[first] == pytest.approx(window_scores[first], rel=1e-5)
    assert np.isfinite(scores[first:]).all()
    assert 300 in [a.sequence for a in alerts]
    assert scores[300] > 10 * np.nanmedian(scores[first:300])
    carried_state = carried.detector.slots["k"].carried
    assert carried_state is not None and carried_state.version.tolist()[:1] == [1]


@pytest.mark.parametrize("scope", ["per_key", "shared"])
def test_carried_state_does_not_depend_on_batch_size_or_retraining_swaps(scope):
    events = [
        e for pair in zip(sine_events("a", 700, (300,)), sine_events("b", 700, (450,), seed=1)) for e in pair
    ]
    retraining = {"every_events": 200, "on_drift": False, "min_windows": 50, "swap_after_events": 40}
    cfg = carried_config(model={"scope": scope}, retraining=retraining)
    ref_scores, _, ref_alerts, ref = run(Pipeline(cfg), events, size=1000)
    assert any(o.promoted for r in ref for o in r.retrained), "a retrained model went live"
    for size in (1, 37):
        scores, _, alerts, _ = run(Pipeline(cfg), events, size=size)
        np.testing.assert_allclose(scores, ref_scores, rtol=1e-4, atol=1e-6, equal_nan=True)
        assert [a.alert_id for a in alerts] == [a.alert_id for a in ref_alerts]


def test_carried_state_needs_the_forecaster_one_step_and_no_stride():
    with pytest.raises(ConfigError, match=r"model\.carry_state"):
        small_config(model={"carry_state": True})
    with pytest.raises(ConfigError, match=r"model\.carry_state"):
        small_config(detector="forecaster", model={"carry_state": True}, window={"stride": 2})


def normalised_config(**sections):
    threshold = {"calibration": "live", **sections.pop("threshold", {})}
    model = {"normalise_errors": True, **sections.pop("model", {})}
    return small_config(model=model, threshold=threshold, **sections)


def test_normalised_errors_are_measured_on_the_first_live_windows_then_scored():
    events = sine_events("k", 500, spikes=(320,), features=3)
    pipeline = Pipeline(normalised_config(input={"value_fields": ["a", "b", "c"]}))
    scores, _, alerts, _ = run(pipeline, events, size=37)
    # min_samples (20) windows after warm-up (150) measure the scale; then every row is scored.
    assert np.isnan(scores[:170]).all() and np.isfinite(scores[170:]).all()
    model = pipeline.detector.slots["k"].model
    assert model is not None and torch.isfinite(model.error_scale).all()
    assert pipeline.states["k"].threshold.value > 0  # calibrated on the measuring windows' scores
    assert np.median(scores[170:300]) == pytest.approx(1.0, abs=0.5)  # each feature's error over its typical
    alert = next(a for a in alerts if 320 <= a.sequence <= 322)
    assert alert.top_features[0]["feature"] == "c"


@pytest.mark.parametrize(("detector", "carry"), [("autoencoder", False), ("forecaster", True)])
def test_normalised_errors_do_not_depend_on_batch_size_or_retraining_swaps(detector, carry):
    """Shared scope: both keys' windows measure the scale, one of them completes it mid-batch."""
    events = [
        e for pair in zip(sine_events("a", 700, (300,)), sine_events("b", 700, (450,), seed=1)) for e in pair
    ]
    retraining = {"every_events": 200, "on_drift": False, "min_windows": 50, "swap_after_events": 40}
    model = {"scope": "shared", "carry_state": carry}
    cfg = normalised_config(detector=detector, model=model, retraining=retraining)
    ref_scores, _, ref_alerts, ref = run(Pipeline(cfg), events, size=1000)
    assert any(o.promoted for r in ref for o in r.retrained), "a retrained model went live"
    assert ref_alerts
    scores, _, alerts, _ = run(Pipeline(cfg), events, size=37)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-4, atol=1e-6, equal_nan=True)
    assert [a.alert_id for a in alerts] == [a.alert_id for a in ref_alerts]


def test_a_rolled_back_model_takes_over_the_live_error_scale():
    pipeline = Pipeline(normalised_config(retraining={"enabled": False}))
    run(pipeline, sine_events("k", 300))
    slot = pipeline.detector.slots["k"]
    windows = np.stack([w for _, w in slot.buffer])
    before = pipeline.detector.score("k", windows)[1].mean(axis=0)
    other = type(slot.model)(slot.model.args, torch.Generator().manual_seed(5)).eval()
    pipeline.install("k", other)
    after = pipeline.detector.score("k", windows)[1].mean(axis=0)
    np.testing.assert_allclose(after, before, rtol=1e-4)


def test_normalised_errors_need_live_calibration_and_a_window_model():
    with pytest.raises(ConfigError, match=r"model\.normalise_errors .* threshold\.calibration: live"):
        small_config(model={"normalise_errors": True})
    with pytest.raises(ConfigError, match=r"model\.normalise_errors"):
        normalised_config(detector="hst")
