"""Evaluation: encode each unique video once, then score episodes in batches (DESIGN §1).

Usage::

    reps = encode_videos(model, [benchmark.video_path(v) for v in video_ids], frames=8)
    for episode_ids, predictions in score_episodes(model.head, reps, row_of, episodes, todo, batch=256):
        ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from fsar_bench.api import FewShotHead, Reps, cat_reps, index_reps, map_reps
from fsar_bench.episodes import EpisodeSet
from fsar_bench.loading import iterate_clips
from fsar_bench.model import FSARModel

ProgressFn = Callable[[int], None]


@torch.inference_mode()
def encode_videos(
    model: FSARModel,
    paths: list[Path],
    frames: int,
    workers: int = 2,
    batch_videos: int = 16,
    progress: ProgressFn | None = None,
) -> Reps:
    """Per-video representations ``[len(paths), ...]`` on CPU, in the order of ``paths``."""
    was_training = model.training
    model.eval()
    parts: list[Reps] = []
    use_amp = model.device.type == "cuda"
    try:
        for _, clips in iterate_clips(paths, frames, workers=workers, batch_size=batch_videos):
            pixels = torch.cat([model.prepare(clip.unsqueeze(0)) for clip in clips])
            with torch.autocast(device_type=model.device.type, dtype=torch.float16, enabled=use_amp):
                reps = model.encode(pixels)
            parts.append(map_reps(reps, lambda t: t.float().cpu()))
            if progress:
                progress(len(clips))
    finally:
        model.train(was_training)
    return cat_reps(parts)


@torch.inference_mode()
def score_episodes(
    head: FewShotHead,
    reps: Reps,
    row_of: np.ndarray,
    episodes: EpisodeSet,
    episode_ids: np.ndarray,
    batch: int = 256,
    device: torch.device | str = "cpu",
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (episode ids [B], predictions [B, Q]) batch by batch.

    ``reps`` holds the encoded videos; ``row_of[v]`` is the row of partition video v in ``reps``.
    """
    was_training = head.training
    head.eval()
    reps = map_reps(reps, lambda t: t.to(device))
    try:
        for start in range(0, len(episode_ids), batch):
            ids = episode_ids[start:start + batch]
            support_rows = torch.from_numpy(row_of[episodes.support[ids]]).long().to(device)   # [B, N, K]
            query_rows = torch.from_numpy(row_of[episodes.query[ids]]).long().to(device)       # [B, Q]
            logits = head.logits(index_reps(reps, support_rows), index_reps(reps, query_rows))  # [B, Q, N]
            yield ids, logits.argmax(dim=-1).cpu().numpy()
    finally:
        head.train(was_training)


def episode_accuracy(episodes: EpisodeSet, ids: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """Number of correct queries per episode, [B]."""
    return (predictions == episodes.query_labels[ids]).sum(axis=1)


def evaluate_accuracy(
    model: FSARModel,
    episodes: EpisodeSet,
    video_path: Callable[[str], Path],
    workers: int = 2,
    batch: int = 256,
) -> float:
    """Mean accuracy (%) over all episodes: used for validation during training."""
    needed = episodes.videos_of(np.arange(len(episodes)))
    reps = encode_videos(model, [video_path(episodes.video_ids[v]) for v in needed], episodes.protocol.frames, workers)
    row_of = np.full(len(episodes.video_ids), -1, dtype=np.int64)
    row_of[needed] = np.arange(len(needed))
    correct = 0
    for ids, predictions in score_episodes(model.head, reps, row_of, episodes, np.arange(len(episodes)), batch, model.device):
        correct += int(episode_accuracy(episodes, ids, predictions).sum())
    return 100.0 * correct / episodes.query.size
