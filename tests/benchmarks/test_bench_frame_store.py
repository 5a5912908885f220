"""A training clip (8 random frames, one per segment) from the frame store against the same clip from the video,
side by side on fake realistic videos: Kinetics-like (300 frames 340x256 H.264) and SSv2-like (48 frames
426x240 VP9). Full mode asserts the store is >= 5x faster per clip; quick mode uses shorter videos, sanity only.
Also measured: the JPEG decoders (simplejpeg against PIL) on the same stored frames.
"""

from __future__ import annotations

import io
import time

import numpy as np
import pytest

from fsar_bench.data.frame_store import StoreFormat, pack_video
from fsar_bench.files import write_bytes_atomic
from fsar_bench.data.video import clip_choice, open_reader
from tests.benchmarks._common import FULL, report
from tests.fake_videos import KINETICS_LIKE, SSV2_LIKE, write_fake_video

pytestmark = pytest.mark.benchmark_quick

CLIPS = 40 if FULL else 6
KINDS = {"kinetics-like": (KINETICS_LIKE, None if FULL else 60), "ssv2-like": (SSV2_LIKE, None)}


def _seconds_per_clip(reader, path, clips: int) -> float:
    """Median seconds of reading one training clip (the reader opened per clip, as the loader does)."""
    times = []
    for seed in range(clips):
        start = time.perf_counter()
        reader.read(path, clip_choice(path, 8, np.random.default_rng(seed)))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


@pytest.mark.parametrize("kind", list(KINDS))
def test_clip_from_store_vs_video(tmp_path, capsys, kind):
    spec, frames = KINDS[kind]
    video = write_fake_video(tmp_path / f"v{spec.suffix}", spec, seed=0, frames=frames)
    reader = open_reader()
    stored = tmp_path / "v.frames"
    write_bytes_atomic(stored, pack_video(reader.read(video, lambda n: list(range(n))), StoreFormat()))
    rounds = [(_seconds_per_clip(reader, video, CLIPS), _seconds_per_clip(reader, stored, CLIPS)) for _ in range(3)]
    from_video = float(np.median([r[0] for r in rounds]))
    from_store = float(np.median([r[1] for r in rounds]))
    speedup = from_video / from_store
    report(capsys, f"frame store vs video, {kind}", video_ms=from_video * 1e3, store_ms=from_store * 1e3,
           speedup=speedup, reader=reader.name, video_kib=video.stat().st_size / 1024,
           store_kib=stored.stat().st_size / 1024)
    assert speedup > (5.0 if FULL else 1.0)


def test_jpeg_decoders(tmp_path, capsys):
    """simplejpeg (chosen) against PIL on one stored Kinetics-like frame: ms per decode, and their agreement."""
    import simplejpeg
    from PIL import Image

    from fsar_bench.data.frame_store import encode_frame
    from tests.fake_videos import fake_frames

    data = encode_frame(fake_frames(KINETICS_LIKE, 0, frames=1)[0], StoreFormat())
    repeats = 400 if FULL else 60

    def per_decode(decode) -> float:
        best = []
        for _ in range(3):
            start = time.perf_counter()
            for _ in range(repeats):
                decode()
            best.append((time.perf_counter() - start) / repeats)
        return min(best)

    simple = per_decode(lambda: simplejpeg.decode_jpeg(data, colorspace="RGB"))
    pil = per_decode(lambda: np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    agree = np.abs(simplejpeg.decode_jpeg(data).astype(int) - np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))).max()
    report(capsys, "JPEG decode 340x256", simplejpeg_ms=simple * 1e3, pil_ms=pil * 1e3, ratio=pil / simple,
           max_difference=int(agree))
    assert agree <= 1
