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


@pytest.fixture(scope="session")
def synthetic_cache(tmp_path_factory) -> Path:
    """A cache folder holding the generated synthetic benchmark (made once per test session)."""
    from fsar_bench.synthetic import SyntheticSpec, ensure_synthetic

    cache = tmp_path_factory.mktemp("fsar-cache")
    ensure_synthetic(cache / "datasets", SyntheticSpec())
    return cache


def write_bench_toml(folder: Path, cache: Path, extra: str = "") -> Path:
    """A bench.toml in ``folder`` using ``cache`` and a results folder inside ``folder``."""
    path = folder / "bench.toml"
    path.write_text(
        f'[paths]\nresults = "results"\ncache = "{cache}"\nmethods = "{PROJECT_ROOT / "methods"}"\n'
        f'[run]\nworkers = 0\n{extra}'
    )
    return path
