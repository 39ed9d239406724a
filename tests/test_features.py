import math

import numpy as np
import pytest

from anomalyd.config import FeatureConfig, InputConfig
from anomalyd.features import FeatureError, FeatureTransform


def transform(*features, fields=("a", "b")):
    return FeatureTransform(InputConfig(value_fields=fields, features=tuple(features)))


def test_identity_without_features():
    fx = FeatureTransform(InputConfig(value_fields=("a", "b")))
    raw = np.array([1.0, 2.0])
    assert fx.apply(0, raw) is raw
    assert fx.names == ("a", "b")


@pytest.mark.parametrize(
    ("op", "other", "first", "second", "expected"),
    [
        ("value", None, [2.0, 1.0], [3.0, 1.0], 3.0),
        ("log", None, [2.0, 1.0], [math.e, 1.0], 1.0),
        ("log1p", None, [2.0, 1.0], [0.0, 1.0], 0.0),
        ("ratio", "b", [2.0, 4.0], [3.0, 2.0], 1.5),
        ("log_ratio", "b", [2.0, 4.0], [4.0, 2.0], math.log(2.0)),
        ("log_return", None, [100.0, 0.0], [110.0, 0.0], math.log(1.1)),
        ("pct_change", None, [100.0, 0.0], [110.0, 0.0], 0.1),
        ("diff", None, [100.0, 0.0], [110.0, 0.0], 10.0),
    ],
)
def test_ops(op, other, first, second, expected):
    fx = transform(FeatureConfig(name="f", op=op, field="a", other=other))
    fx.apply(0, np.array(first))
    assert fx.apply(0, np.array(second))[0] == pytest.approx(expected)


def test_stateful_ops_start_at_zero_and_are_per_key():
    fx = transform(FeatureConfig(name="r", op="diff", field="a"))
    assert fx.apply(0, np.array([5.0, 0.0]))[0] == 0.0
    assert fx.apply(1, np.array([50.0, 0.0]))[0] == 0.0
    assert fx.apply(0, np.array([7.0, 0.0]))[0] == 2.0
    assert fx.apply(1, np.array([49.0, 0.0]))[0] == -1.0


def test_not_finite_raises_and_keeps_previous():
    fx = transform(FeatureConfig(name="r", op="log_return", field="a"))
    fx.apply(0, np.array([10.0, 0.0]))
    with pytest.raises(FeatureError, match="r"):
        fx.apply(0, np.array([0.0, 0.0]))
    assert fx.apply(0, np.array([20.0, 0.0]))[0] == pytest.approx(math.log(2.0))
