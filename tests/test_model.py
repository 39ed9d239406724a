import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from anomalyd.config import TrainingConfig
from anomalyd.model import (
    Autoencoder,
    Ensemble,
    Forecaster,
    ModelArgs,
    build_model,
    mean_feature_errors,
    resolve_device,
    set_error_scale,
    transfer_error_scale,
    window_errors,
)
from anomalyd.training import fit

CELLS = ["lstm", "gru", "rnn"]


def sine_windows(n=200, length=16, features=1, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n + length)
    x = np.stack([np.sin(t / 5 + f) for f in range(features)], axis=1) + rng.normal(
        0, 0.05, (n + length, features)
    )
    return np.stack([x[i : i + length] for i in range(n)]).astype(np.float32)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layers", [1, 2])
def test_shapes_for_every_cell(cell, layers):
    model = Autoencoder(
        ModelArgs(n_features=3, window_length=10, hidden_size=8, num_layers=layers, cell=cell)
    )
    x = torch.randn(5, 10, 3)
    assert model(x).shape == (5, 10, 3)
    scores, per_feature = window_errors(model, x)
    assert scores.shape == (5,)
    assert per_feature.shape == (5, 3)
    assert torch.allclose(scores, per_feature.mean(dim=1))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("kind", ["autoencoder", "forecaster"])
def test_training_learns_and_anomalies_score_higher(cell, kind):
    windows = sine_windows()
    args = ModelArgs(n_features=1, window_length=16, hidden_size=16, cell=cell, kind=kind)
    untrained, _ = fit(
        args, windows, TrainingConfig(warmup_events=750, epochs=1, learning_rate=1e-9), 0, torch.device("cpu")
    )
    model, report = fit(args, windows, TrainingConfig(epochs=15), 0, torch.device("cpu"))
    before = window_errors(untrained, torch.from_numpy(windows))[0].mean()
    after = window_errors(model, torch.from_numpy(windows))[0].mean()
    assert after < 0.5 * before
    assert math.isfinite(report.validation_loss)
    broken = windows[:20].copy()
    broken[:, -1, 0] += 4.0  # a spike at the end of each window
    normal_score = window_errors(model, torch.from_numpy(windows[:20]))[0]
    broken_score = window_errors(model, torch.from_numpy(broken))[0]
    assert (broken_score > normal_score).all()


def test_same_seed_same_model():
    windows = sine_windows(n=60)
    args = ModelArgs(n_features=1, window_length=16, hidden_size=8)
    cfg = TrainingConfig(epochs=3)
    a, _ = fit(args, windows, cfg, 7, torch.device("cpu"))
    b, _ = fit(args, windows, cfg, 7, torch.device("cpu"))
    c, _ = fit(args, windows, cfg, 8, torch.device("cpu"))
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters(), strict=True))


def test_huge_inputs_do_not_explode_training():
    windows = sine_windows(n=60) * 1e4
    model, report = fit(
        ModelArgs(n_features=1, window_length=16, hidden_size=8, cell="rnn"),
        windows,
        TrainingConfig(epochs=3, learning_rate=0.1, grad_clip=1.0),
        0,
        torch.device("cpu"),
    )
    assert math.isfinite(report.train_loss)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_lstm_forget_bias_starts_at_one():
    model = Autoencoder(ModelArgs(n_features=1, window_length=4, hidden_size=4))
    total = model.encoder.bias_ih_l0.detach() + model.encoder.bias_hh_l0.detach()
    assert torch.allclose(total[4:8], torch.ones(4))


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            resolve_device("cuda")


def test_fit_rejects_empty_input():
    with pytest.raises(ValueError):
        fit(ModelArgs(1, 4), np.zeros((0, 4, 1), np.float32), TrainingConfig(), 0, torch.device("cpu"))


