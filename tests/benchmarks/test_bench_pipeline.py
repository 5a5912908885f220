"""The whole evaluation on the synthetic test set: end-to-end time over the encode-once floor, the naive
pipeline (every video of every episode decoded and encoded, as the reference code does) against ours, and
peak memory against the episode count.

Full mode: OTAM 5-shot 10,000 episodes end to end, median of 5 rounds (target <= 1.3x the floor); naive vs ours at 1,000 1-shot
episodes with the 10,000-episode projection (target >= 100x); peak RSS at 1,000 vs 10,000 episodes (target: the
same within 20%). Quick mode: a few hundred episodes, sanity only.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fsar_bench.evaluation.cache import EncodingCache, cache_folder
from fsar_bench.config import load_config
from fsar_bench.data.benchmarks import open_benchmark
from fsar_bench.episodes import draw_episodes
from fsar_bench.evaluation.evaluate import encode_clips, encode_videos, episode_accuracy, score_episodes
from fsar_bench.data.loading import iterate_clip_batches
from fsar_bench.runner import build_model, evaluate_into, get_method, make_protocol, state_sha256
from fsar_bench.store import RunStore
from tests.benchmarks._common import FULL, PROJECT_ROOT, report, rss_kib
from tests.conftest import write_bench_toml

pytestmark = pytest.mark.benchmark_quick

E2E_EPISODES = 10_000 if FULL else 40
E2E_ROUNDS = 5 if FULL else 1
NAIVE_EPISODES = 1000 if FULL else 6
OURS_EPISODES = (1000, 10_000) if FULL else (40,)
MEMORY_EPISODES = (1000, 10_000) if FULL else (800, 2400)  # both past the budget's batch size


class Setup:
    """A config with its own encoding cache over the session's synthetic videos, and an untrained OTAM."""

    def __init__(self, root: Path, synthetic_cache: Path) -> None:
        self.root = root
        self.synthetic_cache = synthetic_cache
        cache = root / "cache"
        cache.mkdir(parents=True, exist_ok=True)
        if not (cache / "datasets").exists():
            (cache / "datasets").symlink_to(synthetic_cache / "datasets")
        self.config = load_config(write_bench_toml(root, cache), {"run.workers": 2})
        self.entry = get_method(self.config, "otam")
        self.benchmark = open_benchmark("synthetic", self.config)
        self.model = build_model(self.config, self.entry, self.benchmark, torch.device("cpu"), 5)
        self.context = "bench:" + state_sha256(self.model)
        self.runs = 0
        self.cold: dict[tuple[int, int], tuple[float, dict]] = {}
        self.warm_cache = EncodingCache(cache_folder(root / "warm"), memory_bytes=0)

    def cold_run(self, shot: int, count: int) -> tuple[float, dict]:
        """``ours`` with an empty cache (memoised: the end-to-end and naive tests share it)."""
        if (shot, count) not in self.cold:
            self.cold[(shot, count)] = self.ours(self.episodes(shot, count), self.fresh_cache(f"cold-{shot}-{count}"))
        return self.cold[(shot, count)]

    def episodes(self, shot: int, count: int):
        protocol = make_protocol(self.config, self.benchmark, "test", shot, episodes=count)
        return draw_episodes(protocol, self.benchmark.partition("test"))

    def paths(self, episodes, video_indices) -> list[Path]:
        return [self.benchmark.video_path(episodes.video_ids[v]) for v in video_indices]

    def floor(self, episodes) -> float:
        """Decode and encode each unique video of ``episodes`` once (no cache)."""
        needed = episodes.videos_of(np.arange(len(episodes)))
        start = time.perf_counter()
        encode_videos(self.model, self.paths(episodes, needed), episodes.protocol.frames, workers=2)
        return time.perf_counter() - start

    def ours(self, episodes, cache: EncodingCache, name: str = "") -> tuple[float, dict]:
        """``evaluate_into`` as ``fsar-bench run`` does it (encode via the cache, score, append records)."""
        self.runs += 1
        stamps = {"method": "otam", "protocol_fingerprint": episodes.protocol.fingerprint,
                  "episode_fingerprint": episodes.fingerprint, "checkpoint_sha256": self.context}
        run = RunStore.open(self.root / "results", name or f"bench{self.runs}", stamps)
        start = time.perf_counter()
        summary = evaluate_into(run, self.model, self.benchmark, episodes, self.config,
                                log=lambda message: None, cache=cache, context=self.context)
        return time.perf_counter() - start, summary

    def fresh_cache(self, name: str) -> EncodingCache:
        return EncodingCache(cache_folder(self.root / name), memory_bytes=0)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, synthetic_cache) -> Setup:
    return Setup(tmp_path_factory.mktemp("bench-pipeline"), synthetic_cache)


