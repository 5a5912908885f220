"""Errors the CLI turns into clear messages and exit codes (DESIGN §7).

Exit codes: 0 ok, 1 failure, 2 usage or unknown name, 3 missing or corrupt data, 4 protocol mismatch.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class FsarError(Exception):
    """Base of fsar-bench's user-facing errors; ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class UsageError(FsarError):
    """Bad option, bad config, impossible protocol."""

    exit_code = 2


class UnknownNameError(UsageError):
    """An unknown method, dataset or key; the message carries "did you mean"."""

    def __init__(self, kind: str, name: str, known: Iterable[str], hint: str = "") -> None:
        known = sorted(known)
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        message = f"unknown {kind} {name!r}."
        if close:
            message += f" Did you mean {' or '.join(repr(c) for c in close)}?"
        message += f" Known: {', '.join(known) if known else '(none)'}."
        if hint:
            message += f" {hint}"
        super().__init__(message)
        self.name = name


class DataError(FsarError):
    """Missing or corrupt data: dataset roots, split files, videos."""

    exit_code = 3


class ProtocolMismatchError(FsarError):
    """A checkpoint, cache or stored run does not belong to this protocol or method."""

    exit_code = 4


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first line of an error's message (at most ``limit`` characters), or its type name when it has none:
    the part of a library's exception worth quoting inside our own message."""
    lines = str(error).strip().splitlines()
    return lines[0][:limit] if lines else type(error).__name__
