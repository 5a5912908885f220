"""Training episodes decoded and augmented in DataLoader worker processes, in order, whatever the worker count.

Item ``k`` of an ``EpisodeDataset`` is training episode ``episode_indices[k]``: its classes and videos come from
``SeedSequence([train_seed, 1, i])`` (``draw_episode``) and clip ``j`` (supports first, then queries) from its
own stream (``ClipGenerators(train_seed).at(i, j)``, counter-based Philox), which first picks the frames (``maker.frame_indices``:
only those frames are read, so a frame store or decord's seek decodes 8 frames, not the video) and then
augments them (``maker.transform``). Nothing depends on the process that builds the episode, so episode ``i``
is bit-identical for 0, 1 or N workers (tests/test_episode_loader.py).

``episode_batches`` wraps it in a ``DataLoader``: persistent workers (one intra-op thread each), ``prefetch``
episodes in flight per worker, pinned memory on CUDA (the trainer copies with ``non_blocking=True``), and
``LoadedEpisode.wait_seconds``, the time the trainer waited for each episode (the data-wait fraction).

Usage::

    plan = EpisodePlan.from_partition(benchmark.partition("train"), train_seed=0, way=5, shot=1, queries=6)
    for loaded in episode_batches(plan, benchmark.video_path, maker, range(start, stop), workers=2):
        loaded.index, loaded.classes, loaded.clips  # clips [V, T, ...] (supports first), pinned on CUDA
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from fsar_bench.data.sampling import ClipGenerators
from fsar_bench.data.splits import Partition
from fsar_bench.data.video import VideoError, VideoReader, open_reader, random_segment_indices
from fsar_bench.episodes import draw_episode

VIDEO_CACHE_BYTES = 2 << 30  # whole decoded videos kept in RAM (all workers together) while they fit


class ClipMaker(Protocol):
    """Chooses a training clip's frames, then augments them, drawing from the clip's Generator in that order."""

    frames: int

    def frame_indices(self, num_frames: int, rng: np.random.Generator) -> list[int]: ...

    def transform(self, frames: np.ndarray, rng: np.random.Generator, query: bool) -> torch.Tensor: ...


@dataclass(frozen=True)
class SegmentFrames:
    """The plain clip: one random frame per segment, uint8 ``[T, H, W, 3]`` (the model resizes and crops)."""

    frames: int

    def frame_indices(self, num_frames: int, rng: np.random.Generator) -> list[int]:
        return random_segment_indices(num_frames, self.frames, rng)

    def transform(self, frames: np.ndarray, rng: np.random.Generator, query: bool) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(frames))


@dataclass(frozen=True)
class EpisodePlan:
    """What draws training episodes (picklable: sent once to each worker)."""

    train_seed: int
    way: int
    shot: int
    queries: int
    class_videos: tuple[tuple[str, ...], ...]  # the train classes in sorted order, each its sorted video ids

    @classmethod
    def from_partition(cls, partition: Partition, train_seed: int, way: int, shot: int, queries: int) -> EpisodePlan:
        return cls(train_seed, way, shot, queries, tuple(tuple(partition.videos[c]) for c in partition.classes))

    def episode(self, index: int) -> tuple[list[int], list[str]]:
        """(class indices, video ids: supports class-major, then queries) of training episode ``index``."""
        sizes = [len(videos) for videos in self.class_videos]
        classes, picks = draw_episode([self.train_seed, 1, index], sizes, self.way, self.shot, self.queries)
        videos = [self.class_videos[c][p] for c, chosen in zip(classes, picks) for p in chosen[:self.shot]]
        videos += [self.class_videos[c][p] for c, chosen in zip(classes, picks) for p in chosen[self.shot:]]
        return list(classes), videos


@dataclass
class LoadedEpisode:
    index: int
    classes: list[int]
    clips: torch.Tensor | list[torch.Tensor]  # [V, ...] stacked when every clip has one shape, else a list
    load_seconds: float = 0.0  # building it, in its worker
    wait_seconds: float = 0.0  # the consumer's wait for it

    def pin_memory(self) -> LoadedEpisode:
        """Called by the DataLoader's pinning thread (``pin_memory=True``)."""
        if isinstance(self.clips, torch.Tensor):
            self.clips = self.clips.pin_memory()
        else:
            self.clips = [clip.pin_memory() for clip in self.clips]
        return self


