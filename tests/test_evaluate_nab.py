"""NAB scoring: hand-computed cases from SCORING.md's formulas, the sweep, inputs, the CLI."""

import json
import math
import random
import time

import numpy as np
import pytest
from click.testing import CliRunner

from anomalyd.cli import main
from anomalyd.evaluation import EvaluationError, score_nab
from anomalyd.evaluation.data import align_rows, load_nab, nab_detections, windows_to_rows
from anomalyd.evaluation.nab import (
    PROFILES,
    STANDARD,
    LabelledFile,
    Window,
    normalised_score,
    probation_rows,
    score_corpus,
    score_file,
    sweep,
    sweep_curve,
)

LOW_FP, LOW_FN = PROFILES[1], PROFILES[2]


def f(x):
    """SCORING.md's f(x) = 2 / (1 + exp(5x)) - 1, written out again."""
    return 2 / (1 + math.exp(5 * x)) - 1


# 100 rows: probation is rows 0..14; one window of 10 rows, 40..49.
FILE = LabelledFile("cat/a.csv", 100, (Window(40, 49),))


def outcome(*rows, file=FILE):
    detected = np.zeros(file.rows, dtype=bool)
    detected[list(rows)] = True
    return score_file(file, detected)


def test_probation_is_15_percent_at_most_750_rows():
    assert probation_rows(100) == 15
    assert probation_rows(4032) == 604  # floor(604.8)
    assert probation_rows(5000) == 750
    assert probation_rows(22695) == 750
    assert FILE.probation == 15


def test_detection_at_window_start_earns_full_credit():
    result = outcome(40)
    assert result.detected == 1 and result.missed == 0
    assert result.credit == pytest.approx(1.0)
    assert result.raw(STANDARD) == pytest.approx(1.0)
    assert normalised_score(result.raw(STANDARD), 1, STANDARD) == pytest.approx(100.0)


def test_detection_at_last_window_row_earns_f_of_minus_one_over_width():
    result = outcome(49)
    expected = f(-1 / 10) / f(-1)  # x = -(49 - 49 + 1) / 10
    assert expected == pytest.approx(0.2482, abs=1e-4)
    assert result.credit == pytest.approx(expected)
    # halfway: x = -(49 - 45 + 1) / 10 = -0.5, credit 0.86
    assert outcome(45).credit == pytest.approx(f(-0.5) / f(-1)) and round(outcome(45).credit, 2) == 0.86
    assert normalised_score(result.raw(STANDARD), 1, STANDARD) == pytest.approx(100 * (expected + 1) / 2)


def test_two_detections_in_a_window_count_once_by_the_earliest():
    both = outcome(42, 47)
    assert both.detected == 1 and both.tp_rows == 2 and both.fp_detections == 0
    assert both.credit == pytest.approx(outcome(42).credit)
    assert both.credit == pytest.approx(f(-(49 - 42 + 1) / 10) / f(-1))


