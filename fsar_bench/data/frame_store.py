"""The frame store: every video of a benchmark decoded once into one compact, checksummed file per video.

Training samples a few frames of thousands of videos per minute; decoding H.264/VP9 for that costs two
orders of magnitude more than a GPU step. ``fsar-bench data prepare D`` (``fsar_bench/data/prepare.py``)
writes ``<cache>/frames/<D>/``; training and evaluation then read frames from it through the same
``VideoReader`` interface as videos (``open_reader`` sends ``*.frames`` paths here).

One video = one ``<video id>.frames`` file::

    b"FSARFRM1" | uint32 little-endian header length | header (JSON) | frame 0 | frame 1 | ...

The header holds the frame count, height, width, codec, each frame's offset and length, and a CRC-32
per frame (checked on every read: a damaged file is a DataError naming it, never wrong pixels). The
store's ``store.json`` (written last: its presence means complete) holds the format and one sha256 per
file (``fsar-bench data prepare D --verify`` re-checks them all).

Formats (``StoreFormat``): ``jpeg`` (default: quality 90, 4:2:0 like the videos' own chroma, decoded by
simplejpeg with the accurate integer IDCT) or ``raw`` (lossless uint8, ~10x larger). Frames are kept at
the video's resolution unless the short side exceeds ``max_short_side`` (256), then resized to it.
Every frame is kept (the training sampler draws one random frame per segment of the whole video, so a
coarser temporal grid would change the clips). A store that changes pixels (JPEG, or a resize) is part
of the protocol: ``StoreFormat.tag`` goes into the protocol stamp, the checkpoint key and the encodings.

Usage::

    store = FrameStore.open(config.path("cache") / "frames" / "ucf101")   # None when absent or incomplete
    path = store.path("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01")            # read with open_reader()
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fsar_bench.data.video import FrameChoice, VideoError

MAGIC = b"FSARFRM1"
SUFFIX = ".frames"
STORE_FILE = "store.json"
STORE_FORMAT_VERSION = 1
CODECS = ("jpeg", "raw")


@dataclass(frozen=True)
class StoreFormat:
    """How frames are stored. ``tag`` names it in protocol stamps (empty: pixels equal the video's)."""

    codec: str = "jpeg"
    quality: int = 90
    subsampling: str = "420"
    max_short_side: int = 256

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise ValueError(f"unknown frame-store codec {self.codec!r}: use {' or '.join(CODECS)}")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"JPEG quality must be 1-100, got {self.quality}")
        if self.subsampling not in ("420", "422", "444"):
            raise ValueError(f"chroma subsampling must be 420, 422 or 444, got {self.subsampling!r}")

    @property
    def name(self) -> str:
        codec = f"jpeg-q{self.quality}-{self.subsampling}" if self.codec == "jpeg" else "raw"
        return f"{codec}-s{self.max_short_side}"

    def tag(self, resized_videos: int) -> str:
        """"frame-store:<name>" when stored pixels can differ from the video's (JPEG, or any resize), else ""."""
        return f"frame-store:{self.name}" if self.codec != "raw" or resized_videos else ""


# --------------------------------------------------------------------------- codecs
def _simplejpeg():
    try:
        import simplejpeg
    except ImportError:  # a declared dependency; only a broken install gets here
        raise VideoError("simplejpeg", "the frame store needs simplejpeg: pip install 'simplejpeg>=1.7'", "unreadable") from None
    return simplejpeg


def decoder_name() -> str:
    """The JPEG decoder and its version (stamped into store.json)."""
    return f"simplejpeg {_simplejpeg().__version__}"


def encode_frame(frame: np.ndarray, fmt: StoreFormat) -> bytes:
    """uint8 [H, W, 3] -> stored bytes."""
    if fmt.codec == "raw":
        return np.ascontiguousarray(frame, dtype=np.uint8).tobytes()
    return _simplejpeg().encode_jpeg(np.ascontiguousarray(frame), quality=fmt.quality, colorspace="RGB",
                                     colorsubsampling=fmt.subsampling)


def decode_frame(data: bytes, codec: str, height: int, width: int) -> np.ndarray:
    """Stored bytes -> uint8 [H, W, 3] (JPEG: accurate integer IDCT, plain upsampling: same as libjpeg's default)."""
    if codec == "raw":
        return np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3)
    return _simplejpeg().decode_jpeg(data, colorspace="RGB", fastdct=False, fastupsample=False)


def fit_short_side(frames: np.ndarray, max_short_side: int) -> tuple[np.ndarray, bool]:
    """uint8 [T, H, W, 3] with the short side brought down to ``max_short_side`` (bilinear, antialiased), and
    whether it was resized. Frames already that small are returned as they are."""
    height, width = frames.shape[1:3]
    if min(height, width) <= max_short_side:
        return frames, False
    import torch
    import torch.nn.functional as F

    scale = max_short_side / min(height, width)
    size = (max(max_short_side, round(height * scale)), max(max_short_side, round(width * scale)))
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy(), True


