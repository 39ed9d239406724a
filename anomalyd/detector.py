"""Score batches of windows with the right model; collect normal windows to learn from.

With ``scope: per_key`` every key has a model of its own; with ``shared`` all keys use one
model (each key still normalised on its own). Models are addressed by a model id: the
key itself, or ``""`` for the shared model.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
import torch

from anomalyd.config import ModelConfig, TrainingConfig
from anomalyd.model import Autoencoder, AutoencoderArgs, reconstruction_errors, resolve_device
from anomalyd.training import FitReport, fit

SHARED = ""


@dataclass
class ModelSlot:
    """One model and what it learns from: the newest normal windows, tagged with their key."""

    model: Autoencoder | None = None
    version: int = 0
    buffer: deque[tuple[int, np.ndarray]] = field(default_factory=deque)
    last_report: FitReport | None = None


class Detector:
    """Batched scoring (one forward pass per model per batch) and training of the autoencoders."""

    def __init__(self, model: ModelConfig, training: TrainingConfig, n_features: int, window_length: int):
        self.config = model
        self.training = training
        self.args = AutoencoderArgs(
            n_features=n_features,
            window_length=window_length,
            hidden_size=model.hidden_size,
            num_layers=model.num_layers,
            cell=model.cell,
            dropout=model.dropout,
        )
        self.device = resolve_device(model.device)
        if model.threads is not None:
            # Explicit, so that several processes on one host do not oversubscribe the cores
            # (OpenMP workers spin; two processes of two threads each on two cores crawl).
            torch.set_num_threads(model.threads)
        self.slots: dict[str, ModelSlot] = {}

    def model_id(self, key: str) -> str:
        return key if self.config.scope == "per_key" else SHARED

    def slot(self, model_id: str) -> ModelSlot:
        slot = self.slots.get(model_id)
        if slot is None:
            slot = self.slots[model_id] = ModelSlot(buffer=deque(maxlen=self.training.max_windows))
        return slot

    def remember(self, model_id: str, key_index: int, window: np.ndarray) -> None:
        """Keep a copy of a normal window for the next training of ``model_id``."""
        self.slot(model_id).buffer.append((key_index, window.copy()))

    def train(self, model_id: str) -> FitReport:
        """Fit a new model on the slot's buffer and make it live with the next version."""
        slot = self.slot(model_id)
        windows = np.stack([w for _, w in slot.buffer])
        seed = self.config.seed + slot.version
        slot.model, slot.last_report = fit(self.args, windows, self.training, seed, self.device)
        slot.version += 1
        return slot.last_report

    def score(self, model_id: str, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores (N,) and per-feature errors (N, F) of windows (N, T, F) under ``model_id``."""
        model = self.slots[model_id].model
        if model is None:
            raise RuntimeError(f"model {model_id!r} has not been trained")
        scores, per_feature = [], []
        size = self.config.score_batch_size
        for start in range(0, len(windows), size):
            x = torch.from_numpy(windows[start : start + size]).to(self.device)
            s, f = reconstruction_errors(model, x)
            scores.append(s.cpu().numpy())
            per_feature.append(f.cpu().numpy())
        return np.concatenate(scores), np.concatenate(per_feature)

    def is_trained(self, model_id: str) -> bool:
        slot = self.slots.get(model_id)
        return slot is not None and slot.model is not None
