"""Meta-training on the train partition, checkpoint selection on val; the test split is never read.

Training episode ``i`` draws its classes and videos from ``SeedSequence([train_seed, 1, i])``; clip ``j`` of
the episode (supports first, then queries) takes its frames, crop, flip and colours from
``SeedSequence([train_seed, 2, i, j])`` (``fsar_bench.data.sampling.clip_generator``) through the recipe's
sampler and augmentation (``fsar_bench.data.transforms.TrainClipMaker``), so a training run is reproducible
from its seed whatever the process or worker that builds a clip.

Usage::

    result = train_model(model, recipe, benchmark, shot=1, frames=8, train_seed=0,
                         val_episodes=val_set, checkpoint_path=Path("best.pt"))
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from fsar_bench.api import Recipe, TrainEpisode
from fsar_bench.data.benchmarks import Benchmark
from fsar_bench.distributed import SINGLE, Distributed
from fsar_bench.episodes import EpisodeSet, draw_episode
from fsar_bench.evaluation.checks import check_loss
from fsar_bench.evaluation.evaluate import evaluate_accuracy_ci
from fsar_bench.model.checkpoints import save_checkpoint
from fsar_bench.model.network import FSARModel
from fsar_bench.schedule import learning_rate, make_optimizer
from fsar_bench.data.sampling import clip_generator
from fsar_bench.data.transforms import TrainClipMaker
from fsar_bench.data.video import VideoError, VideoReader, open_reader

FULL_VIDEO_CACHE_BYTES = 2 << 30  # decoded training videos kept in RAM up to this size


@dataclass(frozen=True)
class TrainResult:
    checkpoint: Path
    checkpoint_sha256: str
    best_val_accuracy: float
    best_iteration: int
    iterations: int
    seconds: float
    history: list[dict]


class TrainClipSource:
    """Training clips of one run: ``maker`` chooses the frames and augments them (``fsar_bench.data.transforms``).
    Whole decoded videos are kept in RAM while they fit in ``cache_bytes`` (the synthetic train set does), else
    decoded each time."""

    def __init__(self, video_path: Callable[[str], Path], maker: TrainClipMaker, reader: VideoReader | None = None,
                 cache_bytes: int = FULL_VIDEO_CACHE_BYTES) -> None:
        self.video_path = video_path
        self.maker = maker
        self.reader = reader or open_reader()
        self.cache_bytes = cache_bytes
        self._cache: dict[str, np.ndarray] = {}
        self._cached_bytes = 0

    def clip(self, video_id: str, rng: np.random.Generator, query: bool) -> torch.Tensor:
        """float32 [T, 3, S, S] in [0, 1] (normalised by the model)."""
        full = self._cache.get(video_id)
        if full is None:
            full = self.reader.read(self.video_path(video_id), lambda n: list(range(n)))
            if self._cached_bytes + full.nbytes <= self.cache_bytes:
                self._cache[video_id] = full
                self._cached_bytes += full.nbytes
        if len(full) < self.maker.frames:
            raise VideoError(self.video_path(video_id), f"has {len(full)} frames, fewer than the {self.maker.frames} sampled",
                             "too-short")
        return self.maker.make(full, rng, query)


class _EpisodeLoss(torch.nn.Module):
    """The module DDP wraps: one training episode's forward, ``(total, logits, terms)``."""

    def __init__(self, model: FSARModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor, episode: TrainEpisode) -> tuple[torch.Tensor, torch.Tensor, dict]:
        n_support = episode.way * episode.shot
        # two backbone calls, as every reference: BatchNorm batch statistics per support set and per query set
        support_features = self.model.features(pixels[:n_support])
        query_features = self.model.features(pixels[n_support:])
        if self.model.head.needs_pixels:
            episode.support_pixels, episode.query_pixels = pixels[:n_support], pixels[n_support:]
        output = self.model.head.loss(support_features, query_features, episode)
        return output.total, output.logits, output.terms


