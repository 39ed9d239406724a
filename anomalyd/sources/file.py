"""Replay CSV and JSONL files (optionally gzipped) as batches of events, in file order.

Each file is one stream unless the config names a key field: its rows get the file's stem
as their key (``nyc_taxi`` for ``data/nyc_taxi.csv.gz``). A malformed row becomes a dead
letter; a file that cannot be read at all raises :class:`SourceError`.
"""

from __future__ import annotations

import glob
import gzip
import os
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Literal

import orjson

from anomalyd.config import InputConfig
from anomalyd.errors import SourceError
from anomalyd.events import DeadLetter
from anomalyd.parsing import RecordParser, key_of
from anomalyd.sources.base import Batch
from anomalyd.sources.csvrows import CsvRows

Format = Literal["csv", "jsonl"]
_SUFFIX_FORMATS: dict[str, Format] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
# What a damaged file raises while being read: OS errors (BadGzipFile included), a gzip
# stream cut short (EOFError), corrupt deflate data (zlib.error).
_READ_ERRORS = (OSError, EOFError, zlib.error)


def _row_of(dead: DeadLetter) -> Any:
    return dead.source["row"]


def resolve_paths(paths: Iterable[str]) -> list[str]:
    """Expand glob patterns (``**`` recursive), sorted per pattern, in argument order, without repeats.

    A path that exists is taken literally, even if it contains glob characters. A missing
    file, a directory, or a pattern that matches no files raises :class:`SourceError`.
    """
    files: list[str] = []
    seen: set[str] = set()
    for pattern in paths:
        if os.path.exists(pattern):
            if os.path.isdir(pattern):
                raise SourceError(
                    f"input {pattern!r} is a directory; give files or a glob such as '{pattern}/*.csv'"
                )
            matches = [pattern]
        elif glob.has_magic(pattern):
            matches = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
            if not matches:
                raise SourceError(f"input pattern {pattern!r} matches no files")
        else:
            raise SourceError(f"input file {pattern!r} does not exist")
        for path in matches:
            identity = os.path.abspath(path)
            if identity not in seen:
                seen.add(identity)
                files.append(path)
    return files


def _compressed(path: str) -> bool:
    return path.lower().endswith(".gz")


def file_format(path: str, configured: str = "auto") -> Format:
    """The format of ``path``: the configured one, else by suffix (``.gz`` is looked through).

    >>> file_format("data/taxi.csv.gz"), file_format("x.ndjson"), file_format("x.log", "csv")
    ('csv', 'jsonl', 'csv')
    """
    if configured == "csv":
        return "csv"
    if configured == "jsonl":
        return "jsonl"
    name = path[:-3] if _compressed(path) else path
    suffix = os.path.splitext(name)[1].lower()
    if suffix not in _SUFFIX_FORMATS:
        known = ", ".join(sorted(_SUFFIX_FORMATS))
        raise SourceError(
            f"cannot tell the format of {path!r} from its suffix (known: {known}[.gz]); set input.format"
        )
    return _SUFFIX_FORMATS[suffix]


def file_stem(path: str) -> str:
    """The default stream key of a file: its name without format and ``.gz`` suffixes.

    >>> file_stem("data/nyc_taxi.csv.gz"), file_stem("a/b/machine-1.jsonl"), file_stem("plain")
    ('nyc_taxi', 'machine-1', 'plain')
    """
    name = os.path.basename(path)
    if _compressed(name):
        name = name[:-3]
    root, suffix = os.path.splitext(name)
    return root if suffix.lower() in _SUFFIX_FORMATS and root else name


def _open_text(path: str) -> IO[str]:
    # surrogateescape keeps undecodable bytes visible (as lone surrogates) so the row holding
    # them can be dead-lettered; utf-8-sig drops a byte-order mark before the header.
    if _compressed(path):
        return gzip.open(path, "rt", encoding="utf-8-sig", errors="surrogateescape", newline="")
    return open(path, encoding="utf-8-sig", errors="surrogateescape", newline="")


def _open_bytes(path: str) -> IO[bytes]:
    if _compressed(path):
        return gzip.open(path, "rb")  # type: ignore[return-value]  # GzipFile is a binary IO
    return open(path, "rb")


def _lines(handle: IO[bytes]) -> Iterator[bytes]:
    """The lines of a JSONL file; a UTF-8 byte-order mark before the first one is dropped."""
    first = handle.readline()
    if first:
        yield first[3:] if first.startswith(b"\xef\xbb\xbf") else first
        yield from handle


