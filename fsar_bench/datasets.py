"""Benchmarks: where a dataset's split files and videos are, and its input size (DESIGN §4).

Usage::

    benchmark = open_benchmark("synthetic", config)
    test = benchmark.partition("test")             # fsar_bench.splits.Partition
    path = benchmark.video_path(test.all_video_ids()[0])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fsar_bench.config import Config
from fsar_bench.errors import DataError, UnknownNameError
from fsar_bench.splits import Partition, SplitError, check_disjoint, read_partition
from fsar_bench.synthetic import SyntheticSpec, ensure_synthetic

PARTITIONS = ("train", "val", "test")


@dataclass
class Benchmark:
    """A few-shot benchmark on disk. ``resolve`` maps a video id to its file (or frame folder)."""

    name: str
    description: str
    root: Path
    split_files: dict[str, tuple[Path, ...]]
    size: int
    resolve: Callable[[str], Path]
    comparable_to_papers: bool = True
    _partitions: dict[str, Partition] = field(default_factory=dict, repr=False)

    def partition(self, name: str) -> Partition:
        """Read (once) and return a partition; all partitions are checked disjoint on first use."""
        if not self._partitions:
            loaded = {}
            for part, files in self.split_files.items():
                try:
                    loaded[part] = read_partition(files[0], part)
                except SplitError as error:
                    raise DataError(str(error)) from None
            try:
                check_disjoint(loaded)
            except SplitError as error:
                raise DataError(str(error)) from None
            self._partitions = loaded
        if name not in self._partitions:
            raise DataError(f"{self.name} has no partition {name!r} (has {', '.join(self._partitions)})")
        return self._partitions[name]

    def video_path(self, video_id: str) -> Path:
        return self.resolve(video_id)


def _synthetic(config: Config) -> Benchmark:
    root = ensure_synthetic(config.path("cache") / "datasets", SyntheticSpec())
    return Benchmark(
        name="synthetic",
        description="built-in: 48 motion x appearance classes, 20 mp4 videos each at 64x64 (28/8/12 classes)",
        root=root,
        split_files={p: (root / "splits" / f"{p}.txt",) for p in PARTITIONS},
        size=64,
        resolve=lambda video_id: root / "videos" / f"{video_id}.mp4",
        comparable_to_papers=False,
    )


BENCHMARK_BUILDERS: dict[str, Callable[[Config], Benchmark]] = {"synthetic": _synthetic}
BENCHMARK_DESCRIPTIONS: dict[str, str] = {
    "synthetic": "built-in moving-shapes videos with time-reversed class pairs (CPU-sized)",
}


def benchmark_names() -> list[str]:
    return sorted(BENCHMARK_BUILDERS)


def open_benchmark(name: str, config: Config) -> Benchmark:
    """Build the named benchmark from the config (did-you-mean on unknown names)."""
    if name not in BENCHMARK_BUILDERS:
        raise UnknownNameError("dataset", name, BENCHMARK_BUILDERS, "See `fsar-bench datasets`.")
    return BENCHMARK_BUILDERS[name](config)
