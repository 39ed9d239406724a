"""Snapshots of all per-key state with the source positions it belongs to.

A snapshot is one file, ``snapshots/snapshot-NNNNNNNNNN.pt`` under the state directory:
a magic line, the SHA-256 of the body, and the body, a ``torch.save`` archive that holds
only numbers, strings, lists, dicts and tensors, so it loads with ``weights_only=True``.
It is written atomically (temp file, fsync, rename) and the newest ``keep`` are kept.
Loading walks from the newest back: a file that is corrupt, truncated, or made for another
config or another input is rejected with a log line naming it, and the one before is tried.

>>> import tempfile
>>> store = SnapshotStore(Path(tempfile.mkdtemp()))
>>> path = store.save({"state": {"x": np.arange(3.0)}}, state_hash="h", source_id="s")
>>> found = store.latest(state_hash="h", source_id="s")
>>> found.payload["state"]["x"].tolist(), found.path == path
([0.0, 1.0, 2.0], True)
"""

from __future__ import annotations

import hashlib
import io
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

import numpy as np
import torch

from anomalyd.checkpoint import atomic_file
from anomalyd.errors import ModelError
from anomalyd.logs import get_logger

log = get_logger("anomalyd")

MAGIC = b"ANOMALYD-SNAPSHOT 1\n"
_NAME = re.compile(r"^snapshot-(\d{10})\.pt$")


class SnapshotError(ModelError):
    """A snapshot file that cannot be used; the message names the file and why."""


@dataclass(frozen=True)
class Found:
    path: Path
    payload: dict[str, Any]


def to_storable(obj: Any) -> Any:
    """numpy arrays to tensors, numpy scalars to Python numbers, recursively (tensors kept)."""
    if isinstance(obj, np.ndarray):
        # no copy: the snapshot is written before the state moves on
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: to_storable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_storable(v) for v in obj]
    return obj


def from_storable(obj: Any) -> Any:
    """The inverse of :func:`to_storable`: tensors back to numpy arrays."""
    if isinstance(obj, torch.Tensor):
        return obj.numpy()
    if isinstance(obj, dict):
        return {k: from_storable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [from_storable(v) for v in obj]
    return obj


class _HashingWriter:
    """A write-only file for ``torch.save`` that passes the bytes on and hashes them."""

    def __init__(self, handle: BinaryIO):
        self.handle = handle
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()


class _Body(io.RawIOBase):
    """The body of a snapshot file, read in place: offsets count from its first byte."""

    def __init__(self, handle: io.BufferedReader, start: int):
        self.handle, self.start = handle, start
        handle.seek(start)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self.handle.readinto(buffer)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            offset += self.start
        return self.handle.seek(offset, whence) - self.start

    def tell(self) -> int:
        return self.handle.tell() - self.start


def _load_checked(path: Path, handle: io.BufferedReader) -> Any:
    """Check the magic line and the body's SHA-256 (read in chunks), then load the body
    from the file itself: never the whole file in memory."""
    header = len(MAGIC) + 65
    head = handle.read(header)
    if not head.startswith(MAGIC) or len(head) < header:
        raise SnapshotError(f"snapshot {path} is not an anomalyd snapshot (or is truncated)")
    digest = hashlib.sha256()
    while chunk := handle.read(1 << 20):
        digest.update(chunk)
    if digest.hexdigest().encode() != head[len(MAGIC) : header - 1]:
        raise SnapshotError(f"snapshot {path} is corrupt or truncated (checksum mismatch)")
    try:
        body = cast(IO[bytes], _Body(handle, header))
        return torch.load(body, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise SnapshotError(f"snapshot {path} cannot be loaded: {exc}") from None


class SnapshotStore:
    """The ``snapshots/`` folder of a state directory."""

    def __init__(self, state_dir: Path, keep: int = 3):
        self.folder = Path(state_dir) / "snapshots"
        self.keep = keep

    def paths(self) -> list[Path]:
        """Snapshot files, newest first."""
        if not self.folder.is_dir():
            return []
        found = [p for p in self.folder.iterdir() if _NAME.match(p.name)]
        return sorted(found, key=lambda p: p.name, reverse=True)

    def save(self, payload: dict[str, Any], state_hash: str, source_id: str) -> Path:
        """Write the next snapshot atomically, then delete all but the newest ``keep``."""
        existing = self.paths()
        number = int(_NAME.match(existing[0].name).group(1)) + 1 if existing else 1  # type: ignore[union-attr]
        wrapped = {
            "format": 1,
            "state_hash": state_hash,
            "source_id": source_id,
            "created_at": time.time(),
            **to_storable(payload),
        }
        path = self.folder / f"snapshot-{number:010d}.pt"
        # Streamed to the file as torch writes it, hashed on the way; the digest goes in
        # its place before the body once the body is done. No copy of the body in memory.
        with atomic_file(path) as handle:
            handle.write(MAGIC + b"0" * 64 + b"\n")
            hashing = _HashingWriter(handle)
            torch.save(wrapped, cast(IO[bytes], hashing))
            handle.seek(len(MAGIC))
            handle.write(hashing.digest.hexdigest().encode())
        for old in [path, *existing][self.keep :]:
            old.unlink(missing_ok=True)
        return path

    @staticmethod
    def load(path: Path) -> dict[str, Any]:
        """Read and verify one snapshot; SnapshotError naming the file when it cannot be trusted."""
        try:
            with path.open("rb") as handle:
                payload = _load_checked(path, handle)
        except OSError as exc:
            raise SnapshotError(f"snapshot {path} cannot be read: {exc}") from None
        if not isinstance(payload, dict) or payload.get("format") != 1:
            raise SnapshotError(f"snapshot {path} has an unknown format")
        return from_storable(payload)

    def latest(self, state_hash: str, source_id: str) -> Found | None:
        """The newest snapshot that loads and matches this config and input, else None."""
        for path in self.paths():
            try:
                payload = self.load(path)
                if payload["state_hash"] != state_hash:
                    raise SnapshotError(
                        f"snapshot {path} was made with another config (state hash "
                        f"{payload['state_hash']}, now {state_hash}): the input, window, model, "
                        "training, retraining, threshold or alerts section changed"
                    )
                if payload["source_id"] != source_id:
                    raise SnapshotError(
                        f"snapshot {path} is for another input ({payload['source_id']}, now {source_id})"
                    )
            except SnapshotError as exc:
                log.error("snapshot_rejected", path=str(path), error=str(exc))
                continue
            return Found(path, payload)
        return None
