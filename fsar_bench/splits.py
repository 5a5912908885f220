"""Few-shot split files: which videos of which classes make each partition (train / val / test).

The official format has one video per line, ``class/video`` (e.g. ``ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01``).
Classes and the videos within a class are kept sorted, so that episodes drawn from a partition
depend only on its content, never on file order.

Usage::

    partition = read_partition(Path("splits/test.txt"), name="test")
    partition.classes          # ('class-a', 'class-b', ...)
    partition.videos["class-a"]  # ('class-a/v1', 'class-a/v2', ...)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path


class SplitError(ValueError):
    """A split file is missing or malformed; the message names the file and line."""


@dataclass(frozen=True)
class SplitEntry:
    """One line of a split file: ``video_id`` is unique within the benchmark."""

    class_name: str
    video_id: str
    source: Path
    line: int


@dataclass(frozen=True)
class Partition:
    """One partition of a split: sorted class names, and per class its sorted video ids."""

    name: str
    classes: tuple[str, ...]
    videos: dict[str, tuple[str, ...]]
    sha256: str
    sources: tuple[Path, ...] = ()

    @property
    def num_videos(self) -> int:
        return sum(len(ids) for ids in self.videos.values())

    def all_video_ids(self) -> tuple[str, ...]:
        """Every video id, class by class in sorted order."""
        return tuple(video for name in self.classes for video in self.videos[name])

    def smallest_class(self) -> tuple[str, int]:
        """(class name, number of videos) of the class with the fewest videos."""
        name = min(self.classes, key=lambda c: (len(self.videos[c]), c))
        return name, len(self.videos[name])


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def parse_class_video_line(text: str, source: Path, line: int) -> SplitEntry:
    """Parse ``class/video`` (extra path components stay in the video id)."""
    class_name, sep, rest = text.partition("/")
    if not sep or not class_name or not rest:
        raise SplitError(
            f"{source}:{line}: expected 'class/video', got {text!r}. "
            "Fix or remove this line (each line names one video as class/video)."
        )
    return SplitEntry(class_name=class_name, video_id=text, source=source, line=line)


def read_split_file(path: Path) -> list[SplitEntry]:
    """Read a ``class/video`` split file. Blank lines are ignored; anything malformed raises SplitError."""
    if not path.is_file():
        raise SplitError(f"split file {path} does not exist")
    entries: list[SplitEntry] = []
    with open(path, encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            text = raw.strip()
            if text:
                entries.append(parse_class_video_line(text, path, number))
    return entries


def build_partition(name: str, entries: list[SplitEntry], sources: tuple[Path, ...]) -> Partition:
    """Group entries by class (sorted), refusing duplicate video ids (naming both lines)."""
    seen: dict[str, SplitEntry] = {}
    by_class: dict[str, list[str]] = {}
    for entry in entries:
        if entry.video_id in seen:
            first = seen[entry.video_id]
            raise SplitError(
                f"{entry.source}:{entry.line}: duplicate video {entry.video_id!r} "
                f"(first at {first.source}:{first.line})"
            )
        seen[entry.video_id] = entry
        by_class.setdefault(entry.class_name, []).append(entry.video_id)
    if not by_class:
        raise SplitError(f"partition {name!r} is empty ({', '.join(map(str, sources))})")
    digest = hashlib.sha256()
    for source in sources:
        digest.update(file_sha256(source).encode())
    classes = tuple(sorted(by_class))
    return Partition(
        name=name,
        classes=classes,
        videos={c: tuple(sorted(by_class[c])) for c in classes},
        sha256=digest.hexdigest(),
        sources=sources,
    )


def read_partition(path: Path, name: str) -> Partition:
    """Read one ``class/video`` split file as a partition."""
    return build_partition(name, read_split_file(path), (path,))


def check_disjoint(partitions: dict[str, Partition]) -> None:
    """Few-shot partitions must not share classes: raise SplitError naming the class and both partitions."""
    owner: dict[str, str] = {}
    for partition in partitions.values():
        for class_name in partition.classes:
            if class_name in owner:
                raise SplitError(
                    f"class {class_name!r} is in both {owner[class_name]!r} and {partition.name!r} "
                    f"({', '.join(map(str, partition.sources))}): few-shot partitions must be disjoint"
                )
            owner[class_name] = partition.name
