from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson
import pytest

from anomalyd.config import InputConfig, TimestampConfig
from anomalyd.events import DeadLetter, Event
from anomalyd.parsing import FALLBACK_KEY, RecordParser

SOURCE = {"file": "f.csv", "row": 7}
JULY_1_0030 = 1404174600.0  # 2014-07-01T00:30:00Z


def parser(**input_kwargs: Any) -> RecordParser:
    ts = input_kwargs.pop("ts", {})
    return RecordParser(InputConfig(timestamp=TimestampConfig(**ts), **input_kwargs))


def event(p: RecordParser, record: dict[str, Any], **kwargs: Any) -> Event:
    result = p.parse(record, SOURCE, **kwargs)
    assert isinstance(result, Event), result
    return result


def reason(p: RecordParser, record: dict[str, Any]) -> str:
    result = p.parse(record, SOURCE)
    assert isinstance(result, DeadLetter), result
    assert result.source is SOURCE
    assert result.record == record
    orjson.dumps(result.to_dict())  # a dead letter can always be written out
    return result.reason


# --- timestamps -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2014-07-01 00:30:00", JULY_1_0030),
        ("2014-07-01T00:30:00", JULY_1_0030),
        ("2014-07-01T00:30:00Z", JULY_1_0030),
        ("2014-07-01T02:30:00+02:00", JULY_1_0030),
        ("2014-06-30 19:30:00-05:00", JULY_1_0030),
        ("2014-07-01 00:30:00.250000", JULY_1_0030 + 0.25),
        ("2014-07-01T00:30:00.5Z", JULY_1_0030 + 0.5),
        ("2014-07-01", JULY_1_0030 - 1800),
    ],
)
@pytest.mark.parametrize("fmt", ["auto", "iso"])
def test_iso_timestamps_are_utc_unless_zoned(raw: str, expected: float, fmt: str) -> None:
    ev = event(parser(ts={"format": fmt}), {"timestamp": raw, "value": "1"})
    assert ev.time == pytest.approx(expected, abs=1e-6)
    assert ev.timestamp == raw


def test_iso_time_does_not_depend_on_local_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert event(parser(), {"timestamp": "2014-07-01 00:30:00", "value": 1}).time == JULY_1_0030
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize(
    ("fmt", "raw", "expected", "shown"),
    [
        ("epoch_s", 1404174600, JULY_1_0030, "1404174600"),
        ("epoch_s", "1404174600", JULY_1_0030, "1404174600"),
        ("epoch_s", 1404174600.5, JULY_1_0030 + 0.5, "1404174600.5"),
        ("epoch_s", 0, 0.0, "0"),
        ("epoch_ms", 1404174600000, JULY_1_0030, "1404174600000"),
        ("epoch_ms", "1404174600250", JULY_1_0030 + 0.25, "1404174600250"),
        ("auto", 1404174600, JULY_1_0030, "1404174600"),
        ("auto", "1404174600", JULY_1_0030, "1404174600"),
        ("auto", 1404174600000, JULY_1_0030, "1404174600000"),
        ("auto", "1404174600000", JULY_1_0030, "1404174600000"),
        ("auto", 12.5, 12.5, "12.5"),
        ("auto", -5, -5.0, "-5"),
        ("auto", 99_999_999_999, 99_999_999_999.0, "99999999999"),  # just below 1e11: seconds
        ("auto", 100_000_000_000, 100_000_000.0, "100000000000"),  # 1e11 and up: milliseconds
    ],
)
def test_epoch_timestamps(fmt: str, raw: Any, expected: float, shown: str) -> None:
    ev = event(parser(ts={"format": fmt}), {"timestamp": raw, "value": 1})
    assert ev.time == pytest.approx(expected, abs=1e-6)
    assert ev.timestamp == shown


def test_split_date_and_time_fields_as_in_the_prices_dataset() -> None:
    p = parser(
        ts={"field": None, "date_field": "Date", "time_field": "Time"},
        value_fields=("Open", "High", "Low", "Close"),
    )
    record = {"Date": "2006-01-02", "Time": "09:05:00", "Open": "3578.73", "High": "3587.88"}
    record |= {"Low": "3578.73", "Close": "3582.99", "Volume": "0", "OpenInterest": "0"}
    ev = event(p, record)
    assert ev.timestamp == "2006-01-02 09:05:00"
    assert ev.time == 1136192700.0
    assert ev.values.tolist() == [3578.73, 3587.88, 3578.73, 3582.99]