@pytest.mark.parametrize("cell", CELLS)
def test_forecaster_shapes_and_the_score_is_the_newest_values_error(cell):
    args = ModelArgs(n_features=3, window_length=10, hidden_size=8, cell=cell, kind="forecaster")
    model = build_model(args, torch.Generator().manual_seed(0))
    assert isinstance(model, Forecaster)
    x = torch.randn(5, 10, 3)
    assert model(x).shape == (5, 9, 3)
    scores, per_feature = window_errors(model, x)
    assert per_feature.shape == (5, 3)
    with torch.no_grad():
        expected = (model(x)[:, -1] - x[:, -1]).pow(2)
    assert torch.allclose(per_feature, expected, atol=1e-6)
    changed = x.clone()
    changed[:, -1, 1] += 3.0  # only the newest value of feature 1 moves
    _, moved = window_errors(model, changed)
    assert torch.equal(moved[:, 0], per_feature[:, 0]) and torch.equal(moved[:, 2], per_feature[:, 2])
    assert not torch.equal(moved[:, 1], per_feature[:, 1])


def test_forecaster_loss_leaves_out_the_burn_in():
    args = ModelArgs(n_features=1, window_length=17, hidden_size=4, kind="forecaster")
    model = build_model(args, torch.Generator().manual_seed(0))
    assert isinstance(model, Forecaster) and model.burn_in == 4
    x = torch.randn(3, 17, 1)
    with torch.no_grad():
        predicted = model(x)  # (3, 16, 1): position t predicts x[:, t + 1]
        assert torch.allclose(model.loss(x), (predicted[:, 4:] - x[:, 5:]).pow(2).mean())
        # The first 4 predictions are read from a state that has seen 1 to 4 values; they do not count.
        assert not torch.allclose(model.loss(x), (predicted - x[:, 1:]).pow(2).mean())


def test_forecaster_score_steps_average_the_newest_errors():
    args = ModelArgs(n_features=2, window_length=12, hidden_size=4, kind="forecaster", score_steps=3)
    model = build_model(args, torch.Generator().manual_seed(0))
    x = torch.randn(4, 12, 2)
    _, per_feature = window_errors(model, x)
    with torch.no_grad():
        expected = (model(x)[:, -3:] - x[:, -3:]).pow(2).mean(dim=1)  # the newest 3 values' errors
    assert torch.allclose(per_feature, expected, atol=1e-6)
    one = build_model(ModelArgs(2, 12, 4, kind="forecaster"), torch.Generator().manual_seed(0))
    assert not torch.allclose(window_errors(one, x)[1], per_feature)  # same weights, newest error only


def noisy_pair_windows(n=200, length=16, seed=0):
    """Feature 0 a clean sine, feature 1 loud noise: its error is some 100x feature 0's."""
    rng = np.random.default_rng(seed)
    t = np.arange(n + length)
    x = np.stack([np.sin(t / 5) + rng.normal(0, 0.05, len(t)), rng.normal(0, 10.0, len(t))], axis=1)
    return np.stack([x[i : i + length] for i in range(n)]).astype(np.float32)


def test_normalised_errors_keep_a_loud_feature_from_drowning_a_quiet_ones_anomaly():
    args = ModelArgs(n_features=2, window_length=16, hidden_size=8, normalise_errors=True)
    model = build_model(args, torch.Generator().manual_seed(0)).eval()
    normal = torch.from_numpy(noisy_pair_windows(seed=1))
    shifted = normal.clone()
    shifted[:, -4:, 0] += 3.0  # the quiet feature's newest values move by 60 of its noise's sigmas

    def separated() -> float:  # share of shifted windows scoring above every normal one
        highest = window_errors(model, normal)[0].max()
        return float((window_errors(model, shifted)[0] > highest).float().mean())

    assert torch.isnan(model.error_scale).all()  # not measured yet: errors as they are
    typical = mean_feature_errors(model, normal)
    assert typical[1] > 100 * typical[0]
    raw = separated()
    set_error_scale(model, typical)
    scores, per_feature = window_errors(model, normal)
    assert torch.allclose(per_feature.mean(dim=0), torch.ones(2), rtol=1e-4)  # each feature: 1 on average
    assert torch.allclose(scores, per_feature.mean(dim=1))
    assert raw < 0.2 and separated() > 0.95, (raw, separated())


