"""Fake realistic videos for the frame-store tests and benchmarks, written with PyAV.

``kinetics_like``: 300 frames of 340x256, H.264 (yuv420p, 30 fps, a keyframe every 250 frames as x264's
default); ``ssv2_like``: 48 frames of 426x240, VP9 (12 fps). The pictures are textured (gradients, noise,
moving shapes, camera pan) so that the codecs work about as hard as on real footage.

Usage::

    path = write_fake_video(tmp_path / "k.mp4", KINETICS_LIKE, seed=0)
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class FakeVideoKind:
    name: str
    frames: int
    width: int
    height: int
    codec: str
    fps: int
    suffix: str
    options: tuple[tuple[str, str], ...]


KINETICS_LIKE = FakeVideoKind("kinetics-like", 300, 340, 256, "libx264", 30, ".mp4",
                              (("crf", "23"), ("preset", "veryfast"), ("threads", "1")))
SSV2_LIKE = FakeVideoKind("ssv2-like", 48, 426, 240, "libvpx-vp9", 12, ".webm",
                          (("crf", "32"), ("b", "0"), ("deadline", "realtime"), ("cpu-used", "8"), ("threads", "1")))
KINDS = {kind.name: kind for kind in (KINETICS_LIKE, SSV2_LIKE)}


def fake_frames(kind: FakeVideoKind, seed: int, frames: int | None = None) -> np.ndarray:
    """uint8 [T, H, W, 3]: a panning textured background with two moving blobs and sensor noise."""
    rng = np.random.default_rng(seed)
    count = frames or kind.frames
    height, width = kind.height, kind.width
    big = rng.normal(0, 1, size=(height // 8 + 8, (width + count) // 8 + 8, 3))
    texture = np.kron(big, np.ones((8, 8, 1)))  # blocky low-frequency texture, wider than the frame (pan)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(60, 160, size=3) + 40 * np.stack([np.sin(xs / 37 + c) * np.cos(ys / 23 - c) for c in range(3)], -1)
    video = np.empty((count, height, width, 3), np.uint8)
    for t in range(count):
        frame = base + 25 * texture[:height, t:t + width] + rng.normal(0, 6, size=(height, width, 3))
        for blob in range(2):
            cx = width * (0.2 + 0.6 * ((t / max(1, count - 1) + 0.5 * blob) % 1.0))
            cy = height * (0.3 + 0.4 * blob)
            mask = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * (height / 8) ** 2))[..., None]
            frame = frame * (1 - mask) + mask * (200 if blob else 30)
        video[t] = np.clip(frame, 0, 255).astype(np.uint8)
    return video


def write_fake_video(path: Path, kind: FakeVideoKind, seed: int = 0, frames: int | None = None) -> Path:
    """Encode ``fake_frames(kind, seed)`` to ``path`` with the kind's codec, in a fresh Python process (decord's
    bundled FFmpeg, once imported, makes PyAV's libvpx-vp9 refuse to open); returns ``path``."""
    code = ("import sys; from pathlib import Path; from tests.fake_videos import KINDS, encode_fake_video; "
            "encode_fake_video(Path(sys.argv[1]), KINDS[sys.argv[2]], int(sys.argv[3]), int(sys.argv[4]) or None)")
    subprocess.run([sys.executable, "-c", code, str(path), kind.name, str(seed), str(frames or 0)], check=True,
                   cwd=Path(__file__).resolve().parents[1])
    return path


def encode_fake_video(path: Path, kind: FakeVideoKind, seed: int = 0, frames: int | None = None) -> Path:
    """``write_fake_video`` in this process (call it before decord is imported)."""
    import av

    data = fake_frames(kind, seed, frames)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(kind.codec, rate=kind.fps)
        stream.width, stream.height, stream.pix_fmt = kind.width, kind.height, "yuv420p"
        stream.options = dict(kind.options)
        for index, array in enumerate(data):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, kind.fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
