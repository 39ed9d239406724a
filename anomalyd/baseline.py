"""The baseline every table shows beside ours: river's HalfSpaceTrees, through the same path.

With ``detector: hst`` the pipeline is unchanged (parsing, warm-up, windows, thresholds,
alert gate, sinks); only the scorer differs. Per key, a forest of half-space trees (Tan et
al., 2011) looks at the newest value of each window: the key's features standardised by
their running mean and deviation before the value (river's ``StandardScaler`` without a
look-ahead, exactly what the autoencoder sees), within ``[-limit, limit]`` (HST splits a
fixed box; a value beyond it falls in an outermost cell). ``score_one`` then ``learn_one``,
one event after the other. With ``hst.scaler: minmax`` (and ``window.normalise: none``) the
forest sees river's ``MinMaxScaler`` of the raw values instead, in HST's own unit box: river's
``MinMaxScaler | HalfSpaceTrees``. The warm-up windows prime the forest while they calibrate the
threshold; pair it with ``threshold.method: river_quantile`` (river's ``QuantileFilter``
rule: a score at or above the running quantile of all past scores) for river's own setup.

HalfSpaceTrees keeps no state that loads with ``weights_only``, so snapshots (a state
directory) are not available with this detector.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from river import anomaly, compose, preprocessing

from anomalyd.config import HstConfig
from anomalyd.detector import Detector, ModelSlot
from anomalyd.errors import ModelError
from anomalyd.training import FitReport


class HstDetector(Detector):
    """A :class:`~anomalyd.detector.Detector` whose models are river pipelines, one per key."""

    def __init__(self, hst: HstConfig, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.hst = hst
        self.grouped = None  # no networks to stack: every model scores on its own
        self.forests: dict[str, anomaly.HalfSpaceTrees | compose.Pipeline] = {}
        self._names = [f"f{i}" for i in range(self.args.n_features)]

    def model_id(self, key: str) -> str:
        return key  # a forest per key: they learn as they score

    def is_trained(self, model_id: str) -> bool:
        return model_id in self.forests

    def train(self, model_id: str) -> FitReport:
        """Plant the forest; it learns from the warm-up windows as the threshold is calibrated."""
        slot, hst = self.slot(model_id), self.hst
        trees: dict[str, Any] = {
            "n_trees": hst.n_trees,
            "height": hst.height,
            "window_size": hst.window_size,
            "seed": hst.seed,
        }
        if hst.scaler == "minmax":  # HST's default box, [0, 1] per feature, is MinMaxScaler's
            self.forests[model_id] = preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(**trees)
        else:
            limits: dict[Any, tuple[float, float]] = {name: (-hst.limit, hst.limit) for name in self._names}
            self.forests[model_id] = anomaly.HalfSpaceTrees(limits=limits, **trees)
        slot.version = 1
        slot.last_report = FitReport(len(slot.buffer), 0, float("nan"), float("nan"))
        return slot.last_report

    def score(
        self, model_id: str, windows: np.ndarray, keys: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Score, then learn, the newest value of each window, in order."""
        forest = self.forests.get(model_id)
        if forest is None:
            raise RuntimeError(f"model {model_id!r} has not been trained")
        scores = np.empty(len(windows))
        names = self._names
        for i, row in enumerate(windows[:, -1, :].tolist()):
            x = dict(zip(names, row, strict=True))
            scores[i] = forest.score_one(x)
            forest.learn_one(x)
        return scores, np.zeros((len(windows), len(names)))

    def observe(
        self, model_id: str, score: float, learnable: bool, key_index: int, window: np.ndarray
    ) -> bool:
        self.slots[model_id].scored += 1
        return False  # no retraining: the forest learns continuously

    def remember(self, model_id: str, key_index: int, window: np.ndarray) -> None:
        slot: ModelSlot = self.slot(model_id)
        slot.buffer.append((key_index, window[-1:].copy()))  # the newest value is all it needs

    def get_state(self) -> dict[str, Any]:
        raise ModelError("detector 'hst' cannot be snapshotted: run it without a state directory")
