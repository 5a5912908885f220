"""The encoding cache: keys, checksums, size bound, full disk, concurrent writers, CLI, and a repeated run
that encodes nothing."""

from __future__ import annotations

import errno
import multiprocessing
import os

import pytest
import torch
from typer.testing import CliRunner

import fsar_bench
from fsar_bench import files as files_module
from fsar_bench.evaluation import cache as cache_module
from fsar_bench.evaluation.cache import (
    CacheFullError,
    EncodingCache,
    EncodingContext,
    cache_folder,
    decode_entry,
    encode_entry,
    entry_key,
)
from tests.conftest import write_bench_toml


def _context(checkpoint: str = "a" * 64) -> EncodingContext:
    return EncodingContext(checkpoint, "otam", {"backbone": "small-cnn", "frames": 8}, {"resize": "short-side"}, 8,
                           "segment-centre", "decord")


def _reps(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"frames": torch.randn(8, 16, generator=generator), "frame_norms": torch.rand(8, generator=generator)}


def test_entry_roundtrip_tensor_and_dict():
    plain = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    reps, meta = decode_entry(encode_entry(plain, {"video": "v1", "frame_indices": [1, 3]}))
    assert torch.equal(reps, plain) and meta == {"video": "v1", "frame_indices": [1, 3]}
    mapping = _reps(0)
    decoded, _ = decode_entry(encode_entry(mapping, {}))
    assert set(decoded) == set(mapping) and all(torch.equal(decoded[k], mapping[k]) for k in mapping)


def test_keys_change_with_checkpoint_version_video_and_file(tmp_path, monkeypatch):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"x" * 10)
    base = entry_key(_context().digest(), "v", video)
    assert entry_key(_context("b" * 64).digest(), "v", video) != base, "another checkpoint never hits"
    assert entry_key(_context().digest(), "w", video) != base
    monkeypatch.setattr(fsar_bench, "__version__", "999.0")
    assert entry_key(_context().digest(), "v", video) != base, "another fsar-bench version never hits"
    monkeypatch.undo()
    edited = EncodingContext(**{**_context().__dict__, "code_sha256": "c" * 64})
    assert entry_key(edited.digest(), "v", video) != base, "edited encode code never hits"
    video.write_bytes(b"y" * 11)
    assert entry_key(_context().digest(), "v", video) != base, "a changed file is encoded again"


def test_code_digest_covers_the_method_file(tmp_path):
    from methods.otam import OTAMHead
    from methods.tsn import TSNHead

    from fsar_bench.evaluation.cache import code_sha256

    assert len(code_sha256(OTAMHead)) == 64 and code_sha256(OTAMHead) != code_sha256(TSNHead)


def test_memory_then_disk_hits(tmp_path):
    cache = EncodingCache(tmp_path / "enc")
    cache.put("k1", _reps(1), {"video": "a"})
    assert cache.get("k1") is not None and cache.stats.memory_hits == 1
    fresh = EncodingCache(tmp_path / "enc")
    got = fresh.get("k1")
    assert got is not None and torch.equal(got["frames"], _reps(1)["frames"]) and fresh.stats.disk_hits == 1
    assert fresh.get("missing") is None and fresh.stats.misses == 1


def test_corrupt_entry_is_detected_deleted_and_reported(tmp_path):
    cache = EncodingCache(tmp_path / "enc")
    cache.put("k1", _reps(1))
    path = cache.path_of("k1")
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # one flipped payload byte
    path.write_bytes(bytes(data))
    messages = []
    fresh = EncodingCache(tmp_path / "enc", warn=messages.append)
    assert fresh.get("k1") is None
    assert fresh.stats.corrupt == 1 and not path.exists()
    assert "corrupt" in messages[0] and "recomputing" in messages[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"FSARENC1\x05")  # truncated
    assert EncodingCache(tmp_path / "enc", warn=messages.append).get("k1") is None


def test_size_bound_evicts_least_recently_used(tmp_path):
    one = len(encode_entry(_reps(0), {}))
    cache = EncodingCache(tmp_path / "enc", max_bytes=int(3.5 * one), memory_bytes=0)
    for index in range(6):
        cache.put(f"k{index}", _reps(index))
        os.utime(cache.path_of(f"k{index}"), ns=(index * 10**9, index * 10**9))
    os.utime(cache.path_of("k0"), ns=(10**12, 10**12))  # k0 read recently
    used = cache.enforce_limit(keep={"k1"})
    assert used <= 3.5 * one
    left = {entry.name.split(".")[0] for entry in cache.entries()}
    assert {"k0", "k1", "k5"} <= left and "k2" not in left, left


def test_full_disk_raises_clearly_and_leaves_nothing_partial(tmp_path, monkeypatch):
    cache = EncodingCache(tmp_path / "enc")

    def disk_full(fd, data):
        os.write(fd, data[:10])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files_module, "_write_all", disk_full)
    with pytest.raises(CacheFullError, match="no space left"):
        cache.put("k1", _reps(1))
    assert not any(p.is_file() for p in (tmp_path / "enc").rglob("*")), "no partial entry or temp file remains"


def _writer(root: str, seed: int) -> None:
    cache = EncodingCache(cache_module.Path(root), memory_bytes=0)
    for round_ in range(3):
        for index in range(20):
            cache.put(f"k{index:02d}", _reps(index))
            cache.get(f"k{(index + seed + round_) % 20:02d}")


def test_two_concurrent_writers_leave_only_whole_entries(tmp_path):
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_writer, args=(str(tmp_path / "enc"), seed)) for seed in (0, 7)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    reader = EncodingCache(tmp_path / "enc", memory_bytes=0, warn=pytest.fail)
    for index in range(20):
        got = reader.get(f"k{index:02d}")
        assert got is not None and torch.equal(got["frames"], _reps(index)["frames"])
    assert not list((tmp_path / "enc").rglob(".*.tmp"))


