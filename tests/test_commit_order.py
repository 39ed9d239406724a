"""The commit step's order: flush, snapshot, commit. Offsets never pass saved state."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from anomalyd.app import Runner
from anomalyd.pipeline import Pipeline
from anomalyd.snapshot import SnapshotStore
from anomalyd.sources.base import Batch

from .helpers import batches, sine_events, small_config


class ListSink:
    def __init__(self) -> None:
        self.added: list[Any] = []
        self.flushed = 0

    def add(self, record: Any) -> None:
        self.added.append(record)

    def flush(self) -> None:
        self.flushed = len(self.added)

    def close(self) -> None:
        pass


class RecordingSource:
    """Batches with Kafka-like offsets; each commit is recorded with the snapshots on disk
    and how many alerts the sink had flushed at that moment."""

    def __init__(self, events, state_dir: Path | None, sink: ListSink, stop_after: int | None = None):
        self.parts = batches(events, 25)
        self.state_dir, self.sink, self.stop_after = state_dir, sink, stop_after
        self.start = 0
        self.commits: list[tuple[int, list[int], int]] = []

    def batches(self) -> Iterator[Batch]:
        for i, part in enumerate(self.parts[self.start :], start=self.start):
            yield Batch(part.events, positions={("t", 0): 25 * (i + 1)})
            if self.stop_after is not None and i + 1 >= self.stop_after:
                return

    def expected_lengths(self) -> None:
        return None

    def commit(self, positions: dict[Any, Any]) -> None:
        saved = []
        if self.state_dir is not None:
            for path in SnapshotStore(self.state_dir).paths():
                saved.append(SnapshotStore.load(path)["positions"]["offset"])
        self.commits.append((positions[("t", 0)], saved, self.sink.flushed))

    def identity(self) -> str:
        return "recording"

    def encode_positions(self, positions: dict[Any, Any]) -> dict[str, Any]:
        return {"offset": positions[("t", 0)]}

    def seek(self, saved: dict[str, Any]) -> None:
        self.start = int(saved["offset"]) // 25

    def close(self) -> None:
        pass


def runner(source, state_dir, sink, interval=30.0) -> Runner:
    return Runner(
        source,
        Pipeline(small_config()),
        [sink],
        ListSink(),
        commit_interval_s=0.0,  # a commit step after every batch
        state_dir=state_dir,
        snapshot_interval_s=interval,
    )


def test_with_a_state_dir_offsets_are_committed_only_after_a_snapshot_of_them(tmp_path):
    events = sine_events("k", 500, spikes=(300,))
    sink = ListSink()
    source = RecordingSource(events, tmp_path, sink)
    runner(source, tmp_path, sink).run()
    assert source.commits, "the first commit step and the final one commit"
    for offset, saved, _ in source.commits:
        assert offset in saved  # a snapshot of exactly these positions was already on disk
    # the first commit step is the first snapshot (no waiting snapshot_interval_s), then
    # nothing is committed until the next snapshot: here the final one
    assert [c[0] for c in source.commits] == [25, 500]


def test_a_crash_loop_faster_than_the_snapshot_interval_still_moves_on(tmp_path):
    events = sine_events("k", 500)
    offsets = []
    for life in range(3):  # each life dies (no final commit) after a few batches
        sink = ListSink()
        source = RecordingSource(events, tmp_path, sink, stop_after=4 * (life + 1))
        run = runner(source, tmp_path, sink)
        run.resume(SnapshotStore(tmp_path).latest(run.pipeline.state_hash, "recording"))
        for batch in source.batches():  # the loop without its final commit: a kill
            run.pipeline.process(batch)
            run.positions, run._unsaved = batch.positions, True
            run.commit()
        offsets.append(source.commits[-1][0])
    # each life snapshots and commits at its first commit step: one batch further each time
    assert offsets == [25, 50, 75]


def test_without_a_state_dir_every_commit_step_commits_after_the_flush(tmp_path):
    events = sine_events("k", 500, spikes=(300,))
    sink = ListSink()
    source = RecordingSource(events, None, sink)
    runner(source, None, sink).run()
    assert len(source.commits) == len(source.parts) + 1
    assert source.commits[-1][2] == len(sink.added)


def test_a_failed_snapshot_commits_nothing_and_is_tried_again(tmp_path, monkeypatch):
    events = sine_events("k", 200)
    sink = ListSink()
    source = RecordingSource(events, tmp_path, sink)
    run = runner(source, tmp_path, sink, interval=0.0)
    save = SnapshotStore.save
    failures = iter([True, True])

    def flaky(self, *args, **kwargs):
        if next(failures, False):
            raise OSError(28, "No space left on device")
        return save(self, *args, **kwargs)

    monkeypatch.setattr(SnapshotStore, "save", flaky)
    run.run()
    # the first two commit steps could not save: nothing committed; the third could
    assert [c[0] for c in source.commits][:1] == [75]
    assert all(offset in saved for offset, saved, _ in source.commits)
