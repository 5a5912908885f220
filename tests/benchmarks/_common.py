"""Shared pieces of the benchmarks: sizes per mode, reporting, random cached encodings, memory and matmul probes.

Quick mode (default, CI) uses small sizes and asserts sanity only; ``FSAR_BENCH_FULL=1`` runs the issue's
sizes and asserts its targets. Every figure is printed and, with ``FSAR_BENCH_REPORT=path``, appended to
that file as one JSON line per test (docs/speed.md is written from it).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import threading
import time
from pathlib import Path

import numpy as np
import torch

from fsar_bench.api import FewShotHead, HeadConfig, cat_reps
from fsar_bench.episodes import EpisodeSet, Protocol
from fsar_bench.model.registry import discover_methods

FULL = os.environ.get("FSAR_BENCH_FULL") == "1"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
WAY, FRAMES = 5, 8


def report(capsys, name: str, **values) -> None:
    """Print ``values`` (visible without -s) and append them to $FSAR_BENCH_REPORT as JSON."""
    text = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
    with capsys.disabled():
        print(f"\n[bench {'full' if FULL else 'quick'}] {name}: {text}", flush=True)
    target = os.environ.get("FSAR_BENCH_REPORT")
    if target:
        with open(target, "a", encoding="utf-8") as stream:
            stream.write(json.dumps({"name": name, "mode": "full" if FULL else "quick", **values}, default=str) + "\n")


def build_head(name: str, dim: int) -> FewShotHead:
    """The method's head at feature size ``dim`` (T=8), its card options, eval mode, fixed seed.

    Quick mode shrinks the TRX family's key/value size (TRX, STRM) to ``dim`` (full mode: the head's 1152).
    """
    card = discover_methods(PROJECT_ROOT / "methods").get(name).card
    options = dict(card.options)
    if not FULL and accepts_option(card, "out_dim"):
        options["out_dim"] = dim
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        head = card.head(HeadConfig(dim=dim, frames=FRAMES, num_base_classes=64, feature_size=(1, 1), options=options))
    return head.eval()


def accepts_option(card, option: str) -> bool:
    """Whether the card's head takes ``option``: in the card's options, or a field of its options dataclass."""
    options_class = getattr(card.head, "options_class", None)
    fields = {field.name for field in dataclasses.fields(options_class)} if dataclasses.is_dataclass(options_class) else set()
    return option in card.options or option in fields


@torch.inference_mode()
def random_encodings(head: FewShotHead, videos: int, dim: int, chunk: int = 64):
    """``head.encode`` of random non-negative features for ``videos`` videos (maps 1x1 for map heads)."""
    generator = torch.Generator().manual_seed(1)
    parts = []
    for start in range(0, videos, chunk):
        count = min(chunk, videos - start)
        shape = (count, FRAMES, dim, 1, 1) if head.feature_maps else (count, FRAMES, dim)
        parts.append(head.encode(torch.rand(shape, generator=generator)))
    return cat_reps(parts)


def random_episodes(count: int, shot: int, videos: int, seed: int = 2) -> EpisodeSet:
    """``count`` episodes of distinct random videos (5-way, 1 query per class), as an EpisodeSet."""
    rng = np.random.default_rng(seed)
    per_episode = WAY * (shot + 1)
    picks = np.argsort(rng.random((count, videos)), axis=1)[:, :per_episode].astype(np.int32)
    protocol = Protocol("random", "test", "0" * 64, WAY, shot, 1, count, FRAMES, 224, seed)
    labels = np.tile(np.arange(WAY, dtype=np.int32), (count, 1))
    return EpisodeSet(protocol, tuple(f"v{i}" for i in range(videos)), labels.copy(),
                      picks[:, : WAY * shot].reshape(count, WAY, shot), picks[:, WAY * shot:], labels, "random")


def peak_rss_reset() -> bool:
    """Reset the process's peak RSS (Linux ``clear_refs`` 5); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as stream:
            stream.write("5")
        return True
    except OSError:
        return False


def rss_kib(field: str = "VmRSS") -> int:
    """VmRSS or VmHWM (peak) of this process, KiB (0 where /proc is absent)."""
    try:
        return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))
    except (OSError, AttributeError):
        return 0


def matmul_gflops(seconds: float = 1.5, size: int = 1024, workers: int | None = None) -> float:
    """GFLOP/s of plain fp32 matmuls ``[size, size] @ [size, size]`` as the scorer runs them: ``workers``
    threads of one intra-op thread each (or one matmul on every intra-op thread), the better of the two."""
    workers = workers or max(1, torch.get_num_threads())
    a, b = torch.randn(size, size), torch.randn(size, size)
    flop = 2.0 * size ** 3
    a @ b

    def single() -> float:
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 2:
            a @ b
            count += 1
        return count * flop / (time.perf_counter() - start) / 1e9

    threads = torch.get_num_threads()
    intra = single()
    counts = [0] * workers
    stop = time.perf_counter() + seconds / 2

    def loop(index: int) -> None:
        torch.set_num_threads(1)
        while time.perf_counter() < stop:
            a @ b
            counts[index] += 1

    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        pool = [threading.Thread(target=loop, args=(i,)) for i in range(workers)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        inter = sum(counts) * flop / (time.perf_counter() - start) / 1e9
    finally:
        torch.set_num_threads(threads)
    return max(intra, inter)
