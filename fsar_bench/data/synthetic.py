"""The built-in ``synthetic`` benchmark: real mp4 videos of moving shapes, made deterministically.

48 classes = 12 motion patterns x 4 appearances. The motions come in 6 time-reversal pairs
(left->right / right->left, top->bottom / bottom->top, growing / shrinking, appearing / vanishing,
diagonal down / up, clockwise / counter-clockwise): the reversed class is the forward video
played backwards, so the *set* of frames is identically distributed and order-free pooling
(TSN) cannot tell a pair apart, while temporal matching (OTAM) can.

Partitions are disjoint in classes: test holds 6 reversal pairs (12 classes), val 4 pairs
(8 classes), train the other 28 classes; every motion pair also appears in train with other
appearances. Split files use the official ``class/video`` format.

Usage::

    root = ensure_synthetic(cache_dir, seed=0)   # generates on first use (~15 s on 2 cores)
    # root/videos/<class>/<video>.mp4, root/splits/{train,val,test}.txt
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from fsar_bench.files import make_shared_temp_folder, write_error

GENERATOR_VERSION = 2
"""2: x264 without mb-tree rate control, whose output depended on what the process had encoded before, so two
generations of version 1 differed in about a third of their videos (and trained results moved by ~0.8 points)."""
MOTION_PAIRS: tuple[tuple[str, str], ...] = (
    ("left-to-right", "right-to-left"),
    ("top-to-bottom", "bottom-to-top"),
    ("growing", "shrinking"),
    ("appearing", "vanishing"),
    ("diagonal-down", "diagonal-up"),
    ("clockwise", "counter-clockwise"),
)
APPEARANCES: tuple[tuple[str, str, tuple[int, int, int]], ...] = (
    ("red-square", "square", (230, 40, 40)),
    ("green-disc", "disc", (40, 210, 60)),
    ("blue-triangle", "triangle", (50, 80, 240)),
    ("yellow-ring", "ring", (240, 220, 30)),
)


@dataclass(frozen=True)
class SyntheticSpec:
    """What is generated. The defaults are the benchmark; tests may shrink them."""

    seed: int = 0
    videos_per_class: int = 20
    size: int = 64
    min_frames: int = 16
    max_frames: int = 32
    fps: int = 12

    def cache_key(self) -> str:
        return (
            f"v{GENERATOR_VERSION}-seed{self.seed}-n{self.videos_per_class}-s{self.size}"
            f"-f{self.min_frames}_{self.max_frames}"
        )


@dataclass(frozen=True)
class SyntheticClass:
    name: str
    motion: str
    pair_index: int
    reversed: bool
    shape: str
    colour: tuple[int, int, int]
    appearance_index: int


def synthetic_classes() -> list[SyntheticClass]:
    """All 48 classes, in a fixed order."""
    classes = []
    for pair_index, pair in enumerate(MOTION_PAIRS):
        for is_reversed, motion in enumerate(pair):
            for appearance_index, (appearance, shape, colour) in enumerate(APPEARANCES):
                classes.append(
                    SyntheticClass(f"{motion}-{appearance}", motion, pair_index, bool(is_reversed), shape, colour, appearance_index)
                )
    return classes


def partition_of(cls: SyntheticClass) -> str:
    """test: each motion pair with appearance (pair % 4); val: pairs 0-3 with appearance (pair+1) % 4."""
    if cls.appearance_index == cls.pair_index % len(APPEARANCES):
        return "test"
    if cls.pair_index < 4 and cls.appearance_index == (cls.pair_index + 1) % len(APPEARANCES):
        return "val"
    return "train"


# --------------------------------------------------------------------------- rendering
def _shape_mask(shape: str, size: int, cx: float, cy: float, radius: float) -> np.ndarray:
    """Soft-edged mask [size, size] in [0, 1] of a shape centred at (cx, cy)."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    dx, dy = xs - cx, ys - cy
    if shape == "square":
        signed = np.maximum(np.abs(dx), np.abs(dy)) - radius
    elif shape == "disc":
        signed = np.hypot(dx, dy) - radius
    elif shape == "ring":
        signed = np.abs(np.hypot(dx, dy) - radius * 0.75) - radius * 0.3
    elif shape == "triangle":
        # upward triangle: inside when below the two slanted edges and above the base
        signed = np.maximum.reduce([dy - radius * 0.8, -dy * 0.5 + np.abs(dx) * 0.87 - radius * 0.6])
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return np.clip(0.5 - signed, 0.0, 1.0)


def _forward_states(motion_pair: int, frames: int, size: int, rng: np.random.Generator) -> list[tuple[float, float, float, float]]:
    """(cx, cy, radius, opacity) per frame for the *forward* motion of a pair."""
    steps = np.linspace(0.0, 1.0, frames)
    radius = rng.uniform(0.09, 0.13) * size
    lane = rng.uniform(0.3, 0.7) * size
    start, end = rng.uniform(0.12, 0.3) * size, rng.uniform(0.7, 0.88) * size
    centre = (rng.uniform(0.4, 0.6) * size, rng.uniform(0.4, 0.6) * size)
    phase = rng.uniform(0.0, 2 * np.pi)
    states = []
    for s in steps:
        travel = start + (end - start) * s
        if motion_pair == 0:
            states.append((travel, lane, radius, 1.0))
        elif motion_pair == 1:
            states.append((lane, travel, radius, 1.0))
        elif motion_pair == 2:
            states.append((*centre, size * (0.04 + 0.2 * s), 1.0))
        elif motion_pair == 3:
            states.append((*centre, radius * 1.3, float(s)))
        elif motion_pair == 4:
            states.append((travel, travel, radius, 1.0))
        else:
            angle = phase + 2 * np.pi * 0.85 * s  # most of one turn
            states.append((size / 2 + 0.28 * size * np.cos(angle), size / 2 + 0.28 * size * np.sin(angle), radius, 1.0))
    return states


