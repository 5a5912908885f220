"""Reading frames from videos and frame folders, and choosing which frames to read.

One small interface, three engines: decord (fast, Linux x86-64 wheels) and PyAV (everywhere) for
video files, and ``FrameFolderReader`` for folders of frames (``<video>/<frame>.jpg``, in natural
order: ``img_2.jpg`` before ``img_10.jpg``); frame-store files (``*.frames``, ``fsar_bench.data.frame_store``)
are read by their own engine. ``open_reader()`` returns a reader that uses the frame
folder engine when the path is a directory, else decord when it imports, else PyAV;
``FSAR_VIDEO_BACKEND=pyav`` forces PyAV.

Usage::

    reader = open_reader()
    frames = read_clip(reader, path, frames=8)   # uint8 [8, H, W, 3], segment centres
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from fsar_bench.data.sampling import sample_frame_indices
from fsar_bench.errors import first_line

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
PROBLEM_KINDS = ("missing", "empty", "unreadable", "corrupt", "too-short")
"""What can be wrong with a video: absent; 0 bytes or no frames; cannot be opened; fails to decode
(truncated or damaged); fewer frames than sampled."""


class VideoError(Exception):
    """A video is missing, unreadable, truncated or too short. ``path`` names it, ``kind`` is in PROBLEM_KINDS."""

    def __init__(self, path: Path | str, reason: str, kind: str = "unreadable") -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason
        self.kind = kind


FrameChoice = Callable[[int], list[int]]
"""Maps a video's frame count to the indices to read (raises VideoError when too short)."""


class VideoReader(Protocol):
    """Reads RGB frames; every error is a VideoError naming the file."""

    name: str

    def num_frames(self, path: Path) -> int: ...

    def read(self, path: Path, choose: FrameChoice) -> np.ndarray:
        """uint8 ``[T, H, W, 3]``: the frames ``choose(num_frames)`` picks, in one open of the file."""
        ...


