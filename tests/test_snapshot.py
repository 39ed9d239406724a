"""Snapshots: the state round-trips exactly, files are checked, bad ones are skipped."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anomalyd.config import Config, parse_config
from anomalyd.pipeline import Pipeline
from anomalyd.snapshot import SnapshotError, SnapshotStore

from .helpers import batches, sine_events, small_config

SPIKES = (500, 800, 1100, 1400)


def alert_ids(results) -> list[str]:
    return [a.alert_id for r in results for a in r.alerts]


def run(pipeline, events):
    return [pipeline.process(b) for b in batches(events, 50)]


def uninterrupted(cfg, events) -> tuple[list[str], np.ndarray]:
    """One whole run's alert ids and scores."""
    whole = Pipeline(cfg)
    results = run(whole, events)
    whole.close()
    return alert_ids(results), np.concatenate([r.scores for r in results])


@pytest.mark.parametrize(
    ("scope", "threshold", "cut"),
    [("per_key", "quantile", 800), ("shared", "ewma", 1000), ("per_key", "quantile", 230)],
    ids=["retrain-in-flight", "shared-ewma", "during-warmup"],
)
def test_resumed_pipeline_equals_uninterrupted(tmp_path, scope, threshold, cut):
    cfg = small_config(
        model={"scope": scope},
        threshold={"method": threshold},
        retraining={"every_events": 300, "on_drift": True, "drift_min_events": 100, "swap_after_events": 120},
        input={
            "features": [
                {"name": "v", "op": "value", "field": "value"},
                {"name": "d", "op": "diff", "field": "value"},
            ]
        },
    )
    events = sine_events("a", 1600, spikes=SPIKES) + sine_events("b", 1600, spikes=SPIKES, seed=1)
    events.sort(key=lambda e: e.time)
    whole = Pipeline(cfg)
    expected = alert_ids(run(whole, events))
    whole.close()
    assert len(expected) >= 6

    first = Pipeline(cfg)
    before = alert_ids(run(first, events[: 2 * cut]))
    store = SnapshotStore(tmp_path)
    store.save({"state": first.get_state(), "positions": None}, first.state_hash, "test")
    if cut == 800:  # a retraining is in flight at the cut: the snapshot restarts it
        assert any(s.job is not None for s in first.detector.slots.values())
    first.close()

    found = store.latest(first.state_hash, "test")
    assert found is not None
    second = Pipeline(cfg)
    second.set_state(found.payload["state"])
    after = alert_ids(run(second, events[2 * cut :]))
    second.close()
    assert before + after == expected


def test_snapshot_loads_with_weights_only_and_holds_no_numpy(tmp_path):
    pipeline = Pipeline(small_config())
    run(pipeline, sine_events("k", 400))
    path = SnapshotStore(tmp_path).save({"state": pipeline.get_state()}, "h", "s")
    body = path.read_bytes().split(b"\n", 2)[2]
    import io

    payload = torch.load(io.BytesIO(body), weights_only=True)  # no pickled classes inside
    assert payload["state"]["models"]["k"]["version"] == 1
    pipeline.close()


def test_corrupt_truncated_and_mismatched_snapshots_fall_back(tmp_path, capsys):
    store = SnapshotStore(tmp_path, keep=5)
    paths = [store.save({"n": n}, "h", "s") for n in range(4)]
    # newest: truncated; next: one flipped byte; next: another config
    paths[3].write_bytes(paths[3].read_bytes()[:-100])
    raw = bytearray(paths[2].read_bytes())
    raw[-50] ^= 0xFF
    paths[2].write_bytes(bytes(raw))
    store.save({"n": 99}, "other-config", "s")
    found = store.latest("h", "s")
    assert found is not None and found.path == paths[1] and found.payload["n"] == 1
    for path in (paths[3], paths[2]):
        with pytest.raises(SnapshotError, match=str(path)):
            store.load(path)
    logged = capsys.readouterr()
    assert "snapshot_rejected" in logged.out + logged.err
    assert store.latest("h", "another input") is None


def test_only_the_newest_are_kept_and_no_temp_files_remain(tmp_path):
    store = SnapshotStore(tmp_path, keep=2)
    for n in range(5):
        store.save({"n": n, "a": np.arange(10)}, "h", "s")
    names = sorted(p.name for p in (tmp_path / "snapshots").iterdir())
    assert names == ["snapshot-0000000004.pt", "snapshot-0000000005.pt"]
    assert store.latest("h", "s").payload["a"].tolist() == list(range(10))


def two_keys() -> list:
    events = sine_events("a", 900, spikes=(400, 700)) + sine_events("b", 900, spikes=(600,), seed=1)
    return sorted(events, key=lambda e: e.time)


