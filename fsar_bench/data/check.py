"""`fsar-bench data check`: every video of a benchmark is where its layout says, and readable.

Without ``decode``: each video file exists and is not empty; each frame folder holds at least T
frames. With ``decode``: each video also opens, has at least T frames and every frame decodes
(training reads them all; truncation and damage show anywhere in the file). Every problem is
listed (never only the first), by kind (``fsar_bench.data.video.PROBLEM_KINDS``).

Usage::

    report = check_benchmark(benchmark, ["test"], frames=8, decode=True, jobs=2)
    report.ok                    # False when any video (or the layout) is wrong
    report.problems[0].path      # '/data/ucf101/BlowingCandles/v_BlowingCandles_g01_c01.avi'
    report.write(Path("results/data-check/ucf101.json"))
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fsar_bench.files import write_json_atomic
from fsar_bench.data.video import VideoError, VideoReader, list_frames, open_reader

if TYPE_CHECKING:
    from fsar_bench.data.benchmarks import Benchmark

_READERS: dict[str | None, VideoReader] = {}  # one reader per worker process and backend


@dataclass(frozen=True)
class VideoProblem:
    """One bad video: ``kind`` in PROBLEM_KINDS, ``detail`` says what was seen."""

    partition: str
    class_name: str
    video_id: str
    path: str
    kind: str
    detail: str


@dataclass
class CheckReport:
    """What ``check_benchmark`` found; ``to_dict`` is the JSON report."""

    dataset: str
    root: str
    layout: str
    decode: bool
    frames: int
    partitions: dict[str, dict[str, int]]
    problems: list[VideoProblem]
    layout_errors: list[str] = field(default_factory=list)
    split_files: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems and not self.layout_errors

    def counts_by_kind(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for problem in self.problems:
            counts[problem.kind] = counts.get(problem.kind, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "root": self.root, "layout": self.layout, "decode": self.decode,
                "frames": self.frames, "ok": self.ok, "partitions": self.partitions, "problem_kinds": self.counts_by_kind(),
                "layout_errors": self.layout_errors, "problems": [asdict(p) for p in self.problems],
                "split_files": self.split_files, "seconds": round(self.seconds, 3)}

    def write(self, path: Path) -> Path:
        """Write the JSON report (atomically)."""
        write_json_atomic(path, self.to_dict())
        return path


def _quiet_reader(backend: str | None) -> VideoReader:
    """A cached reader with decord's and FFmpeg's console logging silenced (problems are reported by us)."""
    if backend not in _READERS:
        try:
            import decord

            decord.logging.set_level(decord.logging.QUIET)
        except ImportError:
            pass
        try:
            import av.logging

            av.logging.set_level(av.logging.PANIC)
        except ImportError:
            pass
        _READERS[backend] = open_reader(backend)
    return _READERS[backend]


def check_video(path: str, frames: int, decode: bool, backend: str | None = None) -> tuple[str, str] | None:
    """(kind, detail) of what is wrong with one video file or frame folder, or None when it is fine."""
    target = Path(path)
    if not target.exists():
        return "missing", "not found"
    if target.is_dir():
        count = len(list_frames(target))
        if count == 0:
            return "empty", "frame folder holds no .jpg/.jpeg/.png images"
        if count < frames:
            return "too-short", f"{count} frames, fewer than the {frames} sampled"
    elif target.stat().st_size == 0:
        return "empty", "0-byte file"
    if not decode:
        return None

    def choose(total: int) -> list[int]:
        if total < frames:
            raise VideoError(target, f"{total} frames, fewer than the {frames} sampled", "too-short")
        return list(range(total))

    try:
        _quiet_reader(backend).read(target, choose)
    except VideoError as error:
        return error.kind, error.reason
    return None


def _check_one(args: tuple[str, int, bool, str | None]) -> tuple[str, str] | None:
    return check_video(*args)


def _results(paths: list[str], frames: int, decode: bool, jobs: int, backend: str | None) -> Iterator[tuple[str, str] | None]:
    """check_video over ``paths`` in order: processes when decoding, threads for existence checks."""
    work = [(path, frames, decode, backend) for path in paths]
    if jobs <= 1 or len(work) < 2:
        yield from map(_check_one, work)
        return
    executor: Executor = ProcessPoolExecutor(jobs) if decode else ThreadPoolExecutor(jobs)
    with executor:
        chunk = max(1, min(64, len(work) // (jobs * 8) or 1))
        yield from executor.map(_check_one, work, chunksize=chunk)


def check_benchmark(
    benchmark: Benchmark,
    partitions: Iterable[str],
    frames: int,
    decode: bool = False,
    jobs: int = 1,
    backend: str | None = None,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> CheckReport:
    """Check every video of ``partitions``; ``progress(n)`` is called as videos are done.

    Raises DataError for what stops the check itself (split files, root); everything about the
    videos goes into the report.
    """
    started = time.time()
    root = benchmark.require_root()
    items: list[tuple[str, str, str, str]] = []  # (partition, class, video id, path)
    loaded = {}
    for name in partitions:
        partition = benchmark.partition(name)
        loaded[name] = partition
        items += [(name, c, v, str(benchmark.video_path(v))) for c in partition.classes for v in partition.videos[c]]
    if on_total:
        on_total(len(items))
    problems: list[VideoProblem] = []
    for index, result in enumerate(_results([item[3] for item in items], frames, decode, jobs, backend)):
        if result is not None:
            problems.append(VideoProblem(*items[index], *result))
        if progress:
            progress(1)
    counts: dict[str, dict[str, int]] = {}
    layout_errors = []
    for name, partition in loaded.items():
        bad = [p for p in problems if p.partition == name]
        missing = sum(1 for p in bad if p.kind == "missing")
        counts[name] = {"classes": len(partition.classes), "videos": partition.num_videos,
                        "ok": partition.num_videos - len(bad), "problems": len(bad), "missing": missing}
        if partition.num_videos and missing == partition.num_videos:
            layout_errors.append(benchmark.layout_message(partition))
        elif missing and (hint := benchmark.partial_layout_hint([p.video_id for p in bad if p.kind == "missing"])):
            layout_errors.append(f"{name}: {missing:,} videos missing. {hint.strip()}")
    return CheckReport(dataset=benchmark.name, root=str(root), layout=benchmark.layout or "built-in", decode=decode,
                       frames=frames, partitions=counts, problems=problems, layout_errors=layout_errors,
                       split_files=benchmark.split_stamps(), seconds=time.time() - started)
