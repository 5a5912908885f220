"""The encoding cache: each test video is encoded once per checkpoint, then read back (DESIGN §1).

Two layers. In memory, a byte-bounded LRU serves the videos of one process (e.g. ``--shots 1,5`` on
one untrained model). On disk, one file per encoded video under ``<paths.cache>/encodings/v<FORMAT>/``
serves later runs: repeating, resuming, or the other shot of a shared checkpoint.

An entry's key is the sha256 of everything its content depends on (``EncodingContext``): the cache
format and fsar-bench version, the checkpoint's sha256, the method and model spec, the preprocessing,
the frame count and sampling rule and video reader, the source of the code that encodes (the method's
file, the backbones), plus the video id and the file's size and mtime.
The frame indices are a function of the file (its frame count), the frame count T and the sampling
rule; they are stored in the entry. An entry written by another version or for another checkpoint
has another key, so it is never read.

Safety: entries are written to a temp file in the same folder and renamed into place, so a reader
sees a whole entry or none (two concurrent runs may write the same entry: both are identical). Each
entry carries the sha256 of its payload: a corrupt entry is reported, deleted and recomputed. A full
disk raises ``CacheFullError`` (the temp file is removed; nothing partial is left). The folder is
kept under ``max_bytes`` by deleting the least recently used entries (reads refresh an entry's
mtime); a concurrent run that loses an entry this way simply encodes that video again.

Usage::

    cache = EncodingCache(config.path("cache") / "encodings", max_bytes=20 << 30)
    key = entry_key(context.digest(), video_id, path)
    reps = cache.get(key)                     # None on a miss
    cache.put(key, reps, {"video": video_id, "frame_indices": [...]})
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

import fsar_bench
from fsar_bench.code_digest import BACKBONE_MODULES
from fsar_bench.api import Reps
from fsar_bench.errors import FsarError
from fsar_bench.files import TEMP_SUFFIX, DiskFullError, FileWriteError, json_sha256, write_bytes_atomic

CACHE_FORMAT = 1
MAGIC = b"FSARENC1"
DEFAULT_MAX_BYTES = 20 << 30
DEFAULT_MEMORY_BYTES = 2 << 30
ENTRY_SUFFIX = ".enc"
_STALE_TEMP_SECONDS = 3600
_DTYPES = {str(dtype).removeprefix("torch."): dtype for dtype in
           (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32, torch.uint8, torch.bool)}


class CacheError(FsarError):
    """The encoding cache cannot be written (the message says which file and what to do)."""


class CacheFullError(CacheError):
    """The disk holding the encoding cache is full."""


@dataclass(frozen=True)
class EncodingContext:
    """Everything an encoding depends on except the video itself."""

    checkpoint_sha256: str
    method: str
    model_spec: Mapping[str, Any]
    preprocess: Mapping[str, Any]
    frames: int
    sampling: str
    video_reader: str
    code_sha256: str = ""

    def digest(self) -> str:
        """sha256 of the context, the cache format and the fsar-bench version."""
        return json_sha256({"format": CACHE_FORMAT, "fsar_bench": fsar_bench.__version__, **asdict(self)})


# The package modules whose code an encoding depends on (besides the head's own module).
ENCODING_CODE_MODULES = ("fsar_bench.api", "fsar_bench.model.backbones", "fsar_bench.layers", "fsar_bench.sequence_layers", "fsar_bench.model.network",
                         "fsar_bench.data.video", "fsar_bench.data.frame_store", *BACKBONE_MODULES)


def code_sha256(head_class: type, extra_code: tuple = ()) -> str:
    """sha256 of the source that computes an encoding: the head's module and fsar-bench's model code.

    Editing a method's ``encode`` (or the backbones) therefore never reads encodings made by the old code;
    ``extra_code`` adds the modules of other code (``code_digest.backbone_code``: a backbone plugin's build).
    The modules are hashed as imported objects (``ENCODING_CODE_MODULES``), so moving a file keeps it
    hashed; a module whose source file cannot be found is an error, never silently skipped.

    Usage::

        code_sha256(OTAMHead)  # '3f1c…' (64 hex digits)
    """
    from fsar_bench.code_digest import method_modules, module_source

    digest = hashlib.sha256()
    for module in method_modules(head_class, ENCODING_CODE_MODULES, extra_code):
        digest.update(module.__name__.encode() + b"\0" + module_source(module))
    return digest.hexdigest()


def entry_key(context_digest: str, video_id: str, path: Path) -> str:
    """The key of one video's encoding: the context, the video id and its file's identity (size, mtime)."""
    try:
        stat = os.stat(path)
        identity = [stat.st_size, stat.st_mtime_ns]
    except OSError:
        identity = None  # a missing file fails later, at decoding, with the reader's message
    payload = json.dumps([context_digest, video_id, identity])
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass
class CacheStats:
    """Counts for the log and the run stamps."""

    memory_hits: int = 0
    disk_hits: int = 0
    misses: int = 0
    written: int = 0
    corrupt: int = 0
    evicted: int = 0


# --------------------------------------------------------------------------- entry files
def encode_entry(reps: Reps, meta: Mapping[str, Any]) -> bytes:
    """One video's representation (tensor or dict of tensors, no leading video axis) -> file bytes."""
    items = [("", reps)] if isinstance(reps, torch.Tensor) else sorted(reps.items())
    tensors, chunks = [], []
    for name, tensor in items:
        tensor = tensor.detach().to("cpu").contiguous()
        data = tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        tensors.append([name, str(tensor.dtype).removeprefix("torch."), list(tensor.shape), len(data)])
        chunks.append(data)
    payload = b"".join(chunks)
    header = json.dumps({"format": CACHE_FORMAT, "tensors": tensors, "payload_sha256": hashlib.sha256(payload).hexdigest(),
                         "meta": dict(meta)}, sort_keys=True, default=str).encode()
    return MAGIC + struct.pack("<Q", len(header)) + header + payload


def decode_entry(data: bytes) -> tuple[Reps, dict[str, Any]]:
    """File bytes -> (representation, meta); ValueError when the bytes are not a whole, intact entry."""
    if len(data) < 16 or data[:8] != MAGIC:
        raise ValueError("not an fsar-bench encoding (bad magic)")
    (header_length,) = struct.unpack("<Q", data[8:16])
    if 16 + header_length > len(data):
        raise ValueError("truncated header")
    header = json.loads(data[16:16 + header_length])
    payload = memoryview(data)[16 + header_length:]
    if header.get("format") != CACHE_FORMAT:
        raise ValueError(f"format {header.get('format')} is not {CACHE_FORMAT}")
    if hashlib.sha256(payload).hexdigest() != header["payload_sha256"]:
        raise ValueError("payload checksum mismatch")
    reps: dict[str, torch.Tensor] = {}
    offset = 0
    for name, dtype, shape, length in header["tensors"]:
        raw = bytearray(payload[offset:offset + length])
        offset += length
        flat = torch.frombuffer(raw, dtype=torch.uint8) if length else torch.empty(0, dtype=torch.uint8)
        reps[name] = flat.view(_DTYPES[dtype]).reshape(shape)
    if offset != len(payload):
        raise ValueError("payload length mismatch")
    return (reps[""] if list(reps) == [""] else reps), header["meta"]


def reps_nbytes(reps: Reps) -> int:
    values = [reps] if isinstance(reps, torch.Tensor) else list(reps.values())
    return sum(t.numel() * t.element_size() for t in values)


# --------------------------------------------------------------------------- the cache
@dataclass
class EncodingCache:
    """Memory LRU over an optional on-disk folder (``root`` None: memory only).

    ``warn`` receives one line per corrupt entry (default: ``warnings.warn``).
    """

    root: Path | None
    max_bytes: int = DEFAULT_MAX_BYTES
    memory_bytes: int = DEFAULT_MEMORY_BYTES
    warn: Callable[[str], None] | None = None
    stats: CacheStats = field(default_factory=CacheStats)
    _memory: OrderedDict[str, Reps] = field(default_factory=OrderedDict, repr=False)
    _memory_used: int = 0
    _disk_used: int | None = None

    def path_of(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}{ENTRY_SUFFIX}"

    # -- reading
    def get(self, key: str) -> Reps | None:
        """The cached representation, or None (a corrupt entry is reported, deleted and counted as a miss)."""
        if key in self._memory:
            self._memory.move_to_end(key)
            self.stats.memory_hits += 1
            return self._memory[key]
        reps = self._read_disk(key)
        if reps is None:
            self.stats.misses += 1
            return None
        self.stats.disk_hits += 1
        self._remember(key, reps)
        return reps

    def _read_disk(self, key: str) -> Reps | None:
        if self.root is None:
            return None
        path = self.path_of(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            self._warn(f"encoding cache entry {path} cannot be read ({error.strerror}); recomputing it")
            return None
        try:
            reps, _ = decode_entry(data)
        except (ValueError, KeyError, TypeError, RuntimeError) as error:
            self.stats.corrupt += 1
            self._warn(f"encoding cache entry {path} is corrupt ({error}); deleting and recomputing it")
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # least-recently-used order for eviction
        return reps

    # -- writing
    def put(self, key: str, reps: Reps, meta: Mapping[str, Any] | None = None) -> None:
        """Keep ``reps`` in memory and write it to disk atomically (CacheFullError when the disk is full)."""
        self._remember(key, reps)
        if self.root is None:
            return
        data = encode_entry(reps, meta or {})
        path = self.path_of(key)
        try:  # no fsync: an entry carries its payload's sha256 and a bad one is recomputed
            write_bytes_atomic(path, data, durable=False)
        except DiskFullError:
            raise CacheFullError(
                f"no space left for the encoding cache in {self.root} while writing {path.name}. Free disk space, "
                "run `fsar-bench cache clear`, or point [paths] cache in bench.toml elsewhere; then run the same "
                "command again to resume (no result was lost)."
            ) from None
        except FileWriteError as error:
            raise CacheError(f"{error}, or point [paths] cache in bench.toml elsewhere") from None
        self.stats.written += 1
        if self._disk_used is not None:
            self._disk_used += len(data)

    @contextlib.contextmanager
    def background_writes(self) -> Iterator[Callable[..., None]]:
        """Yield a ``put`` that writes in one background thread (file I/O overlaps encoding); on leaving,
        wait for every write and raise the first error (e.g. CacheFullError). A failed write also stops
        the next ``put``. Nothing else may use the cache until the block ends.

        Usage::

            with cache.background_writes() as put:
                put(key, reps, {"video": video_id})
        """
        pool = ThreadPoolExecutor(1, thread_name_prefix="fsar-cache-write")
        pending: list[Future] = []

        def put(key: str, reps: Reps, meta: Mapping[str, Any] | None = None) -> None:
            for future in [future for future in pending if future.done()]:
                future.result()
                pending.remove(future)
            pending.append(pool.submit(self.put, key, reps, meta))

        try:
            yield put
        finally:
            pool.shutdown(wait=True)
        for future in pending:
            future.result()

    def _remember(self, key: str, reps: Reps) -> None:
        size = reps_nbytes(reps)
        if size > self.memory_bytes or key in self._memory:
            return
        self._memory[key] = reps
        self._memory_used += size
        while self._memory_used > self.memory_bytes:
            _, dropped = self._memory.popitem(last=False)
            self._memory_used -= reps_nbytes(dropped)

    # -- size bound
    def entries(self) -> Iterator[os.DirEntry]:
        """Every entry file on disk (not temp files)."""
        if self.root is None or not self.root.is_dir():
            return
        for sub in os.scandir(self.root):
            if sub.is_dir():
                for entry in os.scandir(sub.path):
                    if entry.name.endswith(ENTRY_SUFFIX) and not entry.name.startswith("."):
                        yield entry

    def enforce_limit(self, keep: set[str] | None = None) -> int:
        """Delete least-recently-used entries (not those in ``keep``) until the folder is within ``max_bytes``;
        on the first call, also the temp files killed runs left (older than an hour: not a live run's)."""
        if self.root is None:
            return 0
        if self._disk_used is None:
            remove_stale_temps(self.root)
        if self._disk_used is None or self._disk_used > self.max_bytes:
            listing = []
            for entry in self.entries():
                with contextlib.suppress(OSError):
                    stat = entry.stat()
                    listing.append((stat.st_mtime_ns, stat.st_size, entry.path, entry.name[: -len(ENTRY_SUFFIX)]))
            self._disk_used = sum(size for _, size, _, _ in listing)
            if self._disk_used > self.max_bytes:
                target = int(0.9 * self.max_bytes)
                for _, size, path, key in sorted(listing):
                    if self._disk_used <= target:
                        break
                    if keep and key in keep:
                        continue
                    with contextlib.suppress(OSError):
                        os.unlink(path)
                        self._disk_used -= size
                        self.stats.evicted += 1
        return self._disk_used

    def _warn(self, message: str) -> None:
        (self.warn or (lambda text: warnings.warn(text, stacklevel=3)))(message)


# --------------------------------------------------------------------------- info / clear
def cache_info(root: Path) -> dict[str, Any]:
    """Entries, bytes, stale temp files and the format of the folder ``root`` (for ``fsar-bench cache info``)."""
    cache = EncodingCache(root)
    sizes = [entry.stat().st_size for entry in cache.entries()]
    temps = list(_temp_files(root))
    return {"folder": str(root), "format": CACHE_FORMAT, "entries": len(sizes), "bytes": sum(sizes),
            "temp_files": len(temps), "other_formats": sorted(p.name for p in root.parent.glob("v*") if p.is_dir() and p != root)
            if root.parent.is_dir() else []}


def _temp_files(root: Path) -> Iterator[Path]:
    if root.is_dir():
        yield from root.glob(f"*/.*{TEMP_SUFFIX}")


def clear_cache(root: Path, all_formats: bool = True) -> tuple[int, int]:
    """Delete every entry (of every format when ``all_formats``); returns (files, bytes). Safe while a run
    is going: that run re-encodes what it no longer finds."""
    folders = [p for p in root.parent.glob("v*") if p.is_dir()] if all_formats and root.parent.is_dir() else [root]
    files = size = 0
    for folder in folders:
        for path in list(folder.glob("*/*")):
            if path.is_file():
                with contextlib.suppress(OSError):
                    length = path.stat().st_size
                    path.unlink()
                    files += 1
                    size += length
        for sub in list(folder.glob("*")):
            with contextlib.suppress(OSError):
                sub.rmdir()
    return files, size


def remove_stale_temps(root: Path, older_than: float = _STALE_TEMP_SECONDS) -> int:
    """Delete temp files left by killed runs (older than ``older_than`` seconds)."""
    removed = 0
    now = time.time()
    for path in _temp_files(root):
        with contextlib.suppress(OSError):
            if now - path.stat().st_mtime > older_than:
                path.unlink()
                removed += 1
    return removed


def cache_folder(cache_root: Path) -> Path:
    """The folder of the current format under ``[paths] cache``."""
    return cache_root / "encodings" / f"v{CACHE_FORMAT}"
