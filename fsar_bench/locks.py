"""One process at a time per run folder and per checkpoint: OS file locks that no crash can leave stale.

Two commands that would write the same run (``results/runs/<id>/``) or train the same checkpoint key
(``results/checkpoints/<key>/``) take turns: the second prints who holds the lock and **waits**, then
finds the work done (a finished run is reported "already complete"; a trained checkpoint is loaded, not
trained again), so nothing is computed twice, mixed or counted twice.

The locks are ``fcntl`` locks (the ``filelock`` package, never its soft-lock fallback): the kernel releases
them when the holding process exits in any way, ``kill -9`` included, so there are no stale locks to clean
up. On NFS, Linux clients implement them with NFS byte-range locks (NLM for NFSv3, in-protocol for NFSv4),
so they hold across machines sharing a results folder when the server supports locking; a crashed *client*
keeps its locks until the server notices (NFSv4: the lease, ~90 s). Mounts with ``nolock`` or
``local_lock=all`` lock per machine only: there, do not run the same run from two machines at once.
A folder whose file system refuses locks at all is an error (exit 1) rather than running unprotected.

Usage::

    with exclusive(folder / "run.lock", "scoring this run", log=print):
        ...  # open, append, finish
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from filelock import Timeout, UnixFileLock

from fsar_bench.errors import FsarError
from fsar_bench.files import write_error

HOLDER_SUFFIX = ".holder.json"


class LockError(FsarError):
    """A lock file could not be created or locked (permissions, a file system without locks)."""


def describe_holder(lock_path: Path) -> str:
    """"pid N on HOST (since TIME): COMMAND" from the holder note, or "unknown" when it cannot be read."""
    try:
        note = json.loads(lock_path.with_name(lock_path.name + HOLDER_SUFFIX).read_text(encoding="utf-8"))
        return f"pid {note['pid']} on {note['host']} (since {note['since']}): {note['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "pid unknown"


def _write_holder(lock_path: Path) -> None:
    note = {"pid": os.getpid(), "host": platform.node(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:200]}
    with contextlib.suppress(OSError):  # the note is for messages only; the lock is what protects
        lock_path.with_name(lock_path.name + HOLDER_SUFFIX).write_text(json.dumps(note), encoding="utf-8")


def _os_lock(lock_path: Path) -> UnixFileLock:
    """An fcntl lock whose file is never deleted (deleting it would let two processes lock two inodes)."""
    options = {"thread_local": False}
    if "preserve_lock_file" in inspect.signature(UnixFileLock.__init__).parameters:  # filelock >= 4
        options["preserve_lock_file"] = True
    return UnixFileLock(str(lock_path), **options)


@contextlib.contextmanager
def exclusive(lock_path: Path, activity: str, log: Callable[[str], None] = print, poll_seconds: float = 0.5) -> Iterator[None]:
    """Hold the OS lock ``lock_path`` for the block; when another process holds it, say so through ``log``
    ("another process is ACTIVITY: pid N ...; waiting") and wait until it is released."""
    lock_path = Path(lock_path)
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise write_error(lock_path.parent, error) from None
    lock = _os_lock(lock_path)
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log(f"another process is {activity}: {describe_holder(lock_path)}; waiting for it to finish "
                f"(lock {lock_path})")
            lock.acquire(poll_interval=poll_seconds)
    except OSError as error:
        raise LockError(f"cannot lock {lock_path} ({error.strerror or error}): the folder must be writable and its "
                        "file system must support file locks (see README, 'Concurrent runs')") from None
    try:
        _write_holder(lock_path)
        yield
    finally:
        with contextlib.suppress(OSError):
            lock_path.with_name(lock_path.name + HOLDER_SUFFIX).unlink()
        lock.release()
