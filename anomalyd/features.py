"""Derived model inputs from raw fields, per key, never looking ahead (e.g. OHLCV bars).

Stateful operations (``log_return``, ``pct_change``, ``diff``) compare with the key's
previous record; on a key's first record they give 0.

>>> from anomalyd.config import InputConfig, FeatureConfig
>>> cfg = InputConfig(value_fields=("Close", "Volume"), features=(
...     FeatureConfig(name="ret", op="log_return", field="Close"),
...     FeatureConfig(name="lvol", op="log1p", field="Volume")))
>>> fx = FeatureTransform(cfg)
>>> fx.apply(0, np.array([100.0, 0.0])).round(4).tolist()
[0.0, 0.0]
>>> fx.apply(0, np.array([110.0, 9.0])).round(4).tolist()
[0.0953, 2.3026]
"""

from __future__ import annotations

import numpy as np

from anomalyd.config import InputConfig

_STATEFUL = {"log_return", "pct_change", "diff"}


class FeatureError(ValueError):
    """A derived feature is not finite (log of a negative price, division by zero)."""


class FeatureTransform:
    """Maps raw value fields (in ``value_fields`` order) to model features."""

    def __init__(self, config: InputConfig):
        self.names = config.feature_names
        self.identity = not config.features
        index = {name: i for i, name in enumerate(config.value_fields)}
        self._ops = [
            (f.name, f.op, index[f.field], index[f.other] if f.other else -1) for f in config.features
        ]
        self._stateful = any(op in _STATEFUL for _, op, _, _ in self._ops)
        self._previous: dict[int, np.ndarray] = {}

    @property
    def n_features(self) -> int:
        return len(self.names)

    def forget(self, key_index: int) -> None:
        self._previous.pop(key_index, None)

    def get_state(self) -> dict[int, np.ndarray]:
        """Each key's previous raw values (stateful features only), for snapshots."""
        return dict(self._previous)

    def set_state(self, state: dict[int, np.ndarray]) -> None:
        self._previous = {int(k): np.asarray(v, dtype=np.float64) for k, v in state.items()}

    def apply(self, key_index: int, raw: np.ndarray) -> np.ndarray:
        """Features for one record of key ``key_index``; raises FeatureError when not finite."""
        if self.identity:
            return raw
        previous = self._previous.get(key_index) if self._stateful else None
        out = np.empty(len(self._ops))
        with np.errstate(all="ignore"):
            for i, (_, op, a, b) in enumerate(self._ops):
                x = raw[a]
                if op == "value":
                    out[i] = x
                elif op == "log":
                    out[i] = np.log(x)
                elif op == "log1p":
                    out[i] = np.log1p(x)
                elif op == "ratio":
                    out[i] = x / raw[b]
                elif op == "log_ratio":
                    out[i] = np.log(x / raw[b])
                elif previous is None:
                    out[i] = 0.0
                elif op == "log_return":
                    out[i] = np.log(x / previous[a])
                elif op == "pct_change":
                    out[i] = x / previous[a] - 1.0
                else:  # diff
                    out[i] = x - previous[a]
        if not np.isfinite(out).all():
            bad = [self._ops[i][0] for i in np.flatnonzero(~np.isfinite(out))]
            raise FeatureError(f"derived feature(s) {', '.join(bad)} not finite for values {raw.tolist()}")
        if self._stateful:
            self._previous[key_index] = raw
        return out
