from pathlib import Path

import pytest

from anomalyd.config import Config, load_config, load_config_text, parse_config
from anomalyd.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_default_yaml_equals_builtin_defaults():
    assert load_config(ROOT / "config" / "default.yaml") == Config()


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "config").glob("*.yaml")))
def test_shipped_configs_are_valid(name):
    load_config(ROOT / "config" / f"{name}.yaml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("model: {hidden_size: -1}", "model.hidden_size: got -1, expected a value >= 1"),
        ("model: {hiden_size: 3}", "model.hiden_size: unknown key (expected one of: carry_state, cell,"),
        (
            "threshold: {method: median}",
            "threshold.method: got 'median', expected one of 'grade', 'quantile', 'ewma', 'spot', "
            "'likelihood' or "
            "'river_quantile'",
        ),
        ("window: {length: x}", "window.length: got 'x', expected a valid integer"),
        ("input: {value_fields: []}", "input.value_fields: got [], expected at least 1 item(s)"),
        ("input: {delimiter: ';;'}", "input.delimiter"),
        ("training: {warmup_fraction: 1.5}", "training.warmup_fraction: got 1.5, expected a value <= 1"),
        (
            "window: {length: 100}\ntraining: {warmup_events: 50}",
            "warmup_events (50) must be >= window.length (100)",
        ),
        ("output: {alerts: [{type: file}]}", "output.alerts.0: a 'file' sink needs a path"),
        (
            "detector: forecaster\nwindow: {length: 16}\nmodel: {score_steps: 13}",
            "model.score_steps (13) must be <= 12 for window.length 16",
        ),
        ("model: {score_steps: 4}", "model.score_steps (4) applies to detector: forecaster only"),
        ("model: {members: 0}", "model.members: got 0, expected a value >= 1"),
        ("eviction: {max_keys: 0}", "eviction.max_keys: got 0, expected a value >= 1"),
        ("eviction: {idle_ttl_s: -5}", "eviction.idle_ttl_s: got -5, expected a value > 0"),
        (
            "detector: forecaster\nmodel: {carry_state: true, members: 3}",
            "model.carry_state (true) needs model.members 1, got 3",
        ),
        ("bogus: 1", "bogus: unknown key (expected one of: alerts, detector, eviction, hst, input,"),
        ("- 1\n- 2", "expected a mapping of sections"),
        ("model: [", "not valid YAML"),
        (
            "input: {features: [{name: r, op: log_return, field: Close}]}",
            "feature 'r' reads 'Close', which is not in value_fields",
        ),
        ("input: {value_fields: [a], features: [{name: r, op: ratio, field: a}]}", "needs 'other'"),
    ],
)
def test_bad_config_names_key_value_and_expectation(text, expected):
    with pytest.raises(ConfigError) as info:
        load_config_text(text)
    assert expected in str(info.value)


def test_env_interpolation(monkeypatch):
    monkeypatch.setenv("ANOMALYD_TEST_HIDDEN", "48")
    cfg = load_config_text("model: {hidden_size: '${ANOMALYD_TEST_HIDDEN}', cell: '${NOPE_UNSET:-gru}'}")
    assert cfg.model.hidden_size == 48
    assert cfg.model.cell == "gru"


def test_missing_env_var_is_named(monkeypatch):
    monkeypatch.delenv("ANOMALYD_TEST_UNSET", raising=False)
    expected = r"model\.cell: environment variable ANOMALYD_TEST_UNSET is not set"
    with pytest.raises(ConfigError, match=expected):
        load_config_text("model: {cell: '${ANOMALYD_TEST_UNSET}'}")


def test_empty_file_gives_defaults():
    assert load_config_text("") == Config()


def test_config_is_frozen():
    cfg = Config()
    with pytest.raises(ValueError):
        cfg.model.hidden_size = 3  # type: ignore[misc]


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


def test_three_members_by_default_and_one_with_a_carried_state():
    assert Config().model.members == 3
    carried = parse_config({"detector": "forecaster", "model": {"carry_state": True}})
    assert carried.model.members == 1
    from_env = parse_config({"detector": "forecaster", "model": {"carry_state": "true"}})  # a ${VAR}'s text
    assert from_env.model.members == 1
    named = parse_config({"detector": "forecaster", "model": {"carry_state": False, "members": 2}})
    assert named.model.members == 2
