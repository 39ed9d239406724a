"""Malformed files: every bad row is dead-lettered once with its reason, every valid row is
scored, and an input that cannot be read at all is one line on stderr with exit code 2 or 1.

Each variant lists its lines as ``(kind, text)``: ``good`` rows must be scored, ``bad`` rows
dead-lettered, ``skip`` lines (blank) are neither. The detector is ``hst`` with a tiny
warm-up, so no training time is spent: these check delivery, not detection.
"""

from __future__ import annotations

import csv
import gzip
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from anomalyd import ReplayOutputs, replay
from anomalyd.cli import main
from anomalyd.config import parse_config

FAST = {
    "detector": "hst",
    "training": {"warmup_events": 8},
    "window": {"length": 4},
    "output": {"alerts": []},
}
START = 1404172800  # 2014-07-01 00:00:00 UTC


def good_csv(i: int) -> str:
    return f"{START + 60 * i},{i % 7}"


def good_jsonl(i: int) -> str:
    return json.dumps({"timestamp": START + 60 * i, "value": i % 7})


@dataclass
class Variant:
    name: str
    lines: list[tuple[str, str | bytes]]
    suffix: str = ".csv"
    header: str | None = "timestamp,value"
    gzipped: bool = False

    def content(self) -> bytes:
        parts = [] if self.header is None else [self.header.encode() + b"\n"]
        for _, text in self.lines:
            parts.append(text if isinstance(text, bytes) else text.encode() + b"\n")
        data = b"".join(parts)
        return gzip.compress(data) if self.gzipped else data

    def good_timestamps(self) -> list[str]:
        stamps = []
        for kind, text in self.lines:
            if kind == "good":
                line = (text.decode("utf-8-sig") if isinstance(text, bytes) else text).strip()
                is_csv = self.suffix.startswith(".csv")
                stamps.append(line.split(",")[0] if is_csv else str(json.loads(line)["timestamp"]))
        return stamps

    def rows(self, kind: str) -> list[int]:
        """Rows of ``kind``: CSV counts data rows (blank lines are none), JSONL physical lines."""
        found, row = [], 0
        for line_kind, _ in self.lines:
            if line_kind == kind:
                found.append(row)
            if line_kind != "skip" or not self.suffix.startswith(".csv"):
                row += 1
        return found


def csv_variant(name: str, bad: list[str | bytes], at: int = 20, n: int = 40, **kw: object) -> Variant:
    lines: list[tuple[str, str | bytes]] = [("good", good_csv(i)) for i in range(n)]
    lines[at:at] = [("bad", b) for b in bad]
    return Variant(name, lines, **kw)  # type: ignore[arg-type]


def jsonl_variant(name: str, bad: list[str | bytes], at: int = 20, n: int = 40) -> Variant:
    lines: list[tuple[str, str | bytes]] = [("good", good_jsonl(i)) for i in range(n)]
    lines[at:at] = [("bad", b) for b in bad]
    return Variant(name, lines, suffix=".jsonl", header=None)


def _stray_quote_at_start() -> Variant:
    lines: list[tuple[str, str | bytes]] = [("good", good_csv(i)) for i in range(40)]
    lines[5] = ("bad", '"' + good_csv(5))
    return Variant("csv-stray-quote-at-row-start", lines)


def _last_line_cut() -> Variant:
    lines: list[tuple[str, str | bytes]] = [("good", good_csv(i)) for i in range(40)]
    lines.append(("bad", f"{START + 60 * 40},".encode()))  # cut after the comma, no newline
    return Variant("csv-truncated-last-line", lines)


def _blank_lines() -> Variant:
    lines: list[tuple[str, str | bytes]] = [("good", good_csv(i)) for i in range(40)]
    lines[10:10] = [("skip", ""), ("skip", "")]
    return Variant("csv-blank-lines", lines)


def _legit_multiline_note() -> Variant:
    lines: list[tuple[str, str | bytes]] = [("good", f"{good_csv(i)},n{i}") for i in range(40)]
    lines[7] = ("good", f'{good_csv(7)},"a note\non two lines, quoted"')
    return Variant("csv-quoted-note-over-two-lines", lines, header="timestamp,value,note")


def _jsonl_bom() -> Variant:
    lines: list[tuple[str, str | bytes]] = [("good", good_jsonl(i)) for i in range(40)]
    lines[0] = ("good", b"\xef\xbb\xbf" + good_jsonl(0).encode() + b"\n")
    return Variant("jsonl-bom", lines, suffix=".jsonl", header=None)


def _jsonl_blank_lines() -> Variant:
    lines: list[tuple[str, str | bytes]] = [("good", good_jsonl(i)) for i in range(40)]
    lines[3:3] = [("skip", ""), ("skip", "   ")]
    return Variant("jsonl-blank-lines", lines, suffix=".jsonl", header=None)


def _csv_bom() -> Variant:
    variant = csv_variant("csv-bom", [])
    variant.header = "\ufefftimestamp,value"
    return variant


