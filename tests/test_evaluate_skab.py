"""SKAB metrics on tiny hand-built cases, scoring a scores CSV, and `anomalyd evaluate --suite skab`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from anomalyd.cli import main
from anomalyd.evaluation import EvaluationError, score_skab
from anomalyd.evaluation.skab import FIT_ROWS, Counts, SkabReport, point_counts

ROOT = Path(__file__).resolve().parents[1]


def bools(text):
    return np.array([c == "1" for c in text], dtype=bool)


def test_counts_f1_far_mar_by_hand():
    counts = point_counts(bools("0011100000"), bools("0111000011"), skip=0)
    assert counts == Counts(tp=2, fp=3, fn=1, tn=4)
    assert counts.f1 == pytest.approx(2 * 2 / (2 * 2 + 3 + 1))  # 0.5
    assert counts.far == pytest.approx(3 / 7)  # false alarms / actual normals
    assert counts.mar == pytest.approx(1 / 3)  # missed / actual anomalies
    assert (counts.rows, counts.anomalies, counts.alarms) == (10, 3, 5)


def test_first_rows_are_skipped():
    labels, predicted = np.zeros(FIT_ROWS + 4, dtype=bool), np.ones(FIT_ROWS + 4, dtype=bool)
    labels[-2:] = True
    counts = point_counts(labels, predicted)
    assert counts == Counts(tp=2, fp=2, fn=0, tn=0)
    assert point_counts(bools("1111"), bools("0000"), skip=3) == Counts(fn=1)


def test_undefined_ratios_are_none():
    silent = point_counts(bools("0000"), bools("0000"), skip=0)
    assert silent.f1 is None and silent.mar is None and silent.far == 0.0
    assert point_counts(bools("11"), bools("11"), skip=0).far is None


def test_pooled_sums_counts_before_the_ratios():
    report = SkabReport((("a", Counts(tp=1, fp=0, fn=0, tn=9)), ("b", Counts(tp=0, fp=1, fn=9, tn=0))))
    assert report.pooled == Counts(tp=1, fp=1, fn=9, tn=9)
    assert report.pooled.f1 == pytest.approx(2 / 12)  # not the mean of 1.0 and 0.0
    assert report.to_dict()["pooled"]["far"] == pytest.approx(0.1)


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError):
        point_counts(bools("01"), bools("011"))


def write_skab(path, labels):
    header = "datetime;Accelerometer1RMS;anomaly;changepoint\n"
    rows = [f"2020-03-09 16:{i // 60:02d}:{i % 60:02d};0.5;{float(y)};0.0\n" for i, y in enumerate(labels)]
    path.write_text(header + "".join(rows))
    return [r.split(";")[0] for r in rows]


def test_score_skab_aligns_scores_to_data_rows(tmp_path):
    labels = [0] * 402 + [1, 1, 1, 0, 0]
    stamps = write_skab(tmp_path / "1.csv", labels)
    flags = {402: 1, 403: 1, 405: 1}
    lines = ["file,key,timestamp,score,threshold,is_anomaly"]
    for i, stamp in enumerate(stamps):
        if i == 404:  # dead-lettered: no score row, so counted as not anomalous
            continue
        lines.append(f"{tmp_path / '1.csv'},1,{stamp},0.1,0.2,{flags.get(i, 0)}")
    scores = tmp_path / "scores.csv"
    scores.write_text("\n".join(lines) + "\n")
    report = score_skab(scores, tmp_path)
    assert report.files == (("1.csv", Counts(tp=2, fp=1, fn=1, tn=3)),)

    args = ["evaluate", "--skab", "--scores", str(scores), "--json", str(tmp_path / "r.json")]
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 0, out.output
    assert out.output.splitlines()[-1].split()[:5] == ["pooled", "7", "3", "3", "0.667"]
    assert json.loads((tmp_path / "r.json").read_text())["pooled"]["tp"] == 2


def test_score_skab_rejects_scores_of_another_file(tmp_path):
    write_skab(tmp_path / "1.csv", [0, 1])
    scores = tmp_path / "scores.csv"
    row = f"{tmp_path / '1.csv'},1,2021-01-01 00:00:00,,,0"
    scores.write_text(f"file,key,timestamp,score,threshold,is_anomaly\n{row}\n")
    with pytest.raises(EvaluationError, match="matches no remaining data row"):
        score_skab(scores)


def test_evaluate_suite_skab_on_the_real_files(datasets_dir, tmp_path):
    cfg = yaml.safe_load((ROOT / "config" / "sensors.yaml").read_text())
    cfg["window"] = {"length": 16}
    cfg["model"] = {**cfg["model"], "hidden_size": 8}
    cfg["training"] = {"warmup_events": 400, "epochs": 3}
    config = tmp_path / "fast.yaml"
    config.write_text(yaml.safe_dump(cfg))
    out = subprocess.run(
        [sys.executable, "-m", "anomalyd.cli", "evaluate", "--suite", "skab", str(datasets_dir / "skab"),
         "-c", str(config), "--workdir", str(tmp_path / "work"), "--json", str(tmp_path / "r.json"),
         "--baseline", str(ROOT / "config" / "sensors-hst.yaml")],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    ours, baseline, comparison = out.stdout.split("\n\n")
    table = ours.splitlines()
    assert [line.split()[0] for line in table[2:]] == [f"valve2/{i}.csv" for i in range(4)] + ["pooled"]
    pooled = table[-1].split()
    assert pooled[1] == str(725 + 663 + 729 + 595) and pooled[2] == str(394 + 333 + 395 + 395)
    assert 0.0 <= float(pooled[4]) <= 1.0 and pooled[5].endswith("%") and pooled[6].endswith("%")
    assert (tmp_path / "work" / "scores.csv").exists() and (tmp_path / "work" / "alerts.jsonl").exists()
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["pooled"]["rows"] == report["baseline"]["pooled"]["rows"] == 2712
    # the baseline (HalfSpaceTrees) went through the same replay path, and the comparison adds up
    assert "sensors-hst.yaml" in baseline and (tmp_path / "work" / "baseline" / "scores.csv").exists()
    [line] = [line for line in comparison.splitlines() if line.startswith("pooled F1")]
    _, _, a, b, diff = line.split()
    assert float(a) == pytest.approx(report["pooled"]["f1"], abs=5e-4)
    assert float(b) == pytest.approx(report["baseline"]["pooled"]["f1"], abs=5e-4)
    assert float(diff) == pytest.approx(float(a) - float(b), abs=2e-3)
