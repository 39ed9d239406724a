"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@pytest.fixture
def datasets_dir() -> Path:
    """The shared datasets folder (``../shared/datasets`` next to the repo); skips the test when absent."""
    if not DATASETS.is_dir():
        pytest.skip(f"datasets not found at {DATASETS}")
    return DATASETS
