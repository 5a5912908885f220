"""Meta-training on the train partition, checkpoint selection on val; the test split is never read.

Training episode ``i`` draws its classes and videos from ``SeedSequence([train_seed, 1, i])`` and
one random frame per segment for each of its videos from ``SeedSequence([train_seed, 2, i, j])``,
so a training run is reproducible from its seed.

Usage::

    result = train_model(model, recipe, benchmark, shot=1, frames=8, train_seed=0,
                         val_episodes=val_set, checkpoint_path=Path("best.pt"))
"""

from __future__ import annotations

import contextlib
import math
import sys
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
from fsar_bench.evaluation.evaluate import evaluate_accuracy
from fsar_bench.frozen import FeatureStore, encode_from_store
from fsar_bench.model.checkpoints import save_checkpoint
from fsar_bench.model.network import FSARModel
from fsar_bench.data.video import VideoReader, open_reader, random_segment_indices

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
    """Training clips: one random frame per segment. Whole decoded videos are kept in RAM
    while they fit in ``cache_bytes`` (the synthetic train set does), else decoded each time."""

    def __init__(self, video_path: Callable[[str], Path], frames: int, reader: VideoReader | None = None,
                 cache_bytes: int = FULL_VIDEO_CACHE_BYTES) -> None:
        self.video_path = video_path
        self.frames = frames
        self.reader = reader or open_reader()
        self.cache_bytes = cache_bytes
        self._cache: dict[str, np.ndarray] = {}
        self._cached_bytes = 0

    def clip(self, video_id: str, rng: np.random.Generator) -> np.ndarray:
        """uint8 [T, H, W, 3]."""
        full = self._cache.get(video_id)
        if full is None:
            full = self.reader.read(self.video_path(video_id), lambda n: list(range(n)))
            if self._cached_bytes + full.nbytes <= self.cache_bytes:
                self._cache[video_id] = full
                self._cached_bytes += full.nbytes
        if len(full) < self.frames:
            from fsar_bench.data.video import VideoError

            raise VideoError(self.video_path(video_id), f"has {len(full)} frames, fewer than the {self.frames} sampled")
        return full[random_segment_indices(len(full), self.frames, rng)]


def learning_rate(recipe: Recipe, step: int, steps_per_iteration: float) -> float:
    """lr at optimizer step ``step``: linear warm-up from ``warmup_start_lr``, then x lr_decay at each of
    ``lr_steps`` (in iterations)."""
    iteration = step * steps_per_iteration
    lr = recipe.lr * recipe.lr_multiplier(iteration)
    if recipe.warmup and iteration < recipe.warmup:
        start = recipe.warmup_start_lr
        lr = start + (lr - start) * (iteration + 1) / recipe.warmup if start else lr * (iteration + 1) / recipe.warmup
    return lr


def make_optimizer(model: FSARModel, recipe: Recipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r} (use 'adam' or 'sgd')")


class _EpisodeLoss(torch.nn.Module):
    """The module DDP wraps: one training episode's forward, ``(total, logits, terms)``."""

    def __init__(self, model: FSARModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor | None, episode: TrainEpisode,
                features: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
        n_support = episode.way * episode.shot
        if features is None:  # the frozen track passes stored features
            features = self.model.features(pixels)
        if self.model.head.needs_pixels:
            episode.support_pixels, episode.query_pixels = pixels[:n_support], pixels[n_support:]
        output = self.model.head.loss(features[:n_support], features[n_support:], episode)
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
    feature_store: FeatureStore | None = None,
) -> TrainResult:
    """Meta-train ``model`` with ``recipe``; keep the best-on-val weights in ``checkpoint_path``.

    Under torchrun (``dist``) the model is wrapped in DistributedDataParallel and each optimizer step's
    ``episodes_per_step`` episodes are shared among the ranks (gradients summed as in one process);
    validation is sharded too and rank 0 alone writes the checkpoint. ``feature_store`` (frozen track): clips are
    the stored features of the same frames the fine-tune track would decode (pixels only for heads that need them).
    """
    train = benchmark.partition("train")
    sizes = [len(train.videos[c]) for c in train.classes]
    source = TrainClipSource(benchmark.video_path, frames)
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
            def clip_rng(j: int) -> np.random.Generator:
                return np.random.default_rng(np.random.SeedSequence([train_seed, 2, episode_index, j]))

            features = pixels = None
            if feature_store is not None:
                features = torch.stack([feature_store.clip(v, clip_rng(j), frames) for j, v in enumerate(video_ids)])
                features = features.to(device)
            if feature_store is None or model.head.needs_pixels:
                clips = np.stack([source.clip(v, clip_rng(j)) for j, v in enumerate(video_ids)])
                pixels = model.prepare(torch.from_numpy(clips))
            episode = TrainEpisode(way=way, shot=shot, query_labels=torch.arange(way, device=device).repeat_interleave(queries),
                                   class_base_ids=torch.tensor(classes, device=device))
            sync = dist.active and steps_optimizer and position == len(slots) - 1
            with contextlib.nullcontext() if sync or not dist.active else module.no_sync():
                with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                    total, logits, terms = module(pixels, episode, features)
                # DDP averages over ranks: x world_size / episodes_per_step sums the step's episodes as one process does
                scaled = total * 0.0 if iteration is None else total * dist.world_size / per_step
                if scaled.requires_grad:  # a parameter-free head on frozen features (OTAM, TSN) has nothing to train
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
                    param_group["lr"] = learning_rate(recipe, step, per_step)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
            if group:
                dist.broadcast_module(model, buffers_only=True)  # rank 0's BatchNorm statistics everywhere
                encoder = None if feature_store is None else (
                    lambda ids: encode_from_store(model, feature_store, ids, frames))
                accuracy = evaluate_accuracy(model, val_episodes, benchmark.video_path, workers, dist=dist, encode=encoder)
                model.train()
                for entry in group:
                    entry["val_acc"] = accuracy
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


def console_progress(total: int, label: str, quiet: bool = False) -> tuple[Callable[[dict], None], Callable[[], None]]:
    """A rich progress bar showing loss and val accuracy (plain lines when not a terminal; nothing when quiet).

    Returns (update, close).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    if quiet:
        return lambda entry: None, lambda: None

    if not sys.stderr.isatty():
        def update_plain(entry: dict) -> None:
            if "val_acc" in entry:
                print(f"{label}: iteration {entry['iteration']}/{total} loss {entry['loss']:.3f} "
                      f"val {entry['val_acc']:.1f}%", file=sys.stderr, flush=True)
        return update_plain, lambda: None
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("loss {task.fields[loss]}  val {task.fields[val]}"), TimeRemainingColumn(),
                        transient=False)
    task = progress.add_task(label, total=total, loss="-", val="-")
    progress.start()
    last_val = ["-"]

    def update(entry: dict) -> None:
        if "val_acc" in entry:
            last_val[0] = f"{entry['val_acc']:.1f}%"
        progress.update(task, advance=1, loss=f"{entry['loss']:.3f}", val=last_val[0])

    return update, progress.stop
