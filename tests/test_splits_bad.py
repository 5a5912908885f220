"""Bad split input: malformed lines (file:line), duplicates, shared classes, sha256 mismatch, fetch failures."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest

from fsar_bench.data import manifests
from fsar_bench.config import load_config
from fsar_bench.data.benchmarks import DataOptions, open_benchmark
from fsar_bench.errors import DataError, ProtocolMismatchError
from fsar_bench.data.splits import SplitError, build_partition, read_split_file
from tests.conftest import SHARED_SPLITS_DIR
from tests.test_datasets_trees import SPLIT_DIRS, finegym_lists, invoke, write_config

UCF = SHARED_SPLITS_DIR / SPLIT_DIRS["ucf101"]


def _split_dir(tmp_path: Path, name: str = "ucf101", edit=None) -> Path:
    """A copy of a benchmark's split files in tmp_path, ``edit(file name, lines)`` applied."""
    folder = tmp_path / "splits"
    folder.mkdir(exist_ok=True)
    for source in (SHARED_SPLITS_DIR / SPLIT_DIRS[name]).glob("*.txt"):
        lines = source.read_text().splitlines()
        (folder / source.name).write_text("\n".join(edit(source.name, lines) if edit else lines) + "\n")
    return folder


def _open(tmp_path: Path, folder: Path, name: str = "ucf101", trust: bool = False):
    config = load_config(write_config(tmp_path, {name: {"splits_dir": str(folder)}}))
    return open_benchmark(name, config, DataOptions(trust_splits=trust))


@pytest.mark.parametrize("text, line_format, message", [
    ("ApplyEyeMakeup", "class/video", "expected 'class/video'"),
    ("/v_x", "class/video", "expected 'class/video'"),
    ("test0/videos/a/b.avi", "partition-index//path", "expected '<partition><class index>//<relative path>'"),
    ("train3//videos/a/b.avi", "partition-index//path", "labelled 'train3', but this file is the 'test' partition"),
    ("clip_without_label", "id label", "expected '<clip id> <class index>'"),
])
def test_malformed_line_names_file_and_line(tmp_path, text, line_format, message):
    path = tmp_path / "test.txt"
    good = {"class/video": "A/v1", "partition-index//path": "test0//videos/A/v1.avi", "id label": "clip1 3"}[line_format]
    path.write_text(f"{good}\n\n{text}\n")
    with pytest.raises(SplitError, match=message) as caught:
        read_split_file(path, line_format, "test")
    assert f"{path}:3:" in str(caught.value)


def test_index_and_folder_must_agree_in_the_molo_format(tmp_path):
    path = tmp_path / "test.txt"
    path.write_text("test0//videos/A/v1.avi\ntest0//videos/B/v2.avi\n")
    with pytest.raises(SplitError, match=rf"{path}:2: class 'test0' is 'B' here but 'A' at line 1"):
        read_split_file(path, "partition-index//path", "test")
    path.write_text("test0//videos/A/v1.avi\ntest1//videos/A/v2.avi\n")
    with pytest.raises(SplitError, match=rf"{path}:2: folder 'A' is 'test1' here but 'test0' at line 1"):
        read_split_file(path, "partition-index//path", "test")


