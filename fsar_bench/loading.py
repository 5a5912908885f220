"""Decoding clips in parallel worker processes (torch DataLoader), never skipping a video.

A video that cannot be read stops the run with a VideoError naming it: skipping it would change
the episodes.

Usage::

    for indices, clips in iterate_clips(paths, frames=8, workers=2):
        ...   # indices: list[int] into paths; clips: list of uint8 tensors [T, H, W, 3]
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from fsar_bench.video import VideoError, VideoReader, open_reader, read_clip


class ClipDataset(Dataset):
    """Item i: (i, clip uint8 [T, H, W, 3] or None, error text or None).

    ``seeds`` (one per path) switch to training sampling: one random frame per segment from
    ``default_rng(SeedSequence(seed))``; without them, segment centres.
    """

    def __init__(self, paths: list[Path], frames: int, seeds: list[list[int]] | None = None, backend: str | None = None) -> None:
        self.paths = paths
        self.frames = frames
        self.seeds = seeds
        self.backend = backend
        self._reader: VideoReader | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str | None]:
        if self._reader is None:
            self._reader = open_reader(self.backend)
        rng = None if self.seeds is None else np.random.default_rng(np.random.SeedSequence(self.seeds[index]))
        try:
            clip = read_clip(self._reader, self.paths[index], self.frames, rng)
        except VideoError as error:
            return index, None, error.reason
        return index, torch.from_numpy(np.ascontiguousarray(clip)), None


def _collate(items: list) -> list:
    return items


def iterate_clips(
    paths: list[Path],
    frames: int,
    workers: int = 2,
    batch_size: int = 16,
    seeds: list[list[int]] | None = None,
    backend: str | None = None,
) -> Iterator[tuple[list[int], list[torch.Tensor]]]:
    """Decode clips in order, ``batch_size`` at a time; raise VideoError on the first bad video."""
    dataset = ClipDataset(paths, frames, seeds, backend)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers if len(paths) > batch_size else 0,
        collate_fn=_collate,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
    )
    for batch in loader:
        indices, clips = [], []
        for index, clip, error in batch:
            if clip is None:
                raise VideoError(paths[index], error or "unreadable")
            indices.append(index)
            clips.append(clip)
        yield indices, clips