def test_split_fields_with_a_bad_time_and_a_missing_time() -> None:
    p = parser(ts={"field": None, "date_field": "Date", "time_field": "Time"})
    assert reason(p, {"Date": "2006-01-02", "Time": "25:00:00", "value": 1}) == (
        "bad timestamp '2006-01-02 25:00:00' in fields 'Date' and 'Time': "
        "expected ISO-8601 or epoch seconds/ms"
    )
    assert reason(p, {"Date": "2006-01-02", "value": 1}) == "missing timestamp field 'Time'"


def test_no_timestamp_field_gives_nan_time_and_empty_timestamp() -> None:
    ev = event(parser(ts={"field": None}), {"value": 3})
    assert ev.timestamp == ""
    assert math.isnan(ev.time)


def test_the_timestamp_field_can_have_any_name() -> None:
    ev = event(parser(ts={"field": "datetime"}), {"datetime": "2020-03-09 15:56:30", "value": 1})
    assert ev.timestamp == "2020-03-09 15:56:30"


@pytest.mark.parametrize(
    ("fmt", "raw", "expected"),
    [
        ("auto", "yesterday", "ISO-8601 or epoch seconds/ms"),
        ("auto", "", "ISO-8601 or epoch seconds/ms"),
        ("auto", "2014-13-01 00:00:00", "ISO-8601 or epoch seconds/ms"),
        ("auto", "nan", "ISO-8601 or epoch seconds/ms"),
        ("auto", "inf", "ISO-8601 or epoch seconds/ms"),
        ("auto", True, "ISO-8601 or epoch seconds/ms"),
        ("auto", None, "ISO-8601 or epoch seconds/ms"),
        ("auto", [1], "ISO-8601 or epoch seconds/ms"),
        ("iso", 1404174600, "ISO-8601"),
        ("iso", "1404174600x", "ISO-8601"),
        ("epoch_s", "2014-07-01 00:30:00", "epoch seconds"),
        ("epoch_s", float("nan"), "epoch seconds"),
        ("epoch_ms", "abc", "epoch milliseconds"),
        ("auto", "2014-07-01\n00:30:00", "ISO-8601 or epoch seconds/ms"),  # a line break as separator
        ("iso", "2014-07-01\r00:30:00", "ISO-8601"),
        ("iso", "2014-07-01 00:30\n:00", "ISO-8601"),
        ("auto", "2014-07-01\t00:30:00", "ISO-8601 or epoch seconds/ms"),
    ],
)
def test_bad_timestamps_are_dead_lettered(fmt: str, raw: Any, expected: str) -> None:
    got = reason(parser(ts={"format": fmt}), {"timestamp": raw, "value": 1})
    assert got == f"bad timestamp {raw!r} in field 'timestamp': expected {expected}"


def test_whitespace_around_an_iso_timestamp_is_accepted() -> None:
    event = parser().parse({"timestamp": " 2014-07-01 00:30:00\n", "value": 1}, {})
    assert isinstance(event, Event) and event.time == 1404174600.0


def test_missing_timestamp_field() -> None:
    assert reason(parser(), {"value": 1}) == "missing timestamp field 'timestamp'"


def test_a_long_bad_value_is_cut_short_in_the_reason() -> None:
    got = reason(parser(), {"timestamp": "x" * 500, "value": 1})
    assert len(got) < 200
    assert got.startswith("bad timestamp 'xxxx")


def test_repeated_and_backwards_timestamps_are_not_the_parsers_business() -> None:
    p = parser()
    times = [event(p, {"timestamp": t, "value": 1}).time for t in ("2014-07-01", "2014-07-01", "2014-06-30")]
    assert times == [times[0], times[0], times[0] - 86400]


# --- keys -------------------------------------------------------------------------------


def test_key_from_the_key_field_as_a_string() -> None:
    p = parser(key_field="machine")
    assert event(p, {"machine": "m-1", "timestamp": 0, "value": 1}).key == "m-1"
    assert event(p, {"machine": 42, "timestamp": 0, "value": 1}, default_key="ignored").key == "42"


@pytest.mark.parametrize("record", [{}, {"machine": ""}, {"machine": None}])
def test_missing_or_empty_key_is_dead_lettered(record: dict[str, Any]) -> None:
    got = reason(parser(key_field="machine"), {**record, "timestamp": 0, "value": 1})
    assert got == "missing key field 'machine'"


@pytest.mark.parametrize("raw", [True, [1], {"a": 1}])
def test_a_key_that_is_not_a_scalar_is_dead_lettered(raw: Any) -> None:
    got = reason(parser(key_field="machine"), {"machine": raw, "timestamp": 0, "value": 1})
    assert got == f"key field 'machine' is not a string or number: {raw!r}"