def test_duplicate_video_names_both_lines(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("A/v1\nA/v2\nA/v1\n")
    with pytest.raises(SplitError, match=rf"{path}:3: duplicate video 'A/v1' \(first at {path}:1\)"):
        build_partition("train", read_split_file(path), (path,))


def test_malformed_real_file_refused_by_sha256_then_named_by_line_when_trusted(tmp_path):
    folder = _split_dir(tmp_path, edit=lambda file, lines: lines[:4] + ["no-slash-here"] + lines[4:] if file.startswith("test") else lines)
    with pytest.raises(ProtocolMismatchError, match="testlist03.txt has sha256 .* but the manifest .* expects 0887937010ee"):
        _open(tmp_path, folder).partition("test")
    with pytest.raises(DataError, match=rf"{folder / 'testlist03.txt'}:5: expected 'class/video'"):
        _open(tmp_path, folder, trust=True).partition("test")


def test_class_in_two_partitions_and_video_in_two_partitions(tmp_path):
    def shared_class(file, lines):
        return lines + ["ApplyEyeMakeup/v_extra"] if file.startswith("test") else lines

    with pytest.raises(DataError, match="class 'ApplyEyeMakeup' is in both 'train' and 'test'"):
        _open(tmp_path, _split_dir(tmp_path, edit=shared_class), trust=True).partition("test")


def test_duplicate_id_in_a_real_file_exits_3_with_file_and_line(tmp_path):
    folder = _split_dir(tmp_path, edit=lambda file, lines: lines + [lines[0]] if file.startswith("val") else lines)
    config = write_config(tmp_path, {"ucf101": {"splits_dir": str(folder), "root": str(tmp_path)}})
    result = invoke(config, "data", "check", "ucf101", "--trust-splits")
    assert result.exit_code == 3
    assert f"{folder / 'vallist03.txt'}:1422: duplicate video 'ApplyLipstick/v_ApplyLipstick_g01_c01'" in result.output


def test_sha256_mismatch_exits_4_unless_trusted_and_is_recorded(tmp_path):
    folder = _split_dir(tmp_path, edit=lambda file, lines: lines[:-1] if file.startswith("test") else lines)
    config = write_config(tmp_path, {"ucf101": {"splits_dir": str(folder), "root": str(tmp_path)}})
    result = invoke(config, "data", "check", "ucf101", "--partition", "test")
    assert result.exit_code == 4 and "--trust-splits" in result.output and "fsar-bench splits fetch ucf101" in result.output
    benchmark = _open(tmp_path, folder, trust=True)
    assert benchmark.partition("test").num_videos == 2744
    stamps = {Path(check["file"]).name: check for check in benchmark.split_stamps()}
    assert stamps["testlist03.txt"]["status"] == "MISMATCH (trusted)" and stamps["trainlist03.txt"]["status"] == "verified"
    assert stamps["testlist03.txt"]["expected_sha256"].startswith("0887937010ee")


def test_missing_split_file_says_how_to_get_it(tmp_path):
    empty = tmp_path / "my-splits"  # a splits_dir set by the user overrides the shipped files
    empty.mkdir()
    result = invoke(write_config(tmp_path, {"hmdb51": {"root": str(tmp_path), "splits_dir": str(empty)}}), "data", "check", "hmdb51")
    assert result.exit_code == 3
    assert f"split file {empty / 'trainlist03.txt'} of hmdb51 does not exist" in result.output
    assert "fsar-bench splits fetch hmdb51" in result.output and "--splits-dir" in result.output


def test_fetch_copies_and_verifies_then_keeps(tmp_path):
    config = write_config(tmp_path, {})
    result = invoke(config, "splits", "fetch", "ucf101", "--from", UCF)
    assert result.exit_code == 0 and "copied, sha256 verified" in result.output
    assert sorted(p.name for p in (tmp_path / "splits" / "ucf101").iterdir()) == ["testlist03.txt", "trainlist03.txt", "vallist03.txt"]
    assert "present, sha256 verified" in invoke(config, "splits", "fetch", "ucf101").output
    assert _open(tmp_path, tmp_path / "splits" / "ucf101").partition("test").num_videos == 2745


def test_fetch_mismatch_writes_nothing(tmp_path):
    result = invoke(write_config(tmp_path, {}), "splits", "fetch", "ucf101", "--from", SHARED_SPLITS_DIR / SPLIT_DIRS["hmdb51"])
    assert result.exit_code == 3 and "nothing written" in result.output and "To place them by hand" in result.output
    assert not (tmp_path / "splits" / "ucf101").exists()


def test_fetch_offline_says_where_to_place_the_files(tmp_path, monkeypatch):
    def offline(url, timeout=30.0):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(manifests, "_download", offline)
    result = invoke(write_config(tmp_path, {}), "splits", "fetch", "hmdb51", "--splits-dir", tmp_path / "here")
    assert result.exit_code == 3
    assert "cannot download https://raw.githubusercontent.com/tobyperrett/trx/390c20aa8ed7e309ae4949464fdcf015c4009329/splits/hmdb_ARN/" in result.output
    assert f"put trainlist03.txt, vallist03.txt, testlist03.txt in {tmp_path / 'here'}" in result.output


def test_fetch_downloads_through_the_opener_and_checks_sha256():
    manifest = manifests.load_manifest("hmdb51")
    seen = []

    def opener(url):
        seen.append(url)
        return (SHARED_SPLITS_DIR / SPLIT_DIRS["hmdb51"] / url.rsplit("/", 1)[1]).read_bytes()

    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        done = manifests.fetch_split_files(manifest, Path(folder), opener=opener)
    assert set(done.values()) == {"downloaded, sha256 verified"} and len(seen) == 3
    assert seen[0] == "https://raw.githubusercontent.com/tobyperrett/trx/390c20aa8ed7e309ae4949464fdcf015c4009329/splits/hmdb_ARN/trainlist03.txt"


def test_finegym_has_no_source_and_bad_labels_are_named(tmp_path):
    result = invoke(write_config(tmp_path, {}), "splits", "fetch", "finegym")
    assert result.exit_code == 3 and "gym99_train_element_v1.1.txt" in result.output and "FineGym" in result.output
    finegym_lists(tmp_path / "gym")
    path = tmp_path / "gym" / "gym99_val_element.txt"
    path.write_text(path.read_text() + "someclip_E_000001_000002_A_0001_0002 99\n")
    config = load_config(write_config(tmp_path, {"finegym": {"splits_dir": str(tmp_path / "gym")}}))
    with pytest.raises(DataError, match=rf"{path}:100: class index 99 is not a Gym99 class"):
        open_benchmark("finegym", config).partition("test")


def test_finegym_partitions_follow_the_class_index_lists(tmp_path):
    clips = finegym_lists(tmp_path / "gym", per_class=4)
    config = load_config(write_config(tmp_path, {"finegym": {"splits_dir": str(tmp_path / "gym")}}))
    benchmark = open_benchmark("finegym", config)
    counts = {p: (len(benchmark.partition(p).classes), benchmark.partition(p).num_videos) for p in ("train", "val", "test")}
    assert counts == {"train": (63, 252), "val": (12, 48), "test": (24, 96)}
    assert benchmark.partition("test").classes[:3] == ("gym99_01", "gym99_05", "gym99_08")
    assert set(benchmark.partition("val").videos["gym99_10"]) == set(clips[10])
    assert benchmark.comparable_to_papers is False
    assert [c["status"] for c in benchmark.split_stamps()] == ["not pinned", "not pinned"]
