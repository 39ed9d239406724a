"""A progress bar on a terminal, silent when piped (stderr is not a TTY)."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any

import click

from anomalyd.pipeline import BatchResult


class ProgressBar:
    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._bar: Any = None

    def start(self, total: int) -> None:
        if self.enabled and self._bar is None:
            self._bar = click.progressbar(length=total, label="replaying", file=sys.stderr)
            self._bar.__enter__()

    def update(self, result: BatchResult) -> None:
        if self._bar is not None:
            self._bar.update(len(result.events) + len(result.dead_letters))

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.__exit__(exc_type, exc, tb)
            self._bar = None
