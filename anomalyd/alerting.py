"""Alert logic on top of point decisions: runs of anomalous points and a cooldown.

>>> gate = AlertGate(min_consecutive=2, cooldown_events=3)
>>> [gate.step(a) for a in [True, True, True, True, True, False, True, True]]
[False, True, False, False, False, False, False, True]

The logic is one function of a key's two counters, :func:`step`, so that the pipeline can
keep those counters in its own per-key state (one object per key, not two) and share the
settings across keys:

>>> step(run=1, quiet=0, anomalous=True, min_consecutive=2, cooldown_events=3)
(2, 3, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def step(
    run: int, quiet: int, anomalous: bool, min_consecutive: int, cooldown_events: int
) -> tuple[int, int, bool]:
    """One event through the gate: the new ``run`` (anomalous points in a row) and ``quiet``
    (events of cooldown left), and whether this event raises an alert."""
    run = run + 1 if anomalous else 0
    if quiet > 0:
        return run, quiet - 1, False
    if run >= min_consecutive:
        return run, cooldown_events, True
    return run, quiet, False


class AlertGate:
    """Raise an alert once ``min_consecutive`` anomalous points in a row are seen.

    After an alert the key stays quiet for ``cooldown_events`` events, so one incident
    raises one alert, not a storm; an incident still going on after the cooldown alerts again.
    """

    __slots__ = ("cooldown_events", "min_consecutive", "quiet", "run")

    def __init__(self, min_consecutive: int = 1, cooldown_events: int = 0):
        self.min_consecutive = min_consecutive
        self.cooldown_events = cooldown_events
        self.run = 0
        self.quiet = 0

    def step(self, anomalous: bool) -> bool:
        """Advance one event; True when this event raises an alert."""
        self.run, self.quiet, alert = step(
            self.run, self.quiet, anomalous, self.min_consecutive, self.cooldown_events
        )
        return alert


def top_features(errors: np.ndarray, names: Sequence[str], n: int) -> list[dict[str, Any]]:
    """The ``n`` features with the largest errors, largest first (ties in feature order), each
    with its share of the window's total error: what an alert says caused it.

    >>> top_features(np.array([0.1, 0.6, 0.3]), ["a", "b", "c"], 2)
    [{'feature': 'b', 'error': 0.6, 'share': 0.6}, {'feature': 'c', 'error': 0.3, 'share': 0.3}]
    """
    total = float(errors.sum()) or 1.0
    top = np.argsort(-errors, kind="stable")[:n]
    return [{"feature": names[i], "error": float(errors[i]), "share": float(errors[i]) / total} for i in top]
