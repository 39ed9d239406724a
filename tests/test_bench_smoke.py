"""Every benchmark script runs at smoke sizes and prints its table, so the scripts cannot rot.

Only that they run: timings on a shared machine assert nothing (see ``bench/README.md``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .kafka_broker import find_tansu_binary

ROOT = Path(__file__).resolve().parents[1]

# script -> a line of its first table's header
SCRIPTS = {
    "replay_throughput.py": "| keys | method",
    "replay_e2e.py": "| config | keys | threads",
    "batched_networks.py": "| case | windows per pass",
    "model_ceiling.py": "| batch | 1 thread | 2 threads",
    "memory.py": "| keys | scoring | events",
    "kafka_throughput.py": "| threads | events |",
    "retraining.py": "| windows | threads | epochs",
    "promise.py": "| file | decided | promised | observed",
    "key_flood.py": "| eviction | keys seen | keys kept",
    "snapshot_memory.py": "| step | file MiB",
    "steady_memory.py": "| events | RSS MiB",
    "soak.py": "| seconds | RSS MiB",
}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_bench_script_runs_at_smoke_sizes(script: str) -> None:
    if script in ("kafka_throughput.py", "soak.py") and find_tansu_binary() is None:
        pytest.skip("the Tansu broker is not installed (dev extra)")
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    header = " ".join(SCRIPTS[script].split())
    assert any(header in " ".join(line.split()) for line in done.stdout.splitlines()), done.stdout[-3000:]


def test_replay_throughput_times_an_ensemble() -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "replay_throughput.py"),
            "--smoke",
            "--members",
            "2",
            "--keys",
            "1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "(autoencoder, 2 members, cpu)" in done.stdout, done.stdout[-3000:]