def naive(setup: Setup, episodes) -> tuple[float, float]:
    """(seconds, accuracy): per episode, decode and encode its N*K + Q videos, then score it alone."""
    order = [np.concatenate([episodes.support[e].ravel(), episodes.query[e]]) for e in range(len(episodes))]
    per_episode = len(order[0])
    paths = [path for videos in order for path in setup.paths(episodes, videos)]
    row_of = np.arange(per_episode)
    correct = 0
    start = time.perf_counter()
    for e, batch in enumerate(iterate_clip_batches(paths, episodes.protocol.frames, workers=2, batch_size=per_episode)):
        reps = encode_clips(setup.model, batch.clips)
        local = _single_episode(episodes, e, per_episode)
        for _, predictions in score_episodes(setup.model.head, reps, row_of, local, np.array([0]), batch=1):
            correct += int(episode_accuracy(local, np.array([0]), predictions).sum())
    return time.perf_counter() - start, 100.0 * correct / (len(episodes) * episodes.query.shape[1])


def _single_episode(episodes, e: int, per_episode: int):
    """Episode ``e`` re-indexed onto its own freshly encoded videos 0..per_episode-1."""
    from dataclasses import replace

    support_size = episodes.support[e].size
    support = np.arange(support_size, dtype=np.int32).reshape(1, *episodes.support.shape[1:])
    query = np.arange(support_size, per_episode, dtype=np.int32)[None]
    return replace(episodes, classes=episodes.classes[e:e + 1], support=support, query=query,
                   query_labels=episodes.query_labels[e:e + 1])


def test_end_to_end_over_encode_once_floor(benchmark, capsys, setup: Setup) -> None:
    """Rounds of (floor, ours with a cold cache), interleaved; the ratio of the medians (a load spike on the
    shared machine moves one round, not the figure)."""
    episodes = setup.episodes(5, E2E_EPISODES)
    floors: list[float] = []
    runs: list[tuple[float, dict]] = []

    def one_round() -> None:
        floors.append(setup.floor(episodes))
        runs.append(setup.ours(episodes, setup.fresh_cache(f"e2e-{len(runs)}")))

    benchmark.pedantic(one_round, rounds=E2E_ROUNDS, iterations=1)
    floor = float(np.median(floors))
    seconds = float(np.median([run[0] for run in runs]))
    summary = runs[-1][1]
    ratio = seconds / floor
    benchmark.extra_info.update(ratio=ratio, floor_seconds=floor, end_to_end_seconds=seconds)
    report(capsys, "end-to-end / encode-once floor (OTAM 5-shot, synthetic)", episodes=E2E_EPISODES,
           rounds=E2E_ROUNDS, videos=summary["videos_encoded"], end_to_end_s=seconds, floor_s=floor,
           encode_s=float(np.median([run[1]["encode_seconds"] for run in runs])),
           score_s=float(np.median([run[1]["score_seconds"] for run in runs])), ratio=ratio,
           rounds_ours_s=[round(run[0], 3) for run in runs], rounds_floor_s=[round(f, 3) for f in floors])
    assert summary["episodes"] == E2E_EPISODES and summary["videos_encoded"] > 0
    assert ratio < (1.3 if FULL else 10.0)