def step_slots(step: int, recipe: Recipe, dist: Distributed) -> list[int | None]:
    """The episodes this rank runs in optimizer step ``step`` (None: a zero-weight filler).

    The step's ``episodes_per_step`` episodes are dealt round-robin to the ranks; every rank runs the same
    number of slots so that DDP's gradient all-reduce lines up.
    """
    first = step * recipe.episodes_per_step
    last = min(first + recipe.episodes_per_step, recipe.iterations)
    per_rank = -(-(last - first) // dist.world_size)
    mine = list(range(first + dist.rank, last, dist.world_size))
    return mine + [None] * (per_rank - len(mine))


def train_model(
    model: FSARModel,
    recipe: Recipe,
    benchmark: Benchmark,
    way: int,
    shot: int,
    frames: int,
    train_seed: int,
    val_episodes: EpisodeSet,
    checkpoint_path: Path,
    checkpoint_extra: dict | None = None,
    workers: int = 2,
    on_progress: Callable[[dict], None] | None = None,
    dist: Distributed = SINGLE,
) -> TrainResult:
    """Meta-train ``model`` with ``recipe``; keep the best-on-val weights in ``checkpoint_path``.

    Under torchrun (``dist``) the model is wrapped in DistributedDataParallel and each optimizer step's
    ``episodes_per_step`` episodes are shared among the ranks (gradients summed as in one process);
    validation is sharded too and rank 0 alone writes the checkpoint.
    """
    train = benchmark.partition("train")
    sizes = [len(train.videos[c]) for c in train.classes]
    source = TrainClipSource(benchmark.video_path, TrainClipMaker.from_recipe(recipe, model.preprocess, frames, benchmark.size))
    optimizer = make_optimizer(model, recipe)
    device = model.device
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    queries = recipe.train_queries(shot)
    best = (-math.inf, -1)
    sha = ""
    history: list[dict] = []
    started = time.time()
    module = _EpisodeLoss(model)
    if dist.active:
        module = DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None,
                                         find_unused_parameters=True)
    model.train()
    optimizer.zero_grad(set_to_none=True)
    per_step = recipe.episodes_per_step
    for step in range(-(-recipe.iterations // per_step)):
        slots = step_slots(step, recipe, dist)
        steps_optimizer = min((step + 1) * per_step, recipe.iterations) == (step + 1) * per_step
        entries = []
        for position, iteration in enumerate(slots):
            episode_index = step * per_step if iteration is None else iteration
            classes, picks = draw_episode([train_seed, 1, episode_index], sizes, way, shot, queries)
            video_ids = [train.videos[train.classes[c]][p] for c, chosen in zip(classes, picks) for p in chosen[:shot]]
            video_ids += [train.videos[train.classes[c]][p] for c, chosen in zip(classes, picks) for p in chosen[shot:]]
            clips = [source.clip(video, clip_generator(train_seed, episode_index, j), query=j >= way * shot)
                     for j, video in enumerate(video_ids)]
            pixels = model.normalize(torch.stack(clips))
            episode = TrainEpisode(way=way, shot=shot, query_labels=torch.arange(way, device=device).repeat_interleave(queries),
                                   class_base_ids=torch.tensor(classes, device=device))
            sync = dist.active and steps_optimizer and position == len(slots) - 1
            with contextlib.nullcontext() if sync or not dist.active else module.no_sync():
                with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                    total, logits, terms = module(pixels, episode)
                if iteration is not None:  # a NaN/inf loss stops training before it reaches the weights
                    check_loss(total, terms, model.head, iteration + 1)
                # DDP averages over ranks: x world_size / episodes_per_step sums the step's episodes as one process does
                scaled = total * 0.0 if iteration is None else total * dist.world_size / per_step
                scaler.scale(scaled).backward()
            if iteration is not None:
                entries.append({"iteration": iteration + 1, "loss": float(total.detach()),
                                **{k: float(v.detach()) for k, v in terms.items()},
                                "train_acc": 100.0 * float((logits.argmax(-1) == episode.query_labels).float().mean())})
        entries = sorted((e for part in dist.all_gather_objects(entries) for e in part), key=lambda e: e["iteration"])
        end = entries[-1]["iteration"] if entries else 0
        val_points = [e for e in entries if e["iteration"] % recipe.val_every == 0 or e["iteration"] == recipe.iterations]
        before = [e for e in val_points if not (steps_optimizer and e["iteration"] == end)]  # weights of the last step
        after = [e for e in val_points if e not in before]
        for group, post_step in ((before, False), (after, True)):
            if post_step and steps_optimizer:
                for param_group in optimizer.param_groups:
                    param_group["lr"] = learning_rate(recipe, step)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
            if group:
                dist.broadcast_module(model, buffers_only=True)  # rank 0's BatchNorm statistics everywhere
                accuracy, interval = evaluate_accuracy_ci(model, val_episodes, benchmark.video_path, workers, dist=dist)
                model.train()
                for entry in group:
                    entry["val_acc"] = accuracy
                    entry["val_ci"] = interval  # 95% half-width over the val episodes
                if accuracy > best[0]:
                    best = (accuracy, group[0]["iteration"])
                    if dist.is_main:
                        sha = save_checkpoint(model, checkpoint_path, {**(checkpoint_extra or {}), "iteration": best[1],
                                                                       "val_accuracy": accuracy})
        if not steps_optimizer:
            optimizer.zero_grad(set_to_none=True)  # a partial last step is not applied (as in one process)
        for entry in entries:
            history.append(entry)
            if on_progress:
                on_progress(entry)
    return TrainResult(checkpoint_path, sha, best[0], best[1], recipe.iterations, time.time() - started, history)
