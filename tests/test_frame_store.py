"""The frame store: a clip from the store equals the clip from the video (raw: bit-exact; JPEG: the JPEG round
trip of the video's frames, decoders within ISO/IEC 10918-2's +-1), damaged files are refused, and
`data prepare` is resumable, checksummed and picked up by training and evaluation (its tag in the protocol)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from fsar_bench.config import load_config
from fsar_bench.data.benchmarks import DataOptions, open_benchmark
from fsar_bench.data.frame_store import (FrameStore, FrameStoreReader, StoreFormat, decode_frame, encode_frame,
                                         pack_video, store_root)
from fsar_bench.data.prepare import prepare_frame_store, read_progress, verify_frame_store
from fsar_bench.files import write_bytes_atomic
from fsar_bench.data.video import VideoError, clip_choice, open_reader
from fsar_bench.errors import ProtocolMismatchError, UsageError
from tests.conftest import write_bench_toml
from tests.fake_videos import KINETICS_LIKE, SSV2_LIKE, write_fake_video

JPEG = StoreFormat()
RAW = StoreFormat(codec="raw")


@pytest.fixture(scope="module")
def fake_videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fake-videos")
    return [write_fake_video(folder / f"k{KINETICS_LIKE.suffix}", KINETICS_LIKE, seed=1, frames=40),
            write_fake_video(folder / f"s{SSV2_LIKE.suffix}", SSV2_LIKE, seed=2, frames=30)]


def _store_file(tmp_path, video, fmt):
    frames = open_reader().read(video, lambda n: list(range(n)))
    path = tmp_path / f"{video.stem}.frames"
    write_bytes_atomic(path, pack_video(frames, fmt))
    return path


@pytest.mark.parametrize("seed", [None, 3, 4])
def test_raw_store_clip_is_the_video_clip_bit_exact(tmp_path, fake_videos, seed):
    reader = open_reader()
    for video in fake_videos:
        stored = _store_file(tmp_path, video, RAW)
        rng = lambda: None if seed is None else np.random.default_rng(seed)  # noqa: E731
        from_video = reader.read(video, clip_choice(video, 8, rng()))
        from_store = reader.read(stored, clip_choice(stored, 8, rng()))
        assert from_store.dtype == np.uint8 and np.array_equal(from_store, from_video)


def test_jpeg_store_clip_is_the_jpeg_round_trip_of_the_video_clip(tmp_path, fake_videos):
    from PIL import Image

    reader = open_reader()
    for video in fake_videos:
        stored = _store_file(tmp_path, video, JPEG)
        rng = np.random.default_rng(5)
        from_video = reader.read(video, clip_choice(video, 8, np.random.default_rng(5)))
        from_store = reader.read(stored, clip_choice(stored, 8, rng))
        # the store's pixels are exactly the JPEG round trip of the video's (same encoder, same settings) ...
        round_trip = np.stack([decode_frame(encode_frame(frame, JPEG), "jpeg", *frame.shape[:2]) for frame in from_video])
        assert np.array_equal(from_store, round_trip)
        # ... which another conforming decoder (PIL's libjpeg) reproduces within ISO/IEC 10918-2's +-1 ...
        pil = np.stack([np.asarray(Image.open(io.BytesIO(encode_frame(frame, JPEG))).convert("RGB")) for frame in from_video])
        assert np.abs(pil.astype(int) - from_store).max() <= 1
        # ... and that is close to the video, not equal: hence the format in the protocol stamp
        error = (from_store.astype(float) - from_video) ** 2
        assert 10 * np.log10(255 ** 2 / error.mean()) > 30
        assert JPEG.tag(0) == "frame-store:jpeg-q90-420-s256" and RAW.tag(0) == "" and RAW.tag(1) != ""


def test_damaged_store_file_is_refused_by_name(tmp_path, fake_videos):
    stored = _store_file(tmp_path, fake_videos[0], JPEG)
    data = bytearray(stored.read_bytes())
    data[-100] ^= 0xFF
    stored.write_bytes(bytes(data))
    reader = FrameStoreReader()
    with pytest.raises(VideoError, match="CRC-32") as caught:
        reader.read(stored, lambda n: list(range(n)))
    assert caught.value.path == stored and caught.value.kind == "corrupt"
    stored.write_bytes(b"not a store file")
    with pytest.raises(VideoError, match="not a frame-store file"):
        reader.num_frames(stored)


def test_large_frames_are_brought_to_the_short_side(tmp_path):
    from fsar_bench.data.frame_store import fit_short_side

    frames = np.random.default_rng(0).integers(0, 256, (2, 300, 400, 3), dtype=np.uint8)
    small, resized = fit_short_side(frames, 256)
    assert resized and small.shape == (2, 256, 341, 3)
    same, resized = fit_short_side(frames[:, :200], 256)
    assert not resized and same is frames[:, :200].base or np.array_equal(same, frames[:, :200])


def _config(tmp_path, synthetic_cache, extra=""):
    cache = tmp_path / "cache"
    cache.mkdir(exist_ok=True)
    (cache / "datasets").symlink_to(synthetic_cache / "datasets")
    return load_config(write_bench_toml(tmp_path, cache, extra))


@pytest.mark.slow
def test_prepare_killed_resumes_verifies_and_is_used(tmp_path, synthetic_cache):
    """Debris of an earlier kill, then a real SIGKILL mid-way: the rerun completes a store that verifies,
    and training/evaluation read it with its format in the protocol."""
    config = _config(tmp_path, synthetic_cache)
    videos_only = open_benchmark("synthetic", config, DataOptions(frame_store=False))
    root = store_root(config.path("cache"), "synthetic")
    root.mkdir(parents=True)
    ids = sorted(videos_only.partition("train").all_video_ids())
    from fsar_bench.data.prepare import _check_plan, prepare_one

    # a stale temp file, a half-written log line, a file written but never logged
    _check_plan(root, JPEG, videos_only, force=False)
    entry = prepare_one(videos_only, root, ids[0], JPEG, open_reader())
    (root / "progress").mkdir()
    (root / "progress" / "rank0of1.jsonl").write_text(json.dumps(entry) + "\n" + '{"id": "trunc')
    prepare_one(videos_only, root, ids[1], JPEG, open_reader())
    (root / "videos" / ".tmp-x.frames").write_bytes(b"partial")
    assert list(read_progress(root)) == [ids[0]]

    command = [sys.executable, "-m", "fsar_bench", "--config", str(tmp_path / "bench.toml"), "data", "prepare", "synthetic"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(read_progress(root)) < 40:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (root / "store.json").exists(), "prepare finished before it could be killed"
    partial = len(read_progress(root))
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert "estimated" in rerun.stderr and "GiB" in rerun.stderr
    store = FrameStore.open(root)
    total = sum(videos_only.partition(p).num_videos for p in ("train", "val", "test"))
    assert store is not None and 0 < partial < store.videos == total
    assert store.tag == "frame-store:jpeg-q90-420-s256"
    assert verify_frame_store(store, progress=False) == []
    with pytest.raises(UsageError, match="--force"):
        prepare_frame_store(videos_only, config.path("cache"), RAW, progress=False)

    # training and evaluation now read the store: same ids, store paths, the format in the protocol
    benchmark = open_benchmark("synthetic", config)
    assert benchmark.frames_from == store.tag and benchmark.video_path(ids[0]) == store.path(ids[0])
    from fsar_bench.runner import make_protocol

    with_store = make_protocol(config, benchmark, "test", 1)
    without = make_protocol(config, videos_only, "test", 1)
    assert with_store.frames_from and with_store.fingerprint != without.fingerprint
    assert "frames_from" not in without.to_dict()
    path = benchmark.video_path(ids[5])
    assert open_reader().read(path, clip_choice(path, 8)).shape == (8, 64, 64, 3)

    damaged = store.path(ids[3])
    damaged.write_bytes(damaged.read_bytes()[:-1] + b"\0")
    assert len(verify_frame_store(store, progress=False)) == 1
    off = load_config(tmp_path / "bench.toml", {"run.frame_store": "off"})
    assert open_benchmark("synthetic", off).frames_from == ""


def test_store_of_other_data_is_refused(tmp_path, synthetic_cache):
    config = _config(tmp_path, synthetic_cache)
    root = store_root(config.path("cache"), "synthetic")
    root.mkdir(parents=True)
    store = FrameStore(root, "synthetic", RAW, 0, 0, 0, "synthetic-v1", "simplejpeg")
    write_bytes_atomic(root / "store.json", json.dumps(store.manifest_values({})).encode())
    with pytest.raises(ProtocolMismatchError, match="--force"):
        open_benchmark("synthetic", config)
