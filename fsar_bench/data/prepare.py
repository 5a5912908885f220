"""`fsar-bench data prepare D`: decode every video of a benchmark once into its frame store.

Resumable: each video's file is written atomically and then logged (one JSON line, flushed) in
``progress/rank<r>of<N>.jsonl``; a run killed at any moment redoes at most the videos it was writing.
Sharded: under ``torchrun --nproc_per_node N`` rank r prepares every N-th remaining video (the store must be
on a file system every rank sees). Before the work starts, rank 0 prepares a few videos spread over the
list and prints the size of the whole store estimated from them (and refuses when the disk cannot hold
it). ``store.json``, holding the sha256 of every file, is written last: its presence marks the store
complete, and only a complete store is ever read.

Usage::

    store = prepare_frame_store(benchmark, config.path("cache"), StoreFormat(), log=print)
    problems = verify_frame_store(store)          # [] when every file matches its sha256
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from fsar_bench.data.benchmarks import PARTITIONS, Benchmark
from fsar_bench.data.frame_store import (STORE_FILE, FrameStore, StoreFormat, decoder_name, entry_path, fit_short_side,
                                         pack_video, store_root)
from fsar_bench.data.video import VideoError, open_reader
from fsar_bench.distributed import SINGLE, Distributed
from fsar_bench.errors import DataError, UsageError
from fsar_bench.files import write_bytes_atomic, write_json_atomic
from fsar_bench.progress import step_progress

SAMPLE_VIDEOS = 4  # prepared first, spread over the list, to estimate the store's size
PLAN_FILE = "prepare.json"


def store_video_ids(benchmark: Benchmark) -> list[str]:
    """Every present video of every partition, sorted (missing ones are refused unless --allow-missing)."""
    return sorted({video for part in PARTITIONS for video in benchmark.present_partition(part).all_video_ids()})


def read_progress(root: Path) -> dict[str, dict]:
    """Videos logged as written (and whose file is there with the logged size), from every rank's log."""
    done: dict[str, dict] = {}
    for log in sorted((root / "progress").glob("*.jsonl")):
        for line in log.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # the last line of a killed run
            path = entry_path(root, entry["id"])
            if path.is_file() and path.stat().st_size == entry["bytes"]:
                done[entry["id"]] = entry
    return done


def prepare_one(benchmark: Benchmark, root: Path, video_id: str, fmt: StoreFormat, reader) -> dict:
    """Decode one video whole, write its store file; returns its log entry."""
    frames = reader.read(benchmark.video_path(video_id), lambda total: list(range(total)))
    frames, resized = fit_short_side(frames, fmt.max_short_side)
    data = pack_video(frames, fmt)
    write_bytes_atomic(entry_path(root, video_id), data, durable=False)  # each frame carries its CRC-32
    return {"id": video_id, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "frames": int(len(frames)),
            "height": int(frames.shape[1]), "width": int(frames.shape[2]), "resized": resized}


def _check_plan(root: Path, fmt: StoreFormat, benchmark: Benchmark, force: bool) -> None:
    """Refuse to mix formats in one store (``--force`` starts it over)."""
    plan = root / PLAN_FILE
    wanted = {"benchmark": benchmark.name, "format": asdict(fmt), "data_version": benchmark.data_version}
    if plan.is_file():
        existing = json.loads(plan.read_text(encoding="utf-8"))
        if existing == wanted:
            return
        if not force:
            raise UsageError(f"the frame store {root} was started as {StoreFormat(**existing['format']).name} "
                             f"(data {existing.get('data_version') or 'on disk'}); this run asks for {fmt.name}. "
                             "Pass --force to delete it and start over, or prepare with its format.")
    if force and root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    write_json_atomic(plan, wanted)


def estimate_bytes(sample: list[dict], total_videos: int) -> int:
    """The store's size extrapolated from the videos prepared so far."""
    return int(sum(e["bytes"] for e in sample) / max(1, len(sample)) * total_videos)


