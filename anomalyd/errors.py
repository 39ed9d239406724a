"""One root error class, so callers can catch everything anomalyd raises on purpose."""

from __future__ import annotations


class AnomalydError(Exception):
    """Root of every error anomalyd raises deliberately."""


class ConfigError(AnomalydError):
    """A configuration file or value is invalid. The message names the key and the value."""


class SourceError(AnomalydError):
    """An input (file, topic) cannot be read at all. Bad single records are dead-lettered instead."""


class SinkError(AnomalydError):
    """An alert or dead letter could not be written durably (the daemon retries)."""


class PermanentSinkError(SinkError):
    """Retrying cannot help (not authorized, no such topic): the daemon stops with exit 1."""


class ModelError(AnomalydError):
    """A model cannot be built, trained or loaded."""
