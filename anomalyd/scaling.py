"""Per-feature error normalisation (``model.normalise_errors``): measuring each feature's
typical error, so that no one feature's error outweighs the others by its units alone.

A model's score is the mean over features of their squared errors. Without normalisation a
feature the model reproduces badly, or one that drifts, dominates it. With it each
feature's error is divided by that feature's mean error on the model's first ``needed``
live windows after its first training: new data, which the model did not learn from (its
own training windows err less than any new data, and least of all in the slow sensors that
drift later). Those windows are taken as normal, as ``threshold.calibration: live`` takes
them; the threshold then calibrates on the same windows' scores under the scale.

A retrained or rolled-back model takes over the live model's scale, moved by how much more
or less it errs per feature on the same windows
(:func:`~anomalyd.model.transfer_error_scale`).

>>> import torch
>>> from anomalyd.model import ModelArgs, build_model
>>> model = build_model(ModelArgs(n_features=2, window_length=4, normalise_errors=True))
>>> measuring = ScaleMeasurement()
>>> measuring.add(0, np.array([1.0, 100.0]), needed=2, model=model) is None
True
>>> measuring.add(0, np.array([3.0, 300.0]), needed=2, model=model)
[(0, 0.5), (0, 1.5)]
>>> model.error_scale.tolist()
[2.0, 200.0]
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from anomalyd.model import WindowModel, set_error_scale, transfer_error_scale


class ScaleMeasurement:
    """The raw per-feature errors (F,) of a model's first live windows, with their keys' rows,
    until there are enough to set the model's error scale."""

    def __init__(self, keys: list[int] | None = None, errors: list[np.ndarray] | None = None):
        self.keys = keys or []
        self.errors = errors or []

    def add(
        self, key_index: int, errors: np.ndarray, needed: int, model: WindowModel
    ) -> list[tuple[int, float]] | None:
        """Count one window; the ``needed``-th sets ``model``'s scale, each feature's mean
        error here, and returns each counted window's key and score under it, in order."""
        self.keys.append(key_index)
        self.errors.append(np.asarray(errors, dtype=np.float64))
        if len(self.errors) < needed:
            return None
        rows = np.stack(self.errors)  # (N, F)
        set_error_scale(model, torch.from_numpy(rows.mean(axis=0)))
        scores = (rows / model.error_scale.cpu().numpy().astype(np.float64)).mean(axis=1)
        return list(zip(self.keys, scores.tolist(), strict=True))

    def get_state(self) -> dict[str, np.ndarray]:
        rows = np.stack(self.errors) if self.errors else np.zeros((0, 0))
        return {"keys": np.array(self.keys, dtype=np.int64), "errors": rows}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ScaleMeasurement:
        rows = np.asarray(state["errors"], dtype=np.float64)
        return cls(np.asarray(state["keys"]).tolist(), list(rows))


def hand_over_scale(
    live: WindowModel, model: WindowModel, windows: np.ndarray | None, device: torch.device
) -> None:
    """Give ``model``, about to replace ``live``, ``live``'s error scale moved by how much
    more or less it errs per feature on ``windows`` (N, T, F); as it is without windows."""
    if windows is None or len(windows) == 0:
        model.error_scale.copy_(live.error_scale)
        return
    data = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32)).to(device)
    transfer_error_scale(model, live, data)
