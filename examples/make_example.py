"""Regenerate examples/machine.csv: a synthetic sensor with three injected anomalies.

    python examples/make_example.py > examples/machine.csv

A daily cycle with noise, sampled every 5 minutes for 12 days; a spike (day 5), a level
drop (day 8) and a stretch where the cycle flattens (day 10). Seeded, so the file is stable.
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta

import numpy as np

rng = np.random.default_rng(7)
n = 12 * 288
t = np.arange(n)
value = 50 + 10 * np.sin(2 * np.pi * t / 288) + rng.normal(0, 0.8, n)
value[5 * 288 + 100 : 5 * 288 + 103] += 25  # spike
value[8 * 288 + 40 : 8 * 288 + 70] -= 18  # level drop for 2.5 hours
value[10 * 288 + 150 : 10 * 288 + 250] = 50 + rng.normal(0, 0.8, 100)  # flattened cycle
start = datetime(2026, 3, 1)
out = sys.stdout
out.write("timestamp,value\n")
for i, v in enumerate(value):
    out.write(f"{(start + timedelta(minutes=5 * i)).isoformat(sep=' ')},{v:.3f}\n")
