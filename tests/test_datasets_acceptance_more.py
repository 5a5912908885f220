"""Acceptance of issue 4, continued: UCF101, HMDB51, FineGym; missing videos, trusted splits, --splits-dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from fsar_bench.config import load_config
from fsar_bench.data.benchmarks import open_benchmark
from fsar_bench.episodes import Protocol
from tests.conftest import SHARED_SPLITS_DIR
from tests.test_datasets_acceptance import CI_RUN, check_and_run, media, run_stamps, setup_tree  # noqa: F401 (fixture)
from tests.test_datasets_trees import SPLIT_DIRS, build_tree, invoke, real_path, reduced_splits, write_config


@pytest.mark.parametrize("name", ["ucf101", "hmdb51", "finegym"])
def test_tree_at_real_paths_passes_data_check_and_runs(tmp_path, media, name):
    check_and_run(tmp_path, media, name)


def test_missing_test_videos_refused_unless_allowed_as_a_named_protocol(tmp_path, media):
    config, dropped = setup_tree(tmp_path, "kinetics100", media, drop=3)
    refused = invoke(config, "run", "otam", "--dataset", "kinetics100", *CI_RUN)
    assert refused.exit_code == 3
    assert "3 of the 2400 test videos of kinetics100 are missing" in refused.output and "--allow-missing" in refused.output
    assert all(str(tmp_path / "videos" / path) in refused.output for path in dropped)
    allowed = invoke(config, "run", "otam", "--dataset", "kinetics100", *CI_RUN, "--allow-missing")
    assert allowed.exit_code == 0, allowed.output
    (stamps,) = run_stamps(tmp_path)
    missing_ids = sorted(path[: -len(".mp4")] for path in dropped)
    assert stamps["missing_videos"] == missing_ids and stamps["protocol"]["missing_videos"] == missing_ids
    standard = Protocol(**{k: v for k, v in stamps["protocol"].items() if k != "missing_videos"})
    assert stamps["protocol_fingerprint"] == Protocol(**stamps["protocol"]).fingerprint != standard.fingerprint
    assert Protocol(**stamps["protocol"]).name == "allow-missing (3 videos)"


def test_trusted_split_mismatch_is_recorded_in_the_run_stamps(tmp_path, media):
    splits = reduced_splits(tmp_path, "ucf101")
    lines = [line for line in (splits / "testlist03.txt").read_text().splitlines() if line]
    build_tree(tmp_path / "videos", [real_path("ucf101", line) for line in lines], media[".avi"])
    config = write_config(tmp_path, {"ucf101": {"root": str(tmp_path / "videos"), "splits_dir": str(splits)}})
    assert invoke(config, "run", "otam", "--dataset", "ucf101", *CI_RUN).exit_code == 4
    result = invoke(config, "run", "otam", "--dataset", "ucf101", *CI_RUN, "--trust-splits")
    assert result.exit_code == 0, result.output
    (stamps,) = run_stamps(tmp_path)
    statuses = {Path(c["file"]).name: c["status"] for c in stamps["split_files"]}
    assert statuses == {name: "MISMATCH (trusted)" for name in ("trainlist03.txt", "vallist03.txt", "testlist03.txt")}


def test_splits_dir_option_overrides_the_config(tmp_path, media):
    config, _ = setup_tree(tmp_path, "hmdb51", media)
    text = config.read_text().replace(f'splits_dir = "{SHARED_SPLITS_DIR / SPLIT_DIRS["hmdb51"]}"', 'splits_dir = "nowhere"')
    config.write_text(text)
    assert invoke(config, "run", "otam", "--dataset", "hmdb51", *CI_RUN).exit_code == 3
    result = invoke(config, "run", "otam", "--dataset", "hmdb51", *CI_RUN, "--splits-dir", SHARED_SPLITS_DIR / SPLIT_DIRS["hmdb51"])
    assert result.exit_code == 0, result.output
    assert open_benchmark("hmdb51", load_config(config)).split_files["test"][0] == tmp_path / "nowhere" / "testlist03.txt"
