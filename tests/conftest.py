"""Shared test fixtures: the test data shipped in the repository (split files, parity fixtures) and small helpers.

Everything the suite reads lives inside the repository: the official split files in ``splits/official``
and the reference parity fixtures in ``tests/data/parity``. ``FSAR_PARITY_DIR`` points the parity tests at
another folder of fixtures in the same format (other seeds and shapes); a method with no fixture there is
skipped with the reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PARITY_DIR = Path(os.environ.get("FSAR_PARITY_DIR") or PROJECT_ROOT / "tests" / "data" / "parity").expanduser()
SHARED_SPLITS_DIR = PROJECT_ROOT / "splits" / "official"  # the official split files, shipped (README there)


def parity_fixtures(method: str) -> list:
    """``<method>_*.pt`` in PARITY_DIR as pytest parameters; one skipped parameter (with the reason) when none."""
    paths = sorted(PARITY_DIR.glob(f"{method}_*.pt"))
    if paths:
        return [pytest.param(path, id=path.stem) for path in paths]
    reason = f"no {method}_*.pt parity fixture in {PARITY_DIR} (FSAR_PARITY_DIR={os.environ.get('FSAR_PARITY_DIR')!r})"
    return [pytest.param(None, id=f"{method}-no-fixture", marks=pytest.mark.skip(reason=reason))]


def first_parity_fixture(method: str) -> Path:
    """The first ``<method>_*.pt`` in PARITY_DIR; skips the calling test (with the reason) when there is none."""
    paths = sorted(PARITY_DIR.glob(f"{method}_*.pt"))
    if not paths:
        pytest.skip(f"no {method}_*.pt parity fixture in {PARITY_DIR}")
    return paths[0]


@pytest.fixture
def parity_dir() -> Path:
    return PARITY_DIR


@pytest.fixture
def shared_splits_dir() -> Path:
    return SHARED_SPLITS_DIR


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small tensors: one intra-op thread is faster than two on a shared 2-core machine (restored after).
    Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def assert_batched_logits_match_single(head, support_inputs, query_inputs, shot: int) -> None:
    """``head.logits`` on E episodes at once equals it on each episode alone (to 1e-6).

    support_inputs [E, N*K, ...] (class-major) and query_inputs [E, Q, ...] are the head's ``encode`` inputs.
    """
    from fsar_bench.api import add_episode_axis, support_to_episode

    episodes, way, num_query = support_inputs.shape[0], support_inputs.shape[1] // shot, query_inputs.shape[1]
    with torch.no_grad():
        support = head.encode(support_inputs.flatten(0, 1))
        query = head.encode(query_inputs.flatten(0, 1))
        batched = head.logits(
            {key: value.reshape(episodes, way, shot, *value.shape[1:]) for key, value in support.items()},
            {key: value.reshape(episodes, num_query, *value.shape[1:]) for key, value in query.items()},
        )
        assert batched.shape == (episodes, num_query, way)
        for index in range(episodes):
            single = head.logits(
                support_to_episode(head.encode(support_inputs[index]), way, shot),
                add_episode_axis(head.encode(query_inputs[index])),
            )
            torch.testing.assert_close(batched[index : index + 1], single, atol=1e-6, rtol=1e-6)


@pytest.fixture(scope="session")
def synthetic_cache(tmp_path_factory) -> Path:
    """A cache folder holding the generated synthetic benchmark (made once per test session)."""
    from fsar_bench.data.synthetic import SyntheticSpec, ensure_synthetic

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
