"""Meta-training on the train partition, checkpoint selection on val; the test split is never read.

Training episode ``i`` draws its classes and videos from ``SeedSequence([train_seed, 1, i])``; clip ``j`` of
the episode (supports first, then queries) takes its frames, crop, flip and colours from its own counter-based
stream (``fsar_bench.data.sampling.ClipGenerators(train_seed).at(i, j)``) through the recipe's
sampler and augmentation (``fsar_bench.data.transforms.TrainClipMaker``), so a training run is reproducible
from its seed whatever the process or worker that builds a clip.

Usage::

    result = train_model(model, recipe, benchmark, shot=1, frames=8, train_seed=0,
                         val_episodes=val_set, checkpoint_path=Path("best.pt"))
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from fsar_bench.api import Recipe, TrainEpisode
from fsar_bench.data.benchmarks import Benchmark
from fsar_bench.distributed import SINGLE, Distributed
from fsar_bench.episodes import EpisodeSet
from fsar_bench.data.episode_loader import EpisodePlan, episode_batches
from fsar_bench.data.sampling import ClipGenerators
from fsar_bench.data.transforms import TrainClipMaker
from fsar_bench.evaluation.checks import check_loss
from fsar_bench.evaluation.evaluate import validation_accuracy
from fsar_bench.frozen import FeatureStore, encode_from_store
from fsar_bench.model.checkpoints import save_checkpoint
from fsar_bench.model.network import FSARModel
from fsar_bench.precision import resolve_precision
from fsar_bench.schedule import learning_rate, make_optimizer
from fsar_bench.train_state import TrainingLog, TrainingProgress, load_training_state, save_training_state, training_identity

@dataclass(frozen=True)
class TrainResult:
    checkpoint: Path
    checkpoint_sha256: str
    best_val_accuracy: float
    best_iteration: int
    iterations: int
    seconds: float
    history: list[dict]




class _EpisodeLoss(torch.nn.Module):
    """The module DDP wraps: one training episode's forward, ``(total, logits, terms)``."""

    def __init__(self, model: FSARModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor | None, episode: TrainEpisode,
                features: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
        n_support = episode.way * episode.shot
        if features is None:  # two backbone calls, as every reference: BatchNorm batch statistics per set
            support_features = self.model.features(pixels[:n_support])
            query_features = self.model.features(pixels[n_support:])
        else:  # the frozen track passes stored features
            support_features, query_features = features[:n_support], features[n_support:]
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
    precision: str = "auto",
    state_path: Path | None = None,
    save_every_minutes: float = 10.0,
    feature_store: FeatureStore | None = None,
) -> TrainResult:
    """Meta-train ``model`` with ``recipe``; keep the best-on-val weights in ``checkpoint_path``.

    Episodes are built by ``workers`` DataLoader processes (``fsar_bench.data.episode_loader``). With
    ``state_path``, the full training state is saved there every ``save_every_minutes`` and after each
    validation, and a saved state is resumed from (``fsar_bench.train_state``); ``training.jsonl`` and
    ``training.png`` are written beside ``checkpoint_path``. Under torchrun (``dist``) the model is wrapped in
    DistributedDataParallel and each optimizer step's ``episodes_per_step`` episodes are shared among the ranks
    (gradients summed as in one process); validation is sharded too and rank 0 alone writes files.
    ``feature_store`` (frozen track): clips are the stored features of the frames the recipe's sampler picks, from
    the same seeds as the fine-tune track; no spatial augmentation (the features are of test-transformed frames),
    pixels only for heads that need them, through the same test transform.
    """
    train = benchmark.partition("train")
    queries = recipe.train_queries(shot)
    plan = EpisodePlan.from_partition(train, train_seed, way, shot, queries)
    maker = TrainClipMaker.from_recipe(recipe, model.preprocess, frames, benchmark.size)
    if feature_store is not None:
        maker = maker.without_augmentation()
    optimizer = make_optimizer(model, recipe)
    device = model.device
    numeric = resolve_precision(precision, device)
    scaler = numeric.grad_scaler(device)
    identity = training_identity(recipe=asdict(recipe), way=way, shot=shot, frames=frames, train_seed=train_seed,
                                 val=val_episodes.fingerprint, data=benchmark.frames_from, spec=model.spec,
                                 precision=numeric.name, world_size=dist.world_size,
                                 code=(checkpoint_extra or {}).get("code"))  # a state saved by other code is not resumed
    progress = (load_training_state(state_path, identity, model, optimizer, scaler) if state_path else None) or TrainingProgress()
    log = TrainingLog(checkpoint_path.parent) if dist.is_main else None
    if log is not None:
        log.rewrite([line for line in progress.history if "val_acc" in line and "lr" in line])
    started = time.time()
    last_save = time.monotonic()
    module = _EpisodeLoss(model)
    if dist.active:
        module = DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None,
                                         find_unused_parameters=True)
    model.train()
    optimizer.zero_grad(set_to_none=True)
    per_step = recipe.episodes_per_step
    steps = -(-recipe.iterations // per_step)
    slots_of = {step: step_slots(step, recipe, dist) for step in range(progress.step, steps)}
    order = [step * per_step if i is None else i for step in range(progress.step, steps) for i in slots_of[step]]
    needs_pixels = feature_store is None or model.head.needs_pixels
    clip_streams = ClipGenerators(train_seed)
    loader = episode_batches(plan, benchmark.video_path, maker, order, workers=workers,
                             pin_memory=device.type == "cuda") if needs_pixels else None
    window = _Window.restore(progress.window)
    for step in range(progress.step, steps):
        slots = slots_of[step]
        steps_optimizer = min((step + 1) * per_step, recipe.iterations) == (step + 1) * per_step
        step_started = time.perf_counter()
        entries = []
        for position, iteration in enumerate(slots):
            episode_index = step * per_step if iteration is None else iteration
            features = pixels = None
            if loader is not None:
                loaded = next(loader)
                window.wait += loaded.wait_seconds
                pixels, classes = prepare_clips(model, loaded.clips), loaded.classes
            if feature_store is not None:
                started_wait = time.perf_counter()
                classes, videos = plan.episode(episode_index)
                generators = (clip_streams.at(episode_index, j) for j in range(len(videos)))  # one at a time
                features = feature_store.episode_clips(videos, generators, maker.frame_indices).to(device)
                window.wait += time.perf_counter() - started_wait
            episode = TrainEpisode(way=way, shot=shot, query_labels=torch.arange(way, device=device).repeat_interleave(queries),
                                   class_base_ids=torch.tensor(classes, device=device))
            sync = dist.active and steps_optimizer and position == len(slots) - 1
            with contextlib.nullcontext() if sync or not dist.active else module.no_sync():
                with numeric.autocast(device):
                    total, logits, terms = module(pixels, episode, features)
                if iteration is not None:  # a NaN/inf loss stops training before it reaches the weights
                    check_loss(total, terms, model.head, iteration + 1)
                # DDP averages over ranks: x world_size / episodes_per_step sums the step's episodes as one process does
                scaled = total * 0.0 if iteration is None else total * dist.world_size / per_step
                if scaled.requires_grad:  # a parameter-free head on frozen features (OTAM, TSN) has nothing to train
                    scaler.scale(scaled).backward()
            if iteration is not None:
                entries.append({"iteration": iteration + 1, "loss": float(total.detach()),
                                **{k: float(v.detach()) for k, v in terms.items()},
                                "train_acc": 100.0 * float((logits.argmax(-1) == episode.query_labels).float().mean())})
        entries = sorted((e for part in dist.all_gather_objects(entries) for e in part), key=lambda e: e["iteration"])
        lr = learning_rate(recipe, step)
        end = entries[-1]["iteration"] if entries else 0
        val_points = [e for e in entries if e["iteration"] % recipe.val_every == 0 or e["iteration"] == recipe.iterations]
        before = [e for e in val_points if not (steps_optimizer and e["iteration"] == end)]  # weights of the last step
        after = [e for e in val_points if e not in before]
        window.add(entries, time.perf_counter() - step_started)
        validated = False
        for group, post_step in ((before, False), (after, True)):
            if post_step and steps_optimizer:
                for param_group in optimizer.param_groups:
                    param_group["lr"] = lr
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
            if group:
                validated = True
                dist.broadcast_module(model, buffers_only=True)  # rank 0's BatchNorm statistics everywhere
                encoder = None if feature_store is None else (
                    lambda ids: encode_from_store(model, feature_store, ids, frames))
                accuracy, interval = validation_accuracy(model, val_episodes, benchmark.video_path, workers, dist=dist,
                                                         precision=numeric, encode=encoder)
                model.train()
                for entry in group:
                    entry["val_acc"] = accuracy
                    entry["val_ci"] = interval  # 95% half-width over the val episodes
                if accuracy > progress.best_accuracy:
                    progress.best_accuracy, progress.best_iteration = accuracy, group[0]["iteration"]
                    if dist.is_main:
                        progress.best_sha256 = save_checkpoint(model, checkpoint_path, {
                            **(checkpoint_extra or {}), "iteration": progress.best_iteration, "val_accuracy": accuracy,
                            "precision": numeric.name})
        if not steps_optimizer:
            optimizer.zero_grad(set_to_none=True)  # a partial last step is not applied (as in one process)
        for entry in entries:
            if "val_acc" in entry:
                entry.update(window.summary(lr))
                window = _Window()
        progress.history.extend(entries)
        progress.step = step + 1
        progress.window = window.saved()
        progress.seconds += time.time() - started
        started = time.time()
        if state_path is not None and dist.is_main and (
                validated or time.monotonic() - last_save >= 60.0 * save_every_minutes or progress.step == steps):
            save_training_state(state_path, identity, model, optimizer, scaler, progress)
            last_save = time.monotonic()
        running_wait = window.wait / window.seconds if window.seconds else 0.0
        for entry in entries:
            if log is not None and "val_acc" in entry:
                log.append(entry)
            if on_progress:
                on_progress({**entry, "data_wait": entry.get("data_wait_fraction", running_wait)})
    return TrainResult(checkpoint_path, progress.best_sha256, progress.best_accuracy, progress.best_iteration,
                       recipe.iterations, progress.seconds, progress.history)


def prepare_clips(model: FSARModel, clips: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    """An episode's clips -> model input ``[V, T, 3, S, S]`` on the model's device: float clips in [0, 1] (the
    recipe's ``TrainClipMaker``) are normalised; uint8 frames ``[V, T, H, W, 3]`` are resized and cropped as at
    test (``FSARModel.prepare``); a list holds clips whose sizes differ."""
    if isinstance(clips, list):
        return torch.cat([prepare_clips(model, clip.unsqueeze(0)) for clip in clips])
    return model.normalize(clips) if clips.is_floating_point() else model.prepare(clips)


class _Window:
    """Loss terms, data wait and time since the last validation line (for training.jsonl and the bar)."""

    def __init__(self) -> None:
        self.wait = 0.0
        self.seconds = 0.0
        self.episodes = 0
        self.sums: dict[str, float] = {}

    def saved(self) -> dict:
        """The loss sums and counts (saved in the training state, so a resumed training writes the same means);
        the timings restart with the process."""
        return {"episodes": self.episodes, "sums": dict(self.sums)}

    @classmethod
    def restore(cls, saved: dict) -> _Window:
        window = cls()
        window.episodes = saved.get("episodes", 0)
        window.sums = dict(saved.get("sums", {}))
        return window

    def add(self, entries: list[dict], seconds: float) -> None:
        self.seconds += seconds
        self.episodes += len(entries)
        for entry in entries:
            for key, value in entry.items():
                if key not in ("iteration", "val_acc", "val_ci"):
                    self.sums[key] = self.sums.get(key, 0.0) + value

    def summary(self, lr: float) -> dict:
        count = max(1, self.episodes)
        means = {key: value / count for key, value in self.sums.items()}
        return {"lr": lr, "loss_mean": means.pop("loss", float("nan")), "train_acc_mean": means.pop("train_acc", float("nan")),
                "loss_terms": means, "data_wait_fraction": self.wait / self.seconds if self.seconds else 0.0,
                "episodes_per_second": self.episodes / self.seconds if self.seconds else 0.0}
