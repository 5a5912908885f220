"""Evaluation: encode each unique video once, then score episodes in batches (DESIGN §1).

Encoding (``encode_unique``): videos found in the ``EncodingCache`` (memory, then disk) are not
decoded at all; the others are decoded by DataLoader workers, encoded under ``torch.inference_mode``
(AMP on GPU, channels-last), written to the cache, and - under torchrun - sharded over the ranks
in fixed batches and all-gathered.

Scoring (``score_episodes``): index tensors gather the cached encodings of a batch of episodes and
the head's batched ``logits`` scores them all at once. The batch size comes from a memory budget
(``choose_episode_batch``: the head's peak scratch memory per episode is measured on a 1- and a
3-episode probe). On CPU, batches run in ``workers`` threads of one intra-op thread each (no OpenMP
barrier per small op, which on a shared machine costs more than the op). Every head is
batch-invariant: results are bit-identical to scoring episodes one at a time (tests/test_evaluate.py).
A ``PairwiseHead`` (OTAM) is scored through ``fsar_bench/evaluation/pairs.py`` instead: each distinct
(query, support video) pair once, then the episodes gather their pair scores.

``evaluate_episodes`` is the one path from episodes to predictions: encode the unique videos, index, batch,
score. The runner's test evaluation and the validation during training both call it.

Usage::

    timings = evaluate_episodes(model, episodes, episode_ids, benchmark.video_path, on_batch, cache=cache)

    result = encode_unique(model, video_ids, paths, frames=8, cache=cache, context=context.digest())
    batch = choose_episode_batch(model.head, result.reps, row_of, episodes, todo, device)
    for episode_ids, predictions in score_sharded(model.head, result.reps, row_of, episodes, todo, batch, device):
        ...
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fsar_bench.api import FewShotHead, PairwiseHead, Reps, cat_reps, index_reps, map_reps
from fsar_bench.evaluation.checks import check_logits
from fsar_bench.evaluation.cache import EncodingCache, entry_key
from fsar_bench.distributed import SINGLE, Distributed
from fsar_bench.episodes import EpisodeSet
from fsar_bench.data.loading import iterate_clip_batches
from fsar_bench.model.network import FSARModel
from fsar_bench.evaluation.pairs import score_pairwise
from fsar_bench.evaluation.peak_memory import linear_peak_bytes, memory_budget
from fsar_bench.progress import step_progress
from fsar_bench.precision import Precision, resolve_precision

ProgressFn = Callable[[int], None]
MAX_EPISODE_BATCH = 4096


# --------------------------------------------------------------------------- encoding
@dataclass
class EncodeResult:
    """Encodings of ``len(video_ids)`` videos (leading axis, in order) and where they came from."""

    reps: Reps
    from_cache: int
    encoded: int
    seconds: float


@torch.inference_mode()
def encode_clips(model: FSARModel, clips: list[torch.Tensor], precision: Precision | None = None,
                 video_ids: list[str] | None = None) -> Reps:
    """uint8 clips ``[T, H, W, 3]`` -> per-video representations on CPU (float32); autocast at ``precision``
    (default ``resolve_precision("auto")``: bf16 or fp16 on GPU, fp32 on CPU). ``video_ids``: the clips' videos
    (heads using class text need them)."""
    precision = precision or resolve_precision("auto", model.device)
    if all(clip.shape == clips[0].shape for clip in clips):
        pixels = model.prepare(torch.stack(clips))
    else:
        pixels = torch.cat([model.prepare(clip.unsqueeze(0)) for clip in clips])
    with precision.autocast(model.device):
        reps = model.encode(pixels, video_ids)
    return map_reps(reps, lambda t: t.float().cpu())


def encode_videos(model: FSARModel, paths: list[Path], frames: int, workers: int = 2, batch_videos: int = 16,
                  progress: ProgressFn | None = None) -> Reps:
    """Per-video representations ``[len(paths), ...]`` on CPU, in the order of ``paths`` (no cache)."""
    return encode_unique(model, [str(p) for p in paths], paths, frames, workers=workers, batch_videos=batch_videos,
                         progress=progress).reps


class _Table:
    """The encodings of every needed video, allocated on the first row (one copy in memory)."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.data: Reps | None = None

    def fill(self, positions: list[int], reps: Reps) -> None:
        """Rows ``positions`` <- ``reps`` (leading axis = len(positions))."""
        if self.data is None:
            self.data = map_reps(reps, lambda t: t.new_zeros((self.rows, *t.shape[1:])))
        index = torch.as_tensor(positions, dtype=torch.long)
        if isinstance(self.data, torch.Tensor):
            self.data[index] = reps  # type: ignore[index]
        else:
            for key, tensor in self.data.items():
                tensor[index] = reps[key]  # type: ignore[index]


