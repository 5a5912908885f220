"""Meta-training on the train partition, checkpoint selection on val; the test split is never read.

Training episode ``i`` draws its classes and videos from ``SeedSequence([train_seed, 1, i])`` and
one random frame per segment for each of its videos from ``SeedSequence([train_seed, 2, i, j])``,
so a training run is reproducible from its seed.

Usage::

    result = train_model(model, recipe, benchmark, shot=1, frames=8, train_seed=0,
                         val_episodes=val_set, checkpoint_path=Path("best.pt"))
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fsar_bench.api import Recipe, TrainEpisode
from fsar_bench.datasets import Benchmark
from fsar_bench.episodes import EpisodeSet, draw_episode
from fsar_bench.evaluate import evaluate_accuracy
from fsar_bench.model import FSARModel, save_checkpoint
from fsar_bench.video import VideoReader, open_reader, random_segment_indices

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
            from fsar_bench.video import VideoError

            raise VideoError(self.video_path(video_id), f"has {len(full)} frames, fewer than the {self.frames} sampled")
        return full[random_segment_indices(len(full), self.frames, rng)]


def learning_rate(recipe: Recipe, step: int, steps_per_iteration: float) -> float:
    """lr at optimizer step ``step``: linear warm-up, then x lr_decay at each of ``lr_steps`` (in iterations)."""
    iteration = step * steps_per_iteration
    lr = recipe.lr * recipe.lr_multiplier(iteration)
    if recipe.warmup and iteration < recipe.warmup:
        lr *= (iteration + 1) / recipe.warmup
    return lr


def make_optimizer(model: FSARModel, recipe: Recipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r} (use 'adam' or 'sgd')")


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
) -> TrainResult:
    """Meta-train ``model`` with ``recipe``; keep the best-on-val weights in ``checkpoint_path``."""
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
    model.train()
    optimizer.zero_grad(set_to_none=True)
    for iteration in range(recipe.iterations):
        classes, picks = draw_episode([train_seed, 1, iteration], sizes, way, shot, queries)
        video_ids = [train.videos[train.classes[c]][p] for c, chosen in zip(classes, picks) for p in chosen[:shot]]
        video_ids += [train.videos[train.classes[c]][p] for c, chosen in zip(classes, picks) for p in chosen[shot:]]
        clips = np.stack([source.clip(v, np.random.default_rng(np.random.SeedSequence([train_seed, 2, iteration, j])))
                          for j, v in enumerate(video_ids)])
        pixels = model.prepare(torch.from_numpy(clips))
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
            features = model.features(pixels)
            n_support = way * shot
            episode = TrainEpisode(
                way=way, shot=shot,
                query_labels=torch.arange(way, device=device).repeat_interleave(queries),
                class_base_ids=torch.tensor(classes, device=device),
                support_pixels=pixels[:n_support] if model.head.needs_pixels else None,
                query_pixels=pixels[n_support:] if model.head.needs_pixels else None,
            )
            output = model.head.loss(features[:n_support], features[n_support:], episode)
        scaler.scale(output.total / recipe.episodes_per_step).backward()
        if (iteration + 1) % recipe.episodes_per_step == 0:
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(recipe, iteration // recipe.episodes_per_step, recipe.episodes_per_step)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
        entry = {"iteration": iteration + 1, "loss": float(output.total.detach()),
                 **{k: float(v.detach()) for k, v in output.terms.items()},
                 "train_acc": 100.0 * float((output.logits.argmax(-1) == episode.query_labels).float().mean())}
        last = iteration + 1 == recipe.iterations
        if (iteration + 1) % recipe.val_every == 0 or last:
            entry["val_acc"] = evaluate_accuracy(model, val_episodes, benchmark.video_path, workers)
            model.train()
            if entry["val_acc"] > best[0]:
                best = (entry["val_acc"], iteration + 1)
                sha = save_checkpoint(model, checkpoint_path, {**(checkpoint_extra or {}), "iteration": iteration + 1,
                                                               "val_accuracy": entry["val_acc"]})
        history.append(entry)
        if on_progress:
            on_progress(entry)
    return TrainResult(checkpoint_path, sha, best[0], best[1], recipe.iterations, time.time() - started, history)


def console_progress(total: int, label: str) -> tuple[Callable[[dict], None], Callable[[], None]]:
    """A rich progress bar showing loss and val accuracy (plain lines when not a terminal).

    Returns (update, close).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

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