def test_without_a_key_field_the_default_key_is_used() -> None:
    p = parser()
    assert event(p, {"timestamp": 0, "value": 1}, default_key="nyc_taxi").key == "nyc_taxi"
    assert event(p, {"timestamp": 0, "value": 1}).key == FALLBACK_KEY


# --- values -----------------------------------------------------------------------------


def test_values_are_float64_in_config_order() -> None:
    p = parser(value_fields=("b", "a", "c"))
    ev = event(p, {"timestamp": 0, "a": "1.5", "b": 2, "c": -3e-2, "ignored": "x"})
    assert ev.values.dtype == np.float64
    assert ev.values.tolist() == [2.0, 1.5, -0.03]


def test_surrounding_whitespace_in_a_number_is_accepted() -> None:
    assert event(parser(), {"timestamp": 0, "value": " 12 "}).values.tolist() == [12.0]


def test_missing_value_field() -> None:
    assert reason(parser(value_fields=("a", "b")), {"timestamp": 0, "a": 1}) == "missing field 'b'"


@pytest.mark.parametrize("raw", ["abc", "", True, False, None, [1.0], {"x": 1}, "1,5"])
def test_a_value_that_is_not_a_number(raw: Any) -> None:
    assert reason(parser(), {"timestamp": 0, "value": raw}) == f"field 'value' is not a number: {raw!r}"


@pytest.mark.parametrize(
    "raw", ["nan", "NaN", "inf", "-inf", "Infinity", float("nan"), float("inf"), "1e999"]
)
def test_a_value_that_is_not_finite(raw: Any) -> None:
    assert reason(parser(), {"timestamp": 0, "value": raw}) == f"field 'value' is not finite: {raw!r}"


def test_the_first_problem_in_a_record_is_reported() -> None:
    p = parser(key_field="k", value_fields=("a", "b"))
    assert reason(p, {"timestamp": "bad", "a": "x"}) == "missing key field 'k'"
    assert reason(p, {"k": 1, "timestamp": "bad", "a": "x"}).startswith("bad timestamp")
    assert reason(p, {"k": 1, "timestamp": 0, "a": "x"}) == "field 'a' is not a number: 'x'"


@pytest.mark.parametrize(
    "record",
    [
        {"timestamp": object(), "value": object()},
        {"timestamp": 10**400, "value": 1},
        {"timestamp": 0, "value": 10**400},
        {"timestamp": "\x00", "value": "\x00"},
        {None: ["extra", "fields"], "timestamp": 0},
    ],
)
def test_a_malformed_record_never_raises(record: dict[Any, Any]) -> None:
    result = parser().parse(record, SOURCE)
    assert isinstance(result, DeadLetter)
    assert all(isinstance(k, str) for k in result.record)


# --- parse_many -------------------------------------------------------------------------


def test_parse_many_matches_parse_record_by_record() -> None:
    p = parser(value_fields=("a", "b"))
    records: list[dict[str, Any]] = [
        {"timestamp": "2014-07-01 00:30:00", "a": "1", "b": "2"},
        {"timestamp": "2014-07-01 00:30:00", "a": "x", "b": "2"},
        {"timestamp": 1404174600123, "a": 3, "b": 4.5},
        {"timestamp": "later", "a": 3, "b": 4.5},
        {"timestamp": 5, "a": -1, "b": 0},
    ]
    sources = [{"row": i} for i in range(len(records))]
    events, dead = p.parse_many(records, sources, default_key="k")
    singles = [p.parse(r, s, default_key="k") for r, s in zip(records, sources, strict=True)]
    expected_events = [x for x in singles if isinstance(x, Event)]
    assert [d.to_dict() for d in dead] == [x.to_dict() for x in singles if isinstance(x, DeadLetter)]
    assert [(e.key, e.timestamp, e.time, e.source) for e in events] == [
        (e.key, e.timestamp, e.time, e.source) for e in expected_events
    ]
    for got, want in zip(events, expected_events, strict=True):
        assert got.values.dtype == np.float64
        np.testing.assert_array_equal(got.values, want.values)
    assert [e.source["row"] for e in events] == [0, 2, 4]


def test_parse_many_with_nothing_or_only_bad_records() -> None:
    p = parser()
    assert p.parse_many([], []) == ([], [])
    events, dead = p.parse_many([{"value": 1}], [{"row": 0}])
    assert events == []
    assert [d.reason for d in dead] == ["missing timestamp field 'timestamp'"]
