"""Decoding clips in parallel worker processes (torch DataLoader), never skipping a video.

Each worker opens its own reader (decord when available: it seeks to just the sampled frames).
Batches come back in order, in pinned memory when a GPU is used, with the frame indices read.
A video that cannot be read stops the run with a VideoError naming it: skipping it would change
the episodes.

Usage::

    for batch in iterate_clip_batches(paths, frames=8, workers=2):
        batch.indices        # list[int] into paths
        batch.clips          # list of uint8 tensors [T, H, W, 3]
        batch.frame_indices  # list[list[int]]: the frames read
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from fsar_bench.data.video import VideoError, VideoReader, clip_choice, open_reader


class ClipDataset(Dataset):
    """Item i: (i, clip uint8 [T, H, W, 3] or None, error text or None, frame indices read).

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

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str | None, list[int]]:
        if self._reader is None:
            self._reader = open_reader(self.backend)
        rng = None if self.seeds is None else np.random.default_rng(np.random.SeedSequence(self.seeds[index]))
        choose = clip_choice(self.paths[index], self.frames, rng)
        picked: list[int] = []

        def recording_choice(total: int) -> list[int]:
            picked[:] = choose(total)
            return picked

        try:
            clip = self._reader.read(self.paths[index], recording_choice)
        except VideoError as error:
            return index, None, error.reason, picked
        return index, torch.from_numpy(np.ascontiguousarray(clip)), None, list(picked)


@dataclass
class ClipBatch:
    """Decoded clips in the order of their ``indices`` into the path list."""

    indices: list[int]
    clips: list[torch.Tensor]
    frame_indices: list[list[int]]


def _collate(items: list) -> list:
    return items


def iterate_clip_batches(
    paths: list[Path],
    frames: int,
    workers: int = 2,
    batch_size: int = 16,
    seeds: list[list[int]] | None = None,
    backend: str | None = None,
) -> Iterator[ClipBatch]:
    """Decode clips in order, ``batch_size`` at a time, in ``workers`` processes (0: in this process).

    Raises VideoError on the first bad video.
    """
    dataset = ClipDataset(paths, frames, seeds, backend)
    parallel = workers if len(paths) > batch_size else 0
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=parallel,
        collate_fn=_collate,
        pin_memory=torch.cuda.is_available(),
        prefetch_factor=4 if parallel else None,
        persistent_workers=False,
        generator=torch.Generator().manual_seed(0),  # its base seed: never a draw from torch's global RNG (dropout)
    )
    for items in loader:
        batch = ClipBatch([], [], [])
        for index, clip, error, picked in items:
            if clip is None:
                raise VideoError(paths[index], error or "unreadable")
            batch.indices.append(index)
            batch.clips.append(clip)
            batch.frame_indices.append(picked)
        yield batch
