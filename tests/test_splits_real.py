"""The official split files (shipped in splits/official): counts, formats, disjointness, differences."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from fsar_bench.config import load_config
from fsar_bench.data.benchmarks import DataOptions, open_benchmark
from fsar_bench.episodes import Protocol, draw_episodes
from fsar_bench.data.manifests import load_manifest, manifest_names
from fsar_bench.data.splits import read_partition, read_split_file
from tests.conftest import SHARED_SPLITS_DIR
from tests.test_datasets_trees import SPLIT_DIRS

# (classes, videos) per partition, from splits/official/README.md
EXPECTED = {
    "ssv2-full": {"train": (64, 67013), "val": (12, 1926), "test": (24, 2857)},
    "ssv2-small": {"train": (64, 6400), "val": (12, 1200), "test": (24, 2400)},
    "kinetics100": {"train": (64, 6400), "val": (12, 1200), "test": (24, 2400)},
    "kinetics100-molo": {"train": (64, 6400), "val": (12, 1200), "test": (24, 2400)},
    "ucf101": {"train": (70, 9154), "val": (10, 1421), "test": (21, 2745)},
    "hmdb51": {"train": (31, 4280), "val": (10, 1194), "test": (10, 1292)},
}
MOLO = SHARED_SPLITS_DIR / "molo"


def _benchmark(name: str, tmp_path: Path):
    (tmp_path / "bench.toml").write_text(f'[datasets.{name}]\nsplits_dir = "{SHARED_SPLITS_DIR / SPLIT_DIRS[name]}"\n')
    return open_benchmark(name, load_config(tmp_path / "bench.toml"))


def _readme_sha256() -> dict[str, str]:
    text = (SHARED_SPLITS_DIR / "README.md").read_text()
    return {path: sha for sha, path in re.findall(r"^([0-9a-f]{64})  \./(\S+)$", text, flags=re.M)}


def test_every_benchmark_has_a_manifest():
    assert set(manifest_names()) == {*EXPECTED, "finegym"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_manifest_matches_the_shared_readme(name):
    manifest = load_manifest(name)
    readme = _readme_sha256()
    folder = SPLIT_DIRS[name]
    assert manifest.files == {file: readme[f"{folder}/{file}"] for file in manifest.files}
    assert manifest.source.commit in ("390c20aa8ed7e309ae4949464fdcf015c4009329", "f7f73b6dd8cba446b414b1c47652ab26033bc88e")
    assert manifest.source.url(next(iter(manifest.files))).startswith(f"https://raw.githubusercontent.com/{manifest.source.repository}/")
    assert {part: (spec.classes, spec.videos) for part, spec in manifest.partitions.items()} == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_counts_per_partition_disjoint_sorted_and_verified(tmp_path, name):
    benchmark = _benchmark(name, tmp_path)
    owners: dict[str, str] = {}
    for part, (classes, videos) in EXPECTED[name].items():
        partition = benchmark.partition(part)
        assert (len(partition.classes), partition.num_videos) == (classes, videos)
        assert list(partition.classes) == sorted(partition.classes)
        assert all(list(ids) == sorted(ids) for ids in partition.videos.values())
        for class_name in partition.classes:
            assert owners.setdefault(class_name, part) == part
        assert all(isinstance(v, str) and v for v in partition.all_video_ids())
    ids = [v for part in EXPECTED[name] for v in benchmark.partition(part).all_video_ids()]
    assert len(ids) == len(set(ids))
    assert [check["status"] for check in benchmark.split_stamps()] == ["verified"] * 3


def test_class_names_are_kept_where_the_file_has_them(tmp_path):
    assert "ApplyEyeMakeup" in _benchmark("ucf101", tmp_path).partition("train").classes
    assert "blasting sand" in _benchmark("kinetics100", tmp_path).partition("test").classes
    assert "blasting_sand" in _benchmark("kinetics100-molo", tmp_path).partition("test").classes  # from the path
    assert _benchmark("ssv2-full", tmp_path).partition("test").classes[:3] == ("test0", "test1", "test10")  # indices only


@pytest.mark.parametrize("name, molo", [("ucf101", "ucf101"), ("hmdb51", "hmdb51")])
def test_both_line_formats_give_the_same_classes_and_videos(tmp_path, name, molo):
    ours = _benchmark(name, tmp_path)
    for part in ("train", "val", "test"):
        other = read_partition(MOLO / molo / f"{part}_few_shot.txt", part, line_format="partition-index//path")
        assert other.classes == ours.partition(part).classes
        names = {c: {Path(v).stem for v in other.videos[c]} for c in other.classes}
        assert names == {c: {v.split("/", 1)[1] for v in vs} for c, vs in ours.partition(part).videos.items()}
        assert other.all_video_ids()[0].startswith("videos/")


def test_ssv2_molo_copies_hold_the_same_videos(tmp_path):
    small = _benchmark("ssv2-small", tmp_path)
    for part in ("train", "val", "test"):
        molo = read_partition(MOLO / "ssv2_small" / f"{part}_few_shot.txt", part)  # <partition><index>/<id>
        assert len(molo.classes) == len(small.partition(part).classes) and molo.classes[0] == f"{part}0"
        class_of = {video: name for name in molo.classes for video in molo.videos[name]}
        assert sorted(class_of[v].startswith(part) for v in molo.all_video_ids()) == [True] * molo.num_videos
        assert {v.split("/")[1] for v in molo.all_video_ids()} == {v.split("/")[1] for v in small.partition(part).all_video_ids()}
    full = load_manifest("ssv2-full")
    assert full.also_published["folder"].endswith("ssv2_full")


def test_kinetics100_lists_differ_by_179_41_57_videos(tmp_path):
    cmn, molo = _benchmark("kinetics100", tmp_path), _benchmark("kinetics100-molo", tmp_path)
    differences = {}
    for part in ("train", "val", "test"):
        youtube_cmn = {v.split("/", 1)[1][:11] for v in cmn.partition(part).all_video_ids()}
        youtube_molo = {Path(v).stem[:11] for v in molo.partition(part).all_video_ids()}
        assert len(youtube_cmn) == len(youtube_molo) == cmn.partition(part).num_videos
        differences[part] = (len(youtube_cmn - youtube_molo), len(youtube_molo - youtube_cmn))
        assert {c.replace(" ", "_") for c in cmn.partition(part).classes} == set(molo.partition(part).classes)
    assert differences == {"train": (179, 179), "val": (41, 41), "test": (57, 57)}
    roots = Counter(v.split("/")[0] for v in molo.partition("test").all_video_ids())
    assert roots == {"train_256": 2251, "val_256": 149}


def test_episodes_draw_unchanged_from_a_real_partition(tmp_path):
    test = _benchmark("ucf101", tmp_path).partition("test")
    protocol = Protocol(dataset="ucf101", partition="test", split_sha256=test.sha256, way=5, shot=5,
                        queries_per_class=1, episodes=50, frames=8, size=224, seed=0)
    first, again = draw_episodes(protocol, test), draw_episodes(protocol, test)
    assert first.fingerprint == again.fingerprint and first.support.shape == (50, 5, 5)
    assert np.array_equal(first.support, again.support)
    assert "missing_videos" not in protocol.to_dict() and protocol.name == "standard"
    reduced = Protocol(**{**protocol.to_dict(), "missing_videos": [test.all_video_ids()[0]]})
    assert reduced.fingerprint != protocol.fingerprint and reduced.name == "allow-missing (1 videos)"
    assert reduced.to_dict()["missing_videos"] == [test.all_video_ids()[0]]
    assert draw_episodes(reduced, test.without({test.all_video_ids()[0]})).fingerprint != first.fingerprint


def test_molo_line_format_reads_paths_and_indices():
    entries = read_split_file(MOLO / "kinetics100" / "val_few_shot.txt", "partition-index//path", "val")
    assert entries[0].video_id == "val_256/baking_cookies/-514AQUrSow.mp4" and entries[0].class_name == "baking_cookies"
    assert len(entries) == 1200 and entries[0].line == 1
