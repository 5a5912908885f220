"""The test data ships in the repository: the public parity fixtures and the official split files (sha256-checked)."""

from __future__ import annotations

import hashlib
import re

import pytest

from fsar_bench.data.manifests import load_manifest, manifest_names
from tests.conftest import PROJECT_ROOT, SHARED_SPLITS_DIR

SHIPPED_PARITY = PROJECT_ROOT / "tests" / "data" / "parity"


@pytest.mark.parametrize("method", ["otam", "trx", "hyrsm", "molo", "hyrsmpp", "strm", "team", "clipfsar"])
def test_the_public_parity_fixtures_ship_with_the_tests(method):
    names = {path.stem for path in SHIPPED_PARITY.glob(f"{method}_*.pt")}
    assert names == {f"{method}_5w{shot}s_q{queries}" for shot in (1, 5) for queries in (1, 3)}
    assert (SHIPPED_PARITY / "README.md").is_file()


def test_every_shipped_split_file_matches_its_sha256():
    sums = re.findall(r"^([0-9a-f]{64})  \./(\S+)$", (SHARED_SPLITS_DIR / "SHA256SUMS").read_text(), flags=re.M)
    assert len(sums) == 30
    for digest, name in sums:
        assert hashlib.sha256((SHARED_SPLITS_DIR / name).read_bytes()).hexdigest() == digest, name


@pytest.mark.parametrize("name", [n for n in manifest_names() if n not in ("finegym", "synthetic")])
def test_every_official_benchmark_reads_its_shipped_split_files(name):
    manifest = load_manifest(name)
    assert manifest.bundled is not None and manifest.bundled.is_dir()
    for file, digest in manifest.files.items():
        assert hashlib.sha256((manifest.bundled / file).read_bytes()).hexdigest() == digest


def test_a_plain_config_reads_the_shipped_split_files_offline(tmp_path, monkeypatch):
    from fsar_bench.config import load_config
    from fsar_bench.data.benchmarks import open_benchmark

    monkeypatch.chdir(tmp_path)  # no splits/ folder here: the shipped files are found through the manifest
    benchmark = open_benchmark("ucf101", load_config(None))
    assert benchmark.partition("test").num_videos == 2745
