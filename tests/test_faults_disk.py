"""Fault injection, part 3 (issue 15): a full disk, a read-only results folder, damaged videos. One line naming
the file and what to do, no stray ``*.tmp``, stored results whole and resumable, never a traceback."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from fsar_bench import files
from tests.conftest import write_bench_toml
from tests.fault_tools import assert_error, assert_ok, command, environment, in_process, plugin_dir, project

RUN = ("run", "tsn", "-d", "synthetic", "--shots", "1", "--episodes", "12", "--no-train")


def _fill_disk_when(monkeypatch, starts_with: bytes, after: int = 0) -> None:
    """files._write_all fails like a full disk (writing part of the bytes first) for data starting with
    ``starts_with``, after ``after`` such writes succeeded."""
    real, seen = files._write_all, {"count": 0}

    def write(fd: int, data: bytes) -> None:
        if bytes(data[:len(starts_with)]) == starts_with:
            seen["count"] += 1
            if seen["count"] > after:
                real(fd, data[: len(data) // 2])
                raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, data)

    monkeypatch.setattr(files, "_write_all", write)


def _temps(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*.tmp")]


def test_disk_full_while_appending_records_then_resume(tmp_path, synthetic_cache, monkeypatch):
    config = project(tmp_path, synthetic_cache, extra="episode_batch = 3\n")
    clean = project(tmp_path / "clean", synthetic_cache, extra="episode_batch = 3\n")
    _fill_disk_when(monkeypatch, b'{"episode"', after=2)
    full = in_process(config, *RUN)
    [records] = list((tmp_path / "results").rglob("records.jsonl"))
    assert_error(full, 1, f"no space left on the device while writing {records}", "run the same command again")
    lines = records.read_text().splitlines()
    assert len(lines) == 6 and all(json.loads(line) for line in lines), "whole lines only: the failed append was cut"
    monkeypatch.undo()
    assert "resuming: 6 already recorded" in assert_ok(in_process(config, *RUN))
    assert_ok(in_process(clean, *RUN))
    [reference] = list((tmp_path / "clean" / "results").rglob("records.jsonl"))
    assert sorted(records.read_text().splitlines()) == sorted(reference.read_text().splitlines())
    assert not _temps(tmp_path / "results")


def test_disk_full_while_saving_the_episode_manifest(tmp_path, synthetic_cache, monkeypatch):
    config = project(tmp_path, synthetic_cache)
    _fill_disk_when(monkeypatch, b"PK")  # the manifest is a zip (npz)
    assert_error(in_process(config, *RUN), 1, "no space left on the device while writing", "/results/episodes/",
                 ".npz", "run the same command again")
    assert not _temps(tmp_path / "results") and not list((tmp_path / "results" / "episodes").glob("*.npz"))


def test_disk_full_while_saving_a_checkpoint(tmp_path, synthetic_cache, monkeypatch):
    config = project(tmp_path, synthetic_cache, plugin_dir(tmp_path))
    _fill_disk_when(monkeypatch, b"PK")  # torch.save's zip: the first one written in training is the checkpoint
    result = in_process(config, "train", "faulty", "-d", "synthetic", "--shot", "1")
    assert_error(result, 1, "no space left on the device while writing", "training.partial.pt",
                 "run the same command again")
    assert not _temps(tmp_path / "results") and not list((tmp_path / "results").rglob("*.pt"))


def test_disk_full_while_generating_synthetic_videos(tmp_path, monkeypatch):
    from fsar_bench.data import synthetic

    def full_disk(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(synthetic, "write_mp4", full_disk)
    monkeypatch.setattr(os, "cpu_count", lambda: 1)  # generate in this process (the patch applies)
    config = write_bench_toml(tmp_path, tmp_path / "cache")
    assert_error(in_process(config, "data", "synth", "--force"), 1, "no space left on the device while writing",
                 str(tmp_path / "cache" / "datasets" / "synthetic-"), "run the same command again")
    assert not list((tmp_path / "cache" / "datasets").iterdir()), "no staging folder or partial dataset left"


def _without_write_override() -> list[str]:
    """A command prefix that makes permission bits apply: none for a normal user; for root (who writes anywhere)
    ``setpriv`` dropping the capabilities that bypass them, or a skip when setpriv is absent."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: a read-only folder cannot be simulated")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]


@pytest.mark.parametrize("args", [("train", "faulty", "-d", "synthetic", "--shot", "1"),
                                  ("data", "check", "synthetic", "--partition", "test")])
def test_a_read_only_results_folder_fails_before_any_work(tmp_path, synthetic_cache, args):
    prefix = _without_write_override()
    config = project(tmp_path, synthetic_cache, plugin_dir(tmp_path))
    results = tmp_path / "results"
    results.mkdir()
    results.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    try:
        result = subprocess.run([*prefix, *command(config, *args)], capture_output=True, text=True, timeout=600,
                                env=environment(), cwd=tmp_path)
    finally:
        results.chmod(0o755)
    stderr = assert_error(result, 1, f"results folder {results}", "is not writable")
    assert "iteration" not in stderr and "videos OK" not in stderr, "nothing was trained or checked first"


def test_a_corrupt_synthetic_video_points_to_data_synth_force(tmp_path, synthetic_cache):
    """The advice for a damaged generated video is to regenerate it (data check would not find it without --decode)."""
    datasets = tmp_path / "cache" / "datasets"
    shutil.copytree(synthetic_cache / "datasets", datasets, copy_function=os.link)  # hard links: cheap
    [dataset] = [p for p in datasets.iterdir() if p.name.startswith("synthetic-")]
    for line in (dataset / "splits" / "test.txt").read_text().split():
        video = dataset / "videos" / f"{line}.mp4"
        video.unlink()  # never write through the hard link into the session's dataset
        video.write_bytes(b"\x00not a video" * 64)
    config = write_bench_toml(tmp_path, tmp_path / "cache")
    assert_error(in_process(config, *RUN), 3, str(dataset / "videos"), "fsar-bench data synth --force")


def test_a_corrupt_real_video_points_to_data_check_decode():
    from fsar_bench.cli.common import video_remedy
    from fsar_bench.data.video import VideoError

    assert "data check DATASET --decode" in video_remedy(VideoError("/data/ucf101/a/v.avi", "fails to decode", "corrupt"))
    assert "data synth --force" not in video_remedy(VideoError("/data/ucf101/a/v.avi", "fails", "corrupt"))


def test_result_files_are_readable_by_colleagues(tmp_path, synthetic_cache):
    """0644 under umask 022, not mkstemp's 0600: a report run by another user can read the run."""
    config = project(tmp_path, synthetic_cache)
    old = os.umask(0o022)
    try:
        assert_ok(in_process(config, *RUN))
    finally:
        os.umask(old)
    written = [p for p in (tmp_path / "results").rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl", ".npz")]
    assert written and all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in written), written
