"""CSV rows with their raw text, recovering from a stray quote at the next line.

Python's csv reader lets a quoted field run over line ends, as RFC 4180 allows, so one
stray ``"`` swallows every following line into one field, up to the field size limit or
the end of the file. A row that spans lines is taken as it is only when it has the
header's width and none of the columns the config reads holds a line break. Otherwise
its first line is the bad row, and reading starts again at the line after it.

>>> import io
>>> rows = CsvRows(io.StringIO('t,v\\n1,"2\\n3,4\\n5,"a\\nb"\\n'), ",")
>>> next(rows)
(['t', 'v'], None)
>>> rows.expect(2, [0, 1])
>>> [(fields, reason is not None, rows.raw()) for fields, reason in rows]
[(None, True, '1,"2'), (['3', '4'], False, '3,4'), (None, True, '5,"a'), (['b"'], False, 'b"')]
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Sequence

UNCLOSED = "bad CSV row: a quote is not closed on its line (reading goes on at the next line)"


class _Feed:
    """The lines for ``csv.reader``: lines to read again first, then the file's; each kept."""

    def __init__(self, handle: Iterable[str], kept: list[str]) -> None:
        self.handle = iter(handle)
        self.kept = kept
        self.again: list[str] = []  # in reverse order: the next line to read is the last

    def __iter__(self) -> _Feed:
        return self

    def __next__(self) -> str:
        line = self.again.pop() if self.again else next(self.handle)
        self.kept.append(line)
        return line


class CsvRows:
    """Iterate ``(fields, None)`` per row, or ``(None, reason)`` for a row that cannot be split.

    A blank line gives ``([], None)``. :meth:`raw` is the text of the row last returned.
    Until :meth:`expect` is called (after the header) rows are taken as the reader splits them.
    """

    def __init__(self, handle: Iterable[str], delimiter: str) -> None:
        self.lines: list[str] = []
        self._feed = _Feed(handle, self.lines)
        self._reader = csv.reader(self._feed, delimiter=delimiter)
        self._width = 0
        self._columns: tuple[int, ...] = ()

    def expect(self, width: int, columns: Sequence[int]) -> None:
        """Rows have ``width`` fields; ``columns`` are those read, which hold no line break."""
        self._width, self._columns = width, tuple(columns)

    def __iter__(self) -> Iterator[tuple[list[str] | None, str | None]]:
        return self

    def __next__(self) -> tuple[list[str] | None, str | None]:
        self.lines.clear()
        try:
            fields = next(self._reader)
        except csv.Error as exc:  # e.g. an unclosed quote that ran past the field size limit
            self._read_again()
            return None, f"bad CSV row: {exc}"
        if len(self.lines) > 1 and self._width and fields and self._runs_over(fields):
            self._read_again()
            return None, UNCLOSED
        return fields, None

    def raw(self) -> str:
        """The raw text of the row last returned, without its line end."""
        return "".join(self.lines).rstrip("\r\n")

    def _runs_over(self, fields: list[str]) -> bool:
        if len(fields) != self._width:
            return True
        return any("\n" in fields[i] or "\r" in fields[i] for i in self._columns)

    def _read_again(self) -> None:
        """Keep the row's first line as the bad row; its other lines are read again."""
        self._feed.again.extend(reversed(self.lines[1:]))
        del self.lines[1:]
