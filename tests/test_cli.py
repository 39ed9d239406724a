"""The CLI as a user runs it: a real subprocess, exit codes, one-line errors."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FAST = """
window: {length: 16}
model: {hidden_size: 8}
training: {warmup_events: 200, epochs: 5}
"""


def anomalyd(*args, cwd=ROOT, env=None):
    return subprocess.run(
        [sys.executable, "-m", "anomalyd.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_version():
    out = anomalyd("--version")
    assert out.returncode == 0
    assert "anomalyd, version" in out.stdout


def test_config_check_ok_and_show():
    assert anomalyd("config", "check", "config/nab.yaml").returncode == 0
    shown = anomalyd("config", "check", "--show", "config/prices.yaml")
    assert "log_return" in shown.stdout and "hidden_size: 32" in shown.stdout


def test_config_check_bad_value_exits_2_with_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  cell: transformer\n")
    out = anomalyd("config", "check", str(bad))
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0
    assert "model.cell: got 'transformer', expected one of 'lstm', 'gru' or 'rnn'" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["replay", "{tmp}/nope.csv"], "input file '{tmp}/nope.csv' does not exist"),
        (["replay", "{tmp}"], "input '{tmp}' is a directory"),
        (["replay", "{tmp}/*.nothing"], "input pattern '{tmp}/*.nothing' matches no files"),
        (["produce", "{tmp}", "--topic", "t"], "input '{tmp}' is a directory"),
        (["replay", "-c", "{tmp}", "examples/machine.csv"], "cannot read {tmp}: Is a directory"),
        (["run", "-c", "{tmp}/none.yaml"], "cannot read {tmp}/none.yaml: No such file"),
        (["config", "check", "{tmp}"], "cannot read {tmp}: Is a directory"),
    ],
)
def test_a_missing_or_folder_path_is_one_line_and_exit_2(tmp_path, args, says):
    out = anomalyd(*(a.format(tmp=tmp_path) for a in args))
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1, out.stderr  # no usage block, no traceback
    assert out.stderr.startswith("anomalyd: error: ")
    assert says.format(tmp=tmp_path) in out.stderr


def test_replay_unreadable_header_is_a_runtime_error(tmp_path):
    data = tmp_path / "x.csv"
    data.write_text("time,reading\n1,2\n")
    out = anomalyd("replay", str(data))
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith("anomalyd: error:")


def test_replay_writes_alerts_scores_plot_and_dead_letters(tmp_path):
    config = tmp_path / "fast.yaml"
    config.write_text(FAST)
    rows = (ROOT / "examples" / "machine.csv").read_text().splitlines()
    rows[500] = rows[500].split(",")[0] + ",not-a-number"
    rows.insert(700, "2026-03-03 10:00:00")  # truncated line: one field
    data = tmp_path / "machine.csv"
    data.write_text("\n".join(rows) + "\n")
    out = anomalyd(
        "replay", str(data), "-c", str(config),
        "--alerts", str(tmp_path / "a.jsonl"), "--scores", str(tmp_path / "s.csv"),
        "--plot", str(tmp_path / "p.png"), "--dead-letter", str(tmp_path / "dead.jsonl"),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout == ""  # alerts went to the file
    dead = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert [d["source"]["row"] for d in dead] == [499, 699]
    assert "not a number" in dead[0]["reason"]
    scores = list(csv.DictReader((tmp_path / "s.csv").open()))
    assert len(scores) == len(rows) - 1 - 2
    assert scores[0]["score"] == "" and scores[-1]["score"] != ""
    alerts = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert alerts, "the example has injected anomalies"
    assert {"alert_id", "key", "timestamp", "score", "threshold", "values", "top_features", "model_version",
            "source"} <= set(alerts[0])  # fmt: skip
    flagged = {s["timestamp"] for s in scores if s["is_anomaly"] == "1"}
    assert {a["timestamp"] for a in alerts} <= flagged
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    assert "dead letter" in out.stderr


def test_replay_prints_alerts_on_stdout_by_default(tmp_path):
    config = tmp_path / "fast.yaml"
    config.write_text(FAST)
    out = anomalyd("replay", "examples/machine.csv", "-c", str(config))
    assert out.returncode == 0, out.stderr
    alerts = [json.loads(line) for line in out.stdout.splitlines()]
    assert alerts and all(a["key"] == "machine" for a in alerts)


@pytest.mark.kernels
def test_the_defaults_alert_once_on_each_injected_anomaly_of_the_example(tmp_path):
    """`make demo`'s claim: no config, the full default model; the spike, the level drop and
    the flattened cycle that examples/make_example.py injects each raise one alert."""
    out = anomalyd("replay", "examples/machine.csv", "--alerts", str(tmp_path / "a.jsonl"))
    assert out.returncode == 0, out.stderr
    alerts = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    day = 288  # five-minute rows
    injected = [
        (5 * day + 100, 5 * day + 103),
        (8 * day + 40, 8 * day + 70),
        (10 * day + 150, 10 * day + 250),
    ]
    # an anomaly stays in the next 64-row windows: an alert up to there is on time
    for start, end in injected:
        assert sum(start <= a["sequence"] < end + 64 for a in alerts) == 1, (start, alerts)
    assert len(alerts) == len(injected)


@pytest.mark.parametrize("args", [["replay"], ["replay", "x.csv", "--bogus"], ["frobnicate"]])
def test_usage_errors_exit_2(args):
    assert anomalyd(*args).returncode == 2