def test_cache_cli_info_and_clear(tmp_path):
    from fsar_bench.cli.main import app

    config = write_bench_toml(tmp_path, tmp_path / "cache")
    cache = EncodingCache(cache_folder(tmp_path / "cache"))
    cache.put("k1", _reps(1))
    runner = CliRunner()
    shown = runner.invoke(app, ["--config", str(config), "cache", "info"])
    assert shown.exit_code == 0 and "entries:  1 encoded videos" in shown.stdout, shown.output
    cleared = runner.invoke(app, ["--config", str(config), "cache", "clear"])
    assert cleared.exit_code == 0 and not list(cache.entries())


@pytest.fixture
def run_config(tmp_path, synthetic_cache):
    """A bench.toml with its own (empty) encoding cache over the session's synthetic videos."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "datasets").symlink_to(synthetic_cache / "datasets")
    return write_bench_toml(tmp_path, cache), cache


def test_repeated_run_encodes_nothing_and_shots_share_encodings(run_config, monkeypatch):
    from fsar_bench.config import load_config
    from fsar_bench.runner import RunRequest, run_method

    config_path, cache_root = run_config
    config = load_config(config_path, {"protocol.episodes": 6})
    logs: list[str] = []
    first = run_method(config, RunRequest("tsn", "synthetic", 1, no_train=True), log=logs.append)
    assert first["encodings_from_cache"] == 0 and first["videos_encoded"] > 0
    # the other shot on the same (untrained) model, in a new process-like cache object: no encoding of a seen video
    second = run_method(load_config(config_path, {"protocol.episodes": 4}), RunRequest("tsn", "synthetic", 2, no_train=True),
                        log=logs.append)
    assert second["encodings_from_cache"] > 0
    assert any("from the cache" in line for line in logs)

    # every entry corrupted on disk: each is reported and recomputed; then a repeat encodes nothing
    for entry in EncodingCache(cache_folder(cache_root)).entries():
        with open(entry.path, "r+b") as stream:
            stream.seek(-2, os.SEEK_END)
            stream.write(b"\x00\x01")
    logs.clear()
    again = load_config(config_path, {"protocol.episodes": 6, "paths.results": str(config_path.parent / "results2")})
    third = run_method(again, RunRequest("tsn", "synthetic", 1, no_train=True), log=logs.append)
    assert third["encodings_from_cache"] == 0 and third["videos_encoded"] == first["videos_encoded"]
    assert sum("corrupt" in line for line in logs) == first["videos_encoded"]
    assert third["accuracy"] == first["accuracy"]
    logs.clear()
    repeat = load_config(config_path, {"protocol.episodes": 6, "paths.results": str(config_path.parent / "results3")})
    fourth = run_method(repeat, RunRequest("tsn", "synthetic", 1, no_train=True), log=logs.append)
    assert fourth["videos_encoded"] == 0 and fourth["encodings_from_cache"] == first["videos_encoded"]
    assert any(f"{first['videos_encoded']} of {first['videos_encoded']} from the cache, 0 encoded" in line for line in logs)


def test_full_disk_during_a_run_ends_it_clearly_then_it_resumes(run_config, monkeypatch):
    from fsar_bench.config import load_config
    from fsar_bench.runner import RunRequest, run_method

    config_path, _ = run_config
    config = load_config(config_path, {"protocol.episodes": 3})
    writes = {"count": 0}
    real_write = files_module._write_all

    def fills_up(fd, data):
        if data[:8] != cache_module.MAGIC:  # run files (stamps, manifest) are written; the cache fills up
            return real_write(fd, data)
        writes["count"] += 1
        if writes["count"] > 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(fd, data)

    monkeypatch.setattr(files_module, "_write_all", fills_up)
    with pytest.raises(CacheFullError, match="run the same command again"):
        run_method(config, RunRequest("tsn", "synthetic", 1, no_train=True), log=lambda m: None)
    monkeypatch.setattr(files_module, "_write_all", real_write)
    summary = run_method(config, RunRequest("tsn", "synthetic", 1, no_train=True), log=lambda m: None)
    assert summary["episodes"] == 3 and summary["encodings_from_cache"] == 5


def test_temp_files_of_killed_runs_are_removed_once_stale(tmp_path):
    """A killed run leaves ``.*.tmp`` files; the first size check of a later run removes those older than an
    hour and keeps a fresh one (it may be a concurrent run's write in progress)."""
    import time

    cache = EncodingCache(tmp_path / "enc")
    cache.put("ab" + "0" * 62, torch.zeros(2))
    stale, fresh = tmp_path / "enc" / "ab" / ".x.enc.stale.tmp", tmp_path / "enc" / "ab" / ".x.enc.fresh.tmp"
    stale.write_bytes(b"partial")
    fresh.write_bytes(b"partial")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    EncodingCache(tmp_path / "enc").enforce_limit()
    assert not stale.exists() and fresh.exists()


def test_code_digest_fails_loudly_when_a_hashed_module_has_no_source(monkeypatch):
    import inspect

    from fsar_bench.evaluation.cache import code_sha256
    from fsar_bench.errors import FsarError
    from methods.otam import OTAMHead

    real = inspect.getsourcefile
    monkeypatch.setattr(inspect, "getsourcefile", lambda obj: None if obj.__name__ == "fsar_bench.layers" else real(obj))
    with pytest.raises(FsarError, match="fsar_bench.layers"):
        code_sha256(OTAMHead)
