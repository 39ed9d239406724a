"""SIGKILL at random moments (start-up, before the first snapshot, later), then resume: no
alert id of an uninterrupted run missing, none foreign. ``bench/kill_probe.py`` runs more."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from anomalyd.events import Alert
from anomalyd.sinks.jsonl import FileSink

ROOT = Path(__file__).resolve().parents[2]


def load_probe():
    spec = importlib.util.spec_from_file_location("kill_probe", ROOT / "bench" / "kill_probe.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["kill_probe"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_replay_killed_at_ten_random_moments_loses_no_alert_and_invents_none(tmp_path):
    probe = load_probe()
    expected, got, lives = probe.probe(tmp_path, kills=10, rows=2000, seed=3)
    assert len(set(expected)) >= 3, "the series has alerts to lose"
    killed = [life for life in lives if life.killed]
    assert len(killed) >= 10
    assert {life.phase for life in killed} == {"start-up", "pre-snapshot", "running"}
    assert any(life.phase == "start-up" and life.snapshots == 0 for life in killed)
    assert set(expected) <= set(got), probe.table(lives)  # nothing lost
    assert set(got) <= set(expected), probe.table(lives)  # a re-sent alert is the same alert
    assert lives[-1].restored and not lives[-1].killed


def test_kafka_daemon_killed_after_its_first_commits_loses_no_alert(kafka_broker, tmp_path):
    """The shipped snapshot_interval_s of 30 s; kills in start-up, in the first seconds of
    consuming (offsets committed already) and after a snapshot. Committing offsets without a
    snapshot of them lost 8 of 38 alerts here and invented 45."""
    probe = load_probe()
    expected, got, lives = probe.probe(
        tmp_path, kills=3, rows=8000, seed=11, bootstrap=kafka_broker.bootstrap
    )
    assert len(set(expected)) >= 3
    assert sum(life.killed for life in lives) == 3
    assert set(expected) <= set(got), probe.table(lives)
    assert set(got) <= set(expected), probe.table(lives)


def alert(n: int) -> Alert:
    return Alert(f"id{n}", "k", "t", 1.0, 0.5, {"value": 1.0}, [], 1, n, {})


def test_a_line_torn_by_a_kill_is_cut_when_the_file_is_appended_to(tmp_path):
    path = tmp_path / "alerts.jsonl"
    sink = FileSink(path, append=False)
    sink.add(alert(0))
    sink.flush()
    with path.open("ab") as handle:  # what a kill in the middle of a buffered write leaves
        handle.write(b'{"schema": 1, "alert_id": "id1", "ke')
    resumed = FileSink(path, append=True)
    resumed.add(alert(1))
    resumed.close()
    assert [json.loads(line)["alert_id"] for line in path.read_text().splitlines()] == ["id0", "id1"]