# --------------------------------------------------------------------------- frame choice
def segment_centre_indices(num_frames: int, frames: int) -> list[int]:
    """The centre frame of each of ``frames`` equal segments (test-time sampling).

    >>> segment_centre_indices(16, 8)
    [1, 3, 5, 7, 9, 11, 13, 15]
    """
    if num_frames < frames:
        raise ValueError(f"{num_frames} frames cannot give {frames} segments")
    return [int((2 * t + 1) * num_frames // (2 * frames)) for t in range(frames)]


def random_segment_indices(num_frames: int, frames: int, rng: np.random.Generator) -> list[int]:
    """One uniformly random frame from each of ``frames`` equal segments (training sampling: ``segment-random``)."""
    if num_frames < frames:
        raise ValueError(f"{num_frames} frames cannot give {frames} segments")
    return sample_frame_indices("segment-random", num_frames, frames, rng)


# --------------------------------------------------------------------------- engines
class DecordReader:
    """decord engine: seeks to just the requested frames."""

    name = "decord"

    def __init__(self) -> None:
        import decord  # noqa: F401  (fails on platforms without wheels: caller falls back)

        self._decord = decord

    def _open(self, path: Path):
        _check_file(path)
        try:
            return self._decord.VideoReader(str(path), num_threads=1)
        except Exception as error:  # decord raises its own DECORDError and RuntimeError
            raise VideoError(path, f"cannot be opened by decord ({first_line(error)}); the file is corrupt or not a video") from None

    def num_frames(self, path: Path) -> int:
        return len(self._open(path))

    def read(self, path: Path, choose: FrameChoice) -> np.ndarray:
        video = self._open(path)
        total = len(video)
        indices = choose(total)
        if indices and max(indices) >= total:
            raise VideoError(path, f"has {total} frames, frame {max(indices)} was requested", "corrupt")
        try:
            return video.get_batch(list(indices)).asnumpy()
        except Exception as error:
            raise VideoError(path, f"decoding failed ({first_line(error)}); the file is truncated or corrupt", "corrupt") from None


class PyAVReader:
    """PyAV engine: decodes sequentially up to the last requested frame."""

    name = "pyav"

    def __init__(self) -> None:
        import av

        self._av = av

    def _decode(self, path: Path, stop: int | None) -> list[np.ndarray]:
        """Decode frames 0..stop (all when stop is None)."""
        _check_file(path)
        frames: list[np.ndarray] = []
        try:
            container = self._av.open(str(path))
        except Exception as error:
            raise VideoError(path, f"cannot be opened by PyAV ({first_line(error)}); the file is corrupt or not a video") from None
        try:
            with container:
                if not container.streams.video:
                    raise VideoError(path, "has no video stream")
                for frame in container.decode(video=0):
                    frames.append(frame.to_ndarray(format="rgb24"))
                    if stop is not None and len(frames) > stop:
                        break
        except VideoError:
            raise
        except Exception as error:
            raise VideoError(path, f"decoding failed after {len(frames)} frames ({first_line(error)}); "
                             "the file is truncated or corrupt", "corrupt") from None
        return frames

    def num_frames(self, path: Path) -> int:
        return len(self._decode(path, None))

    def read(self, path: Path, choose: FrameChoice) -> np.ndarray:
        frames = self._decode(path, None)
        indices = choose(len(frames))
        if indices and max(indices) >= len(frames):
            raise VideoError(path, f"has {len(frames)} decodable frames, frame {max(indices)} was requested", "corrupt")
        return np.stack([frames[i] for i in indices])


def _natural_key(name: str) -> list:
    """``frame_2`` before ``frame_10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def list_frames(folder: Path) -> list[Path]:
    """The frame images of a frame folder (.jpg, .jpeg, .png), in natural order of their names."""
    names = [entry.name for entry in os.scandir(folder) if entry.name.lower().endswith(FRAME_SUFFIXES) and entry.is_file()]
    return [Path(folder) / name for name in sorted(names, key=_natural_key)]


class FrameFolderReader:
    """Frame folders: one image per frame; a frame that fails to decode names its file."""

    name = "frames"

    def _frames(self, path: Path) -> list[Path]:
        if not Path(path).is_dir():
            raise VideoError(path, "frame folder not found", "missing")
        frames = list_frames(path)
        if not frames:
            raise VideoError(path, f"frame folder holds no {'/'.join(FRAME_SUFFIXES)} images", "empty")
        return frames

    def num_frames(self, path: Path) -> int:
        return len(self._frames(path))

    def read(self, path: Path, choose: FrameChoice) -> np.ndarray:
        from PIL import Image

        files = self._frames(path)
        indices = choose(len(files))
        images = []
        for index in indices:
            try:
                with Image.open(files[index]) as image:
                    images.append(np.asarray(image.convert("RGB")))
            except Exception as error:
                raise VideoError(path, f"frame {files[index].name} cannot be decoded ({first_line(error)})", "corrupt") from None
            if images[-1].shape != images[0].shape:
                raise VideoError(path, f"frame {files[index].name} is {images[-1].shape[1]}x{images[-1].shape[0]}, "
                                       f"frame {files[indices[0]].name} is {images[0].shape[1]}x{images[0].shape[0]}", "corrupt")
        return np.stack(images)


class FilesAndFolders:
    """Frame folders through FrameFolderReader, frame-store files (``*.frames``) through FrameStoreReader,
    video files through ``engine`` (decord or PyAV)."""

    def __init__(self, engine: VideoReader) -> None:
        from fsar_bench.data.frame_store import FrameStoreReader

        self.engine = engine
        self.folders = FrameFolderReader()
        self.store = FrameStoreReader()
        self.name = engine.name

    def _for(self, path: Path) -> VideoReader:
        if str(path).endswith(".frames"):
            return self.store
        return self.folders if Path(path).is_dir() else self.engine

    def num_frames(self, path: Path) -> int:
        return self._for(path).num_frames(path)

    def read(self, path: Path, choose: FrameChoice) -> np.ndarray:
        return self._for(path).read(path, choose)


def open_reader(backend: str | None = None) -> VideoReader:
    """Frame folders by path; files with decord if available (or ``backend``/``$FSAR_VIDEO_BACKEND`` =
    "decord"|"pyav"), else PyAV."""
    choice = backend or os.environ.get("FSAR_VIDEO_BACKEND", "auto")
    if choice not in ("auto", "decord", "pyav"):
        raise ValueError(f"unknown video backend {choice!r}: use 'decord' or 'pyav'")
    if choice in ("auto", "decord"):
        try:
            return FilesAndFolders(DecordReader())
        except ImportError:
            if choice == "decord":
                raise
    return FilesAndFolders(PyAVReader())


def clip_choice(path: Path, frames: int, rng: np.random.Generator | None = None) -> FrameChoice:
    """Segment centres (``rng`` None: test) or one random frame per segment (training).

    The returned chooser raises VideoError when the video has fewer than ``frames`` frames.
    """

    def choose(total: int) -> list[int]:
        if total < frames:
            raise VideoError(path, f"has {total} frames, fewer than the {frames} the protocol samples", "too-short")
        if rng is None:
            return segment_centre_indices(total, frames)
        return random_segment_indices(total, frames, rng)

    return choose


def read_clip(reader: VideoReader, path: Path, frames: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """uint8 ``[frames, H, W, 3]`` of one video, sampled as ``clip_choice`` says."""
    return reader.read(path, clip_choice(path, frames, rng))


def _check_file(path: Path) -> None:
    """A VideoError unless ``path`` is a non-empty file."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(path, "is a folder, not a video file" if path.is_dir() else "file not found", "missing")
    if path.stat().st_size == 0:
        raise VideoError(path, "is an empty file (0 bytes)", "empty")

