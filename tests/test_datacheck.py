"""`fsar-bench data check` on small trees laid out like each real dataset, with faults planted.

The trees hold the first few videos per class of the real split files (reduced split files, hence
``--trust-splits``) at their real paths; every planted fault must be reported by name, exit 3.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.test_datasets_trees import (build_tree, invoke, real_path, reduced_splits, split_lines, write_config,
                                       write_frames, write_video)

TRUNCATED_KINDS = {"unreadable", "corrupt", "too-short"}


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("media")
    made = {suffix: write_video(folder / f"tiny{suffix}", frames=10, size=32) for suffix in (".mp4", ".avi", ".webm")}
    made.update({f"short{suffix}": write_video(folder / f"short{suffix}", frames=4, size=32) for suffix in (".mp4", ".avi", ".webm")})
    return made


def _tree(tmp_path: Path, name: str, media: dict[str, Path]) -> tuple[Path, list[Path]]:
    """Reduced real splits and a tree of every video they name; returns (bench.toml, test video paths)."""
    splits = reduced_splits(tmp_path, name)
    root = tmp_path / "videos"
    test_paths = []
    for partition in ("train", "val", "test"):
        lines = [line for line in (splits / next(p.name for p in splits.iterdir() if p.name.startswith(partition))).read_text().splitlines() if line]
        paths = [real_path(name, line) for line in lines]
        made = build_tree(root, paths, media[Path(paths[0]).suffix])
        test_paths += made if partition == "test" else []
    return write_config(tmp_path, {name: {"root": str(root), "splits_dir": str(splits)}}), test_paths


def _plant(paths: list[Path], media: dict[str, Path]) -> dict[str, Path]:
    """Replace five test videos by a missing, empty, corrupt, truncated and too-short one."""
    planted = dict(zip(["missing", "empty", "corrupt", "truncated", "too-short"], paths[1:6]))
    for path in planted.values():
        path.unlink()
    planted["empty"].write_bytes(b"")
    planted["corrupt"].write_bytes(np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    good = media[planted["truncated"].suffix].read_bytes()
    planted["truncated"].write_bytes(good[: len(good) // 3])
    shutil.copyfile(media[f"short{planted['too-short'].suffix}"], planted["too-short"])
    return planted


def _report(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.parametrize("name", ["ucf101", "kinetics100", "ssv2-small", "kinetics100-molo"])
def test_planted_faults_are_each_reported_by_name_with_exit_3(tmp_path, media, name):
    config, test_paths = _tree(tmp_path, name, media)
    clean = invoke(config, "data", "check", name, "--trust-splits", "--decode")
    assert clean.exit_code == 0, clean.output
    assert "all 54 videos OK" in clean.output and _report(tmp_path / "results" / "data-check" / f"{name}.json")["ok"]
    planted = _plant(test_paths, media)

    quick = invoke(config, "data", "check", name, "--trust-splits", "--partition", "test", "--report", tmp_path / "quick.json")
    assert quick.exit_code == 3
    found = {p["path"]: p["kind"] for p in _report(tmp_path / "quick.json")["problems"]}
    assert found == {str(planted["missing"]): "missing", str(planted["empty"]): "empty"}

    full = invoke(config, "data", "check", name, "--trust-splits", "--decode", "--jobs", "2", "--report", tmp_path / "full.json")
    assert full.exit_code == 3
    report = _report(tmp_path / "full.json")
    found = {p["path"]: p["kind"] for p in report["problems"]}
    assert set(found) == {str(path) for path in planted.values()}
    for kind, path in planted.items():
        assert found[str(path)] in (TRUNCATED_KINDS if kind == "truncated" else {kind if kind != "corrupt" else "unreadable"})
        assert str(path) in full.output
    assert report["partitions"]["test"] == {"classes": 6, "videos": 18, "ok": 13, "problems": 5, "missing": 1}
    assert report["partitions"]["train"]["problems"] == 0 and report["decode"] is True
    assert "5 bad videos" in full.output


def test_frame_folder_faults(tmp_path):
    splits = reduced_splits(tmp_path, "hmdb51", classes=2, per_class=4)
    root = tmp_path / "frames"
    lines = [line for line in (splits / "testlist03.txt").read_text().splitlines() if line]
    for line in lines:
        write_frames(root / line, frames=9)
    config = write_config(tmp_path, {"hmdb51": {"root": str(root), "layout": "frames", "splits_dir": str(splits)}})
    assert invoke(config, "data", "check", "hmdb51", "--partition", "test", "--trust-splits", "--decode").exit_code == 0
    missing, empty, short, broken = (root / line for line in lines[:4])
    shutil.rmtree(missing)
    for frame in empty.iterdir():
        frame.unlink()
    for frame in sorted(short.iterdir())[3:]:
        frame.unlink()
    (broken / "img_00005.jpg").write_bytes(b"\xff\xd8\xff garbage")
    result = invoke(config, "data", "check", "hmdb51", "--partition", "test", "--trust-splits", "--report", tmp_path / "r.json")
    assert result.exit_code == 3
    assert {p["path"]: p["kind"] for p in _report(tmp_path / "r.json")["problems"]} == {
        str(missing): "missing", str(empty): "empty", str(short): "too-short"}
    result = invoke(config, "data", "check", "hmdb51", "--partition", "test", "--trust-splits", "--decode",
                    "--report", tmp_path / "r.json")
    assert result.exit_code == 3 and "img_00005.jpg cannot be decoded" in result.output
    assert {p["path"]: p["kind"] for p in _report(tmp_path / "r.json")["problems"]}[str(broken)] == "corrupt"


def test_frames_option_sets_the_needed_length(tmp_path, media):
    config, _ = _tree(tmp_path, "ucf101", media)
    result = invoke(config, "data", "check", "ucf101", "--trust-splits", "--partition", "val", "--decode", "--frames", "11")
    assert result.exit_code == 3 and "18 too-short" in result.output


def test_bad_partition_is_a_usage_error(tmp_path):
    result = invoke(write_config(tmp_path, {}), "data", "check", "ucf101", "--partition", "tests")
    assert result.exit_code == 2 and "--partition must be one of train, val, test" in result.output


def test_every_split_line_of_the_real_files_resolves_to_a_distinct_path(tmp_path, media):
    from fsar_bench.config import load_config
    from fsar_bench.data.benchmarks import open_benchmark

    lines = split_lines("kinetics100-molo", "val")
    config = load_config(write_config(tmp_path, {"kinetics100-molo": {"root": str(tmp_path)}}))
    benchmark = open_benchmark("kinetics100-molo", config)
    assert len({benchmark.video_path(line.split("//")[1]) for line in lines}) == len(lines)
