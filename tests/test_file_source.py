from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from anomalyd.config import InputConfig, TimestampConfig
from anomalyd.errors import SourceError
from anomalyd.events import DeadLetter, Event
from anomalyd.sources.base import Batch
from anomalyd.sources.csvrows import UNCLOSED
from anomalyd.sources.file import FileSource, file_stem, resolve_paths

SKAB_SENSORS = (
    "Accelerometer1RMS",
    "Accelerometer2RMS",
    "Current",
    "Pressure",
    "Temperature",
    "Thermocouple",
    "Voltage",
    "Volume Flow RateRMS",
)


def write(path: Path, text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return str(path)


def csv_text(rows: int, start: int = 0) -> str:
    return "timestamp,value\n" + "".join(
        f"2014-07-01 00:{i:02d}:00,{i}\n" for i in range(start, start + rows)
    )


def jsonl_text(rows: int) -> str:
    return "".join(
        orjson.dumps({"timestamp": 1404172800 + 60 * i, "value": i}).decode() + "\n" for i in range(rows)
    )


def read(paths: list[str], **input_kwargs: Any) -> list[Batch]:
    return list(FileSource(paths, InputConfig(**input_kwargs)).batches())


def events(batches: list[Batch]) -> list[Event]:
    return [e for b in batches for e in b.events]


def dead(batches: list[Batch]) -> list[DeadLetter]:
    return [d for b in batches for d in b.dead_letters]


# --- formats ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["s.csv", "s.csv.gz", "s.jsonl", "s.jsonl.gz", "s.ndjson", "s.json"])
def test_csv_and_jsonl_plain_or_gzipped(tmp_path: Path, name: str) -> None:
    text = csv_text(5) if ".csv" in name else jsonl_text(5)
    got = events(read([write(tmp_path / name, text)]))
    assert [e.values.tolist() for e in got] == [[float(i)] for i in range(5)]
    assert [e.time for e in got] == [1404172800.0 + 60 * i for i in range(5)]
    assert {e.key for e in got} == {"s"}
    assert [e.source for e in got] == [{"file": str(tmp_path / name), "row": i} for i in range(5)]


def test_format_set_in_the_config_overrides_the_suffix(tmp_path: Path) -> None:
    path = write(tmp_path / "data.log", jsonl_text(2))
    assert len(events(read([path], format="jsonl"))) == 2
    with pytest.raises(SourceError, match=r"cannot tell the format of .*data\.log"):
        FileSource([path], InputConfig())


def test_csv_keeps_timestamp_text_and_reads_epochs(tmp_path: Path) -> None:
    path = write(tmp_path / "e.csv", "timestamp,value\n1404174600,1\n1404174600000,2\n")
    got = events(read([path]))
    assert [(e.timestamp, e.time) for e in got] == [
        ("1404174600", 1404174600.0),
        ("1404174600000", 1404174600.0),
    ]


def test_semicolon_delimiter_crlf_and_header_whitespace(tmp_path: Path) -> None:
    text = "datetime ; a;b \r\n2020-03-09 15:56:30;0.5;1\r\n2020-03-09 15:56:31;0.25;2\r\n"
    path = write(tmp_path / "skab.csv", text)
    got = events(
        read([path], delimiter=";", timestamp=TimestampConfig(field="datetime"), value_fields=("b", "a"))
    )
    assert [e.values.tolist() for e in got] == [[1.0, 0.5], [2.0, 0.25]]
    assert [e.timestamp for e in got] == ["2020-03-09 15:56:30", "2020-03-09 15:56:31"]


def test_quoted_fields_with_delimiters_and_newlines(tmp_path: Path) -> None:
    text = 'timestamp,note,value\n2014-07-01,"a, ""b""\nc",1\n2014-07-02,x,2\n'
    got = events(read([write(tmp_path / "q.csv", text)]))
    assert [(e.source["row"], e.values.tolist()) for e in got] == [(0, [1.0]), (1, [2.0])]


def test_a_utf8_byte_order_mark_is_dropped(tmp_path: Path) -> None:
    path = write(tmp_path / "bom.csv", b"\xef\xbb\xbf" + csv_text(1).encode())
    assert len(events(read([path]))) == 1


def test_a_byte_order_mark_before_the_first_jsonl_line_is_dropped(tmp_path: Path) -> None:
    for name in ("bom.jsonl", "bom.jsonl.gz"):
        path = write(tmp_path / name, b"\xef\xbb\xbf" + jsonl_text(3).encode())
        batches = read([path])
        assert [e.source["row"] for e in events(batches)] == [0, 1, 2]
        assert dead(batches) == []
        assert FileSource([path], InputConfig()).total_rows() == 3


def test_repeated_and_backwards_timestamps_stay_in_file_order(tmp_path: Path) -> None:
    stamps = ["2014-07-01 00:02:00", "2014-07-01 00:02:00", "2014-07-01 00:01:00", "2014-07-01 00:03:00"]
    text = "timestamp,value\n" + "".join(f"{t},{i}\n" for i, t in enumerate(stamps))
    got = events(read([write(tmp_path / "b.csv", text)]))
    assert [e.timestamp for e in got] == stamps
    assert [e.values[0] for e in got] == [0, 1, 2, 3]


# --- dead letters -----------------------------------------------------------------------


def test_csv_rows_with_the_wrong_number_of_fields(tmp_path: Path) -> None:
    text = "timestamp,value\n2014-07-01,1\n2014-07-02\n2014-07-03,3,extra\n2014-07-04,4\n"
    batches = read([write(tmp_path / "w.csv", text)])
    assert [e.source["row"] for e in events(batches)] == [0, 3]
    assert [(d.reason, d.record, d.source["row"]) for d in dead(batches)] == [
        ("expected 2 fields, got 1", "2014-07-02", 1),
        ("expected 2 fields, got 3", "2014-07-03,3,extra", 2),
    ]


def test_a_row_the_csv_reader_cannot_split_is_dead_lettered_and_reading_goes_on(tmp_path: Path) -> None:
    huge = "x" * 200_000  # longer than csv.field_size_limit(), inside an unclosed quote
    path = write(tmp_path / "q.csv", f'timestamp,value\n2014-07-01,1\n2014-07-02,"{huge}\n2014-07-03,3\n')
    batches = read([path])
    assert [e.source["row"] for e in events(batches)] == [0, 2]
    (letter,) = dead(batches)
    assert letter.reason.startswith("bad CSV row: field larger than field limit")
    assert letter.source["row"] == 1
    assert FileSource([path], InputConfig()).total_rows() == 3


def test_a_stray_quote_costs_its_row_only(tmp_path: Path) -> None:
    rows = ["timestamp,value\n"] + [f"{1404172800 + 60 * i},{i}\n" for i in range(1500)]
    rows[10] = rows[10].replace(",", ',"')  # 1404173340,"9 : the quote never closes
    rows[700] = '"' + rows[700]  # one at the start of a row, closed by a later stray one
    rows[900] = rows[900].rstrip("\n") + '"\n'
    path = write(tmp_path / "s.csv", "".join(rows))
    batches = read([path])
    bad = [d.source["row"] for d in dead(batches)]
    assert bad == [9, 699, 899]
    assert [e.source["row"] for e in events(batches)] == [r for r in range(1500) if r not in bad]
    reasons = [d.reason for d in dead(batches)]
    assert reasons[:2] == [UNCLOSED, UNCLOSED]
    assert reasons[2] == "field 'value' is not a number: '899\"'"
    assert dead(batches)[0].record == '1404173340,"9'

    assert FileSource([path], InputConfig()).total_rows() == 1500


def test_a_needed_field_with_a_line_break_is_a_bad_row(tmp_path: Path) -> None:
    text = 'timestamp,value\n"2014-07-01\n00:00:00",1\n2014-07-02,2\n'
    batches = read([write(tmp_path / "n.csv", text)])
    assert [e.timestamp for e in events(batches)] == ["2014-07-02"]
    assert all("\n" not in e.timestamp for e in events(batches))
    assert len(dead(batches)) == 2  # the first line, then the rest of the quoted field


def test_bad_csv_values_are_dead_lettered_with_the_row_as_a_dict(tmp_path: Path) -> None:
    text = "timestamp,value\n2014-07-01,abc\nnot a time,1\n2014-07-03,nan\n"
    got = dead(read([write(tmp_path / "v.csv", text)]))
    assert [d.reason for d in got] == [
        "field 'value' is not a number: 'abc'",
        "bad timestamp 'not a time' in field 'timestamp': expected ISO-8601 or epoch seconds/ms",
        "field 'value' is not finite: 'nan'",
    ]
    assert got[0].record == {"timestamp": "2014-07-01", "value": "abc"}
    assert got[0].source == {"file": str(tmp_path / "v.csv"), "row": 0}


def test_bad_jsonl_lines(tmp_path: Path) -> None:
    lines = [
        '{"timestamp": 0, "value": 1}',
        '{"timestamp": 60, "val',  # truncated
        "[1, 2]",
        '"text"',
        '{"timestamp": 120, "value": "x"}',
        '{"timestamp": 180, "value": 4}',
    ]
    batches = read([write(tmp_path / "j.jsonl", "\n".join(lines))])  # no newline at the end
    assert [e.source["row"] for e in events(batches)] == [0, 5]
    got = dead(batches)
    assert [d.source["row"] for d in got] == [1, 2, 3, 4]
    assert got[0].reason.startswith("not valid JSON: ")
    assert got[0].record == lines[1]
    assert [d.reason for d in got[1:]] == [
        "expected a JSON object, got list",
        "expected a JSON object, got str",
        "field 'value' is not a number: 'x'",
    ]
    assert got[1].record == "[1, 2]"
    assert got[3].record == {"timestamp": 120, "value": "x"}


def test_undecodable_bytes_are_dead_lettered_not_fatal(tmp_path: Path) -> None:
    csv_path = write(
        tmp_path / "u.csv", b"timestamp,value\n2014-07-01,1\n2014-07-02,\xff\xfe\n2014-07-03,3\n"
    )
    batches = read([csv_path])
    assert [e.source["row"] for e in events(batches)] == [0, 2]
    assert [(d.reason, d.record) for d in dead(batches)] == [
        ("row is not valid UTF-8", "2014-07-02,\ufffd\ufffd")
    ]

    jsonl_path = write(
        tmp_path / "u.jsonl", b'{"timestamp": 0, "value": 1}\n{"timestamp": "\xff", "value": 2}\n'
    )
    batches = read([jsonl_path])
    assert len(events(batches)) == 1
    (letter,) = dead(batches)
    assert letter.reason.startswith("not valid JSON")
    assert letter.source["row"] == 1


def test_non_ascii_utf8_is_fine(tmp_path: Path) -> None:
    path = write(tmp_path / "n.csv", "machine,timestamp,value\ncafé-ü,2014-07-01,1\n")
    assert [e.key for e in events(read([path], key_field="machine"))] == ["café-ü"]


def test_every_dead_letter_is_json_serialisable(tmp_path: Path) -> None:
    path = write(tmp_path / "mess.csv", b"timestamp,value\n\xff,1\n2014-07-01,1,2\n,\n2014-07-01,inf\n")
    letters = dead(read([path]))
    assert len(letters) == 4
    for letter in letters:
        orjson.dumps(letter.to_dict())


def test_a_csv_without_a_needed_column_or_header_fails_as_a_whole(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", "time,value\n2014-07-01,1\n")
    with pytest.raises(SourceError, match=r"no column 'timestamp' \(columns: time, value\)"):
        read([path])
    with pytest.raises(SourceError, match="needs a header row"):
        read([write(tmp_path / "empty.csv", "\n\n")])


# --- rows, batches, positions -----------------------------------------------------------


def test_csv_rows_count_data_rows_and_skip_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "r.csv", "\ntimestamp,value\n2014-07-01,1\n\n2014-07-02,2\n")
    assert [e.source["row"] for e in events(read([path]))] == [0, 1]


def test_jsonl_rows_count_every_physical_line(tmp_path: Path) -> None:
    path = write(
        tmp_path / "r.jsonl", '\n{"timestamp": 0, "value": 1}\n   \n{"timestamp": 1, "value": 2}\n\n'
    )
    batches = read([path])
    assert [e.source["row"] for e in events(batches)] == [1, 3]
    assert batches[-1].positions == {"file": path, "index": 0, "row": 5}  # the end of the file


def test_batches_hold_at_most_batch_size_and_never_span_files(tmp_path: Path) -> None:
    a = write(tmp_path / "a.csv", csv_text(5))
    b = write(tmp_path / "b.csv", "timestamp,value\n2014-07-01,1\n2014-07-01,bad\n")
    c = write(tmp_path / "c.csv", csv_text(3))
    batches = read([a, b, c], batch_size=3)
    assert [(len(x.events), len(x.dead_letters)) for x in batches] == [(3, 0), (2, 0), (1, 1), (3, 0)]
    assert [x.positions for x in batches] == [
        {"file": a, "index": 0, "row": 3},
        {"file": a, "index": 0, "row": 5},
        {"file": b, "index": 1, "row": 2},
        {"file": c, "index": 2, "row": 3},
    ]
    for x in batches:
        assert {e.source["file"] for e in x.events} | {d.source["file"] for d in x.dead_letters} == {
            x.positions["file"]
        }
    assert [e.key for e in events(batches)] == ["a"] * 5 + ["b"] + ["c"] * 3


def test_dead_letters_count_toward_the_batch_size(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", "oops\n" * 4 + jsonl_text(2))
    batches = read([path], batch_size=4)
    assert [(len(x.events), len(x.dead_letters)) for x in batches] == [(0, 4), (2, 0)]
    assert [x.positions["row"] for x in batches] == [4, 6]


def test_an_empty_file_gives_no_batch(tmp_path: Path) -> None:
    empty = write(tmp_path / "e.csv", "timestamp,value\n")
    full = write(tmp_path / "f.csv", csv_text(1))
    assert [x.positions for x in read([empty, full])] == [{"file": full, "index": 1, "row": 1}]
    assert read([write(tmp_path / "e.jsonl", "")]) == []


def test_batches_can_be_read_again(tmp_path: Path) -> None:
    source = FileSource([write(tmp_path / "a.csv", csv_text(4))], InputConfig(batch_size=3))
    first = [len(b.events) for b in source.batches()]
    assert first == [len(b.events) for b in source.batches()] == [3, 1]


def test_close_stops_a_running_replay(tmp_path: Path) -> None:
    source = FileSource([write(tmp_path / "a.csv", csv_text(10))], InputConfig(batch_size=2))
    seen = []
    for batch in source.batches():
        seen.append(batch)
        source.close()
    assert len(seen) == 1
    source.commit(seen[0].positions)  # a no-op for files
    source.close()  # closing twice is fine


# --- paths ------------------------------------------------------------------------------


def test_globs_are_sorted_per_pattern_in_argument_order_without_repeats(tmp_path: Path) -> None:
    for name in ("x/b.csv", "x/a.csv", "x/deep/c.csv", "y/z.jsonl"):
        write(tmp_path / name, "")
    x, y = tmp_path / "x", tmp_path / "y"
    got = resolve_paths(
        [str(y / "*.jsonl"), str(x / "*.csv"), str(x / "a.csv"), str(tmp_path / "x/**/*.csv")]
    )
    assert got == [str(y / "z.jsonl"), str(x / "a.csv"), str(x / "b.csv"), str(x / "deep" / "c.csv")]


def test_missing_inputs_are_named(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"input file '.*nope\.csv' does not exist"):
        FileSource([str(tmp_path / "nope.csv")], InputConfig())
    with pytest.raises(SourceError, match=r"input pattern '.*\*\.csv' matches no files"):
        resolve_paths([str(tmp_path / "*.csv")])
    with pytest.raises(SourceError, match="is a directory"):
        resolve_paths([str(tmp_path)])


def test_paths_are_the_resolved_files_and_nothing_is_read_up_front(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "no header here")  # would fail if it were read
    source = FileSource([str(tmp_path / "*.csv")], InputConfig())
    assert source.paths == [path]


@pytest.mark.parametrize(
    ("path", "stem"),
    [
        ("d/nyc_taxi.csv.gz", "nyc_taxi"),
        ("m-1.jsonl", "m-1"),
        ("x.ndjson.gz", "x"),
        ("a.b.csv", "a.b"),
        ("x", "x"),
    ],
)
def test_default_key_is_the_file_stem(path: str, stem: str) -> None:
    assert file_stem(path) == stem


# --- I/O errors -------------------------------------------------------------------------


def test_a_truncated_gzip_file_raises_source_error(tmp_path: Path) -> None:
    path = tmp_path / "t.csv.gz"
    path.write_bytes(gzip.compress(csv_text(50).encode())[:-30])
    with pytest.raises(SourceError, match=r"cannot read .*t\.csv\.gz") as info:
        read([str(path)])
    assert info.value.__cause__ is not None


def test_a_file_that_vanishes_raises_source_error(tmp_path: Path) -> None:
    path = write(tmp_path / "v.jsonl", jsonl_text(3))
    source = FileSource([path], InputConfig())
    os.remove(path)
    with pytest.raises(SourceError, match=r"cannot read .*v\.jsonl") as info:
        list(source.batches())
    assert isinstance(info.value.__cause__, FileNotFoundError)
    with pytest.raises(SourceError):
        source.total_rows()


# --- expected lengths -------------------------------------------------------------------


def test_expected_lengths_per_file_stem_without_a_key_field(tmp_path: Path) -> None:
    a = write(tmp_path / "a.csv.gz", csv_text(3) + "\n")
    b = write(tmp_path / "b.jsonl", jsonl_text(2) + "\nnot json\n")
    again = write(tmp_path / "more" / "a.csv", csv_text(4))
    source = FileSource([a, b, again], InputConfig())
    assert source.expected_lengths() == {"a": 7, "b": 3}
    assert source.total_rows() == 10


def test_expected_lengths_by_key_field(tmp_path: Path) -> None:
    csv_path = write(
        tmp_path / "k.csv",
        "machine,timestamp,value\nm1,0,1\nm2,0,1\nm1,1,2\n,2,3\nm2,3\n7,4,4\n",
    )
    jsonl_path = write(
        tmp_path / "k.jsonl",
        '{"machine": "m2", "timestamp": 0, "value": 1}\n{"machine": 7}\n[1]\n{"timestamp": 1}\n',
    )
    source = FileSource([csv_path, jsonl_path], InputConfig(key_field="machine"))
    assert source.expected_lengths() == {"m1": 2, "m2": 2, "7": 2}
    assert source.total_rows() == 10
    keyed = [e.key for e in events(list(source.batches()))]
    assert {k: keyed.count(k) for k in set(keyed)} == {"m1": 2, "m2": 2, "7": 1}


def test_expected_lengths_are_counted_once(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", csv_text(3))
    source = FileSource([path], InputConfig())
    assert source.expected_lengths() == {"a": 3}
    write(tmp_path / "a.csv", csv_text(5))
    assert source.expected_lengths() == {"a": 3}
    assert source.total_rows() == 3


# --- real datasets ----------------------------------------------------------------------


def test_nab_nyc_taxi(datasets_dir: Path) -> None:
    path = str(datasets_dir / "nab" / "data" / "realKnownCause" / "nyc_taxi.csv")
    source = FileSource([path], InputConfig())
    batches = list(source.batches())
    got = events(batches)
    assert len(got) == 10320
    assert dead(batches) == []
    assert len(batches) == 11  # batch_size 1024
    assert got[0].key == "nyc_taxi"
    assert (got[0].timestamp, got[0].time, got[0].values.tolist()) == (
        "2014-07-01 00:00:00",
        1404172800.0,
        [10844.0],
    )
    assert got[-1].timestamp == "2015-01-31 23:30:00"
    assert np.all(np.diff([e.time for e in got]) == 1800.0)
    assert batches[-1].positions == {"file": path, "index": 0, "row": 10320}
    assert source.expected_lengths() == {"nyc_taxi": 10320}
    assert source.total_rows() == 10320


def test_skab_valve2(datasets_dir: Path) -> None:
    path = str(datasets_dir / "skab" / "valve2" / "0.csv")
    config = InputConfig(
        delimiter=";", timestamp=TimestampConfig(field="datetime"), value_fields=SKAB_SENSORS
    )
    batches = list(FileSource([path], config).batches())
    got = events(batches)
    assert dead(batches) == []
    assert len(got) == 1125
    assert got[0].key == "0"
    assert got[0].timestamp == "2020-03-09 15:56:30"
    assert got[0].values.shape == (8,)
    assert got[0].values.tolist() == [
        0.0276077,
        0.0392033,
        1.29048,
        0.054711,
        68.6194,
        24.367,
        241.062,
        32.0362,
    ]
    assert got[-1].timestamp == "2020-03-09 16:16:29"


def test_prices_with_split_date_and_time(datasets_dir: Path) -> None:
    path = str(datasets_dir / "prices" / "2006-min-005.csv")
    config = InputConfig(
        timestamp=TimestampConfig(field=None, date_field="Date", time_field="Time"),
        value_fields=("Open", "High", "Low", "Close"),
    )
    got = events(list(FileSource([path], config).batches()))
    assert (got[0].timestamp, got[0].time) == ("2006-01-02 09:05:00", 1136192700.0)
    assert got[0].values.tolist() == [3578.73, 3587.88, 3578.73, 3582.99]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_seek_resumes_at_a_row_of_a_later_file(tmp_path, suffix):
    files = []
    for n in range(2):
        path = tmp_path / f"f{n}{suffix}"
        if suffix == ".csv":
            path.write_text("timestamp,value\n" + "".join(f"{i},{n}{i}\n\n" for i in range(6)))
        else:
            path.write_text("".join(f'{{"timestamp": {i}, "value": {n}{i}}}\n\n' for i in range(6)))
        files.append(str(path))
    config = InputConfig(timestamp={"field": "timestamp", "format": "epoch_s"}, batch_size=4)
    source = FileSource(files, config)
    whole = [e.values[0] for b in source.batches() for e in b.events]
    position = source.encode_positions({"file": files[1], "index": 1, "row": 4 if suffix == ".csv" else 7})
    again = FileSource(files, config)
    again.seek(position)
    batches = list(again.batches())
    rest = [e.values[0] for b in batches for e in b.events]
    assert whole[-len(rest) :] == rest and rest[0] == 14.0 and len(rest) == 2
    assert again.identity() == source.identity() != FileSource(files[:1], config).identity()
