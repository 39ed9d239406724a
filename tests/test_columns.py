"""Per-key state as columns: exact round trips, and a snapshot's size in records flat in keys."""

from __future__ import annotations

import zipfile

import numpy as np

from anomalyd.columns import from_columns, to_columns
from anomalyd.pipeline import Pipeline
from anomalyd.snapshot import MAGIC, SnapshotStore

from .helpers import batches, sine_events, small_config


def test_records_come_back_value_for_value_and_type_for_type():
    rows = [
        {"i": 3, "f": 0.5, "b": True, "s": "a", "o": None, "a": np.arange(3.0), "g": [1, 2.5, False]},
        {
            "i": 4,
            "f": np.nan,
            "b": False,
            "s": "b",
            "o": np.ones(2, np.float32),
            "a": np.zeros(0),
            "g": [0, 1.0, True],
        },
        {"i": 5, "f": 1.0, "b": True, "s": "c", "o": None, "a": np.arange(1.0), "g": [7, -1.0, False]},
    ]
    rows[0]["d"] = {"x": 1, "y": np.arange(2)}
    rows[1]["d"] = {"x": 2, "y": np.arange(2)}
    rows[2]["d"] = {"x": 3, "y": np.arange(2)}
    back = from_columns(to_columns(rows), 3)
    for got, want in zip(back, rows, strict=True):
        assert list(got) == list(want)
        for name, value in want.items():
            if isinstance(value, np.ndarray):
                assert got[name].dtype == value.dtype and np.array_equal(got[name], value)
            elif isinstance(value, dict):
                assert got[name]["x"] == value["x"] and np.array_equal(got[name]["y"], value["y"])
            elif isinstance(value, float) and np.isnan(value):
                assert np.isnan(got[name])
            else:
                assert got[name] == value and type(got[name]) is type(value)


def records_in_snapshot(tmp_path, keys: int) -> int:
    pipeline = Pipeline(small_config(model={"scope": "shared"}, training={"epochs": 1}))
    events = [e for k in range(keys) for e in sine_events(f"k{k}", 40, seed=k)]
    events.sort(key=lambda e: e.time)
    for batch in batches(events, 500):
        pipeline.process(batch)
    path = SnapshotStore(tmp_path / str(keys)).save({"state": pipeline.get_state()}, "h", "s")
    pipeline.close()
    with path.open("rb") as handle:
        handle.seek(len(MAGIC) + 65)
        with zipfile.ZipFile(handle) as archive:
            return len(archive.namelist())


def test_a_snapshot_holds_a_few_records_whatever_the_number_of_keys(tmp_path):
    # a dict of small arrays per key made a record (and a pickled object) per key and array
    assert records_in_snapshot(tmp_path, 200) == records_in_snapshot(tmp_path, 10)
