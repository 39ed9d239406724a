import math

import numpy as np
import pytest
import torch

from anomalyd.config import TrainingConfig
from anomalyd.model import Autoencoder, AutoencoderArgs, reconstruction_errors, resolve_device
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
        AutoencoderArgs(n_features=3, window_length=10, hidden_size=8, num_layers=layers, cell=cell)
    )
    x = torch.randn(5, 10, 3)
    assert model(x).shape == (5, 10, 3)
    scores, per_feature = reconstruction_errors(model, x)
    assert scores.shape == (5,)
    assert per_feature.shape == (5, 3)
    assert torch.allclose(scores, per_feature.mean(dim=1))


@pytest.mark.parametrize("cell", CELLS)
def test_training_learns_and_anomalies_score_higher(cell):
    windows = sine_windows()
    args = AutoencoderArgs(n_features=1, window_length=16, hidden_size=16, cell=cell)
    untrained, _ = fit(
        args, windows, TrainingConfig(warmup_events=750, epochs=1, learning_rate=1e-9), 0, torch.device("cpu")
    )
    model, report = fit(args, windows, TrainingConfig(epochs=15), 0, torch.device("cpu"))
    before = reconstruction_errors(untrained, torch.from_numpy(windows))[0].mean()
    after = reconstruction_errors(model, torch.from_numpy(windows))[0].mean()
    assert after < 0.5 * before
    assert math.isfinite(report.validation_loss)
    broken = windows[:20].copy()
    broken[:, -3:, 0] += 4.0  # a spike at the end of each window
    normal_score = reconstruction_errors(model, torch.from_numpy(windows[:20]))[0]
    broken_score = reconstruction_errors(model, torch.from_numpy(broken))[0]
    assert (broken_score > normal_score).all()


def test_same_seed_same_model():
    windows = sine_windows(n=60)
    args = AutoencoderArgs(n_features=1, window_length=16, hidden_size=8)
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
        AutoencoderArgs(n_features=1, window_length=16, hidden_size=8, cell="rnn"),
        windows,
        TrainingConfig(epochs=3, learning_rate=0.1, grad_clip=1.0),
        0,
        torch.device("cpu"),
    )
    assert math.isfinite(report.train_loss)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_lstm_forget_bias_starts_at_one():
    model = Autoencoder(AutoencoderArgs(n_features=1, window_length=4, hidden_size=4))
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
        fit(AutoencoderArgs(1, 4), np.zeros((0, 4, 1), np.float32), TrainingConfig(), 0, torch.device("cpu"))
