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
        known = np.array([previous is not None])
        out = self._compute(raw[None], raw[None] if previous is None else previous[None], known)[0]
        if not np.isfinite(out).all():
            raise FeatureError(self._reason(out, raw))
        if self._stateful:
            self._previous[key_index] = raw
        return out

    def apply_many(self, key_indices: list[int], raw: np.ndarray) -> tuple[np.ndarray, dict[int, str]]:
        """Features (N, F) for records (N, R) of keys ``key_indices``, in stream order.

        The same as :meth:`apply` record by record: ``errors`` maps each row whose features
        are not finite to the reason (that row's features are meaningless, and it is not a
        key's previous record).

        >>> from anomalyd.config import InputConfig, FeatureConfig
        >>> fx = FeatureTransform(InputConfig(value_fields=("Close",), features=(
        ...     FeatureConfig(name="d", op="diff", field="Close"),)))
        >>> out, errors = fx.apply_many([0, 1, 0], np.array([[10.0], [5.0], [12.0]]))
        >>> out.ravel().tolist(), errors
        ([0.0, 0.0, 2.0], {})
        """
        if self.identity:
            return raw, {}
        previous, known = self._previous_rows(key_indices, raw)
        out = self._compute(raw, previous, known)
        bad = np.flatnonzero(~np.isfinite(out).all(axis=1)).tolist()
        if bad and self._stateful:  # a rejected record is no key's previous one: record by record
            return self._apply_each(key_indices, raw)
        if self._stateful:
            for key, i in {key: i for i, key in enumerate(key_indices)}.items():  # each key's last row
                self._previous[key] = raw[i].copy()
        return out, {i: self._reason(out[i], raw[i]) for i in bad}

    def _apply_each(self, key_indices: list[int], raw: np.ndarray) -> tuple[np.ndarray, dict[int, str]]:
        out = np.zeros((len(raw), len(self._ops)))
        errors: dict[int, str] = {}
        for i, (key, row) in enumerate(zip(key_indices, raw, strict=True)):
            try:
                out[i] = self.apply(key, row)
            except FeatureError as exc:
                errors[i] = str(exc)
        return out, errors

    def _previous_rows(self, key_indices: list[int], raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each record's key's previous raw values (N, R), and whether it has one (N,)."""
        if not self._stateful:
            return raw, np.zeros(len(raw), dtype=bool)
        previous, known = raw.copy(), np.zeros(len(raw), dtype=bool)
        last = dict(self._previous)
        for i, key in enumerate(key_indices):
            before = last.get(key)
            if before is not None:
                previous[i], known[i] = before, True
            last[key] = raw[i]
        return previous, known

    def _compute(self, raw: np.ndarray, previous: np.ndarray, known: np.ndarray) -> np.ndarray:
        """The operations on columns: raw values (N, R) -> features (N, F); a stateful one
        compares with ``previous`` (N, R), and gives 0 where the key has none (``known``)."""
        out = np.empty((len(raw), len(self._ops)))
        with np.errstate(all="ignore"):
            for i, (_, op, a, b) in enumerate(self._ops):
                x, before = raw[:, a], previous[:, a]
                if op == "value":
                    out[:, i] = x
                elif op == "log":
                    out[:, i] = np.log(x)
                elif op == "log1p":
                    out[:, i] = np.log1p(x)
                elif op == "ratio":
                    out[:, i] = x / raw[:, b]
                elif op == "log_ratio":
                    out[:, i] = np.log(x / raw[:, b])
                elif op == "log_return":
                    out[:, i] = np.where(known, np.log(x / before), 0.0)
                elif op == "pct_change":
                    out[:, i] = np.where(known, x / before - 1.0, 0.0)
                else:  # diff
                    out[:, i] = np.where(known, x - before, 0.0)
        return out

    def _reason(self, out: np.ndarray, raw: np.ndarray) -> str:
        bad = [self._ops[i][0] for i in np.flatnonzero(~np.isfinite(out))]
        return f"derived feature(s) {', '.join(bad)} not finite for values {raw.tolist()}"
