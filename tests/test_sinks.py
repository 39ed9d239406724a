import csv

import numpy as np
import orjson

from anomalyd.events import Alert, DeadLetter, Event
from anomalyd.pipeline import BatchResult
from anomalyd.sinks.jsonl import FileSink, StdoutSink
from anomalyd.sinks.scores import HEADER, ScoresWriter


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