def encode_unique(
    model: FSARModel,
    video_ids: list[str],
    paths: list[Path],
    frames: int,
    *,
    cache: EncodingCache | None = None,
    context: str = "",
    workers: int = 2,
    batch_videos: int = 16,
    dist: Distributed = SINGLE,
    progress: ProgressFn | None = None,
    precision: Precision | None = None,
) -> EncodeResult:
    """Encodings of ``video_ids`` (files ``paths``): from ``cache`` where present, else decoded and encoded.

    Under torchrun the missing videos are encoded in batches of ``batch_videos``, batch b on rank
    b % world_size, then all-gathered: every rank returns every encoding, bit-identical to one process.
    """
    started = time.time()
    table = _Table(len(video_ids))
    keys = [entry_key(context, vid, path) for vid, path in zip(video_ids, paths)] if cache is not None else []
    missing = np.ones(len(video_ids), dtype=bool)
    if cache is not None:
        for position, key in enumerate(keys):
            reps = cache.get(key)
            if reps is not None:
                table.fill([position], map_reps(reps, lambda t: t.unsqueeze(0)))
                missing[position] = False
    from_cache = int((~missing).sum())
    missing = dist.any_true(torch.from_numpy(missing)).numpy()  # a video missing anywhere is encoded
    todo = np.flatnonzero(missing).tolist()
    chunks = [todo[i:i + batch_videos] for i in range(0, len(todo), batch_videos)]
    mine = [position for chunk in dist.shard(chunks) for position in chunk]
    was_training = model.training
    model.eval()
    encoded_parts: list[Reps] = []
    writes = cache.background_writes() if cache is not None else contextlib.nullcontext(None)
    try:
        with writes as put:
            for batch in iterate_clip_batches([paths[p] for p in mine], frames, workers=workers, batch_size=batch_videos):
                positions = [mine[i] for i in batch.indices]
                reps = encode_clips(model, batch.clips, precision, [video_ids[p] for p in positions])
                if put is not None:
                    for row, position in enumerate(positions):
                        video = map_reps(reps, lambda t: t[row].clone())
                        put(keys[position], video, {"video": video_ids[position], "frame_indices": batch.frame_indices[row]})
                if dist.active:
                    encoded_parts.append(reps)
                else:
                    table.fill(positions, reps)
                if progress:
                    progress(len(positions) * dist.world_size)
    finally:
        model.train(was_training)
    if dist.active and todo:
        local = cat_reps(encoded_parts) if encoded_parts else None
        for rank, rows in enumerate(dist.all_gather_rows(local)):
            if rows is not None:
                positions = [p for chunk in chunks[rank::dist.world_size] for p in chunk]
                table.fill(positions, rows)
    if cache is not None:
        cache.enforce_limit(keep=set(keys))
    if table.data is None:
        raise ValueError("encode_unique: no video to encode")
    return EncodeResult(table.data, from_cache, len(todo), time.time() - started)


# --------------------------------------------------------------------------- batch size
def _score_batch(head: FewShotHead, table: Reps, row_of: np.ndarray, episodes: EpisodeSet, ids: np.ndarray,
                 device: torch.device) -> np.ndarray:
    """Predictions [B, Q] of episodes ``ids`` (thread-safe; runs under inference mode)."""
    with torch.inference_mode():
        support_rows = torch.from_numpy(row_of[episodes.support[ids]]).long().to(device)   # [B, N, K]
        query_rows = torch.from_numpy(row_of[episodes.query[ids]]).long().to(device)       # [B, Q]
        logits = head.logits(index_reps(table, support_rows), index_reps(table, query_rows))  # [B, Q, N]
        check_logits(logits, head, ids, episodes.query.shape[1], episodes.support.shape[1])
        return logits.argmax(dim=-1).cpu().numpy()


