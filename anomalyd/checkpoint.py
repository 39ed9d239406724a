"""Atomic, versioned model checkpoints: write to a temp file, fsync, rename; load with
``weights_only=True`` and reject anything corrupt, truncated or mismatched by name.

>>> import tempfile, torch
>>> from anomalyd.model import ModelArgs, build_model
>>> folder = Path(tempfile.mkdtemp())
>>> model = build_model(ModelArgs(n_features=1, window_length=8, hidden_size=4))
>>> path = save_model(folder, "sensor-1", 3, model, {"validation_loss": 0.1})
>>> path.name
'v0003.pt'
>>> loaded, meta = load_model(path)
>>> meta["version"], meta["model_id"]
(3, 'sensor-1')
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import torch

from anomalyd.errors import ModelError
from anomalyd.model import ModelArgs, WindowModel, build_model

FORMAT = 1


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so a reader sees the old file or the new one, never half."""
    with atomic_file(path) as handle:
        handle.write(data)


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A file to write that replaces ``path`` when the block ends without an error (temp
    file, fsync, rename, folder fsync), so a reader sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w+b") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power cut
    finally:
        os.close(directory)


def model_dir(state_dir: Path, model_id: str) -> Path:
    """A folder per model; ids are hashed into the name so any key is a safe file name."""
    digest = hashlib.blake2b(model_id.encode(), digest_size=6).hexdigest()
    readable = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_id)[:40] or "shared"
    return state_dir / "models" / f"{readable}-{digest}"


def save_model(
    state_dir: Path, model_id: str, version: int, model: WindowModel, meta: dict[str, Any]
) -> Path:
    """Write ``v{version}.pt`` with the weights, the args to rebuild the model, and metadata."""
    payload = {
        "format": FORMAT,
        "model_id": model_id,
        "version": version,
        "args": model.args.to_dict(),
        "state_dict": model.state_dict(),
        "meta": {"created_at": time.time(), **meta},
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    path = model_dir(state_dir, model_id) / f"v{version:04d}.pt"
    atomic_write(path, buffer.getvalue())
    return path


def load_model(path: Path, expected: ModelArgs | None = None) -> tuple[WindowModel, dict[str, Any]]:
    """Rebuild a model from a checkpoint; ModelError naming the file when it cannot be trusted."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelError(f"checkpoint {path} does not exist") from None
    except Exception as exc:  # truncated zip, bad pickle opcode, foreign object: all the same to us
        raise ModelError(f"checkpoint {path} is corrupt or not a checkpoint: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelError(f"checkpoint {path} has an unknown format")
    try:
        args = ModelArgs(**payload["args"])
    except TypeError as exc:
        raise ModelError(f"checkpoint {path} has bad model args: {exc}") from None
    if expected is not None and args != expected:
        raise ModelError(f"checkpoint {path} was made for {args}, the config asks for {expected}")
    model = build_model(args)
    try:
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, KeyError) as exc:
        raise ModelError(f"checkpoint {path} does not fit its model: {exc}") from None
    model.eval()
    meta = {"model_id": payload["model_id"], "version": payload["version"], **payload["meta"]}
    return model, meta


def list_models(state_dir: Path) -> list[dict[str, Any]]:
    """Metadata of every readable checkpoint under ``state_dir``, with ``path`` and ``error`` for bad ones."""
    found = []
    for path in sorted((state_dir / "models").glob("*/v*.pt")):
        try:
            _, meta = load_model(path)
            found.append({"path": str(path), **meta})
        except ModelError as exc:
            found.append({"path": str(path), "error": str(exc)})
    return found


def _rollback_dir(state_dir: Path) -> Path:
    return state_dir / "rollback"


def request_rollback(state_dir: Path, version: int, model_id: str | None = None) -> Path:
    """Ask the daemon to put ``version`` of a model live again; the request is a small JSON file.

    The checkpoint is loaded first (``weights_only``), so a bad one is refused here, not later.
    """
    entries = [e for e in list_models(state_dir) if "error" not in e]
    ids = sorted({e["model_id"] for e in entries})
    if model_id is None:
        if len(ids) != 1:
            names = ", ".join(repr(i or "shared") for i in ids) or "none"
            raise ModelError(f"{state_dir} holds models {names}: name one with --model")
        model_id = ids[0]
    elif model_id == "shared":
        model_id = ""
    path = model_dir(state_dir, model_id) / f"v{version:04d}.pt"
    load_model(path)  # ModelError naming the file when it is missing or bad
    request = _rollback_dir(state_dir) / f"{path.parent.name}.json"
    body = {"model_id": model_id, "version": version, "path": str(path), "requested_at": time.time()}
    atomic_write(request, json.dumps(body).encode())
    return request


def pending_rollbacks(state_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Rollback requests waiting in ``state_dir/rollback`` (one listing when there are none)."""
    folder = _rollback_dir(state_dir)
    if not folder.is_dir():
        return []
    found = []
    for request in sorted(folder.glob("*.json")):
        try:
            found.append((request, json.loads(request.read_text())))
        except (OSError, ValueError):
            continue
    return found
