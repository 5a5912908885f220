"""The field since MoLo (issue 13): HyRSM++, STRM and TEAM batched logits on cached encodings, 1- and 5-shot, and
their peak memory against the episode count.

Full mode (``FSAR_BENCH_FULL=1``): d=2048, T=8, 5-way, 1 query per class, 10,000 episodes over 600 cached videos;
targets: each method under 60 s at 1 and at 5 shots, and the peak RSS of scoring 10,000 episodes within 10%
(+16 MiB) of scoring 2,000, each count in its own fresh process. Quick mode (CI): d=128 (STRM's key/value size
too), 100 episodes, and the 5-shot memory check in-process at 20 against 100 episodes with a 2 MiB scoring
budget (so that both counts span many batches); sanity and flatness only. A method not registered (yet) is
skipped with the reason.

``FSAR_BENCH_DEVICE=cuda`` scores on a GPU (default: cpu). TEAM's full-size scoring is 20 GFLOP per episode (its
exclusive patterns run a d×d MLP layer per (class, other class, token), docs/speed.md): 60 s for 10,000 needs
~3.4 TFLOP/s, so on a CPU its full-mode speed test skips with that reason (run it on a GPU), and its full-mode
memory check compares 200 against 1,000 episodes (still hundreds of batches of 2–3 episodes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from fsar_bench.api import reps_num_videos
from fsar_bench.evaluation.evaluate import choose_episode_batch, score_episodes, scoring_workers
from fsar_bench.model.registry import discover_methods
from tests.benchmarks._common import (
    FULL, PROJECT_ROOT, WAY, build_head, peak_rss_reset, random_encodings, random_episodes, report, rss_kib,
)

METHODS = ("hyrsmpp", "strm", "team")
DIM = 2048 if FULL else 128
EPISODES = 10_000 if FULL else 100
VIDEOS = 600 if FULL else 80
TARGET_SECONDS = 60.0
MEMORY_EPISODES = (2_000, 10_000) if FULL else (20, 100)
MEMORY_SHOTS = (1, 5) if FULL else (5,)
MEMORY_BUDGET = None if FULL else 2 << 20  # quick: small batches, so both counts span many of them
DEVICE = torch.device(os.environ.get("FSAR_BENCH_DEVICE", "cpu"))
GPU_ONLY_AT_FULL_SIZE = {"team": "TEAM scores 20 GFLOP per full-size episode (200 TFLOP for 10,000): < 60 s needs "
                                 "~3.4 TFLOP/s; run FSAR_BENCH_FULL=1 FSAR_BENCH_DEVICE=cuda on a GPU"}
CPU_MEMORY_EPISODES = {"team": (200, 1_000)}  # full mode on CPU: the same flatness check at a CPU-feasible size

pytestmark = pytest.mark.benchmark_quick


def require(method: str) -> None:
    if method not in discover_methods(PROJECT_ROOT / "methods").names():
        pytest.skip(f"{method} is not registered (methods/{method}.py absent)")


def score_all(head, reps, episodes, budget: int | None = None) -> tuple[float, int, np.ndarray]:
    """(seconds, batch, predictions) for every episode, as the evaluator scores them (on ``DEVICE``)."""
    device = DEVICE
    head.to(device)
    ids = np.arange(len(episodes))
    row_of = np.arange(reps_num_videos(reps))
    workers = scoring_workers(device)
    batch = choose_episode_batch(head, reps, row_of, episodes, ids, device, budget=budget, workers=workers)
    start = time.perf_counter()
    predictions = np.concatenate([p for _, p in score_episodes(head, reps, row_of, episodes, ids, batch, device, workers)])
    return time.perf_counter() - start, batch, predictions


@pytest.mark.parametrize("shot", [1, 5])
@pytest.mark.parametrize("method", METHODS)
def test_new_head_10k_episodes(benchmark, capsys, method: str, shot: int) -> None:
    require(method)
    if FULL and DEVICE.type == "cpu" and method in GPU_ONLY_AT_FULL_SIZE:
        pytest.skip(GPU_ONLY_AT_FULL_SIZE[method])
    head = build_head(method, DIM)
    reps = random_encodings(head, VIDEOS, DIM)
    episodes = random_episodes(EPISODES, shot, VIDEOS)
    seconds, batch, predictions = benchmark.pedantic(lambda: score_all(head, reps, episodes), rounds=1, iterations=1)
    rate = EPISODES / seconds
    benchmark.extra_info.update(episodes_per_second=rate, batch=batch)
    report(capsys, f"head-only {method} {shot}-shot", device=str(DEVICE), d=DIM, episodes=EPISODES, videos=VIDEOS, seconds=seconds,
           episodes_per_s=rate, projected_10k_s=10_000 / rate, batch=batch)
    assert predictions.shape == (EPISODES, WAY) and predictions.min() >= 0 and predictions.max() < WAY
    if FULL:
        assert seconds < TARGET_SECONDS, f"{method}: {seconds:.1f} s for 10,000 {shot}-shot episodes"


def scoring_peaks(count: int, method: str) -> dict[str, float]:
    """For ``method`` and MEMORY_SHOTS, score ``count`` episodes on random cached encodings: {"method shot": peak
    RSS growth while scoring, MiB}. The peak (VmHWM) is reset just before scoring, after the encodings exist, so it
    measures what scoring holds."""
    growth = {}
    head = build_head(method, DIM)
    reps = random_encodings(head, VIDEOS, DIM)
    for shot in MEMORY_SHOTS:
        episodes = random_episodes(count, shot, VIDEOS)
        peak_rss_reset()
        before = rss_kib()
        score_all(head, reps, episodes, MEMORY_BUDGET)
        growth[f"{method} {shot}"] = (rss_kib("VmHWM") - before) / 1024
    return growth


def peak_scoring_child(count: int, method: str) -> None:
    """In a fresh process: print ``scoring_peaks(count, method)`` as JSON."""
    print("PEAK_GROWTH_MIB", json.dumps(scoring_peaks(count, method)))


@pytest.mark.parametrize("method", METHODS)
def test_new_head_peak_memory_is_flat_in_the_episode_count(capsys, method: str) -> None:
    """Full mode: each count in its own fresh process (glibc's free lists of one run cannot serve the next);
    quick mode: in this process, smaller (sanity of the check itself, at CI cost)."""
    require(method)
    if not peak_rss_reset():
        pytest.skip("/proc/self/clear_refs is not writable here: the peak RSS cannot be reset")
    counts = CPU_MEMORY_EPISODES.get(method, MEMORY_EPISODES) if FULL and DEVICE.type == "cpu" else MEMORY_EPISODES
    peaks = {}
    for count in counts:
        if not FULL:
            peaks[count] = scoring_peaks(count, method)
            continue
        code = f"from tests.benchmarks.test_bench_new_heads import peak_scoring_child; peak_scoring_child({count}, {method!r})"
        # A fixed mmap threshold: the peak shows what scoring holds, not glibc's free lists (see test_bench_pipeline).
        environment = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=3600,
                                cwd=PROJECT_ROOT, env=environment)
        assert result.returncode == 0, result.stderr[-2000:]
        peaks[count] = json.loads(result.stdout.split("PEAK_GROWTH_MIB")[-1])
    small, large = counts
    for key in peaks[small]:
        report(capsys, f"peak RSS growth while scoring, {key}-shot", d=DIM,
               **{f"episodes_{count}_mib": peaks[count][key] for count in counts})
        assert peaks[large][key] <= (1.1 if FULL else 1.25) * peaks[small][key] + 16, (key, peaks)
