"""Score anomalyd against labelled benchmarks: NAB (windows, profiles) and SKAB (point F1).

- :mod:`.nab`: NAB's scoring rules and threshold sweep (pure);
- :mod:`.skab`: SKAB's F1 / FAR / MAR (pure);
- :mod:`.data`: reading labels, data files, alerts and scores;
- :mod:`.suite`: replay a benchmark folder and score it (``anomalyd evaluate``);
- :mod:`.table`: the text tables the CLI prints.
"""

from __future__ import annotations

from anomalyd.evaluation.data import EvaluationError
from anomalyd.evaluation.nab import PROFILES, NabScore, Profile, score_corpus, sweep
from anomalyd.evaluation.skab import Counts, SkabReport
from anomalyd.evaluation.suite import NabReport, evaluate_suite, score_nab, score_skab

__all__ = [
    "PROFILES",
    "Counts",
    "EvaluationError",
    "NabReport",
    "NabScore",
    "Profile",
    "SkabReport",
    "evaluate_suite",
    "score_corpus",
    "score_nab",
    "score_skab",
    "sweep",
]
