"""Fit a window model on windows of normal data; pure, so it can later run off the hot path."""

from __future__ import annotations

import copy
import math
import threading
import time
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
    epochs: int  # epochs run (fewer than configured when stopped early or out of steps)
    train_loss: float
    validation_loss: float
    steps: int = 0  # optimizer steps taken
    seconds: float = 0.0  # CPU seconds of the training thread


@dataclass
class _Run:
    """One training's loop state: the model, its optimiser and what is left of the budget."""

    model: WindowModel
    optimiser: torch.optim.Optimizer
    generator: torch.Generator
    steps_left: float  # math.inf without a budget
    steps: int = 0


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
    start: WindowModel | None = None,
    max_steps: int | None = None,
) -> tuple[WindowModel, FitReport]:
    """Train a model on ``windows`` (N, T, F), the newest tenth held back for validation.

    The model starts fresh, or from a copy of ``start``'s weights (a warm retraining: the
    live model already knows most of what the new windows hold). Adam with gradient-norm
    clipping (Pascanu et al., 2013) guards against exploding gradients. Training stops after
    ``max_steps`` optimizer steps, or with ``config.patience`` once the held-back loss has
    not improved for that many epochs (the best epoch's weights are kept; Prechelt, "Early
    Stopping - But When?", 1998). The same seed, windows and start give the same weights.
    """
    if windows.ndim != 3 or len(windows) == 0:
        raise ValueError(f"need windows shaped (N, T, F) with N > 0, got {windows.shape}")
    began = time.thread_time()
    generator = torch.Generator().manual_seed(seed)
    model = build_model(args, generator).to(device)
    if start is not None:
        model.load_state_dict(start.state_dict())
    data = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32)).to(device)
    n_val = validation_size(len(data))
    train, val = data[: len(data) - n_val], data[len(data) - n_val :]
    optimiser = torch.optim.Adam(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    run = _Run(model, optimiser, generator, math.inf if max_steps is None else max_steps)
    train_loss, epochs = _train_epochs(run, train, val if n_val else None, config, cancel)
    model.eval()
    validation_loss = _loss(model, val) if n_val else math.nan
    seconds = time.thread_time() - began
    return model, FitReport(len(data), epochs, train_loss, validation_loss, run.steps, seconds)


def _train_epochs(
    run: _Run,
    train: torch.Tensor,
    val: torch.Tensor | None,
    config: TrainingConfig,
    cancel: threading.Event | None,
) -> tuple[float, int]:
    """Epochs until the configured count, the step budget or early stopping ends them; the
    last epoch's training loss and the number of epochs run."""
    best, best_state, stale = math.inf, None, 0
    train_loss, epochs = math.nan, 0
    while epochs < config.epochs and run.steps_left > 0:
        train_loss = _epoch(run, train, config, cancel)
        epochs += 1
        if config.patience is None or val is None:
            continue
        loss = _loss(run.model, val)
        run.model.train()
        if loss < best:
            best, best_state, stale = loss, copy.deepcopy(run.model.state_dict()), 0
        else:
            stale += 1
            if stale >= config.patience:
                break
    if best_state is not None:
        run.model.load_state_dict(best_state)
    return train_loss, epochs


def _epoch(run: _Run, train: torch.Tensor, config: TrainingConfig, cancel: threading.Event | None) -> float:
    """One pass over ``train`` in a fresh random order (or as much as the budget allows);
    the mean training loss of the windows it saw."""
    model, optimiser = run.model, run.optimiser
    model.train()
    order = torch.randperm(len(train), generator=run.generator).to(train.device)
    total, seen = 0.0, 0
    for start in range(0, len(train), config.batch_size):
        if run.steps_left <= 0:
            break
        if cancel is not None and cancel.is_set():
            raise CancelledError
        batch = train[order[start : start + config.batch_size]]
        optimiser.zero_grad(set_to_none=True)
        loss = model.loss(batch)
        loss.backward()
        for group in model.parameter_groups():
            nn.utils.clip_grad_norm_(group, config.grad_clip)
        optimiser.step()
        run.steps += 1
        run.steps_left -= 1
        total += float(loss.detach()) * len(batch)
        seen += len(batch)
    return total / seen if seen else math.nan


def _loss(model: WindowModel, windows: torch.Tensor) -> float:
    model.eval()
    with torch.inference_mode():
        return float(model.loss(windows))


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
    start: WindowModel | None = None,
    max_steps: int | None = None,
) -> Candidate:
    """Train a candidate on ``windows`` (from ``start``'s weights when given) and score the
    champion on the candidate's held-back tenth.

    With ``normalise_errors`` the candidate takes the champion's error scale, moved by how
    much more or less it errs per feature on the held-back windows (all, when none are).
    """
    model, report = fit(args, windows, config, seed, device, cancel, start, max_steps)
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
