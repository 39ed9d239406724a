import csv
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import orjson
import pytest

from anomalyd.app import DeadLetterSink, Runner, open_outputs
from anomalyd.config import InputConfig, parse_config
from anomalyd.errors import PermanentSinkError, SinkError
from anomalyd.events import Alert, DeadLetter, Event
from anomalyd.pipeline import BatchResult, Pipeline
from anomalyd.sinks.jsonl import FileSink, StdoutSink
from anomalyd.sinks.scores import HEADER, ScoresWriter
from anomalyd.sources.file import FileSource


def make_alert(i=0):
    return Alert(
        f"id{i}", "k", "2020-01-01 00:00:00", 2.0, 1.0, {"value": 3.0}, [], 1, i, {"file": "f", "row": i}
    )


def test_file_sink_writes_json_lines_and_appends(tmp_path):
    path = tmp_path / "out" / "alerts.jsonl"
    sink = FileSink(path)
    assert not path.exists()  # nothing opened before the first record
    sink.add(make_alert(0))
    sink.flush()
    sink.close()
    sink = FileSink(path)
    sink.add(make_alert(1))
    sink.close()
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert [x["alert_id"] for x in lines] == ["id0", "id1"]
    assert lines[0]["schema"] == 1 and lines[0]["values"] == {"value": 3.0}


def test_file_sink_truncates_when_not_appending(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text("old\n")
    sink = FileSink(path, append=False)
    sink.add(DeadLetter("bad", {"x": "y"}, {"file": "f", "row": 2}))
    sink.close()
    assert orjson.loads(path.read_bytes()) == {
        "reason": "bad",
        "source": {"file": "f", "row": 2},
        "record": {"x": "y"},
    }


def test_stdout_sink_writes_to_the_stream():
    import io

    stream = io.BytesIO()
    sink = StdoutSink(stream)
    sink.add(make_alert())
    sink.flush()
    assert orjson.loads(stream.getvalue())["key"] == "k"


def test_scores_writer_rows_with_empty_warmup_scores(tmp_path):
    events = [Event("k", f"t{i}", float(i), np.array([1.0]), {"file": "f.csv", "row": i}) for i in range(3)]
    result = BatchResult(
        events,
        np.array([np.nan, 0.5, 2.0]),
        np.array([np.nan, np.nan, 0.9999]),
        np.array([np.nan, 1.0, 1.0]),
        np.array([False, False, True]),
    )
    writer = ScoresWriter(tmp_path / "s.csv")
    writer.write(result)
    writer.close()
    rows = list(csv.reader((tmp_path / "s.csv").open()))
    assert tuple(rows[0]) == HEADER
    assert rows[1] == ["f.csv", "k", "t0", "", "", "", "0"]
    assert rows[2] == ["f.csv", "k", "t1", "0.5", "", "1.0", "0"]
    assert rows[3] == ["f.csv", "k", "t2", "2.0", "0.9999", "1.0", "1"]


class _CommitSpy(FileSource):
    """A file source that reads the scores CSV at every commit: it must hold the committed rows."""

    def __init__(self, paths: list[str], config: InputConfig, scores: Path):
        super().__init__(paths, config)
        self.scores = scores
        self.seen: list[tuple[int, int]] = []

    def commit(self, positions: dict) -> None:
        rows = len(self.scores.read_text().splitlines()) - 1 if self.scores.exists() else 0
        self.seen.append((positions["row"], rows))


def test_the_scores_csv_holds_every_committed_row_at_the_commit_step(tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("timestamp,value\n" + "".join(f"{60 * i},{i % 7}\n" for i in range(3000)))
    config = parse_config(
        {"detector": "hst", "input": {"batch_size": 100}, "training": {"warmup_events": 100}}
    )
    scores = tmp_path / "s.csv"
    source = _CommitSpy([str(data)], config.input, scores)
    with ExitStack() as stack:
        alerts, dead, observers = open_outputs(config, stack, alerts=tmp_path / "a.jsonl", scores=scores)
        pipeline = Pipeline(config, source.expected_lengths())
        Runner(source, pipeline, alerts, dead, observers, commit_interval_s=1e-9).run()
    assert len(source.seen) > 20
    assert all(committed == rows for committed, rows in source.seen), source.seen[:5]


class _FailingSink:
    def __init__(self, error: SinkError):
        self.error, self.flushes = error, 0

    def add(self, record: object) -> None:
        pass

    def flush(self) -> None:
        self.flushes += 1
        raise self.error

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("error", "retry"), [(PermanentSinkError("not authorized"), True), (SinkError("broker down"), False)]
)
def test_a_permanent_error_or_a_revoke_commit_is_not_retried(tmp_path, error, retry):
    data = tmp_path / "d.csv"
    data.write_text("timestamp,value\n0,1\n")
    config = parse_config({"detector": "hst"})
    source = FileSource([str(data)], config.input)
    sink = _FailingSink(error)
    runner = Runner(source, Pipeline(config, None), [sink], DeadLetterSink(None), retry_sink_errors=True)
    with pytest.raises(type(error)):
        runner.commit(retry=retry)
    assert sink.flushes == 1 and not runner.sinks_healthy
