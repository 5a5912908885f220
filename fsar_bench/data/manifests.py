"""Split manifests (``splits/<benchmark>.yaml``): which files make a benchmark, and where they come from.

A manifest names each split file with its sha256, line format and expected class and video counts
per partition, the public source (repository, pinned commit, folder), the video layouts the
benchmark accepts (path templates, DESIGN §4) and the input size. ``fetch_split_files`` downloads
the files from the pinned source (or copies them from a local folder) and verifies the sha256.

Usage::

    manifest = load_manifest("ucf101")
    manifest.partitions["test"].files          # ('testlist03.txt',)
    manifest.source.url("testlist03.txt")      # https://raw.githubusercontent.com/tobyperrett/trx/<commit>/...
    fetch_split_files(manifest, Path("splits/ucf101"))
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fsar_bench.errors import DataError
from fsar_bench.data.splits import LINE_FORMATS
from fsar_bench.files import file_sha256, write_bytes_atomic

MANIFEST_DIR = Path(__file__).resolve().parents[2] / "splits"
"""The project's ``splits/`` folder, next to the package (editable install / source checkout)."""

_TOP_KEYS = {"name", "title", "description", "comparable_to_papers", "line_format", "source", "partitions",
             "annotation_files", "also_published", "videos", "notes", "obtain", "bundled"}


@dataclass(frozen=True)
class Source:
    """A public repository at a pinned commit; ``folder`` holds the split files."""

    repository: str
    commit: str
    folder: str

    def url(self, file: str) -> str:
        return f"https://raw.githubusercontent.com/{self.repository}/{self.commit}/{self.folder}/{file}"

    def describe(self) -> str:
        return f"github.com/{self.repository} at {self.commit[:12]}, {self.folder}/"


@dataclass(frozen=True)
class PartitionSpec:
    """One partition: its files, expected counts (None: not fixed) and, for FineGym, its class indices."""

    name: str
    files: tuple[str, ...]
    classes: int | None = None
    videos: int | None = None
    class_indices: tuple[int, ...] | None = None


@dataclass(frozen=True)
class SplitManifest:
    """One benchmark's manifest. ``files`` maps every split file name to its sha256 (None: not pinned)."""

    name: str
    title: str
    description: str
    line_format: str
    source: Source | None
    files: dict[str, str | None]
    partitions: dict[str, PartitionSpec]
    layouts: dict[str, str]
    default_layout: str
    size: int
    comparable_to_papers: bool
    path: Path
    notes: str = ""
    obtain: str = ""
    also_published: dict[str, Any] = field(default_factory=dict)
    bundled: Path | None = None  # the official split files shipped with fsar-bench (None: not shipped)


def manifest_names(folder: Path = MANIFEST_DIR) -> list[str]:
    """Benchmarks with a manifest in ``folder`` (sorted)."""
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def _need(table: dict, key: str, where: str, path: Path) -> Any:
    if key not in table:
        raise DataError(f"{path}: {where} lacks the key {key!r}")
    return table[key]