def _projected(seconds: float, summary: dict, count: int) -> float:
    """Time at ``count`` episodes: the same encoding (every unique test video once) + scoring scaled linearly."""
    encode = summary["encode_seconds"]
    return encode + (seconds - encode) * count / summary["episodes"]


def test_naive_pipeline_against_ours(benchmark, capsys, setup: Setup) -> None:
    naive_episodes = setup.episodes(1, NAIVE_EPISODES)
    naive_seconds, naive_accuracy = benchmark.pedantic(lambda: naive(setup, naive_episodes), rounds=1, iterations=1)
    naive_per_episode = naive_seconds / NAIVE_EPISODES
    if FULL:
        ours_1k = setup.cold_run(1, 1000)[0]
        ours_10k = setup.cold_run(1, 10_000)[0]
    else:
        seconds, summary = setup.cold_run(1, OURS_EPISODES[0])
        ours_1k, ours_10k = _projected(seconds, summary, 1000), _projected(seconds, summary, 10_000)
    ratio_1k, ratio_10k = naive_per_episode * 1000 / ours_1k, naive_per_episode * 10_000 / ours_10k
    benchmark.extra_info.update(ratio_1k=ratio_1k, ratio_10k=ratio_10k)
    report(capsys, "naive / ours (OTAM 1-shot, synthetic)", naive_episodes=NAIVE_EPISODES, naive_s=naive_seconds,
           naive_s_per_episode=naive_per_episode, ours_1k_s=ours_1k, ours_10k_s=ours_10k, ratio_1k=ratio_1k,
           projected_ratio_10k=ratio_10k)
    assert 0 <= naive_accuracy <= 100
    assert ratio_1k > 1
    if FULL:
        assert ratio_10k >= 100


def peak_rss_child(root: str, synthetic_cache: str, count: int) -> None:
    """In a fresh process: evaluate ``count`` OTAM 5-shot episodes on cached encodings; print the peak RSS (KiB).

    The peak is /proc's VmHWM, which starts afresh at exec. ``getrusage``'s ru_maxrss does not: a child
    forked from the test process inherits the parent's peak, several GB after the head-only benchmarks,
    which would hide the evaluation's own peak."""
    import resource

    setup = Setup(Path(root), Path(synthetic_cache))
    episodes = setup.episodes(5, count)
    setup.ours(episodes, setup.warm_cache, name=f"memory-{count}")
    print("PEAK_RSS_KIB", rss_kib("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def test_peak_memory_does_not_grow_with_episodes(capsys, setup: Setup) -> None:
    """Each count in its own fresh process (the same work but the episode count); peak RSS compared."""
    setup.ours(setup.episodes(5, 50), setup.warm_cache)  # encodings now cached: what is left is scoring
    peaks = {}
    for count in MEMORY_EPISODES:
        code = (f"from tests.benchmarks.test_bench_pipeline import peak_rss_child; "
                f"peak_rss_child({str(setup.root)!r}, {str(setup.synthetic_cache)!r}, {count})")
        # A fixed mmap threshold: the peak then shows what the evaluation holds, not glibc's free lists (which
        # otherwise grow over the first few thousand episodes to about +400 MB, then stay).
        environment = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800,
                                cwd=PROJECT_ROOT, env=environment)
        assert result.returncode == 0, result.stderr[-2000:]
        peaks[count] = int(result.stdout.split("PEAK_RSS_KIB")[-1]) / 1024
    small, large = MEMORY_EPISODES
    report(capsys, "peak RSS of an evaluation (OTAM 5-shot, cached encodings, fresh process each)",
           **{f"episodes_{k}_mib": v for k, v in peaks.items()}, ratio=peaks[large] / peaks[small])
    assert peaks[large] <= (1.1 if FULL else 1.25) * peaks[small] + 16