def _undecodable(text: str) -> bool:
    """True when ``text`` holds bytes that were not UTF-8 (surrogate escapes)."""
    if text.isascii():  # O(1) in CPython: the common case costs nothing
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _readable(text: str) -> str:
    """``text`` with surrogate escapes turned into U+FFFD, so a dead letter is valid JSON."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


@dataclass(slots=True)
class _Chunk:
    """Up to ``batch_size`` rows of one file, split into fields but not yet parsed."""

    records: list[dict[str, Any]] = field(default_factory=list)
    sources: list[dict[str, Any]] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    end: int = 0  # the next row to read after this chunk


class FileSource:
    """Read CSV/JSONL files, plain or gzipped, as a :class:`~anomalyd.sources.base.Source`.

    ``paths`` holds files or glob patterns; they are resolved (not read) on construction, so
    a missing input fails at start-up, and ``self.paths`` is the list of files. ``source`` of
    each record is ``{"file", "row"}``: ``row`` counts data rows from 0 (CSV, header
    excluded) or physical lines from 0 (JSONL).
    """

    def __init__(self, paths: Sequence[str], config: InputConfig) -> None:
        self.paths = resolve_paths(paths)
        self.config = config
        self.formats = [file_format(path, config.format) for path in self.paths]
        self._parser = RecordParser(config)
        self._open: IO[Any] | None = None
        self._closed = False
        self._lengths: dict[str, int] | None = None
        self._total: int | None = None
        self._start = (0, 0)  # (file index, row) where batches() begins; see seek()
        self._header: list[str] = []  # of the CSV file being read
        self._width = 0

    def batches(self) -> Iterator[Batch]:
        """Yield batches of at most ``batch_size`` records in file order; a batch never spans two files."""
        self._closed = False
        parse_many = self._parser.parse_many
        start_index, start_row = self._start
        for index, (path, fmt) in enumerate(zip(self.paths, self.formats, strict=True)):
            if index < start_index:
                continue
            stem = file_stem(path)
            skip = start_row if index == start_index else 0
            for chunk in self._chunks(path, fmt, skip):
                events, dead = parse_many(chunk.records, chunk.sources, default_key=stem)
                if chunk.dead:
                    dead = sorted(chunk.dead + dead, key=_row_of) if dead else chunk.dead
                yield Batch(events, dead, {"file": path, "index": index, "row": chunk.end})
                if self._closed:
                    return

    def identity(self) -> str:
        """What a snapshot's positions refer to: these files, in this order."""
        return "files:" + "|".join(os.path.abspath(p) for p in self.paths)

    def encode_positions(self, positions: dict[str, Any]) -> dict[str, Any]:
        return {"index": int(positions["index"]), "row": int(positions["row"])}

    def seek(self, saved: dict[str, Any]) -> None:
        """Start the next :meth:`batches` at a snapshot's position: file ``index``, data row ``row``."""
        self._start = (int(saved["index"]), int(saved["row"]))

    def _chunks(self, path: str, fmt: Format, skip: int = 0) -> Iterator[_Chunk]:
        """The rows of one file from row ``skip`` on, in chunks; I/O failures become :class:`SourceError`."""
        try:
            if fmt == "csv":
                with _open_text(path) as text:
                    self._open = text
                    yield from self._csv_chunks(path, text, skip)
            else:
                with _open_bytes(path) as binary:
                    self._open = binary
                    yield from self._jsonl_chunks(path, binary, skip)
        except _READ_ERRORS as exc:
            raise SourceError(f"cannot read {path!r}: {exc}") from exc
        except ValueError:  # reading a handle that close() closed under us
            if not self._closed:
                raise
        finally:
            self._open = None

    def _csv_chunks(self, path: str, handle: IO[str], skip: int = 0) -> Iterator[_Chunk]:
        size = self.config.batch_size
        rows = self._csv_rows(path, handle)
        width = self._width
        chunk, taken, row = _Chunk(), 0, 0
        for fields, error in rows:
            if fields == []:  # a blank line, skipped as csv.DictReader does
                continue
            if row < skip:  # resuming: done before the snapshot was taken
                row += 1
                continue
            source = {"file": path, "row": row}
            lines = rows.lines
            if fields is None:
                chunk.dead.append(DeadLetter(str(error), _readable(rows.raw()), source))
            elif len(fields) != width:
                reason = f"expected {width} fields, got {len(fields)}"
                chunk.dead.append(DeadLetter(reason, _readable(rows.raw()), source))
            elif (len(lines) == 1 and lines[0].isascii()) or not _undecodable("".join(lines)):
                chunk.records.append(dict(zip(self._header, fields, strict=True)))
                chunk.sources.append(source)
            else:
                chunk.dead.append(DeadLetter("row is not valid UTF-8", _readable(rows.raw()), source))
            row += 1
            taken += 1
            if taken == size:
                chunk.end = row
                yield chunk
                chunk, taken = _Chunk(), 0
        if taken:
            chunk.end = row
            yield chunk

    def _csv_rows(self, path: str, handle: IO[str]) -> CsvRows:
        """The rows of a CSV file after its header (kept in ``_header``, ``_width``)."""
        rows = CsvRows(handle, self.config.delimiter)
        for fields, _ in rows:
            if fields:
                header = [_readable(name.strip()) for name in fields]
                needed = self._needed_fields()
                missing = [f for f in needed if f not in header]
                if missing:
                    names = ", ".join(repr(f) for f in missing)
                    raise SourceError(f"{path!r} has no column {names} (columns: {', '.join(header)})")
                rows.expect(len(header), [header.index(f) for f in needed])
                self._header, self._width = header, len(header)
                return rows
        raise SourceError(f"{path!r} is empty: a CSV file needs a header row")

    def _needed_fields(self) -> list[str]:
        cfg = self.config
        ts = cfg.timestamp
        time_fields = [ts.date_field, ts.time_field] if ts.split else [ts.field]
        return [f for f in (cfg.key_field, *time_fields, *cfg.value_fields) if f is not None]

    def _jsonl_chunks(self, path: str, handle: IO[bytes], skip: int = 0) -> Iterator[_Chunk]:
        size = self.config.batch_size
        loads = orjson.loads
        chunk, taken, row = _Chunk(), 0, -1
        for row, line in enumerate(_lines(handle)):
            if row < skip or not line.strip():
                continue
            source = {"file": path, "row": row}
            try:
                record = loads(line)
            except orjson.JSONDecodeError as exc:
                text = line.decode("utf-8", "replace").rstrip("\r\n")
                chunk.dead.append(DeadLetter(f"not valid JSON: {exc}", text, source))
            else:
                if record.__class__ is dict:
                    chunk.records.append(record)
                    chunk.sources.append(source)
                else:
                    text = line.decode("utf-8", "replace").rstrip("\r\n")
                    reason = f"expected a JSON object, got {type(record).__name__}"
                    chunk.dead.append(DeadLetter(reason, text, source))
            taken += 1
            if taken == size:
                chunk.end = row + 1
                yield chunk
                chunk, taken = _Chunk(), 0
        if taken:
            chunk.end = row + 1
            yield chunk

    def expected_lengths(self) -> dict[str, int]:
        """Data rows per key over all files, from a quick pass that reads keys only.

        Rows that will be dead-lettered for a bad time or value are counted; with a key
        field, rows whose key cannot be read are not.
        """
        if self._lengths is None:
            self._count_rows()
        assert self._lengths is not None
        return dict(self._lengths)

    def total_rows(self) -> int:
        """Data rows over all files, for a progress bar."""
        if self._total is None:
            self._count_rows()
        assert self._total is not None
        return self._total

    def _count_rows(self) -> None:
        per_key: Counter[str] = Counter()
        total = 0
        for path, fmt in zip(self.paths, self.formats, strict=True):
            try:
                keys = self._csv_keys(path) if fmt == "csv" else self._jsonl_keys(path)
                for key in keys:
                    total += 1
                    if key is not None:
                        per_key[key] += 1
            except _READ_ERRORS as exc:
                raise SourceError(f"cannot read {path!r}: {exc}") from exc
        self._lengths, self._total = dict(per_key), total

    def _csv_keys(self, path: str) -> Iterator[str | None]:
        """The key of each data row of a CSV file (None when the row has none)."""
        with _open_text(path) as handle:
            rows = self._csv_rows(path, handle)
            width = self._width
            key_field = self.config.key_field
            stem = file_stem(path)
            column = self._header.index(key_field) if key_field is not None else -1
            for fields, _ in rows:
                if fields == []:  # a blank line is no row
                    continue
                if column < 0:
                    yield stem
                elif fields is None or len(fields) != width:
                    yield None
                else:
                    yield key_of(fields[column])

    def _jsonl_keys(self, path: str) -> Iterator[str | None]:
        """The key of each non-blank line of a JSONL file (None when the line has none)."""
        key_field = self.config.key_field
        stem = file_stem(path)
        with _open_bytes(path) as handle:
            for line in _lines(handle):
                if not line.strip():
                    continue
                if key_field is None:
                    yield stem
                    continue
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    yield None
                    continue
                yield key_of(record.get(key_field)) if record.__class__ is dict else None

    def commit(self, positions: dict[Any, Any]) -> None:
        """Nothing to do: files keep no offsets (a state directory's snapshot does, see seek)."""

    def close(self) -> None:
        """Close the file being read, if any; a running :meth:`batches` stops after its batch."""
        self._closed = True
        if self._open is not None:
            self._open.close()
            self._open = None