# --------------------------------------------------------------------------- one video's file
def pack_video(frames: np.ndarray, fmt: StoreFormat) -> bytes:
    """uint8 [T, H, W, 3] -> the bytes of one ``.frames`` file."""
    parts = [encode_frame(frame, fmt) for frame in frames]
    offsets = np.cumsum([0] + [len(p) for p in parts[:-1]]).tolist()
    header = json.dumps({"frames": len(parts), "height": int(frames.shape[1]), "width": int(frames.shape[2]),
                         "codec": fmt.codec, "offsets": offsets, "lengths": [len(p) for p in parts],
                         "crc32": [zlib.crc32(p) for p in parts]}, separators=(",", ":")).encode()
    return b"".join([MAGIC, struct.pack("<I", len(header)), header, *parts])


def read_header(path: Path, stream) -> tuple[dict, int]:
    """(header, offset of frame 0) of an open ``.frames`` file; VideoError when it is not one."""
    start = stream.read(12)
    if len(start) < 12 or start[:8] != MAGIC:
        raise VideoError(path, "is not a frame-store file (bad magic); run `fsar-bench data prepare` again", "corrupt")
    (length,) = struct.unpack("<I", start[8:])
    try:
        header = json.loads(stream.read(length))
    except ValueError:
        raise VideoError(path, "has a damaged header; run `fsar-bench data prepare` again", "corrupt") from None
    return header, 12 + length


class FrameStoreReader:
    """``VideoReader`` over ``.frames`` files: reads and decodes only the chosen frames, CRC-checked."""

    name = "frame-store"

    def num_frames(self, path: Path) -> int:
        with _open(path) as stream:
            return read_header(path, stream)[0]["frames"]

    def read(self, path: Path, choose: FrameChoice) -> np.ndarray:
        with _open(path) as stream:
            header, base = read_header(path, stream)
            indices = choose(header["frames"])
            frames = []
            for index in indices:
                if not 0 <= index < header["frames"]:
                    raise VideoError(path, f"has {header['frames']} frames, frame {index} was requested", "corrupt")
                stream.seek(base + header["offsets"][index])
                data = stream.read(header["lengths"][index])
                if zlib.crc32(data) != header["crc32"][index]:
                    raise VideoError(path, f"frame {index} fails its CRC-32 check (damaged file); run "
                                           "`fsar-bench data prepare --verify` and prepare again", "corrupt")
                frames.append(decode_frame(data, header["codec"], header["height"], header["width"]))
        return np.stack(frames) if frames else np.zeros((0, header["height"], header["width"], 3), np.uint8)


def _open(path: Path):
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise VideoError(path, "frame-store file not found; run `fsar-bench data prepare` for this benchmark", "missing") from None
    except OSError as error:
        raise VideoError(path, f"cannot be opened ({error.strerror})") from None


# --------------------------------------------------------------------------- a whole store
def entry_path(root: Path, video_id: str) -> Path:
    """Where a video's frames live in the store rooted at ``root`` (ids may contain '/' and spaces)."""
    if video_id.startswith("/") or ".." in Path(video_id).parts:
        raise ValueError(f"video id {video_id!r} cannot name a file inside the frame store")
    return root / "videos" / (video_id + SUFFIX)


@dataclass(frozen=True)
class FrameStore:
    """A complete store (``store.json`` present). ``tag``: the protocol stamp ("" when pixels are the video's)."""

    root: Path
    benchmark: str
    format: StoreFormat
    videos: int
    resized_videos: int
    total_bytes: int
    data_version: str
    decoder: str

    @property
    def tag(self) -> str:
        return self.format.tag(self.resized_videos)

    def path(self, video_id: str) -> Path:
        return entry_path(self.root, video_id)

    @classmethod
    def open(cls, root: Path) -> FrameStore | None:
        """The store at ``root`` when complete, else None."""
        manifest = root / STORE_FILE
        if not manifest.is_file():
            return None
        values = json.loads(manifest.read_text(encoding="utf-8"))
        if values.get("format_version") != STORE_FORMAT_VERSION:
            return None
        return cls(root=root, benchmark=values["benchmark"], format=StoreFormat(**values["format"]),
                   videos=values["videos"], resized_videos=values["resized_videos"], total_bytes=values["total_bytes"],
                   data_version=values.get("data_version", ""), decoder=values["decoder"])

    def manifest_values(self, checksums: dict[str, str]) -> dict:
        return {"format_version": STORE_FORMAT_VERSION, "benchmark": self.benchmark, "format": asdict(self.format),
                "videos": self.videos, "resized_videos": self.resized_videos, "total_bytes": self.total_bytes,
                "data_version": self.data_version, "decoder": self.decoder, "tag": self.tag, "sha256": checksums}


def store_root(cache_dir: Path, benchmark: str) -> Path:
    """``<cache>/frames/<benchmark>``."""
    return cache_dir / "frames" / benchmark
