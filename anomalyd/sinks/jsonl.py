"""JSON-lines sinks: one object per line, to stdout or to a file."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import IO

import orjson

from anomalyd.errors import SinkError
from anomalyd.sinks.base import Record

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE


def dumps(record: Record) -> bytes:
    return orjson.dumps(record.to_dict(), option=_OPTIONS)


class StdoutSink:
    """Writes each record as a JSON line on standard output."""

    def __init__(self, stream: IO[bytes] | None = None):
        self._stream = stream

    def add(self, record: Record) -> None:
        stream = self._stream or sys.stdout.buffer
        stream.write(dumps(record))

    def flush(self) -> None:
        try:
            (self._stream or sys.stdout.buffer).flush()
        except BrokenPipeError as exc:
            raise SinkError("stdout closed by the reader") from exc

    def close(self) -> None:
        self.flush()


class FileSink:
    """Appends JSON lines to a file; ``flush`` fsyncs, so a flushed record survives a crash.

    The file is opened on the first record (no I/O in ``__init__``), in append mode so a
    restarted replay adds to it rather than wiping it.
    """

    def __init__(self, path: str | Path, append: bool = True):
        self.path = Path(path)
        self.append = append
        self._file: IO[bytes] | None = None

    def _open(self) -> IO[bytes]:
        if self._file is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = open(self.path, "ab" if self.append else "wb")  # noqa: SIM115 - closed in close()
                if self.append:
                    _cut_torn_line(self._file)
            except OSError as exc:
                raise SinkError(f"cannot open {self.path}: {exc.strerror}") from exc
        return self._file

    def add(self, record: Record) -> None:
        try:
            self._open().write(dumps(record))
        except OSError as exc:
            raise SinkError(f"cannot write {self.path}: {exc.strerror}") from exc

    def flush(self) -> None:
        if self._file is None:
            return
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:
            raise SinkError(f"cannot flush {self.path}: {exc.strerror}") from exc

    def close(self) -> None:
        if self._file is not None:
            self.flush()
            self._file.close()
            self._file = None


def _cut_torn_line(handle: IO[bytes]) -> None:
    """Drop a last line without its newline: a write cut short by a crash, never flushed
    (a flush ends on a whole record), so the records after it are whole lines again."""
    size = end = handle.seek(0, os.SEEK_END)
    keep = 0
    with open(handle.name, "rb") as reader:
        while end > 0:
            start = max(0, end - 65536)
            reader.seek(start)
            chunk = reader.read(end - start)
            if end == size and chunk.endswith(b"\n"):
                return  # the usual case: whole lines only
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            end = start
    handle.truncate(keep)
    handle.seek(0, os.SEEK_END)