def episode_bytes(head: FewShotHead, reps: Reps, row_of: np.ndarray, episodes: EpisodeSet, ids: np.ndarray,
                  device: torch.device) -> tuple[int, int]:
    """(fixed, per-episode) peak scratch bytes of scoring a batch (gathered encodings + the head's
    intermediates), from the peaks of a 1- and a 3-episode probe."""
    was_training = head.training
    head.eval()
    table = map_reps(reps, lambda t: t.to(device))
    try:
        return linear_peak_bytes(lambda count: _score_batch(head, table, row_of, episodes, ids[:count], device),
                                 available=len(ids))
    finally:
        head.train(was_training)

def choose_episode_batch(head: FewShotHead, reps: Reps, row_of: np.ndarray, episodes: EpisodeSet, ids: np.ndarray,
                         device: torch.device, budget: int | None = None, workers: int = 1) -> int:
    """Episodes per batch so that ``workers`` batches in flight fit ``budget`` bytes (default ``memory_budget``)."""
    if len(ids) == 0:
        return 1
    if isinstance(head, PairwiseHead):  # scratch is bounded per pair chunk (pairs.py); an episode is Q*N*K indices
        return MAX_EPISODE_BATCH
    fixed, per_episode = episode_bytes(head, reps, row_of, episodes, ids, device)
    budget = memory_budget(device) if budget is None else budget
    per_worker = budget // max(1, workers) - fixed
    return int(min(MAX_EPISODE_BATCH, max(1, per_worker // per_episode)))


def scoring_workers(device: torch.device) -> int:
    """Scoring threads: one per intra-op thread on CPU, one on GPU."""
    return max(1, torch.get_num_threads()) if device.type == "cpu" else 1


# --------------------------------------------------------------------------- scoring
def score_episodes(
    head: FewShotHead,
    reps: Reps,
    row_of: np.ndarray,
    episodes: EpisodeSet,
    episode_ids: np.ndarray,
    batch: int = 256,
    device: torch.device | str = "cpu",
    workers: int = 1,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (episode ids [B], predictions [B, Q]) batch by batch, in order.

    ``reps`` holds the encoded videos; ``row_of[v]`` is the row of partition video v in ``reps``.
    """
    device = torch.device(device)
    was_training = head.training
    head.eval()
    table = map_reps(reps, lambda t: t.to(device))
    if isinstance(head, PairwiseHead):
        try:
            yield from score_pairwise(head, table, row_of, episodes, episode_ids, batch, device, workers)
        finally:
            head.train(was_training)
        return
    if device.type == "cpu" and workers > 1:  # at least one batch per thread
        batch = max(1, min(batch, -(-len(episode_ids) // workers)))
    chunks = [episode_ids[start:start + batch] for start in range(0, len(episode_ids), batch)]
    try:
        if workers <= 1 or device.type != "cpu" or len(chunks) <= 1:
            for ids in chunks:
                yield ids, _score_batch(head, table, row_of, episodes, ids, device)
            return
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
                pending: deque = deque()
                for ids in chunks:
                    pending.append((ids, pool.submit(_score_batch, head, table, row_of, episodes, ids, device)))
                    if len(pending) >= 2 * workers:
                        done_ids, future = pending.popleft()
                        yield done_ids, future.result()
                while pending:
                    done_ids, future = pending.popleft()
                    yield done_ids, future.result()
        finally:
            torch.set_num_threads(threads)
    finally:
        head.train(was_training)


def score_sharded(
    head: FewShotHead,
    reps: Reps,
    row_of: np.ndarray,
    episodes: EpisodeSet,
    episode_ids: np.ndarray,
    batch: int,
    device: torch.device | str = "cpu",
    workers: int = 1,
    dist: Distributed = SINGLE,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``score_episodes`` over the ranks: each round of ``batch·workers·world`` episodes is split in
    contiguous shares and the predictions are all-gathered, so every rank yields every episode, in order."""
    if not dist.active:
        yield from score_episodes(head, reps, row_of, episodes, episode_ids, batch, device, workers)
        return
    round_size = batch * max(1, workers) * dist.world_size
    for start in range(0, len(episode_ids), round_size):
        share = np.array_split(episode_ids[start:start + round_size], dist.world_size)[dist.rank]
        results = list(score_episodes(head, reps, row_of, episodes, share, batch, device, workers)) if len(share) else []
        ids = np.concatenate([r[0] for r in results]) if results else np.zeros(0, np.int64)
        predictions = np.concatenate([r[1] for r in results]) if results else np.zeros((0, episodes.query.shape[1]), np.int64)
        gathered = dist.all_gather_objects((ids, predictions))
        yield np.concatenate([g[0] for g in gathered]), np.concatenate([g[1] for g in gathered])


def episode_accuracy(episodes: EpisodeSet, ids: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """Number of correct queries per episode, [B]."""
    return (predictions == episodes.query_labels[ids]).sum(axis=1)


# --------------------------------------------------------------------------- the one evaluation path
def evaluate_episodes(
    model: FSARModel,
    episodes: EpisodeSet,
    episode_ids: np.ndarray,
    video_path: Callable[[str], Path],
    on_batch: Callable[[np.ndarray, np.ndarray], None],
    *,
    cache: EncodingCache | None = None,
    context: str = "",
    workers: int = 2,
    batch: int = 0,
    dist: Distributed = SINGLE,
    show_progress: bool = False,
    log: Callable[[str], None] | None = None,
    precision: Precision | None = None,
    encode: Callable[[list[str]], Reps] | None = None,
) -> dict[str, float | int]:
    """Encode each unique video of ``episode_ids`` once (through ``cache``), then score the episodes in batches.
    ``encode`` (the frozen track's feature store): per-video encodings of the given ids from elsewhere, instead of
    decoding the videos.

    ``on_batch(ids [B], predictions [B, Q])`` is called batch by batch, in episode order (on every rank under
    torchrun). ``batch`` 0 sizes batches from the memory budget. Both the test evaluation (``runner``) and the
    validation during training (``validation_accuracy``) go through here. Returns the timings.
    """
    needed = episodes.videos_of(episode_ids)
    video_ids = [episodes.video_ids[v] for v in needed]
    if log:
        log(f"{len(episode_ids)} episodes to score, {len(needed)} unique videos to encode")
    if encode is not None:
        started = time.time()
        encoded = EncodeResult(encode(video_ids), 0, len(video_ids), time.time() - started)
    else:
        with step_progress(f"encode {len(needed)} videos", len(needed), show_progress and dist.is_main) as advance:
            encoded = encode_unique(model, video_ids, [video_path(v) for v in video_ids], episodes.protocol.frames,
                                    cache=cache, context=context, workers=workers, dist=dist, progress=advance,
                                    precision=precision)
    if log:
        log(f"encodings: {encoded.from_cache} of {len(needed)} from the cache, {encoded.encoded} encoded "
            f"({encoded.seconds:.1f} s)")
    row_of = np.full(len(episodes.video_ids), -1, dtype=np.int64)
    row_of[needed] = np.arange(len(needed))
    started = time.time()
    device = model.device
    threads = dist.broadcast_object(scoring_workers(device))
    batch = batch or dist.broadcast_object(
        choose_episode_batch(model.head, encoded.reps, row_of, episodes, episode_ids, device, workers=threads))
    label = f"score {len(episode_ids)} episodes"
    with step_progress(label, len(episode_ids), show_progress and dist.is_main) as advance:
        for ids, predictions in score_sharded(model.head, encoded.reps, row_of, episodes, episode_ids, batch, device,
                                              threads, dist):
            on_batch(ids, predictions)
            advance(len(ids))
    return {"encode_seconds": encoded.seconds, "score_seconds": time.time() - started,
            "videos_encoded": encoded.encoded, "encodings_from_cache": encoded.from_cache, "episode_batch": batch}


def validation_accuracy(
    model: FSARModel,
    episodes: EpisodeSet,
    video_path: Callable[[str], Path],
    workers: int = 2,
    batch: int = 0,
    dist: Distributed = SINGLE,
    precision: Precision | None = None,
    encode: Callable[[list[str]], Reps] | None = None,
) -> tuple[float, float]:
    """(mean accuracy %, its 95% CI half-width 1.96 s/sqrt(N) over episodes), through ``evaluate_episodes``
    (``encode``: as there)."""
    correct = np.zeros(len(episodes), dtype=np.int64)

    def count(ids: np.ndarray, predictions: np.ndarray) -> None:
        correct[ids] = episode_accuracy(episodes, ids, predictions)

    evaluate_episodes(model, episodes, np.arange(len(episodes)), video_path, count, workers=workers, batch=batch,
                      dist=dist, precision=precision, encode=encode)
    per_episode = 100.0 * correct / episodes.query.shape[1]
    ci95 = 1.96 * per_episode.std(ddof=1) / np.sqrt(len(per_episode)) if len(per_episode) > 1 else float("nan")
    return 100.0 * int(correct.sum()) / episodes.query.size, float(ci95)
