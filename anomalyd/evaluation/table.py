"""Plain-text tables of evaluation reports (returned as text; the CLI prints them)."""

from __future__ import annotations

from anomalyd.evaluation.nab import PROFILES, NabScore
from anomalyd.evaluation.skab import Counts, SkabReport
from anomalyd.evaluation.suite import NabReport

_SHORT = {"standard": "standard", "reward_low_FP_rate": "low_FP", "reward_low_FN_rate": "low_FN"}


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _nab_rows(score: NabScore) -> list[list[str]]:
    groups = [(c or "(none)", score.subset(c)) for c in score.categories] + [("all", score)]
    rows = []
    for name, part in groups:
        counts = [part.total(n) for n in ("windows", "detected", "missed", "fp_detections")]
        scores = [_number(part.normalised(p)) for p in PROFILES]
        rows.append([name, str(len(part.files)), *map(str, counts), *scores])
    return rows


def _align(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]


def format_nab(report: NabReport) -> str:
    """Per category: windows detected and missed, false-positive alerts, the three profile scores."""
    lines = []
    if report.alerts is not None:
        header = [
            "category",
            "files",
            "windows",
            "detected",
            "missed",
            "FP",
            *(_SHORT[p.name] for p in PROFILES),
        ]
        lines.append("NAB score of the alerts (FP: alerts outside every window, after probation)")
        lines += _align([header, *_nab_rows(report.alerts)])
    for column, swept in (("score", report.swept), ("grade", report.swept_grade)):
        if swept is None:
            continue
        parts = []
        for p in PROFILES:
            best = swept[p.name]
            parts.append(f"{_SHORT[p.name]} {_number(best.normalised(p))} ({column} >= {best.threshold:.6g})")
        lines.append(f"swept threshold on the {column}s (NAB's oracle, per profile): " + ", ".join(parts))
    return "\n".join(lines)


def _skab_row(name: str, c: Counts) -> list[str]:
    return [
        name,
        str(c.rows),
        str(c.anomalies),
        str(c.alarms),
        _number(c.f1, 3),
        _percent(c.far),
        _percent(c.mar),
    ]


def format_skab(report: SkabReport) -> str:
    """Per file and pooled: scored rows, anomalous rows, alarms, F1, FAR, MAR."""
    header = ["file", "rows", "anomalies", "alarms", "F1", "FAR", "MAR"]
    rows = [header, *(_skab_row(n, c) for n, c in report.files), _skab_row("pooled", report.pooled)]
    title = "SKAB point metrics of is_anomaly (rows: after each file's first 400)"
    return "\n".join([title, *_align(rows)])


def format_comparison(ours: NabReport | SkabReport, baseline: NabReport | SkabReport) -> str:
    """One line per headline figure: ours, the baseline's, and the difference."""
    rows = [["", "anomalyd", "baseline", "difference"]]
    if isinstance(ours, NabReport) and isinstance(baseline, NabReport):
        for p in PROFILES:
            a = ours.alerts.normalised(p) if ours.alerts is not None else None
            b = baseline.alerts.normalised(p) if baseline.alerts is not None else None
            diff = None if a is None or b is None else a - b
            rows.append([f"NAB {_SHORT[p.name]} (alerts)", _number(a), _number(b), _number(diff)])
    elif isinstance(ours, SkabReport) and isinstance(baseline, SkabReport):
        x, y = ours.pooled, baseline.pooled
        rows.append(["pooled F1", _number(x.f1, 3), _number(y.f1, 3), _number(_minus(x.f1, y.f1), 3)])
        rows.append(["pooled FAR", _percent(x.far), _percent(y.far), _percent(_minus(x.far, y.far))])
        rows.append(["pooled MAR", _percent(x.mar), _percent(y.mar), _percent(_minus(x.mar, y.mar))])
    return "\n".join(["anomalyd beside the baseline", *_align(rows)])


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b
