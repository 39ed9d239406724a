"""Fit an autoencoder on windows of normal data; pure, so it can later run off the hot path."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from anomalyd.config import TrainingConfig
from anomalyd.model import Autoencoder, AutoencoderArgs


@dataclass(frozen=True)
class FitReport:
    windows: int
    epochs: int
    train_loss: float
    validation_loss: float


def fit(
    args: AutoencoderArgs,
    windows: np.ndarray,
    config: TrainingConfig,
    seed: int,
    device: torch.device,
) -> tuple[Autoencoder, FitReport]:
    """Train a fresh model on ``windows`` (N, T, F), the newest tenth held back for validation.

    Adam with gradient-norm clipping (Pascanu et al., 2013) guards against exploding
    gradients; the same seed and windows give the same weights.
    """
    if windows.ndim != 3 or len(windows) == 0:
        raise ValueError(f"need windows shaped (N, T, F) with N > 0, got {windows.shape}")
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Autoencoder(args).to(device)
    data = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32)).to(device)
    n_val = len(data) // 10 if len(data) >= 20 else 0
    train, val = data[: len(data) - n_val], data[len(data) - n_val :]
    optimiser = torch.optim.Adam(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    loss_fn = nn.MSELoss()
    train_loss = math.nan
    model.train()
    for _ in range(config.epochs):
        order = torch.randperm(len(train), generator=generator).to(device)
        total = 0.0
        for start in range(0, len(train), config.batch_size):
            batch = train[order[start : start + config.batch_size]]
            optimiser.zero_grad(set_to_none=True)
            loss = loss_fn(model(batch), batch)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimiser.step()
            total += float(loss.detach()) * len(batch)
        train_loss = total / len(train)
    model.eval()
    validation_loss = math.nan
    if n_val:
        with torch.inference_mode():
            validation_loss = float(loss_fn(model(val), val))
    report = FitReport(len(data), config.epochs, train_loss, validation_loss)
    return model, report