def prepare_frame_store(benchmark: Benchmark, cache_dir: Path, fmt: StoreFormat, *, dist: Distributed = SINGLE,
                        force: bool = False, log: Callable[[str], None] = print, progress: bool = True) -> FrameStore:
    """Prepare (or finish preparing) the store of ``benchmark``; returns it complete.

    Raises DataError listing every video that could not be read (the store then stays incomplete), and
    when the estimated size exceeds the free disk space.
    """
    root = store_root(cache_dir, benchmark.name)
    existing = FrameStore.open(root)
    if existing is not None and not force:
        if existing.format != fmt:
            raise UsageError(f"{root} already holds a complete {existing.format.name} store; pass --force to rebuild it as {fmt.name}")
        return existing
    if dist.is_main:
        _check_plan(root, fmt, benchmark, force)
    dist.barrier()
    video_ids = store_video_ids(benchmark)
    reader = open_reader()
    log_path = root / "progress" / f"rank{dist.rank}of{dist.world_size}.jsonl"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    started = time.time()
    with open(log_path, "a", encoding="utf-8") as progress_log:
        def run(ids: list[str], advance: Callable[[int], None]) -> list[dict]:
            entries = []
            for video_id in ids:
                try:
                    entry = prepare_one(benchmark, root, video_id, fmt, reader)
                except VideoError as error:
                    problems.append(f"{error.kind:<10} {error.path} ({video_id}): {error.reason}")
                    advance(1)
                    continue
                progress_log.write(json.dumps(entry) + "\n")
                progress_log.flush()
                entries.append(entry)
                advance(1)
            return entries

        done = read_progress(root)
        if dist.is_main:
            if len(done) < SAMPLE_VIDEOS:
                todo = [v for v in video_ids if v not in done]
                step = max(1, len(todo) // SAMPLE_VIDEOS)
                run(todo[::step][:SAMPLE_VIDEOS - len(done)], lambda n: None)
                done = read_progress(root)
            _announce(root, fmt, video_ids, done, log)
        dist.barrier()
        done = read_progress(root)
        todo = [v for v in video_ids if v not in done]
        mine = dist.shard(todo)
        label = f"prepare {benchmark.name} frames" + (f" (rank {dist.rank})" if dist.active else "")
        with step_progress(label, len(mine), enabled=progress) as advance:
            run(mine, advance)
    all_problems = [p for part in dist.all_gather_objects(problems) for p in part]
    if all_problems:
        shown = "\n  ".join(all_problems[:30]) + (f"\n  ... and {len(all_problems) - 30} more" if len(all_problems) > 30 else "")
        raise DataError(f"{len(all_problems)} videos of {benchmark.name} could not be read, so its frame store stays "
                        f"incomplete (unused):\n  {shown}\nFix or remove them (`fsar-bench data check {benchmark.name} "
                        "--decode` lists them), then run the same command again: it resumes.")
    store = None
    if dist.is_main:
        store = _finish(root, benchmark, fmt, video_ids)
        log(f"{benchmark.name}: frame store complete, {store.videos:,} videos, {store.total_bytes / 2**30:.2f} GiB "
            f"in {time.time() - started:.0f} s ({root})")
    dist.barrier()
    return store or FrameStore.open(root)


def _announce(root: Path, fmt: StoreFormat, video_ids: list[str], done: dict[str, dict], log: Callable[[str], None]) -> None:
    """Print the size estimate; refuse when the free disk space cannot hold the rest."""
    estimate = estimate_bytes(list(done.values()), len(video_ids))
    remaining = estimate - sum(e["bytes"] for e in done.values())
    free = shutil.disk_usage(root).free
    frames = sum(e["frames"] for e in done.values()) / max(1, len(done))
    log(f"frame store {root} ({fmt.name}): {len(video_ids):,} videos, estimated {estimate / 2**30:.2f} GiB "
        f"(from {len(done)} prepared, {frames:.0f} frames each on average); {len(done):,} done, "
        f"{free / 2**30:.1f} GiB free")
    if remaining > free:
        raise DataError(f"the frame store needs about {remaining / 2**30:.1f} GiB more, but {root} has "
                        f"{free / 2**30:.1f} GiB free: point [paths] cache elsewhere or free space, then run again")


def _finish(root: Path, benchmark: Benchmark, fmt: StoreFormat, video_ids: list[str]) -> FrameStore:
    done = read_progress(root)
    absent = [v for v in video_ids if v not in done]
    if absent:
        raise DataError(f"frame store {root}: {len(absent)} videos were not written (first: {absent[0]}); run again to finish")
    entries = [done[v] for v in video_ids]
    store = FrameStore(root=root, benchmark=benchmark.name, format=fmt, videos=len(entries),
                       resized_videos=sum(e["resized"] for e in entries), total_bytes=sum(e["bytes"] for e in entries),
                       data_version=benchmark.data_version, decoder=decoder_name())
    values = store.manifest_values({e["id"]: e["sha256"] for e in entries})
    write_json_atomic(root / STORE_FILE, values)
    return store


def verify_frame_store(store: FrameStore, progress: bool = True) -> list[str]:
    """Re-hash every file of a complete store; the problems found (empty: all match)."""
    checksums = json.loads((store.root / STORE_FILE).read_text(encoding="utf-8"))["sha256"]
    problems = []
    with step_progress(f"verify {store.benchmark} frames", len(checksums), enabled=progress) as advance:
        for video_id, expected in checksums.items():
            path = store.path(video_id)
            try:
                actual = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError as error:
                problems.append(f"{path}: cannot be read ({error.strerror})")
            else:
                if actual != expected:
                    problems.append(f"{path}: sha256 {actual[:12]}..., store.json says {expected[:12]}...")
            advance(1)
    return problems
