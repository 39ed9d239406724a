"""Online retraining: triggers, the promotion gate, what is learned from, determinism."""

import concurrent.futures
import copy
import itertools
from concurrent.futures import Future

import numpy as np
import pytest

from anomalyd.pipeline import Pipeline
from anomalyd.retraining import RetrainJob
from anomalyd.training import CancelledError, Candidate, FitReport

from .helpers import batches, sine_events, small_config

RETRAIN = {"every_events": 120, "on_drift": False, "min_windows": 50, "swap_after_events": 20}


def run(pipeline, events, size=64):
    results = [pipeline.process(b) for b in batches(events, size)]
    pipeline.close()
    return results


def outcomes(results):
    return [o for r in results for o in r.retrained]


def alerts(results):
    return [a for r in results for a in r.alerts]


def test_every_events_retrains_and_promotes_with_new_versions():
    results = run(Pipeline(small_config(retraining=RETRAIN)), sine_events("k", 700))
    done = outcomes(results)
    # 150 warm-up events, then 550 decided windows: triggers after 120, 240, 360, 480 (+20 to swap)
    assert [o.reason for o in done] == ["events"] * 4
    assert any(o.promoted for o in done), done
    # versions count promotions only: a rejected candidate leaves the live model as it was
    assert [o.version for o in done] == list(1 + np.cumsum([o.promoted for o in done]))
    assert all(0 < o.scale < 10 for o in done if o.promoted)


def test_alerts_carry_the_live_model_version():
    events = sine_events("k", 1000, spikes=(220, 950))
    pipeline = Pipeline(small_config(retraining=RETRAIN))
    results = run(pipeline, events)
    final = pipeline.detector.slots["k"].version
    assert final > 1
    by_sequence = {a.sequence: a.model_version for a in alerts(results)}
    early = [v for s, v in by_sequence.items() if s < 150 + 120 + 20]
    late = [v for s, v in by_sequence.items() if s > 150 + 720 + 20]  # after the sixth swap
    assert early and all(v == 1 for v in early)
    assert late and all(v == final for v in late)


@pytest.mark.parametrize("scope", ["per_key", "shared"])
def test_retraining_does_not_depend_on_batch_size(scope):
    events = [
        e for pair in zip(sine_events("a", 500, (300,)), sine_events("b", 500, (400,), seed=1)) for e in pair
    ]
    cfg = small_config(model={"scope": scope}, retraining=RETRAIN)
    ref = run(Pipeline(cfg), events, size=1000)
    for size in (1, 53):
        got = run(Pipeline(cfg), events, size=size)
        assert [a.alert_id for a in alerts(got)] == [a.alert_id for a in alerts(ref)]
        assert [(o.model_id, o.version, o.promoted) for o in outcomes(got)] == [
            (o.model_id, o.version, o.promoted) for o in outcomes(ref)
        ]
        np.testing.assert_allclose(
            np.concatenate([r.scores for r in got]), np.concatenate([r.scores for r in ref]), rtol=1e-5
        )


def test_drift_triggers_a_retraining():
    events = sine_events("k", 900)
    for e in events[400:]:
        e.values = e.values * 3.0 + 2.0  # a new regime
    # ADWIN on every score: the running normalisation soon absorbs this change of scale, so
    # the model's scores show a transient, which block means (the default) smooth away.
    retraining = {"every_events": None, "min_windows": 50, "swap_after_events": 20, "drift_min_events": 50,
                  "drift_block": 1}  # fmt: skip
    done = outcomes(run(Pipeline(small_config(retraining=retraining)), events))
    assert done and done[0].reason == "drift"


def test_drift_waits_for_drift_min_events_and_a_swap_is_no_drift():
    events = sine_events("k", 1400)
    for e in events[400:]:
        e.values = e.values * 3.0 + 2.0
    retraining = {"every_events": None, "min_windows": 50, "swap_after_events": 20, "drift_min_events": 400,
                  "drift_block": 1}  # fmt: skip
    pipeline = Pipeline(small_config(retraining=retraining))
    results = run(pipeline, events)
    scored = np.cumsum([np.isfinite(r.scores).sum() for r in results])
    at = [int(scored[i]) for i, r in enumerate(results) for _ in r.retrained]
    # A new model's own scores are no drift: retrainings stay drift_min_events apart.
    assert at and at[0] >= 400, at
    assert all(b - a >= 400 for a, b in itertools.pairwise(at)), at


def test_time_triggers_a_retraining():
    now = [0.0]
    cfg = {
        "every_events": None,
        "on_drift": False,
        "every_seconds": 60,
        "min_windows": 50,
        "swap_after_events": 20,
    }
    pipeline = Pipeline(small_config(retraining=cfg))
    pipeline.detector.clock = lambda: now[0]
    events = sine_events("k", 600)
    results = [pipeline.process(b) for b in batches(events[:300], 64)]
    assert not outcomes(results)
    now[0] = 61.0
    results += [pipeline.process(b) for b in batches(events[300:], 64)]
    pipeline.close()
    assert [o.reason for o in outcomes(results)] == ["time"]


