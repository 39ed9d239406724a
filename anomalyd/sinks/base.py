"""The one interface every sink implements: add, flush (durable or raise), close."""

from __future__ import annotations

from typing import Any, Protocol


class Record(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


class Sink(Protocol):
    def add(self, record: Record) -> None: ...

    def flush(self) -> None:
        """Make everything added so far durable, or raise SinkError."""
        ...

    def close(self) -> None: ...
