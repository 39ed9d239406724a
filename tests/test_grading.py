"""The grade: its range, its promise on normal scores, its scale-freedom across keys, and its
stability across a promotion and a rollback."""

import math

import numpy as np
import pytest
import torch

from anomalyd.grading import Grader
from anomalyd.pipeline import Pipeline
from tests.helpers import batches, sine_events, small_config

CUT = 0.999


def graded(scores: np.ndarray, cut: float = CUT, window: int = 1000, min_samples: int = 64) -> np.ndarray:
    grader = Grader(window, min_samples, cut)
    out = np.empty(len(scores))
    for i, score in enumerate(scores.tolist()):
        out[i] = grader.grade(score)
        grader.update(score)
    return out


def ar1(rng: np.random.Generator, n: int, phi: float) -> np.ndarray:
    """A stationary AR(1) series of unit variance: scores as autocorrelated as a window's are."""
    noise = rng.normal(0.0, math.sqrt(1 - phi * phi), n)
    out = np.empty(n)
    out[0] = noise[0]
    for i in range(1, n):
        out[i] = phi * out[i - 1] + noise[i]
    return out


NORMAL_SCORES = {
    "lognormal": lambda rng, n: rng.lognormal(0.0, 0.5, n),
    "exponential": lambda rng, n: rng.exponential(1.0, n),
    "chi2 1 dof": lambda rng, n: rng.chisquare(1, n),
    "half-normal tiny": lambda rng, n: np.abs(rng.normal(0.0, 1e-4, n)),
    "autocorrelated": lambda rng, n: np.exp(0.5 * ar1(rng, n, 0.9)),
}


def test_grades_lie_in_0_1_and_are_nan_until_ready():
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.lognormal(0, 0.5, 2000), [0.0, 1e9, np.nan]])
    grades = graded(scores)
    assert np.isnan(grades[:64]).all()
    ready = grades[64:-1]
    assert ((ready >= 0) & (ready <= 1)).all()
    assert grades[-2] > 0.99999 and math.isnan(grades[-1])


@pytest.mark.parametrize("kind", sorted(NORMAL_SCORES))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_flagged_share_of_normal_scores_keeps_the_promise(kind, seed):
    """At most 3x the promised 1 - cut, whatever the scores' distribution and scale."""
    rng = np.random.default_rng(seed)
    grades = graded(NORMAL_SCORES[kind](rng, 60_000))
    share = float(np.mean(grades[~np.isnan(grades)] > CUT))
    assert share <= 3 * (1 - CUT), share


def test_keys_on_different_scales_get_the_same_grades():
    rng = np.random.default_rng(3)
    scores = rng.gamma(2.0, 1.0, 3000)
    small, large = graded(scores * 1e-3), graded(scores * 1e4)
    np.testing.assert_allclose(small, large, atol=1e-6, equal_nan=True)


def test_a_rescaled_grader_grades_the_new_models_scores_as_the_old_ones():
    rng = np.random.default_rng(4)
    scores = rng.lognormal(0.0, 0.4, 1500)
    before, after = Grader(), Grader()
    for s in scores[:1000].tolist():
        before.update(s)
        after.update(s)
    after.rescale(7.0)
    for s in scores[1000:].tolist():
        assert after.grade(7.0 * s) == pytest.approx(before.grade(s), abs=1e-6)
        before.update(s)
        after.update(7.0 * s)


def test_an_incident_does_not_teach_the_grader_but_a_lasting_change_does():
    rng = np.random.default_rng(5)
    grader = Grader(window=500, min_samples=64, cut=CUT)
    for s in rng.lognormal(0, 0.3, 600).tolist():
        grader.update(s)
    for _ in range(20):  # an incident: not learnt, still graded high at its end
        grader.update(50.0)
    assert grader.grade(50.0) > CUT
    for _ in range(100):  # the new level lasted a tenth of the window: it is normal now
        grader.update(50.0)
    assert grader.grade(50.0) < CUT


def test_a_grader_resumes_exactly_from_its_state():
    rng = np.random.default_rng(6)
    scores = rng.lognormal(0, 0.5, 900).tolist()
    a, b = Grader(window=300), Grader(window=300)
    for s in scores[:500]:
        a.update(s)
    b.set_state(a.get_state())
    for s in scores[500:]:
        assert a.grade(s) == b.grade(s)
        a.update(s)
        b.update(s)


def grade_config(**sections: dict):
    threshold = {"method": "grade", "calibration": "live", "min_samples": 32, "grade": CUT}
    return small_config(threshold=threshold, **sections)


def decided(pipeline: Pipeline, events) -> tuple[np.ndarray, np.ndarray]:
    grades, flags = [], []
    for batch in batches(events, 100):
        result = pipeline.process(batch)
        grades.append(result.grades)
        flags.append(result.anomalous)
    return np.concatenate(grades), np.concatenate(flags)


@pytest.mark.kernels
def test_the_pipeline_grades_every_decided_event():
    pipeline = Pipeline(grade_config(retraining={"enabled": False}))
    grades, flags = decided(pipeline, sine_events("k", 700, spikes=(600,)))
    ready = np.flatnonzero(~np.isnan(grades))
    # ready within a window's length (16) plus the grader's samples (32) of the warm-up (150)
    assert ready[0] <= 150 + 32 + 16
    assert flags[600:616].any() and grades[600:616].max() > CUT
    assert not flags[:590].any()


@pytest.mark.kernels
def test_grades_do_not_jump_when_a_model_is_rolled_back():
    pipeline = Pipeline(grade_config(retraining={"enabled": False}))
    events = sine_events("k", 1400)
    before, _ = decided(pipeline, events[:900])
    slot = pipeline.detector.slots["k"]
    other = type(slot.model)(slot.model.args, torch.Generator().manual_seed(5)).eval()  # errs far more
    pipeline.install("k", other)
    after, flags = decided(pipeline, events[900:])
    assert not flags.any()
    assert abs(np.nanmedian(after) - np.nanmedian(before[-500:])) < 0.3


@pytest.mark.kernels
def test_grades_do_not_jump_when_a_retrained_model_is_promoted():
    retraining = {"every_events": 300, "on_drift": False, "min_windows": 50, "swap_after_events": 40}
    pipeline = Pipeline(grade_config(retraining=retraining))
    results = [pipeline.process(batch) for batch in batches(sine_events("k", 1600), 100)]
    assert any(o.promoted for r in results for o in r.retrained), "a retrained model went live"
    assert not any(r.anomalous.any() for r in results)
