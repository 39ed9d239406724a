"""Does the threshold keep its promise? Per file: the share of normal events flagged, beside
the share the config promises (``1 - threshold.grade``; spot: ``risk``; quantile:
``1 - quantile``).

Normal events: NAB's artificialNoAnomaly files whole; every other NAB dev file outside its
labelled windows; SKAB's anomaly-free recording. NAB's probation (the warm-up) and rows the
threshold does not decide yet (calibration) are left out: flagged / decided, as
``anomalyd_flagged_total / anomalyd_decisions_total`` reads on a live daemon.

```sh
.venv/bin/python bench/promise.py                          # replays NAB (config/nab.yaml) and SKAB
.venv/bin/python bench/promise.py --nab-scores eval-nab/scores.csv  # an evaluate --workdir's scores
```

Reads ``../shared/datasets``; skips (exit 0, with the reason) where it is absent.
"""

from __future__ import annotations

import csv
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import Num, header, parse_args, quiet_logs, table  # noqa: E402

DATASETS = ROOT.parent / "shared" / "datasets"
TINY = {"window": {"length": 16}, "model": {"hidden_size": 8, "members": 1}, "training": {"epochs": 1}}


def promised(config) -> float:
    th = config.threshold
    return {"grade": 1 - th.grade, "spot": th.risk, "quantile": 1 - th.quantile}.get(th.method, float("nan"))


def load(path: Path, smoke: bool):
    from anomalyd.config import load_config, parse_config

    config = load_config(path)
    if not smoke:
        return config
    dumped = config.model_dump(mode="json")
    for section, values in TINY.items():
        dumped[section] = {**dumped[section], **values}
    return parse_config(dumped)


def decided_rows(scores: Path) -> dict[str, tuple[list[str], np.ndarray, np.ndarray]]:
    """Per file of a scores CSV: timestamps, whether the threshold decided, whether it flagged."""
    out: dict[str, tuple[list[str], list[bool], list[bool]]] = {}
    with scores.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            stamps, decided, flagged = out.setdefault(row["file"], ([], [], []))
            stamps.append(row["timestamp"])
            decided.append(row["threshold"] != "")
            flagged.append(row["is_anomaly"] == "1")
    return {f: (s, np.array(d), np.array(x)) for f, (s, d, x) in out.items()}


def nab_rows(nab: Path, scores: Path) -> list[list]:
    from anomalyd.evaluation.data import align_rows, load_nab, match_name
    from anomalyd.evaluation.nab import probation_rows

    corpus = {d.file.name: d for d in load_nab(nab / "labels" / "combined_windows.json", nab / "data")}
    rows = []
    for path, (stamps, decided, flagged) in decided_rows(scores).items():
        name = match_name(path, corpus)
        if name is None:
            continue
        data = corpus[name]
        at = align_rows(data.timestamps, stamps, path)
        normal = at >= probation_rows(data.file.rows)
        for w in data.file.windows:
            normal &= (at < w.start) | (at > w.end)
        rows.append([name, *_share(decided & normal, flagged)])
    return rows


def _share(decided: np.ndarray, flagged: np.ndarray) -> tuple[int, float]:
    n = int(decided.sum())
    return n, float(flagged[decided].mean()) if n else float("nan")


def replayed(paths: list[Path], config, workdir: Path) -> Path:
    from anomalyd.evaluation.suite import replay_each

    return replay_each(paths, config, workdir)[1]


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], _options)
    quiet_logs()
    header("Flagged share of normal events: observed beside promised", args.smoke)
    if not DATASETS.is_dir():
        print(f"skipped: {DATASETS} is absent (the dev datasets)")
        return
    nab, skab = DATASETS / "nab", DATASETS / "skab"
    nab_config, skab_config = load(args.nab_config, args.smoke), load(args.sensors_config, args.smoke)
    with tempfile.TemporaryDirectory(prefix="anomalyd-promise-") as tmp:
        scores = args.nab_scores
        if scores is None:
            from anomalyd.evaluation.data import load_nab

            paths = [d.path for d in load_nab(nab / "labels" / "combined_windows.json", nab / "data")]
            paths = paths[:2] if args.smoke else paths
            scores = replayed(paths, nab_config, Path(tmp) / "nab")
        rows = [[*r, promised(nab_config)] for r in nab_rows(nab, scores)]
        free = sorted((skab / "anomaly-free").glob("*.csv"))[: 1 if args.smoke else None]
        if free:
            skab_scores = replayed(free, skab_config, Path(tmp) / "skab")
            for path, (_, decided, flagged) in decided_rows(skab_scores).items():
                rows.append([f"skab/{Path(path).name}", *_share(decided, flagged), promised(skab_config)])
    _print(rows, args)


def _print(rows: list[list], args) -> None:
    out, ratios = [], []
    for name, n, observed, promise in rows:
        ratio = observed / promise if promise > 0 else float("nan")
        if not np.isnan(ratio):
            ratios.append(ratio)
        kept = "yes" if ratio <= 3 else "no"
        out.append([name, n, Num(promise, "{:.1e}"), Num(observed, "{:.1e}"), Num(ratio, "{:.1f}x"), kept])
    within = sum(r <= 3 for r in ratios)
    table(
        "Per file",
        ["file", "decided", "promised", "observed", "observed / promised", "within 3x"],
        out,
        [
            f"configs: {args.nab_config} (NAB), {args.sensors_config} (SKAB); within 3x: {within} of "
            f"{len(ratios)} files; median ratio {statistics.median(ratios) if ratios else float('nan'):.1f}x",
        ],
    )


def _options(parser) -> None:
    parser.add_argument("--nab-config", type=Path, default=ROOT / "config" / "nab.yaml")
    parser.add_argument("--sensors-config", type=Path, default=ROOT / "config" / "sensors.yaml")
    parser.add_argument("--nab-scores", type=Path, help="an evaluate --workdir's scores.csv: no replay")


if __name__ == "__main__":
    main()
