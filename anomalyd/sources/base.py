"""The one interface every source implements: batches of events with their positions."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from anomalyd.events import DeadLetter, Event


@dataclass(slots=True)
class Batch:
    """Events and dead letters read together, in stream order.

    ``positions`` is where the source stands after this batch (file rows, Kafka offsets):
    committing it means every record up to here is done.
    """

    events: list[Event]
    dead_letters: list[DeadLetter] = field(default_factory=list)
    positions: dict[Any, Any] = field(default_factory=dict)


class Source(Protocol):
    def batches(self) -> Iterator[Batch]:
        """Yield batches until the input ends (files) or :meth:`close` is called (Kafka)."""
        ...

    def expected_lengths(self) -> dict[str, int] | None:
        """Events per key when the input's length is known up front (a replay), else None."""
        ...

    def commit(self, positions: dict[Any, Any]) -> None:
        """Record that everything up to ``positions`` is done (no-op for plain files)."""
        ...

    def identity(self) -> str:
        """What positions refer to (the files, or the group and topics); snapshots must match it."""
        ...

    def encode_positions(self, positions: dict[Any, Any]) -> dict[str, Any]:
        """A batch's ``positions`` as plain lists and numbers, for a snapshot."""
        ...

    def seek(self, saved: dict[str, Any]) -> None:
        """Make the next batches start at positions :meth:`encode_positions` gave."""
        ...

    def close(self) -> None: ...
