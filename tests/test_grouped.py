"""Same-shaped networks scored as one batched pass give what scoring each alone gives."""

import numpy as np
import pytest
import torch

from anomalyd.grouped import GroupedNets, GroupedScorer
from anomalyd.model import ModelArgs, build_model, window_errors
from anomalyd.pipeline import Pipeline

from .helpers import batches, sine_events, small_config


@pytest.mark.parametrize("kind", ["autoencoder", "forecaster"])
@pytest.mark.parametrize("members", [1, 3])
def test_grouped_models_score_as_each_alone(kind, members):
    args = ModelArgs(n_features=2, window_length=16, hidden_size=8, kind=kind, members=members)
    models = [build_model(args, torch.Generator().manual_seed(seed)) for seed in range(4)]
    windows = [torch.randn(n, 16, 2, generator=torch.Generator().manual_seed(n)) for n in (5, 1, 7, 3)]
    got = GroupedScorer().errors(models, windows)
    for model, x, errors in zip(models, windows, got, strict=True):
        torch.testing.assert_close(errors, window_errors(model, x)[1], atol=1e-5, rtol=1e-4)


def test_an_ensemble_is_one_stack_of_its_members():
    model = build_model(ModelArgs(n_features=1, window_length=16, hidden_size=8, members=3))
    assert GroupedNets.of([model]).encoder.w_hh.shape == (3, 8, 32)


@pytest.mark.parametrize("members", [1, 2])
def test_a_per_key_replay_scores_alike_grouped_or_not(members):
    events = [e for trio in zip(*(sine_events(k, 260, seed=i) for i, k in enumerate("abc"))) for e in trio]
    scores = {}
    for setting in ("on", "off"):
        config = small_config(
            model={"group_networks": setting, "members": members}, retraining={"enabled": False}
        )
        pipeline = Pipeline(config)
        assert (pipeline.detector.grouped is not None) == (setting == "on")
        scores[setting] = np.concatenate([pipeline.process(b).scores for b in batches(events, 60)])
        pipeline.close()
    assert np.isfinite(scores["on"]).sum() > 100
    np.testing.assert_allclose(scores["on"], scores["off"], rtol=1e-4, atol=1e-6)
