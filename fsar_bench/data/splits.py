"""Few-shot split files: which videos of which classes make each partition (train / val / test).

Three line formats are read (``LINE_FORMATS``):

``class/video``
    ``ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01`` (TRX/ARN/CMN lists; SSv2-OTAM's ``train8/78687`` has a
    class index in place of a name). The video id is the whole line.
``partition-index//path``
    ``test0//videos/fencing/x.avi`` (MoLo/HyRSM lists). The class is ``<partition><index>``, named
    after the path's folder when it has one (``fencing``); the video id is the path.
``id label``
    ``<clip id> <class index>`` (FineGym's Gym99 element lists). The class is ``gym99_<index>``.

Classes and the videos within a class are kept sorted, so that episodes drawn from a partition
depend only on its content, never on file order.

Usage::

    partition = read_partition(Path("splits/test.txt"), name="test")
    partition.classes            # ('class-a', 'class-b', ...)
    partition.videos["class-a"]  # ('class-a/v1', 'class-a/v2', ...)
    partition = read_partition(Path("test_few_shot.txt"), "test", line_format="partition-index//path")
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from fsar_bench.files import file_sha256

LINE_FORMATS = ("class/video", "partition-index//path", "id label")
_PARTITION_INDEX = re.compile(r"(train|val|test)(\d+)")


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

    def without(self, video_ids: set[str]) -> Partition:
        """The same partition (same sha256: it names the split files) minus ``video_ids``."""
        videos = {c: tuple(v for v in self.videos[c] if v not in video_ids) for c in self.classes}
        return Partition(self.name, self.classes, videos, self.sha256, self.sources)


# --------------------------------------------------------------------------- line parsers
def parse_class_video_line(text: str, source: Path, line: int) -> SplitEntry:
    """Parse ``class/video`` (extra path components stay in the video id)."""
    class_name, sep, rest = text.partition("/")
    if not sep or not class_name or not rest or rest.startswith("/"):
        raise SplitError(
            f"{source}:{line}: expected 'class/video', got {text!r}. "
            "Fix or remove this line (each line names one video as class/video)."
        )
    return SplitEntry(class_name=class_name, video_id=text, source=source, line=line)


def parse_partition_path_line(text: str, source: Path, line: int, partition: str | None = None) -> SplitEntry:
    """Parse ``<partition><index>//<path>``: class ``<partition><index>``, named by the path's folder if any."""
    label, sep, path = text.partition("//")
    match = _PARTITION_INDEX.fullmatch(label)
    if not sep or match is None or not path or path.startswith("/"):
        raise SplitError(
            f"{source}:{line}: expected '<partition><class index>//<relative path>' "
            f"(e.g. 'test0//videos/fencing/clip.avi'), got {text!r}"
        )
    if partition is not None and match.group(1) != partition:
        raise SplitError(f"{source}:{line}: line is labelled {label!r}, but this file is the {partition!r} partition")
    folders = path.split("/")[:-1]
    return SplitEntry(class_name=folders[-1] if folders else label, video_id=path, source=source, line=line)


def parse_id_label_line(text: str, source: Path, line: int) -> SplitEntry:
    """Parse ``<clip id> <class index>`` (Gym99 element lists): class ``gym99_<index, 2 digits>``."""
    parts = text.split()
    if len(parts) != 2 or not parts[1].isdigit():
        raise SplitError(f"{source}:{line}: expected '<clip id> <class index>', got {text!r}")
    return SplitEntry(class_name=f"gym99_{int(parts[1]):02d}", video_id=parts[0], source=source, line=line)


def read_split_file(path: Path, line_format: str = "class/video", partition: str | None = None) -> list[SplitEntry]:
    """Read one split file in ``line_format``. Blank lines are ignored; anything malformed raises SplitError."""
    if line_format not in LINE_FORMATS:
        raise ValueError(f"unknown line format {line_format!r}: use one of {', '.join(LINE_FORMATS)}")
    if not path.is_file():
        raise SplitError(f"split file {path} does not exist")
    entries: list[SplitEntry] = []
    labels: dict[str, tuple[str, int]] = {}
    with open(path, encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            text = raw.strip()
            if not text:
                continue
            if line_format == "class/video":
                entries.append(parse_class_video_line(text, path, number))
            elif line_format == "id label":
                entries.append(parse_id_label_line(text, path, number))
            else:
                entry = parse_partition_path_line(text, path, number, partition)
                _check_label_names(labels, text.partition("//")[0], entry, path, number)
                entries.append(entry)
    return entries


def _check_label_names(seen: dict[str, tuple[str, int]], label: str, entry: SplitEntry, path: Path, line: int) -> None:
    """One class index keeps one folder name and one folder name one index (``seen`` holds both ways)."""
    name = entry.class_name
    for key, value, kind in ((f"label:{label}", name, "class"), (f"name:{name}", label, "folder")):
        if key in seen and seen[key][0] != value:
            shown = label if kind == "class" else name
            raise SplitError(f"{path}:{line}: {kind} {shown!r} is {value!r} here but {seen[key][0]!r} at line {seen[key][1]}")
        seen.setdefault(key, (value, line))


# --------------------------------------------------------------------------- partitions
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


def read_partition(path: Path, name: str, line_format: str = "class/video") -> Partition:
    """Read one split file as a partition."""
    return build_partition(name, read_split_file(path, line_format, name), (path,))


def check_disjoint(partitions: dict[str, Partition]) -> None:
    """Few-shot partitions share no class and no video: raise SplitError naming it and both partitions."""
    owner: dict[str, str] = {}
    for partition in partitions.values():
        for class_name in partition.classes:
            if class_name in owner:
                raise SplitError(
                    f"class {class_name!r} is in both {owner[class_name]!r} and {partition.name!r} "
                    f"({', '.join(map(str, partition.sources))}): few-shot partitions must be disjoint"
                )
            owner[class_name] = partition.name
    video_owner: dict[str, str] = {}
    for partition in partitions.values():
        for video in partition.all_video_ids():
            if video in video_owner:
                raise SplitError(f"video {video!r} is in both {video_owner[video]!r} and {partition.name!r} "
                                 f"({', '.join(map(str, partition.sources))})")
            video_owner[video] = partition.name