def test_error_scale_is_floored_and_kept_in_the_state_dict():
    args = ModelArgs(n_features=3, window_length=4, hidden_size=4, normalise_errors=True)
    model = build_model(args)
    set_error_scale(model, torch.tensor([0.0, 1.0, 2.0]))
    assert model.error_scale.tolist() == pytest.approx([1e-3, 1.0, 2.0])  # a thousandth of the mean
    copy = build_model(args)
    copy.load_state_dict(model.state_dict())
    assert torch.equal(copy.error_scale, model.error_scale)
    assert "error_scale" not in build_model(ModelArgs(3, 4, 4)).state_dict()  # older checkpoints load


def test_a_new_model_takes_over_the_scale_so_its_errors_mean_the_same():
    args = ModelArgs(n_features=2, window_length=16, hidden_size=8, normalise_errors=True)
    windows = torch.from_numpy(noisy_pair_windows(n=60))
    old = build_model(args, torch.Generator().manual_seed(0))
    new = build_model(args, torch.Generator().manual_seed(1))
    set_error_scale(old, torch.tensor([0.5, 4.0]))
    transfer_error_scale(new, old, windows)
    before = window_errors(old, windows)[1].mean(dim=0)
    after = window_errors(new, windows)[1].mean(dim=0)
    assert torch.allclose(before, after, rtol=1e-4)
    assert not torch.allclose(new.error_scale, old.error_scale)


@pytest.mark.parametrize("kind", ["autoencoder", "forecaster"])
def test_an_ensemble_scores_the_mean_of_its_differently_initialised_members(kind):
    args = ModelArgs(n_features=2, window_length=12, hidden_size=8, kind=kind, members=3)
    model = build_model(args, torch.Generator().manual_seed(0))
    assert isinstance(model, Ensemble) and len(model.members) == 3
    assert all(member.args.members == 1 for member in model.members)
    heads = [member.head.weight for member in model.members]
    assert not torch.equal(heads[0], heads[1]) and not torch.equal(heads[1], heads[2])
    x = torch.randn(5, 12, 2)
    scores, per_feature = window_errors(model, x)
    each = torch.stack([window_errors(member, x)[1] for member in model.members])
    assert torch.allclose(per_feature, each.mean(dim=0))
    assert torch.allclose(scores, per_feature.mean(dim=1))
    assert not isinstance(build_model(ModelArgs(n_features=2, window_length=12)), Ensemble)


def test_each_member_learns_as_if_alone():
    """The summed loss gives each member its own gradient, and clipping is per member: a
    member's update does not shrink because another's gradient is large."""
    args = ModelArgs(n_features=1, window_length=16, hidden_size=8, members=2)
    model = build_model(args, torch.Generator().manual_seed(0))
    x = torch.from_numpy(sine_windows(n=32))
    x[:, :, 0] *= torch.tensor([1.0] * 16 + [50.0] * 16).unsqueeze(1)  # large errors, large gradients
    model.loss(x).backward()
    for member in model.members:
        alone = build_model(replace(args, members=1))
        alone.load_state_dict(member.state_dict())
        alone.loss(x).backward()
        for mine, theirs in zip(member.parameters(), alone.parameters(), strict=True):
            assert mine.grad is not None and theirs.grad is not None
            assert torch.allclose(mine.grad, theirs.grad, atol=1e-6)
    assert len(model.parameter_groups()) == 2
    assert [len(group) for group in model.parameter_groups()] == [
        len(list(m.parameters())) for m in model.members
    ]


def test_an_ensemble_learns_and_scores_anomalies_higher():
    windows = sine_windows(n=200)
    single = ModelArgs(n_features=1, window_length=16, hidden_size=16)
    cfg = TrainingConfig(epochs=15)
    model, report = fit(replace(single, members=3), windows, cfg, 0, torch.device("cpu"))
    assert math.isfinite(report.validation_loss)
    broken = windows[:20].copy()
    broken[:, -1, 0] += 4.0
    assert (
        window_errors(model, torch.from_numpy(broken))[0]
        > window_errors(model, torch.from_numpy(windows[:20]))[0]
    ).all()
    untrained = build_model(replace(single, members=3), torch.Generator().manual_seed(0))
    x = torch.from_numpy(windows)
    assert window_errors(model, x)[0].mean() < 0.5 * window_errors(untrained, x)[0].mean()