def test_false_positive_right_after_a_window_costs_little():
    after = outcome(40, 50)  # one row past a window of width 10: c = f(1 / 9)
    assert after.fp_detections == 1
    assert after.fp_cost == pytest.approx(f(1 / 9))
    assert after.raw(STANDARD) == pytest.approx(1.0 + 0.11 * f(1 / 9))
    assert after.raw(LOW_FP) == pytest.approx(1.0 + 0.22 * f(1 / 9))
    assert -0.03 < 0.11 * f(1 / 9) < 0
    # a quarter width past: c = -0.55 (SCORING.md); three widths and more: exactly -1
    assert outcome(49 + 9 // 4 + 1).fp_cost == pytest.approx(f(3 / 9))
    assert outcome(49 + 28).fp_cost == -1.0  # (77 - 49) / 9 = 3.1 > 3


def test_false_positive_before_any_window_costs_the_full_fp_weight():
    early = outcome(20)
    assert early.fp_cost == -1.0
    assert early.raw(STANDARD) == pytest.approx(-0.11 - 1.0)  # the FP, and the missed window
    assert early.raw(LOW_FP) == pytest.approx(-0.22 - 1.0)
    assert early.raw(LOW_FN) == pytest.approx(-0.11 - 2.0)


def test_probationary_rows_are_not_scored():
    assert outcome(0, 14).fp_detections == 0
    assert outcome(15).fp_detections == 1
    counts = outcome(14, 40, 41, 60)
    assert (counts.tp_rows, counts.fp_rows, counts.fn_rows, counts.tn_rows) == (2, 1, 8, 85 - 10 - 1)
    # a window that ends inside the probationary period does not exist
    file = LabelledFile("cat/b.csv", 100, (Window(5, 10), Window(40, 49)))
    assert len(file.scored_windows) == 1
    assert outcome(7, file=file).raw(STANDARD) == pytest.approx(-1.0)  # only the later window's miss


def test_fp_weight_is_relative_to_the_preceding_window():
    file = LabelledFile("cat/c.csv", 200, (Window(40, 49), Window(100, 119)))
    # row 60 follows the first window (width 10); row 125 the second (width 20)
    assert outcome(60, file=file).fp_cost == pytest.approx(f(11 / 9))
    assert outcome(125, file=file).fp_cost == pytest.approx(f(6 / 19))


def test_perfect_and_silent_detectors_score_100_and_0_for_every_profile():
    files = [
        FILE,
        LabelledFile("cat/c.csv", 200, (Window(40, 49), Window(100, 119))),
        LabelledFile("z/n.csv", 50),
    ]
    perfect = []
    for file in files:
        detected = np.zeros(file.rows, dtype=bool)
        detected[[w.start for w in file.windows]] = True
        perfect.append(detected)
    silent = [np.zeros(file.rows, dtype=bool) for file in files]
    for profile in PROFILES:
        assert score_corpus(files, perfect).normalised(profile) == pytest.approx(100.0)
        assert score_corpus(files, silent).normalised(profile) == 0.0
    by_category = score_corpus(files, silent)
    assert by_category.categories == ["cat", "z"]
    assert by_category.subset("z").normalised(STANDARD) is None  # no windows: undefined


def test_windows_must_be_sorted_and_inside_the_file():
    with pytest.raises(ValueError):
        LabelledFile("x.csv", 100, (Window(40, 49), Window(45, 60)))
    with pytest.raises(ValueError):
        LabelledFile("x.csv", 100, (Window(90, 100),))


def scores_with(rows, base=np.nan, n=100):
    values = np.full(n, base)
    for row, value in rows.items():
        values[row] = value
    return values


def test_sweep_tie_keeps_the_highest_threshold():
    # 0.9 detects the window's first row (raw 1.0); 0.5 adds a free row in the same window: same raw
    values = scores_with({40: 0.9, 45: 0.5, 30: 0.2})
    curve = sweep_curve([FILE], [values])
    assert curve.thresholds.tolist() == [math.inf, 0.9, 0.5, 0.2]
    assert curve.raw(STANDARD).tolist() == pytest.approx([-1.0, 1.0, 1.0, 1.0 - 0.11])
    result = sweep([FILE], [values])
    assert result["standard"].threshold == 0.9
    assert result["standard"].total("tp_rows") == 1


def test_sweep_rows_with_equal_scores_enter_together_and_nan_never_detects():
    values = scores_with({40: 0.7, 30: 0.7})
    values[:15] = 5.0  # probation: high scores there are ignored
    result = sweep([FILE], [values])
    assert result["standard"].threshold == 0.7
    assert result["standard"].total("fp_detections") == 1 and result["standard"].total("detected") == 1
    # under reward_low_FP_rate too the hit is worth more than the early FP costs
    assert result["reward_low_FP_rate"].raw(LOW_FP) == pytest.approx(1 - 0.22)


def test_sweep_prefers_no_detection_when_every_threshold_loses():
    result = sweep([FILE], [scores_with({20: 0.9, 49: 0.1})])  # the FP comes before the late hit
    curve = sweep_curve([FILE], [scores_with({20: 0.9, 49: 0.1})])
    assert curve.raw(STANDARD).tolist() == pytest.approx([-1.0, -1.11, -0.11 + f(-0.1) / f(-1)])
    assert result["standard"].threshold == 0.1  # -0.11 + 0.248 > -1
    none = sweep([FILE], [scores_with({20: 0.9, 25: 0.8})])
    assert none["standard"].threshold == math.inf and none["standard"].normalised(STANDARD) == 0.0


def random_corpus(rng):
    files, scores = [], []
    for k in range(4):
        rows = int(rng.integers(30, 300))
        candidates = np.arange(5, rows - 12, 13)
        count = min(int(rng.integers(0, 4)), candidates.size)
        starts = sorted(rng.choice(candidates, size=count, replace=False))
        windows = tuple(Window(int(s), int(s) + int(rng.integers(0, 12))) for s in starts)
        files.append(LabelledFile(f"c{k % 2}/f{k}.csv", rows, windows))
        values = rng.integers(0, 15, rows) / 15  # coarse: many ties
        values[rng.random(rows) < 0.1] = np.nan
        scores.append(values)
    return files, scores


@pytest.mark.parametrize("seed", range(8))
def test_incremental_sweep_equals_scoring_every_threshold(seed):
    files, scores = random_corpus(np.random.default_rng(seed))
    curve = sweep_curve(files, scores)
    for i, threshold in enumerate(curve.thresholds):
        with np.errstate(invalid="ignore"):
            direct = score_corpus(files, [s >= threshold for s in scores])
        for profile in PROFILES:
            assert curve.raw(profile)[i] == pytest.approx(direct.raw(profile), abs=1e-9)
    for profile, swept in zip(PROFILES, sweep(files, scores).values()):
        brute = [(score_corpus(files, [s >= t for s in scores]).raw(profile), t) for t in curve.thresholds]
        best = max(r for r, _ in brute)
        assert swept.threshold == max(t for r, t in brute if r >= best - 1e-12)


def test_sweep_of_130k_rows_takes_well_under_seconds():
    rng = np.random.default_rng(1)
    files = [LabelledFile(f"c/f{k}.csv", 5200, (Window(2000, 2400), Window(4000, 4300))) for k in range(25)]
    scores = [rng.random(5200) for _ in files]
    started = time.perf_counter()
    result = sweep(files, scores)
    assert time.perf_counter() - started < 10
    assert result["standard"].total("windows") == 50


# -- inputs: labels, alerts and scores ------------------------------------------------------------


def test_windows_map_start_to_first_and_end_to_last_repeated_timestamp():
    stamps = [f"2020-01-01 00:0{i}:00" for i in (0, 1, 2, 2, 3, 4, 4, 5)]
    windows = windows_to_rows("x.csv", stamps, [["2020-01-01 00:02:00.000000", "2020-01-01 00:04:00.000000"]])
    assert windows == (Window(2, 6),)
    with pytest.raises(EvaluationError, match="does not start and end on a row"):
        windows_to_rows("x.csv", stamps, [["2020-01-01 00:02:30", "2020-01-01 00:04:00"]])


def test_scored_rows_align_to_data_rows_skipping_dead_letters():
    assert align_rows(["a", "b", "c"], ["a", "b", "c"], "x").tolist() == [0, 1, 2]
    assert align_rows(["a", "b", "b", "c"], ["a", "b", "c"], "x").tolist() == [0, 1, 3]
    with pytest.raises(EvaluationError):
        align_rows(["a", "b"], ["b", "a"], "x")


def write_corpus(root, rows=100):
    """``root/labels/combined_windows.json`` and ``root/data/cat/a.csv``: FILE's layout, 5-minute rows."""
    stamps = [f"2020-01-01 {i // 12:02d}:{i % 12 * 5:02d}:00" for i in range(rows)]
    (root / "data" / "cat").mkdir(parents=True)
    (root / "data" / "cat" / "a.csv").write_text("timestamp,value\n" + "".join(f"{t},1.0\n" for t in stamps))
    (root / "labels").mkdir()
    window = [stamps[40] + ".000000", stamps[49] + ".000000"]
    (root / "labels" / "combined_windows.json").write_text(json.dumps({"cat/a.csv": [window]}))
    return stamps


def test_alerts_map_to_rows_by_source_file_and_row(tmp_path):
    write_corpus(tmp_path)
    corpus = load_nab(tmp_path / "labels" / "combined_windows.json")
    assert corpus[0].file == FILE
    alert = {"alert_id": "x", "source": {"file": "elsewhere/data/cat/a.csv", "row": 41}}
    detections = nab_detections([alert, alert], corpus)
    assert np.flatnonzero(detections[0]).tolist() == [41]
    with pytest.raises(EvaluationError, match="not in the labels"):
        nab_detections([{"source": {"file": "cat/b.csv", "row": 1}}], corpus)


def test_score_nab_from_alerts_and_scores_files(tmp_path):
    stamps = write_corpus(tmp_path)
    data = str(tmp_path / "data" / "cat" / "a.csv")
    alerts = tmp_path / "alerts.jsonl"
    alerts.write_text(json.dumps({"source": {"file": data, "row": 40}}) + "\n")
    scores = tmp_path / "scores.csv"
    lines = ["file,key,timestamp,score,threshold,is_anomaly"]
    lines += [f"{data},a,{t},{'' if i < 15 else 0.9 if i == 42 else 0.1},,0" for i, t in enumerate(stamps)]
    scores.write_text("\n".join(lines) + "\n")
    report = score_nab(tmp_path / "labels" / "combined_windows.json", alerts, scores)
    assert report.alerts is not None and report.alerts.normalised(STANDARD) == pytest.approx(100.0)
    assert report.swept is not None and report.swept["standard"].threshold == 0.9
    assert report.swept["standard"].normalised(STANDARD) == pytest.approx(100 * (f(-0.8) / f(-1) + 1) / 2)

    out = CliRunner().invoke(
        main,
        ["evaluate", "--nab-labels", str(tmp_path / "labels" / "combined_windows.json"),
         "--alerts", str(alerts), "--scores", str(scores), "--json", str(tmp_path / "r.json")],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "cat" in out.output and "100.0" in out.output and "swept threshold" in out.output
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["alerts"]["scores"]["standard"]["score"] == pytest.approx(100.0)
    assert saved["alerts"]["files"][0]["tp_rows"] == 1


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--skab"],
        ["--suite", "nab"],
        ["--nab-labels", "pyproject.toml"],
        ["--skab", "--scores", "pyproject.toml", "--alerts", "pyproject.toml"],
        ["--skab", "--scores", "pyproject.toml", "-c", "config/nab.yaml"],
        ["--suite", "skab", ".", "--nab-labels", "pyproject.toml"],
    ],
)
def test_evaluate_usage_errors_exit_2(args):
    out = CliRunner().invoke(main, ["evaluate", *args])
    assert out.exit_code == 2, out.output


# -- the real labels ------------------------------------------------------------------------------


def test_real_labels_perfect_100_silent_0_and_the_published_random_detector(datasets_dir):
    corpus = load_nab(datasets_dir / "nab" / "labels" / "combined_windows.json")
    files = [d.file for d in corpus]
    assert len(files) == 25 and sum(len(f.windows) for f in files) == 39
    perfect = []
    for file in files:
        detected = np.zeros(file.rows, dtype=bool)
        detected[[w.start for w in file.windows]] = True
        perfect.append(detected)
    for profile in PROFILES:
        assert score_corpus(files, perfect).normalised(profile) == pytest.approx(100.0)
        assert score_corpus(files, [np.zeros(f.rows, dtype=bool) for f in files]).normalised(profile) == 0.0
    # NAB's random detector: random.seed(42) per file, then random.uniform(0, 1) per row.
    # SCORING.md lists it at 23.5 / 18.5 / 33.8 on this subset, threshold swept.
    scores = []
    for file in files:
        random.seed(42)
        scores.append(np.array([random.uniform(0, 1) for _ in range(file.rows)]))
    swept = sweep(files, scores)
    assert [round(swept[p.name].normalised(p), 1) for p in PROFILES] == [23.5, 18.5, 33.8]