def render_video(cls: SyntheticClass, spec: SyntheticSpec, video_index: int) -> np.ndarray:
    """uint8 [frames, size, size, 3] for one video of one class (deterministic in seed, class, index)."""
    class_index = synthetic_classes().index(cls)
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, class_index, video_index]))
    frames = int(rng.integers(spec.min_frames, spec.max_frames + 1))
    size = spec.size
    # background: a random smooth gradient plus static texture, identical in every frame
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = rng.uniform(40, 120, size=3)
    tilt = rng.uniform(-40, 40, size=(2, 3))
    background = base + xs[..., None] * tilt[0] + ys[..., None] * tilt[1] + rng.normal(0, 8, size=(size, size, 3))
    # a static distractor blob of random colour
    distractor = _shape_mask("disc", size, *rng.uniform(0.15, 0.85, size=2) * size, radius=size * 0.06)
    background = background * (1 - distractor[..., None]) + distractor[..., None] * rng.uniform(60, 200, size=3)
    colour = np.clip(np.asarray(cls.colour, np.float32) + rng.normal(0, 12, size=3), 0, 255)
    video = []
    for cx, cy, radius, opacity in _forward_states(cls.pair_index, frames, size, rng):
        alpha = _shape_mask(cls.shape, size, cx, cy, radius)[..., None] * opacity
        frame = background * (1 - alpha) + colour * alpha + rng.normal(0, 4, size=(size, size, 3))
        video.append(np.clip(frame, 0, 255).astype(np.uint8))
    if cls.reversed:
        video.reverse()
    return np.stack(video)


def write_mp4(path: Path, frames: np.ndarray, fps: int) -> None:
    """Encode uint8 [T, H, W, 3] as H.264 (yuv420p, near-lossless) with PyAV."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        # mbtree=0: x264's macroblock-tree rate control made a file's bytes depend on the process's earlier encodes
        stream.options = {"crf": "12", "preset": "veryfast", "threads": "1", "x264-params": "mbtree=0"}
        for index, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, fps)  # explicit timestamps, never left unset
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _write_class(args: tuple[SyntheticClass, SyntheticSpec, str]) -> list[str]:
    cls, spec, videos_dir = args
    folder = Path(videos_dir) / cls.name
    folder.mkdir(parents=True, exist_ok=True)
    ids = []
    for index in range(spec.videos_per_class):
        name = f"{cls.name}_{index:03d}"
        write_mp4(folder / f"{name}.mp4", render_video(cls, spec, index), spec.fps)
        ids.append(f"{cls.name}/{name}")
    return ids


def generate_synthetic(target: Path, spec: SyntheticSpec, jobs: int | None = None,
                       progress: Callable[[int], None] | None = None) -> Path:
    """Write videos and split files into ``target`` atomically (a temp folder renamed at the end);
    ``progress(1)`` after each class is written."""
    staging = make_shared_temp_folder(target.parent, ".synth-")
    advance = progress or (lambda count: None)
    try:
        classes = synthetic_classes()
        jobs = jobs or min(len(classes), os.cpu_count() or 1)
        work = [(cls, spec, str(staging / "videos")) for cls in classes]
        if jobs > 1:
            with ProcessPoolExecutor(max_workers=jobs) as pool:
                futures = [pool.submit(_write_class, item) for item in work]
                for _ in as_completed(futures):
                    advance(1)
                video_ids = [future.result() for future in futures]
        else:
            video_ids = []
            for item in work:
                video_ids.append(_write_class(item))
                advance(1)
        (staging / "splits").mkdir()
        for partition in ("train", "val", "test"):
            lines = [vid for cls, ids in zip(classes, video_ids) if partition_of(cls) == partition for vid in ids]
            (staging / "splits" / f"{partition}.txt").write_text("\n".join(lines) + "\n")
        (staging / "COMPLETE.json").write_text(json.dumps({"spec": spec.__dict__, "version": GENERATOR_VERSION}, indent=1))
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except OSError as error:  # a full disk, or a folder we may not write: one line, nothing partial kept
        raise write_error(target, error) from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def benchmark_data_version(name: str) -> str:
    """Content version of a generated benchmark (``synthetic-v2``), stamped into its protocols and checkpoint
    keys so that runs on other versions are never mixed in; "" for benchmarks read from disk."""
    return f"synthetic-v{GENERATOR_VERSION}" if name == "synthetic" else ""


def ensure_synthetic(cache_dir: Path, spec: SyntheticSpec | None = None, force: bool = False) -> Path:
    """The dataset folder for ``spec`` under ``cache_dir``, generated if absent (or ``force``), with a progress
    bar on a terminal (the first use takes a while)."""
    from fsar_bench.progress import step_progress

    spec = spec or SyntheticSpec()
    target = cache_dir / f"synthetic-{spec.cache_key()}"
    if force or not (target / "COMPLETE.json").is_file():
        with step_progress("generating the synthetic benchmark", len(synthetic_classes())) as advance:
            generate_synthetic(target, spec, progress=advance)
    return target