def job_with(validation_loss: float, champion_loss: float, model) -> RetrainJob:
    future: Future = Future()
    report = FitReport(100, 1, validation_loss, validation_loss)
    future.set_result(Candidate(model, report, champion_loss, 2.0))
    return RetrainJob(future, swap_at=0, reason="events", data=np.zeros((100, 1, 1)), seed=0)


@pytest.mark.parametrize(
    ("validation", "champion", "promoted"),
    [
        (1.0, 1.0, True),
        (1.05, 1.0, True),
        (2.0, 1.0, False),
        # a candidate that cannot be judged is never promoted: its NaN scores silence alerts
        (float("nan"), 1.0, False),
        (float("inf"), 1.0, False),
        (1.0, float("nan"), False),
        (1.0, float("inf"), False),
        (float("nan"), float("nan"), False),
    ],
)
def test_promotion_gate(validation, champion, promoted):
    pipeline = Pipeline(small_config(retraining={"tolerance": 0.1}))
    run(pipeline, sine_events("k", 300))
    slot = pipeline.detector.slots["k"]
    live = slot.model
    candidate = copy.deepcopy(live)
    before = pipeline.states["k"].threshold.value
    slot.job = job_with(validation, champion, candidate)
    outcome = pipeline._swap("k")
    assert outcome.promoted is promoted
    assert (slot.model is candidate) is promoted and (slot.model is live) is not promoted
    assert slot.version == (2 if promoted else 1)
    after = pipeline.states["k"].threshold.value
    if promoted:  # moved to the candidate's scale (x2.0), or rebuilt higher from recent windows
        assert after >= 2.0 * before * (1 - 1e-6)
    else:
        assert after == before


def test_flagged_windows_are_never_learned_from():
    pipeline = Pipeline(small_config(retraining={"enabled": False}))
    run(pipeline, sine_events("k", 200))
    slot = pipeline.detector.slots["k"]
    window = np.full((16, 1), 9.0, dtype=np.float32)
    before = len(slot.buffer)
    pipeline.detector.observe("k", 5.0, False, 0, window)
    assert len(slot.buffer) == before
    pipeline.detector.observe("k", 0.1, True, 0, window)
    assert len(slot.buffer) == min(before + 1, slot.buffer.maxlen)
    assert slot.buffer[-1][1] is not window  # a copy


def test_swaps_raise_no_alert_storm():
    events = sine_events("k", 1200)
    quiet = alerts(run(Pipeline(small_config(retraining={"enabled": False})), events))
    retrained = run(Pipeline(small_config(retraining=RETRAIN)), events)
    assert len(outcomes(retrained)) >= 5
    assert len(alerts(retrained)) <= len(quiet) + 2


def test_windows_holding_a_flagged_point_are_not_learned_from():
    events = sine_events("k", 400, spikes=(250,))
    pipeline = Pipeline(small_config(retraining={"enabled": False}))
    results = run(pipeline, events)
    flagged = [i for r in results for i in range(len(r.events)) if r.anomalous[i]]
    assert flagged
    buffer = pipeline.detector.slots["k"].buffer
    assert len(buffer) > 200
    # the spike is +8 on a unit sine: after normalisation it is by far the largest value
    assert max(float(w.max()) for _, w in buffer) < 4.0


def test_a_rollback_discards_the_retraining_in_flight():
    pipeline = Pipeline(small_config(retraining=RETRAIN))
    events = sine_events("k", 500)
    run(pipeline, events[:300])
    slot = pipeline.detector.slots["k"]
    rolled_back = copy.deepcopy(slot.model)
    # a candidate judged against the model the rollback replaces, due at once, that would win
    stale = copy.deepcopy(slot.model)
    slot.job = job_with(1.0, 1.0, stale)
    version = pipeline.install("k", rolled_back)
    assert slot.job is None and slot.since_training == 0
    results = [pipeline.process(b) for b in batches(events[300:400], 64)]
    pipeline.close()
    assert not outcomes(results)  # no swap: neither the candidate nor its stale scale
    assert slot.model is rolled_back and slot.version == version


def test_discarding_a_running_retraining_stops_it():
    pipeline = Pipeline(small_config(retraining={**RETRAIN, "swap_after_events": 10_000}))
    run_until = sine_events("k", 600)
    for batch in batches(run_until, 64):
        pipeline.process(batch)
        if pipeline.detector.slots["k"].job is not None:
            break
    slot = pipeline.detector.slots["k"]
    job = slot.job
    assert job is not None
    assert pipeline.detector.discard("k")
    # cancelled before it ran, or stopped at its next batch: it never yields a candidate
    with pytest.raises((CancelledError, concurrent.futures.CancelledError)):
        job.future.result(timeout=30)
    pipeline.close()
