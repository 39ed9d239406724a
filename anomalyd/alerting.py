"""Alert logic on top of point decisions: runs of anomalous points and a cooldown.

>>> gate = AlertGate(min_consecutive=2, cooldown_events=3)
>>> [gate.step(a) for a in [True, True, True, True, True, False, True, True]]
[False, True, False, False, False, False, False, True]
"""

from __future__ import annotations


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
        self.run = self.run + 1 if anomalous else 0
        if self.quiet > 0:
            self.quiet -= 1
            return False
        if self.run >= self.min_consecutive:
            self.quiet = self.cooldown_events
            return True
        return False
