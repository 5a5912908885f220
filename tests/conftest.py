"""Shared test fixtures: paths to ../shared (splits, parity) and small helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("FSAR_SHARED_DIR", PROJECT_ROOT.parent / "shared"))
PARITY_DIR = SHARED_DIR / "parity"
SHARED_SPLITS_DIR = SHARED_DIR / "splits"


def load_parity_fixture(name: str) -> dict:
    """Load ``../shared/parity/<name>.pt`` (fails loudly when the shared folder is absent)."""
    path = PARITY_DIR / f"{name}.pt"
    if not path.exists():
        raise FileNotFoundError(f"parity fixture {path} not found: set FSAR_SHARED_DIR to the shared/ folder")
    return torch.load(path, weights_only=True)


@pytest.fixture
def parity_dir() -> Path:
    return PARITY_DIR


@pytest.fixture
def shared_splits_dir() -> Path:
    return SHARED_SPLITS_DIR