HUGE = "9" * 200_000
VARIANTS = [
    csv_variant("csv-clean", []),
    _csv_bom(),
    csv_variant("csv-crlf", [], header="timestamp,value\r"),
    csv_variant("csv-stray-quote", [f'{START + 1},"5']),
    _stray_quote_at_start(),
    csv_variant("csv-newline-in-timestamp", ['"2014-07-01', '00:30:00",1']),
    csv_variant("csv-nan", [f"{START + 1},nan", f"{START + 2},NaN"]),
    csv_variant("csv-inf", [f"{START + 1},inf", f"{START + 2},-Infinity"]),
    csv_variant("csv-empty-value", [f"{START + 1},"]),
    csv_variant("csv-missing-field", [f"{START + 1}"]),
    csv_variant("csv-extra-field", [f"{START + 1},1,2"]),
    csv_variant("csv-not-a-number", [f"{START + 1},abc", f"{START + 2},1.2.3"]),
    csv_variant("csv-bad-timestamp", ["yesterday,1", "2014-13-01 00:00:00,1", ",1"]),
    csv_variant("csv-timestamp-with-tab", ["2014-07-01\t00:30:00,1"]),
    _last_line_cut(),
    csv_variant("csv-binary-junk", [b"\xff\xfe\x00\x81junk,\x9c\n"]),
    csv_variant("csv-nul-byte", [f"{START + 1},1\x002"]),
    csv_variant("csv-huge-line", [f"{START + 1},{HUGE}x"]),
    csv_variant("csv-huge-unclosed-quote", [f'{START + 1},"{HUGE}']),
    csv_variant("csv-wrong-delimiter-row", [f"{START + 1};1"]),
    _blank_lines(),
    _legit_multiline_note(),
    csv_variant("csv-gzip-bad-row", [f"{START + 1},x"], suffix=".csv.gz", gzipped=True),
    csv_variant("csv-header-only", [], n=0),
    jsonl_variant("jsonl-clean", []),
    _jsonl_bom(),
    jsonl_variant("jsonl-truncated-line", ['{"timestamp": 1, "val']),
    jsonl_variant("jsonl-not-an-object", ["[1, 2]", '"text"', "7"]),
    jsonl_variant("jsonl-nan-string", ['{"timestamp": 1, "value": "NaN"}']),
    jsonl_variant("jsonl-nan-literal", ['{"timestamp": 1, "value": NaN}']),
    jsonl_variant("jsonl-infinite", ['{"timestamp": 1, "value": 1e999}']),
    jsonl_variant("jsonl-missing-value", ['{"timestamp": 1}']),
    jsonl_variant("jsonl-missing-timestamp", ['{"value": 1}']),
    jsonl_variant("jsonl-newline-in-timestamp", ['{"timestamp": "2014-07-01\\n00:30:00", "value": 1}']),
    jsonl_variant("jsonl-binary-junk", [b"\xff\xfe\x00junk\n"]),
    jsonl_variant("jsonl-huge-line", [json.dumps({"timestamp": 1, "value": HUGE + "x"})]),
    jsonl_variant(
        "jsonl-bool-and-null", ['{"timestamp": 1, "value": true}', '{"timestamp": 2, "value": null}']
    ),
    jsonl_variant("jsonl-value-object", ['{"timestamp": 1, "value": {"a": 1}}']),
    _jsonl_blank_lines(),
    jsonl_variant("jsonl-empty", [], n=0),
]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_bad_rows_are_dead_lettered_and_good_rows_scored(tmp_path: Path, variant: Variant) -> None:
    data = tmp_path / f"input{variant.suffix}"
    data.write_bytes(variant.content())
    scores, dead = tmp_path / "scores.csv", tmp_path / "dead.jsonl"
    stats = replay([str(data)], parse_config(FAST), ReplayOutputs(scores=scores, dead_letter=dead))
    letters = [json.loads(line) for line in dead.read_text().splitlines()] if dead.exists() else []
    assert [d["source"]["row"] for d in letters] == variant.rows("bad")
    assert all(d["reason"] and d["source"]["file"] == str(data) for d in letters)
    scored = list(csv.DictReader(scores.open())) if scores.exists() else []
    assert [r["timestamp"] for r in scored] == variant.good_timestamps()
    assert (stats.events, stats.dead_letters) == (len(variant.rows("good")), len(variant.rows("bad")))


UNREADABLE = [
    ("empty.csv", b"", 1, "is empty: a CSV file needs a header row"),
    ("semicolons.csv", b"timestamp;value\n1;2\n", 1, "has no column 'timestamp', 'value'"),
    ("cut.csv.gz", gzip.compress(b"timestamp,value\n" + b"1,2\n" * 5000)[:-8], 1, "cannot read"),
    ("notgzip.csv.gz", b"timestamp,value\n1,2\n", 1, "cannot read"),
    ("data.txt", b"timestamp,value\n1,2\n", 1, "cannot tell the format"),
    ("folder", None, 2, "is a directory"),
    ("missing.csv", None, 2, "does not exist"),
]


@pytest.mark.parametrize(("name", "content", "code", "says"), UNREADABLE, ids=[u[0] for u in UNREADABLE])
def test_an_unreadable_input_is_one_line_and_an_exit_code(
    tmp_path: Path, name: str, content: bytes | None, code: int, says: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    elif name == "folder":
        path.mkdir()
    config = tmp_path / "fast.yaml"
    config.write_text(json.dumps(FAST))
    result = CliRunner().invoke(main, ["replay", str(path), "-c", str(config)])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == code, result.stderr
    assert lines[-1].startswith("anomalyd: error: ") and says in lines[-1]
    assert "Traceback" not in result.stderr and "Usage:" not in result.stderr