def resumed(tmp_path, cfg, events, cut):
    """Run ``events[:cut]``, snapshot, and restore a new pipeline from the file:
    (the results so far, the restored pipeline)."""
    first = Pipeline(cfg)
    before = run(first, events[:cut])
    store = SnapshotStore(tmp_path)
    store.save({"state": first.get_state(), "positions": None}, first.state_hash, "test")
    first.close()
    found = store.latest(first.state_hash, "test")
    assert found is not None
    second = Pipeline(cfg)
    second.set_state(found.payload["state"])
    return before, second


def test_forecaster_with_fixed_statistics_resumes_exactly(tmp_path):
    """The forecaster's weights and the frozen statistics come back from a snapshot."""
    cfg = small_config(detector="forecaster", window={"normalise": "warmup"}, model={"score_steps": 4})
    events = two_keys()
    whole = Pipeline(cfg)
    expected = alert_ids(run(whole, events))
    whole.close()
    assert expected

    before, second = resumed(tmp_path, cfg, events, 1000)
    assert second.windows._limit[: len(second.windows.names)].tolist() == [150, 150]
    after = run(second, events[1000:])
    second.close()
    assert alert_ids(before) + alert_ids(after) == expected


def test_carried_forecaster_states_resume_exactly(tmp_path):
    """Each key's carried state is in the snapshot: the resumed run scores as if never cut."""
    cfg = small_config(
        detector="forecaster",
        model={"scope": "shared", "carry_state": True},
        retraining={"every_events": 300, "on_drift": False, "min_windows": 50, "swap_after_events": 60},
    )
    events = two_keys()
    expected, scores = uninterrupted(cfg, events)
    assert expected

    before, second = resumed(tmp_path, cfg, events, 1100)
    carried = second.detector.slots[""].carried
    assert carried is not None and sorted(carried.version[carried.version >= 0].tolist())  # states came back
    after = run(second, events[1100:])
    second.close()
    assert alert_ids(before) + alert_ids(after) == expected
    resumed_scores = np.concatenate([r.scores for r in before + after])
    np.testing.assert_allclose(resumed_scores, scores, rtol=1e-6, equal_nan=True)


def test_a_snapshot_taken_while_the_error_scale_is_measured_resumes_exactly(tmp_path):
    """The measuring windows' errors are in the snapshot: the scale and thresholds come out the same."""
    cfg = small_config(
        model={"scope": "shared", "normalise_errors": True},
        threshold={"calibration": "live", "min_samples": 40},
    )
    events = two_keys()
    expected, scores = uninterrupted(cfg, events)
    assert expected

    before, second = resumed(tmp_path, cfg, events, 330)  # each key at 165, a few past warm-up
    measuring = second.detector.slots[""].measuring
    assert measuring is not None and 20 < len(measuring.errors) < 40
    after = run(second, events[330:])
    second.close()
    assert alert_ids(before) + alert_ids(after) == expected
    np.testing.assert_allclose(np.concatenate([r.scores for r in before + after]), scores, equal_nan=True)


def test_an_ensemble_resumes_exactly_and_scores_unlike_one_network(tmp_path):
    """Every member's weights, a retrained ensemble's included, come back from a snapshot."""
    retraining = {"every_events": 300, "on_drift": False, "min_windows": 50, "swap_after_events": 60}
    cfg = small_config(model={"members": 3}, retraining=retraining)
    events = two_keys()
    expected, scores = uninterrupted(cfg, events)
    assert expected

    _, single = uninterrupted(small_config(retraining=retraining), events)
    finite = np.isfinite(scores) & np.isfinite(single)
    assert finite.sum() > 1000 and not np.allclose(scores[finite], single[finite])

    before, second = resumed(tmp_path, cfg, events, 1100)
    after = run(second, events[1100:])
    versions = {slot.version for slot in second.detector.slots.values()}
    second.close()
    assert max(versions) >= 2  # a retrained ensemble went live before the cut or after it
    assert alert_ids(before) + alert_ids(after) == expected
    np.testing.assert_allclose(np.concatenate([r.scores for r in before + after]), scores, equal_nan=True)


def test_snapshots_and_checkpoints_of_the_version_before_members_still_match():
    """``model.members`` and the grade's keys came later: at their defaults they leave the
    hashes as they were (values computed by the version before them), so an upgrade keeps the
    saved state of a config that names what it had (one network; spot, 200 samples); at other
    values they change."""
    before = Pipeline(
        parse_config({"model": {"members": 1}, "threshold": {"method": "spot", "min_samples": 200}})
    )
    assert (before.config_hash, before.state_hash) == ("e1dcc46a4312c307", "5fbe435fe994d767")
    before.close()
    three = Pipeline(parse_config({"model": {"members": 3}}))
    assert three.config_hash != "e1dcc46a4312c307" and three.state_hash != "5fbe435fe994d767"
    three.close()
    graded = Pipeline(Config())  # the grade is the default now: a snapshot of spot's state does not fit it
    assert graded.state_hash != "5fbe435fe994d767"
    graded.close()
