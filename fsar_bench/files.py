"""Writing and hashing files: the one place that does it (atomic, durable, shareable, disk-full safe).

Every result, checkpoint, manifest and report file goes through :func:`atomic_write`: the bytes go to a
temp file beside the target, are fsync'd, get the mode a plain ``open()`` would give (0666 minus the
umask, so 0644 with the usual umask 022: a colleague can read a shared results folder), and are renamed
over the target. On any error, a full disk included, the temp file is removed and the target is left as
it was; a full disk raises :class:`DiskFullError`, whose one-line message names the file and says that the
command resumes once space is freed.

Usage::

    from fsar_bench.files import write_json_atomic, write_bytes_atomic, append_durable, file_sha256, json_sha256

    write_json_atomic(run_folder / "summary.json", {"accuracy": 84.1})
    write_bytes_atomic(folder / "best.pt", data)
    append_durable(run_folder / "records.jsonl", "".join(lines))   # whole lines or nothing
    file_sha256(folder / "best.pt"); json_sha256({"a": 1})          # hex digests
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from fsar_bench.errors import FsarError

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
TEMP_SUFFIX = ".tmp"


class FileWriteError(FsarError):
    """A file could not be written (permissions, missing folder...); the message names it."""


class DiskFullError(FileWriteError):
    """No space left while writing a file; nothing partial was left behind."""


def write_error(path: Path, error: OSError) -> FileWriteError:
    """The FsarError for an OSError met while writing ``path`` (disk full or other)."""
    if error.errno in DISK_FULL_ERRNOS:
        return DiskFullError(f"no space left on the device while writing {path} ({error.strerror}); nothing partial "
                             "was kept: free some space and run the same command again, it resumes where it stopped")
    return FileWriteError(f"cannot write {path} ({error.strerror or error}); check the folder's permissions and space")


def current_umask() -> int:
    """The process umask, read without changing it where the system allows (Linux /proc)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)  # no /proc: read by setting (briefly) and restoring
    os.umask(mask)
    return mask


def shared_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: 0666 minus the umask (0644 under umask 022)."""
    return 0o666 & ~current_umask()


def shared_folder_mode() -> int:
    """The mode ``mkdir`` gives a new folder: 0777 minus the umask (0755 under umask 022)."""
    return 0o777 & ~current_umask()


def write_bytes_atomic(path: Path, data: bytes, durable: bool = True) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync it (unless not ``durable``: for caches whose
    entries carry their own checksum), give it the shared mode and rename it over ``path``. Any error
    removes the temp file (``path`` is untouched); an OSError becomes FileWriteError / DiskFullError."""
    path = Path(path)
    temp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
        try:
            _write_all(fd, data)
            if durable:
                os.fsync(fd)
            os.fchmod(fd, shared_file_mode())
        finally:
            os.close(fd)
        os.replace(temp, path)
        temp = None
        if durable:
            _fsync_folder(path.parent)
    except OSError as error:
        raise write_error(path, error) from None
    finally:
        if temp is not None:
            with contextlib.suppress(OSError):
                os.unlink(temp)


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any], durable: bool = True) -> None:
    """Call ``write(stream)`` on an in-memory stream, then write its bytes atomically (``write_bytes_atomic``)."""
    buffer = io.BytesIO()
    write(buffer)
    write_bytes_atomic(path, buffer.getvalue(), durable)


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def json_text(payload: Any, indent: int | None = 1) -> str:
    """The project's JSON file text: sorted keys, non-JSON values as ``str``, one trailing newline."""
    return json.dumps(payload, indent=indent, sort_keys=True, default=str) + "\n"


def write_json_atomic(path: Path, payload: Any, indent: int | None = 1) -> None:
    write_text_atomic(path, json_text(payload, indent))


def append_durable(path: Path, text: str) -> None:
    """Append ``text`` (whole lines) and fsync. On a full disk the file is cut back to its previous
    length, so a reader never sees half of this append, and DiskFullError is raised."""
    path = Path(path)
    data = text.encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as error:
        raise write_error(path, error) from None
    try:
        before = os.fstat(fd).st_size
        try:
            _write_all(fd, data)
            os.fsync(fd)
        except OSError as error:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, before)
                os.fsync(fd)
            raise write_error(path, error) from None
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    """Every byte this module writes goes through here (one place for fault-injection tests to fill the disk)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def make_shared_temp_folder(parent: Path, prefix: str) -> Path:
    """A new temp folder under ``parent`` (for building a folder atomically), with the umask's usual mode
    rather than mkdtemp's 0700, so the folder it becomes is readable by others as any new folder."""
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(folder, shared_folder_mode())
    return folder


def _fsync_folder(folder: Path) -> None:
    """Make a rename durable (best effort: some file systems refuse to open folders)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def json_sha256(payload: Any) -> str:
    """Hex sha256 of ``payload`` as canonical JSON (sorted keys, compact separators as json.dumps' default,
    non-JSON values as ``str``): the digest every fingerprint and key in the project uses."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
