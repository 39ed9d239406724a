"""FeatureTransform.apply_many is apply, record by record, rejected records included."""

from __future__ import annotations

import numpy as np
import pytest

from anomalyd.config import FeatureConfig, InputConfig
from anomalyd.features import FeatureError, FeatureTransform

OPS = ("value", "log", "log1p", "ratio", "log_ratio", "log_return", "pct_change", "diff")


def transform(ops: tuple[str, ...]) -> FeatureTransform:
    features = tuple(
        FeatureConfig(name=f"f{i}", op=op, field="a", other="b" if "ratio" in op else None)
        for i, op in enumerate(ops)
    )
    return FeatureTransform(InputConfig(value_fields=("a", "b"), features=features))


def one_by_one(fx: FeatureTransform, keys: list[int], raw: np.ndarray) -> tuple[list, dict[int, str]]:
    out, errors = [], {}
    for i, (key, row) in enumerate(zip(keys, raw, strict=True)):
        try:
            out.append(fx.apply(key, row))
        except FeatureError as exc:
            out.append(None)
            errors[i] = str(exc)
    return out, errors


@pytest.mark.parametrize("seed", range(8))
def test_apply_many_matches_apply_with_rejections(seed):
    rng = np.random.default_rng(seed)
    ops = tuple(rng.choice(OPS, int(rng.integers(1, 5)), replace=False).tolist())
    one, many = transform(ops), transform(ops)
    for _ in range(5):
        n = int(rng.integers(0, 60))
        keys = rng.integers(0, 5, n).tolist()
        raw = rng.uniform(0.5, 2.0, (n, 2))
        bad = rng.random(n) < 0.1
        raw[bad, 0] = rng.choice([0.0, -1.0], int(bad.sum()))  # log of <= 0, division by 0
        expected, expected_errors = one_by_one(one, keys, raw)
        out, errors = many.apply_many(keys, raw)
        assert errors == expected_errors
        for i, row in enumerate(expected):
            if row is not None:
                assert np.array_equal(out[i], row)
        assert one.get_state().keys() == many.get_state().keys()
        for key, previous in one.get_state().items():
            assert np.array_equal(many.get_state()[key], previous)


def test_identity_passes_the_array_through():
    fx = FeatureTransform(InputConfig(value_fields=("a",)))
    raw = np.array([[1.0], [2.0]])
    out, errors = fx.apply_many([0, 1], raw)
    assert out is raw and errors == {}


def test_rejected_record_is_not_the_previous_one():
    fx = transform(("log_return",))
    out, errors = fx.apply_many([0, 0, 0], np.array([[10.0, 1.0], [0.0, 1.0], [20.0, 1.0]]))
    assert list(errors) == [1] and "f0" in errors[1]
    assert out[0, 0] == 0.0 and out[2, 0] == pytest.approx(np.log(2.0))