class EpisodeDataset(Dataset):
    """Item k: ``LoadedEpisode`` of training episode ``episode_indices[k]``."""

    def __init__(self, plan: EpisodePlan, video_path: Callable[[str], Path], maker: ClipMaker,
                 episode_indices: list[int], cache_bytes: int = 0, backend: str | None = None) -> None:
        self.plan = plan
        self.video_path = video_path
        self.maker = maker
        self.episode_indices = list(episode_indices)
        self.cache_bytes = cache_bytes
        self.backend = backend
        self._reader: VideoReader | None = None
        self._cache: dict[str, np.ndarray] = {}
        self._cached = 0
        self._cache_full = False  # a whole video no longer fits: read only the chosen frames from then on

    def __len__(self) -> int:
        return len(self.episode_indices)

    def _frames(self, video_id: str, rng: np.random.Generator) -> np.ndarray:
        """The chosen frames uint8 [T, H, W, 3]: from the whole-video cache, else only those frames are read.
        Whole videos are decoded (and kept) only while the cache has room: once one does not fit, none is, since
        decoding a whole video to keep 8 of its frames would cost tens of times the seek."""
        if self._reader is None:
            self._reader = open_reader(self.backend)
        path = self.video_path(video_id)
        full = self._cache.get(video_id)
        if full is None and self.cache_bytes and not self._cache_full:
            full = self._reader.read(path, lambda n: list(range(n)))
            if self._cached + full.nbytes <= self.cache_bytes:
                self._cache[video_id] = full
                self._cached += full.nbytes
            else:
                self._cache_full = True

        def choose(total: int) -> list[int]:
            if total < self.maker.frames:
                raise VideoError(path, f"has {total} frames, fewer than the {self.maker.frames} sampled", "too-short")
            return self.maker.frame_indices(total, rng)

        if full is not None:
            return full[choose(len(full))]
        return self._reader.read(path, choose)

    def __getitem__(self, position: int) -> LoadedEpisode:
        started = time.perf_counter()
        index = self.episode_indices[position]
        classes, videos = self.plan.episode(index)
        n_support = self.plan.way * self.plan.shot
        clips = []
        streams = ClipGenerators(self.plan.train_seed)
        for j, video in enumerate(videos):
            rng = streams.at(index, j)
            clips.append(self.maker.transform(self._frames(video, rng), rng, j >= n_support))
        same = all(clip.shape == clips[0].shape for clip in clips)
        return LoadedEpisode(index, classes, torch.stack(clips) if same else clips, time.perf_counter() - started)


def _collate(item: LoadedEpisode) -> LoadedEpisode:
    return item


def _one_thread(worker_id: int) -> None:
    torch.set_num_threads(1)  # workers decode and augment; the trainer owns the cores' intra-op threads


def episode_batches(plan: EpisodePlan, video_path: Callable[[str], Path], maker: ClipMaker,
                    episode_indices: Iterable[int], workers: int = 2, prefetch: int = 4,
                    pin_memory: bool | None = None, cache_bytes: int = VIDEO_CACHE_BYTES,
                    backend: str | None = None) -> Iterator[LoadedEpisode]:
    """The episodes in ``episode_indices`` order, built by ``workers`` processes (0: in this process).

    Each carries ``wait_seconds``, how long this iterator blocked for it. A video that cannot be read raises
    VideoError naming it (from the worker).
    """
    indices = list(episode_indices)
    per_worker_cache = cache_bytes // max(1, workers)
    dataset = EpisodeDataset(plan, video_path, maker, indices, per_worker_cache, backend)
    pin = torch.cuda.is_available() if pin_memory is None else pin_memory
    loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers, collate_fn=_collate,
                        pin_memory=pin, persistent_workers=workers > 0, prefetch_factor=prefetch if workers else None,
                        worker_init_fn=_one_thread if workers else None,
                        generator=torch.Generator().manual_seed(0))  # never draws from torch's global RNG (dropout)
    iterator = iter(loader)
    for _ in range(len(indices)):
        started = time.perf_counter()
        item = next(iterator)
        item.wait_seconds = time.perf_counter() - started
        yield item