def load_manifest(name: str, folder: Path = MANIFEST_DIR) -> SplitManifest:
    """Read and validate ``<folder>/<name>.yaml``; a broken manifest is a DataError naming file and key."""
    import yaml

    path = folder / f"{name}.yaml"
    if not path.is_file():
        raise DataError(f"split manifest {path} does not exist (known: {', '.join(manifest_names(folder)) or 'none'})")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise DataError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(data, dict) or data.get("name") != name:
        raise DataError(f"{path}: expected a mapping with name: {name}")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise DataError(f"{path}: unknown keys {sorted(unknown)} (known: {sorted(_TOP_KEYS)})")
    line_format = _need(data, "line_format", "the manifest", path)
    if line_format not in LINE_FORMATS:
        raise DataError(f"{path}: line_format {line_format!r} is not one of {', '.join(LINE_FORMATS)}")
    source = data.get("source")
    files: dict[str, str | None] = {}
    for entry in data.get("annotation_files") or []:
        files[_need(entry, "file", "an annotation file", path)] = entry.get("sha256")
    partitions = {}
    for part, spec in _need(data, "partitions", "the manifest", path).items():
        part_files = tuple([spec["file"]] if "file" in spec else files)
        if "file" in spec:
            files[spec["file"]] = spec.get("sha256")
        indices = spec.get("class_indices")
        partitions[part] = PartitionSpec(part, part_files, spec.get("classes"), spec.get("videos"),
                                         tuple(indices) if indices is not None else None)
    videos = _need(data, "videos", "the manifest", path)
    layouts = dict(_need(videos, "layouts", "videos", path))
    default_layout = _need(videos, "default_layout", "videos", path)
    if default_layout not in layouts:
        raise DataError(f"{path}: default_layout {default_layout!r} is not among the layouts {sorted(layouts)}")
    return SplitManifest(
        name=name, title=data.get("title", name), description=data.get("description", ""), line_format=line_format,
        source=Source(**source) if source else None, files=files, partitions=partitions, layouts=layouts,
        default_layout=default_layout, size=int(videos.get("size", 224)),
        comparable_to_papers=bool(data.get("comparable_to_papers", True)), path=path,
        notes=data.get("notes", ""), obtain=data.get("obtain", ""), also_published=data.get("also_published") or {},
        bundled=folder / data["bundled"] if data.get("bundled") else None,
    )


def manual_instructions(manifest: SplitManifest, target: Path) -> str:
    """Where to get the split files by hand and where to put them."""
    names = ", ".join(manifest.files)
    if manifest.source is None:
        where = manifest.obtain or f"get them as {manifest.path} says"
    else:
        where = "download " + ", ".join(manifest.source.url(f) for f in manifest.files)
    return (f"To place them by hand: {where}; put {names} in {target} (or point --splits-dir or "
            f"[datasets.{manifest.name}] splits_dir in bench.toml at a folder holding them).")


Opener = Callable[[str], bytes]


def _download(url: str, timeout: float = 30.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (fixed https URLs)
        return response.read()


def fetch_split_files(manifest: SplitManifest, target: Path, from_dir: Path | None = None,
                      opener: Opener | None = None) -> dict[str, str]:
    """Put every split file of ``manifest`` into ``target``, verified. Returns {file: what was done}.

    Files already present with the right sha256 are kept. ``from_dir`` copies from a local folder
    instead of downloading. Offline, or on a sha256 mismatch, raises DataError saying where to
    place the files by hand; nothing unverified is written.
    """
    opener = opener or _download
    if manifest.source is None and from_dir is None:
        raise DataError(f"{manifest.name} has no public source to fetch from. " + manual_instructions(manifest, target))
    done: dict[str, str] = {}
    for file, expected in manifest.files.items():
        destination = target / file
        if destination.is_file() and expected and file_sha256(destination) == expected:
            done[file] = "present, sha256 verified"
            continue
        if from_dir is not None:
            origin = from_dir / file
            if not origin.is_file():
                raise DataError(f"{origin} does not exist. " + manual_instructions(manifest, target))
            data, where = origin.read_bytes(), str(origin)
        else:
            assert manifest.source is not None
            where = manifest.source.url(file)
            try:
                data = opener(where)
            except (urllib.error.URLError, OSError, TimeoutError) as error:
                reason = getattr(error, "reason", error)
                raise DataError(f"cannot download {where} ({reason}): offline or the source moved. "
                                + manual_instructions(manifest, target)) from None
        actual = hashlib.sha256(data).hexdigest()
        if expected and actual != expected:
            raise DataError(f"{where} has sha256 {actual}, the manifest {manifest.path} expects {expected}: "
                            "not the published file, nothing written. " + manual_instructions(manifest, target))
        write_bytes_atomic(destination, data)
        done[file] = f"{'copied' if from_dir else 'downloaded'}, sha256 " + ("verified" if expected else "not pinned")
    return done

