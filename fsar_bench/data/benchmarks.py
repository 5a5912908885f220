"""Benchmarks: where a dataset's split files and videos are, and its input size (DESIGN §4).

The real benchmarks are defined by their manifests (``splits/<name>.yaml``); their videos are
found under ``[datasets.NAME] root`` with a *layout*: a path template such as
``{class}/{name}.avi`` (fields: ``id``, ``path``, ``path_stem``, ``class``, ``class_underscore``,
``class_spaces``, ``name``). A template ending in ``/`` names a frame folder. ``synthetic`` is built in.

Usage::

    benchmark = open_benchmark("ucf101", config, DataOptions(splits_dir=Path("/data/splits")))
    test = benchmark.partition("test")              # the split as written (fsar_bench.data.splits.Partition)
    test = benchmark.present_partition("test")      # refuses missing videos (or drops them: allow_missing)
    path = benchmark.video_path(test.all_video_ids()[0])
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fsar_bench.config import Config
from fsar_bench.errors import DataError, ProtocolMismatchError, UnknownNameError, UsageError
from fsar_bench.data.manifests import SplitManifest, load_manifest, manifest_names, manual_instructions
from fsar_bench.data.splits import (Partition, SplitError, SplitEntry, build_partition, check_disjoint, read_partition,
                                    read_split_file)
from fsar_bench.files import file_sha256
from fsar_bench.data.frame_store import FrameStore, store_root
from fsar_bench.data.synthetic import SyntheticSpec, benchmark_data_version, ensure_synthetic

PARTITIONS = ("train", "val", "test")
VIDEO_SUFFIXES = (".mp4", ".avi", ".webm", ".mkv")
MISSING_SHOWN = 20  # missing ids printed in an error message (data check lists every one)


@dataclass(frozen=True)
class DataOptions:
    """Command-line data settings; None falls back to ``[datasets.NAME]`` in bench.toml, then the manifest."""

    root: Path | None = None
    layout: str | None = None
    splits_dir: Path | None = None
    allow_missing: bool = False
    trust_splits: bool = False
    frame_store: bool = True  # read frames from a prepared frame store when there is one (data check/prepare: False)


@dataclass
class Benchmark:
    """A few-shot benchmark on disk. ``resolve`` maps a video id to its file (or frame folder)."""

    name: str
    description: str
    root: Path | None
    split_files: dict[str, tuple[Path, ...]]
    size: int
    resolve: Callable[[str], Path]
    comparable_to_papers: bool = True
    line_format: str = "class/video"
    manifest: SplitManifest | None = None
    layout: str = ""
    options: DataOptions = DataOptions()
    missing: dict[str, tuple[str, ...]] = field(default_factory=dict)
    data_version: str = ""  # a generated dataset's content version (part of its protocols and checkpoint keys)
    split_checks: list[dict] = field(default_factory=list)
    frames_from: str = ""  # "frame-store:<format>" when read from a store whose pixels differ from the videos'
    frame_store: FrameStore | None = None
    _partitions: dict[str, Partition] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ split files
    def partition(self, name: str) -> Partition:
        """Read (once) and return a partition; all partitions are checked disjoint on first use."""
        if not self._partitions:
            try:
                loaded = self._read_partitions()
                check_disjoint(loaded)
            except SplitError as error:
                raise DataError(str(error)) from None
            self._check_counts(loaded)
            self._partitions = loaded
        if name not in self._partitions:
            raise DataError(f"{self.name} has no partition {name!r} (has {', '.join(self._partitions)})")
        return self._partitions[name]

    def _read_partitions(self) -> dict[str, Partition]:
        self._verify_split_files()
        if self.manifest is None or self.manifest.line_format != "id label":
            return {part: read_partition(files[0], part, self.line_format) for part, files in self.split_files.items()}
        files = next(iter(self.split_files.values()))  # FineGym: every partition from the pooled lists
        entries: list[SplitEntry] = [entry for path in files for entry in read_split_file(path, "id label")]
        owner = {f"gym99_{i:02d}": part for part, spec in self.manifest.partitions.items() for i in spec.class_indices or ()}
        for entry in entries:
            if entry.class_name not in owner:
                raise SplitError(f"{entry.source}:{entry.line}: class index {entry.class_name[6:]} is not a Gym99 class (0-98)")
        return {part: build_partition(part, [e for e in entries if owner[e.class_name] == part], files) for part in self.split_files}

    def _verify_split_files(self) -> None:
        """Every split file exists and matches the manifest's sha256 (unless trusted; recorded either way)."""
        if self.split_checks:
            return
        checks = []
        for path in dict.fromkeys(p for files in self.split_files.values() for p in files):
            if not path.is_file():
                fetch = f"Run `fsar-bench splits fetch {self.name}`. " if self.manifest and self.manifest.source else ""
                hint = manual_instructions(self.manifest, path.parent) if self.manifest else ""
                raise DataError(f"split file {path} of {self.name} does not exist. {fetch}{hint}")
            actual = file_sha256(path)
            expected = self.manifest.files.get(path.name) if self.manifest else None
            status = "not pinned" if expected is None else "verified" if actual == expected else "MISMATCH (trusted)"
            if status.startswith("MISMATCH") and not self.options.trust_splits:
                raise ProtocolMismatchError(
                    f"split file {path} has sha256 {actual}, but the manifest {self.manifest.path} expects {expected}: "
                    f"it is not the published {self.name} split. Fetch the original with `fsar-bench splits fetch "
                    f"{self.name}`, or pass --trust-splits to run on it anyway (recorded in the run stamps)."
                )
            checks.append({"file": str(path), "sha256": actual, "expected_sha256": expected, "status": status})
        self.split_checks = checks

    def _check_counts(self, loaded: dict[str, Partition]) -> None:
        """Verified split files must give the manifest's class and video counts."""
        if self.manifest is None or any(c["status"].startswith("MISMATCH") for c in self.split_checks):
            return
        for part, spec in self.manifest.partitions.items():
            got = loaded[part]
            for what, expected, actual in (("classes", spec.classes, len(got.classes)), ("videos", spec.videos, got.num_videos)):
                if expected is not None and expected != actual:
                    raise DataError(f"{self.name} {part}: {actual} {what} in {', '.join(map(str, got.sources))}, "
                                    f"the manifest {self.manifest.path} expects {expected}")

    def split_stamps(self) -> list[dict]:
        """What was checked of each split file (for run stamps): path, sha256, expected, status."""
        if not self.split_checks:
            self._verify_split_files()
        return [dict(check) for check in self.split_checks]

    # ------------------------------------------------------------------ videos
    def video_path(self, video_id: str) -> Path:
        return self.resolve(video_id)

    def use_frame_store(self, store: FrameStore) -> None:
        """Read every video from ``store`` from now on (its tag joins the protocol when pixels differ)."""
        if store.benchmark != self.name or store.data_version != self.data_version:
            raise ProtocolMismatchError(
                f"the frame store {store.root} was prepared from {store.benchmark} data "
                f"{store.data_version or 'on disk'}, not {self.name} {self.data_version or 'on disk'}: run "
                f"`fsar-bench data prepare {self.name} --force` to rebuild it (or set run.frame_store = \"off\")")
        self.frame_store = store
        self.frames_from = store.tag
        self.resolve = store.path

    def require_root(self) -> Path:
        """The video folder, or a DataError saying how to set it."""
        template = self.manifest.layouts.get(self.layout, "") if self.manifest else ""
        if self.root is None:
            raise DataError(f"no video folder set for {self.name}: add `[datasets.{self.name}]` with "
                            f'`root = "/path/to/{self.name}"` to bench.toml (or pass --root). Layout {self.layout!r} '
                            f"expects <root>/{template}; see docs/real-benchmarks.md")
        if not self.root.is_dir():
            raise DataError(f"dataset root {self.root} of {self.name} does not exist or is not a folder: fix "
                            f"[datasets.{self.name}] root in bench.toml (or --root)")
        return self.root

    def missing_videos(self, partition: Partition) -> list[str]:
        """Ids of the partition whose file (or frame folder, or frame-store file) does not exist, in partition order."""
        if self.frame_store is None:
            self.require_root()
        return [video for video in partition.all_video_ids() if not os.path.exists(self.resolve(video))]

    def layout_message(self, partition: Partition) -> str:
        """Why no video was found: the layout expected, one path looked for, and any layout that finds it."""
        example_id = partition.all_video_ids()[0]
        looked = self.resolve(example_id)
        message = (f"no video of {self.name} {partition.name} ({partition.num_videos}) is where layout {self.layout!r} "
                   f"puts it under {self.root}: looked for {looked} (video {example_id!r}).")
        if self.manifest is None:
            return message
        template = self.manifest.layouts[self.layout]
        message = message.replace(f"layout {self.layout!r}", f"layout {self.layout!r} ({template})")
        for other, other_template in self.manifest.layouts.items():
            candidate = _render(self.root, other_template, example_id, self.line_format)
            if other != self.layout and candidate is not None and candidate.exists():
                return (message + f" Layout {other!r} ({other_template}) finds {candidate}: set "
                        f'layout = "{other}" under [datasets.{self.name}] in bench.toml (`data check` also takes '
                        f"--layout {other}).")
        known = ", ".join(f"{k} ({v})" for k, v in self.manifest.layouts.items())
        return message + f" No other layout finds it either. Layouts: {known}; see docs/real-benchmarks.md."

    def partial_layout_hint(self, missing: list[str], sample: int = 40) -> str:
        """When most of the ``missing`` videos are where another layout puts them (a tree stored in another
        documented layout, only partly matching this one), a sentence saying so; else ""."""
        if self.manifest is None or not missing:
            return ""
        probe = missing[:: max(1, len(missing) // sample)][:sample]
        for other, template in self.manifest.layouts.items():
            if other == self.layout:
                continue
            found = sum(1 for v in probe if (p := _render(self.root, template, v, self.line_format)) is not None and p.exists())
            if found * 2 > len(probe):
                return (f"Layout {other!r} ({template}) finds {found} of {len(probe)} of the missing videos checked: "
                        f'the tree looks stored that way; set layout = "{other}" under [datasets.{self.name}] in '
                        "bench.toml. ")
        return ""

    def present_partition(self, name: str) -> Partition:
        """The partition once every video is checked present on disk.

        Missing videos are an error listing them, unless ``options.allow_missing``: then they are dropped
        (and listed in ``missing[name]``, which makes the protocol a different, named one).
        """
        partition = self.partition(name)
        if name in self.missing:
            return partition
        missing = self.missing_videos(partition)
        if missing and len(missing) == partition.num_videos:
            raise DataError(self.layout_message(partition))
        if missing and not self.options.allow_missing:
            shown = ", ".join(str(self.resolve(v)) for v in missing[:MISSING_SHOWN])
            more = f" and {len(missing) - MISSING_SHOWN} more" if len(missing) > MISSING_SHOWN else ""
            reduced = partition.without(set(missing))
            empty = [c for c in reduced.classes if not reduced.videos[c]]
            remedy = (f"every video of class {empty[0]!r} is missing, so --allow-missing cannot help" if empty else
                      "--allow-missing runs without them as a separate, labelled protocol")
            raise DataError(f"{len(missing)} of the {partition.num_videos} {name} videos of {self.name} are missing: "
                            f"{shown}{more}. {self.partial_layout_hint(missing)}`fsar-bench data check {self.name} "
                            f"--partition {name}` lists them all; {remedy}.")
        if missing:
            reduced = partition.without(set(missing))
            empty = [c for c in reduced.classes if not reduced.videos[c]]
            if empty:
                raise DataError(f"{self.name} {name}: every video of class {empty[0]!r} is missing; "
                                "--allow-missing cannot drop a whole class")
            self._partitions[name] = reduced
        self.missing[name] = tuple(sorted(missing))
        return self._partitions[name]


# --------------------------------------------------------------------------- layouts
def layout_fields(video_id: str, line_format: str) -> dict[str, str]:
    """The template fields of a video id (see the module docstring)."""
    if line_format == "class/video":
        class_name, _, rest = video_id.partition("/")
        name = rest.rsplit("/", 1)[-1]
    elif line_format == "partition-index//path":
        parts = video_id.split("/")
        class_name = parts[-2] if len(parts) > 1 else ""
        name = _strip_suffix(parts[-1])
    else:
        class_name, name = "", video_id
    return {"id": video_id, "path": video_id, "path_stem": _strip_suffix(video_id), "class": class_name,
            "class_underscore": class_name.replace(" ", "_"), "class_spaces": class_name.replace("_", " "), "name": name}


def _strip_suffix(text: str) -> str:
    return text[: -len(Path(text).suffix)] if Path(text).suffix.lower() in VIDEO_SUFFIXES else text


def _render(root: Path | None, template: str, video_id: str, line_format: str) -> Path | None:
    return None if root is None else root / template.format(**layout_fields(video_id, line_format))


def _setting_path(option: Path | None, setting: str | None, config: Config) -> Path | None:
    """A command-line path (relative to the current folder), else a bench.toml one (relative to its folder)."""
    if option is not None:
        return Path(option).expanduser().resolve()
    return (config.base_dir / Path(setting).expanduser()).resolve() if setting else None


def splits_dir_for(name: str, config: Config, options: DataOptions | None = None, *, for_writing: bool = False) -> Path:
    """Where a benchmark's split files are.

    --splits-dir, else [datasets.NAME] splits_dir, else [paths] splits/NAME when it exists (a fetched copy),
    else the official files shipped with fsar-bench (``splits/official``, named by the manifest's ``bundled``).
    ``for_writing`` (``splits fetch``) never answers the shipped folder: fetched copies go to [paths] splits/NAME.
    """
    chosen = _setting_path(options.splits_dir if options else None, config.dataset_settings(name).get("splits_dir"), config)
    if chosen:
        return chosen
    fetched = config.path("splits") / name
    if for_writing or fetched.is_dir():
        return fetched
    bundled = load_manifest(name).bundled if name in manifest_names() else None
    return bundled if bundled is not None and bundled.is_dir() else fetched


def _real(manifest: SplitManifest, config: Config, options: DataOptions) -> Benchmark:
    settings = config.dataset_settings(manifest.name)
    layout = options.layout or settings.get("layout") or manifest.default_layout
    if layout not in manifest.layouts:
        raise UnknownNameError(f"layout of {manifest.name}", layout, manifest.layouts,
                               f"Set [datasets.{manifest.name}] layout in bench.toml; see docs/real-benchmarks.md.")
    template = manifest.layouts[layout]
    try:
        template.format(**layout_fields("c/v", manifest.line_format))
    except (KeyError, IndexError, ValueError) as error:
        raise DataError(f"{manifest.path}: layout {layout!r} template {template!r} is invalid ({error})") from None
    root = _setting_path(options.root, settings.get("root"), config)
    splits_dir = splits_dir_for(manifest.name, config, options)
    split_files = {part: tuple(splits_dir / f for f in spec.files) for part, spec in manifest.partitions.items()}

    def resolve(video_id: str) -> Path:
        path = _render(root, template, video_id, manifest.line_format)
        if path is None:
            raise DataError(f"no video folder set for {manifest.name}: add [datasets.{manifest.name}] root to bench.toml")
        return path

    return Benchmark(name=manifest.name, description=manifest.title, root=root, split_files=split_files,
                     size=manifest.size, resolve=resolve, comparable_to_papers=manifest.comparable_to_papers,
                     line_format=manifest.line_format, manifest=manifest, layout=layout, options=options)


def _synthetic(config: Config, options: DataOptions) -> Benchmark:
    root = ensure_synthetic(config.path("cache") / "datasets", SyntheticSpec())
    return Benchmark(
        name="synthetic",
        description="built-in: 48 motion x appearance classes, 20 mp4 videos each at 64x64 (28/8/12 classes)",
        root=root,
        split_files={p: (root / "splits" / f"{p}.txt",) for p in PARTITIONS},
        size=64,
        resolve=lambda video_id: root / "videos" / f"{video_id}.mp4",
        comparable_to_papers=False,
        options=options,
        data_version=benchmark_data_version("synthetic"),
    )



BENCHMARK_DESCRIPTIONS: dict[str, str] = {
    "synthetic": "built-in moving-shapes videos with time-reversed class pairs (CPU-sized)",
    "ssv2-full": "Something-Something V2, OTAM split (64/12/24 classes, all videos)",
    "ssv2-small": "Something-Something V2, CMN split (64/12/24 classes, 100 videos each)",
    "kinetics100": "Kinetics-100, CMN list (64/12/24 classes, 100 videos each)",
    "kinetics100-molo": "Kinetics-100, MoLo/HyRSM list (57 test videos differ from the CMN list)",
    "ucf101": "UCF101, ARN split (70/10/21 classes)",
    "hmdb51": "HMDB51, ARN split (31/10/10 classes)",
    "finegym": "FineGym Gym99 elements, fsar-bench's own split (63/12/24 classes; no paper to compare with)",
}


def benchmark_names() -> list[str]:
    return sorted({"synthetic", *manifest_names()})


def open_benchmark(name: str, config: Config, options: DataOptions | None = None) -> Benchmark:
    """Build the named benchmark from the config (did-you-mean on unknown names)."""
    options = options or DataOptions()
    if name == "synthetic":
        benchmark = _synthetic(config, options)
    elif name not in manifest_names():
        raise UnknownNameError("dataset", name, benchmark_names(), "See `fsar-bench datasets`.")
    else:
        benchmark = _real(load_manifest(name), config, options)
    setting = config.run.get("frame_store", "auto")
    if setting not in FRAME_STORE_SETTINGS:
        raise UsageError(f"run.frame_store must be one of {', '.join(FRAME_STORE_SETTINGS)}, got {setting!r}")
    if options.frame_store and setting != "off":
        store = FrameStore.open(store_root(config.path("cache"), name))
        if store is not None:
            benchmark.use_frame_store(store)
        elif setting == "require":
            raise DataError(f"no complete frame store for {name} under {store_root(config.path('cache'), name)} "
                            f"(run.frame_store = \"require\"): run `fsar-bench data prepare {name}` first")
    return benchmark


FRAME_STORE_SETTINGS = ("auto", "off", "require")
"""run.frame_store: "auto" reads a complete frame store when there is one, "off" always the videos,
"require" refuses to run without one."""
