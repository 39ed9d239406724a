"""Fit a window model on windows of normal data; pure, so it can later run off the hot path."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from anomalyd.config import TrainingConfig
from anomalyd.model import ModelArgs, WindowModel, build_model, transfer_error_scale, window_errors


class CancelledError(Exception):
    """Training was asked to stop (the process is shutting down)."""


@dataclass(frozen=True)
class FitReport:
    windows: int
    epochs: int
    train_loss: float
    validation_loss: float


def validation_size(n_windows: int) -> int:
    """How many of the newest windows are held back from training: a tenth, once there are 20."""
    return n_windows // 10 if n_windows >= 20 else 0


def fit(
    args: ModelArgs,
    windows: np.ndarray,
    config: TrainingConfig,
    seed: int,
    device: torch.device,
    cancel: threading.Event | None = None,
) -> tuple[WindowModel, FitReport]:
    """Train a fresh model on ``windows`` (N, T, F), the newest tenth held back for validation.

    Adam with gradient-norm clipping (Pascanu et al., 2013) guards against exploding
    gradients; the same seed and windows give the same weights.
    """
    if windows.ndim != 3 or len(windows) == 0:
        raise ValueError(f"need windows shaped (N, T, F) with N > 0, got {windows.shape}")
    generator = torch.Generator().manual_seed(seed)
    model = build_model(args, generator).to(device)
    data = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32)).to(device)
    n_val = validation_size(len(data))
    train, val = data[: len(data) - n_val], data[len(data) - n_val :]
    optimiser = torch.optim.Adam(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    train_loss = math.nan
    model.train()
    for _ in range(config.epochs):
        order = torch.randperm(len(train), generator=generator).to(device)
        total = 0.0
        for start in range(0, len(train), config.batch_size):
            if cancel is not None and cancel.is_set():
                raise CancelledError
            batch = train[order[start : start + config.batch_size]]
            optimiser.zero_grad(set_to_none=True)
            loss = model.loss(batch)
            loss.backward()
            for group in model.parameter_groups():
                nn.utils.clip_grad_norm_(group, config.grad_clip)
            optimiser.step()
            total += float(loss.detach()) * len(batch)
        train_loss = total / len(train)
    model.eval()
    validation_loss = math.nan
    if n_val:
        with torch.inference_mode():
            validation_loss = float(model.loss(val))
    report = FitReport(len(data), config.epochs, train_loss, validation_loss)
    return model, report


@dataclass(frozen=True)
class Candidate:
    """A retrained model and how it compares with the live one on the same held-back windows."""

    model: WindowModel
    report: FitReport
    champion_loss: float
    scale: float  # candidate's mean score / champion's, on the held-back windows


def challenge(
    args: ModelArgs,
    windows: np.ndarray,
    config: TrainingConfig,
    seed: int,
    device: torch.device,
    champion: WindowModel,
    cancel: threading.Event | None = None,
) -> Candidate:
    """Train a candidate on ``windows`` and score the champion on the candidate's held-back tenth.

    With ``normalise_errors`` the candidate takes the champion's error scale, moved by how
    much more or less it errs per feature on the held-back windows (all, when none are).
    """
    model, report = fit(args, windows, config, seed, device, cancel)
    n_val = validation_size(len(windows))
    held = windows[-n_val:] if n_val else windows
    val = torch.from_numpy(np.ascontiguousarray(held, dtype=np.float32)).to(device)
    if args.normalise_errors:
        transfer_error_scale(model, champion, val)
    if n_val == 0:
        return Candidate(model, report, math.nan, 1.0)
    with torch.inference_mode():
        champion_loss = float(champion.loss(val))
    champion_mean = float(window_errors(champion, val)[0].mean())
    candidate_mean = float(window_errors(model, val)[0].mean())
    scale = candidate_mean / champion_mean if champion_mean > 0 else 1.0
    return Candidate(model, report, champion_loss, scale)
