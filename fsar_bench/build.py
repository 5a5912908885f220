"""A run's parts from the config: the device, the method's plugin entry, a protocol, the effective recipe, the
model (backbone by track, head options from the recipe and bench.toml), and the frozen track's feature store.

Usage::

    entry = get_method(config, "otam")
    benchmark = open_benchmark("synthetic", config)
    model = build_model(config, entry, benchmark, resolve_device("auto"), shot=1)
    recipe = method_recipe(config, entry, "synthetic")
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from fsar_bench.api import Recipe
from fsar_bench.model.backbones import default_backbone
from fsar_bench.config import Config, check_table_names
from fsar_bench.model.effective_recipe import resolve_recipe
from fsar_bench.data.benchmarks import Benchmark, DataOptions, benchmark_names
from fsar_bench.episodes import Protocol
from fsar_bench.errors import UsageError
from fsar_bench.distributed import SINGLE, Distributed, from_environment, launched_by_torchrun, single_device
from fsar_bench.model.network import FSARModel
from fsar_bench.frozen import FROZEN, TRACKS, FeatureStore, freeze_backbone, pretrained_small_cnn
from fsar_bench.progress import step_progress
from fsar_bench.model.registry import MethodEntry, discover_methods


@dataclass(frozen=True)
class RunRequest:
    """One (method, dataset, shot) evaluation. None fields come from the config."""

    method: str
    dataset: str
    shot: int
    checkpoint: Path | None = None
    no_train: bool = False
    retrain: bool = False
    data: DataOptions = DataOptions()  # --splits-dir, --allow-missing, --trust-splits
    accept_code_change: bool = False  # reuse a checkpoint / run made by other code (stamped into the run)

    def __post_init__(self) -> None:
        if self.no_train and self.retrain:
            raise UsageError("--no-train and --retrain exclude each other: give one of them")


def resolve_device(name: str) -> torch.device:
    """"auto": CUDA when available, else CPU; otherwise the named device (under torchrun: this rank's)."""
    if launched_by_torchrun():
        return from_environment(name)[1]
    return single_device(name)


def get_method(config: Config, name: str) -> MethodEntry:
    """The method ``name``; also checks that every [methods.X] / [datasets.X] table names something known."""
    registry = discover_methods(config.path("methods"))
    check_table_names(config, registry.names(), benchmark_names())
    return registry.get(name)


def make_protocol(config: Config, benchmark: Benchmark, partition: str, shot: int, episodes: int | None = None) -> Protocol:
    p = config.protocol
    return Protocol(
        dataset=benchmark.name, partition=partition, split_sha256=benchmark.partition(partition).sha256,
        way=p["way"], shot=shot, queries_per_class=p["queries_per_class"], episodes=episodes or p["episodes"],
        frames=p["frames"], size=benchmark.size, seed=p["seed"], missing_videos=benchmark.missing.get(partition, ()),
        data_version=benchmark.data_version, frames_from=benchmark.frames_from,
    )


def method_recipe(config: Config, entry: MethodEntry, dataset: str) -> Recipe:
    """The card's recipe for ``dataset`` with bench.toml's [methods.NAME.recipes.DATASET] and [methods.NAME]
    applied (``fsar_bench.model.effective_recipe``); no recipe for a real benchmark: UsageError (exit 2)."""
    return resolve_recipe(entry.card, dataset, config.method_overrides(entry.name)).recipe


def build_model(config: Config, entry: MethodEntry, benchmark: Benchmark, device: torch.device, shot: int,
                backbone_weights: str | None = None) -> FSARModel:
    """The method's model with fresh weights (seeded by the train seed, without touching global RNG state).

    Head options: card options < the recipe's head options at ``shot`` (loss weights included) < [methods.NAME]
    options.
    ``backbone_weights`` overrides ``run.backbone_weights`` ("none" when a checkpoint replaces every weight).
    """
    overrides = config.method_overrides(entry.name)
    recipe = method_recipe(config, entry, benchmark.name)
    options = {**recipe.head_options_at(shot), **overrides.get("options", {})}
    backbone = overrides.get("backbone") or (config.run["backbone"] if config.run["backbone"] != "auto" else default_backbone(benchmark.name, entry.card))
    track = config.run["track"]
    if track not in TRACKS:
        raise UsageError(f"unknown track {track!r}: use {' or '.join(TRACKS)}")
    weights = backbone_weights or config.run["backbone_weights"]
    if track == FROZEN and backbone == "small-cnn" and weights == "pretrained" and benchmark.name == "synthetic":
        weights = str(pretrained_small_cnn(config.path("cache") / "weights", benchmark))  # weights worth freezing
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.run["train_seed"])
        class_videos = None
        if entry.card.head.needs_class_text:
            class_videos = {name: benchmark.partition(name).videos for name in ("train", "val", "test")}
        model = FSARModel.build(entry.card, backbone, weights, config.protocol["frames"], benchmark.size,
                                len(benchmark.partition("train").classes), options, class_videos, recipe=recipe)
    if track == FROZEN:
        freeze_backbone(model)
    return model.to(device)


def feature_store(config: Config, model: FSARModel, benchmark: Benchmark, partitions: tuple[str, ...],
                  dist: Distributed = SINGLE, log=print) -> FeatureStore | None:
    """Frozen track: the model's feature store, with every video of ``partitions`` extracted (resuming); else None."""
    if model.spec.get("track") != FROZEN:
        return None
    store = FeatureStore.for_model(config.path("cache"), model, benchmark.name, benchmark.data_version)
    videos = [video for name in partitions for video in benchmark.present_partition(name).all_video_ids()]
    missing = sum(not store.has(video) for video in videos)
    if missing:
        log(f"frozen track: extracting the features of {missing} videos into {store.folder}")
        started = time.time()
        with step_progress(f"extract {missing} videos", missing, dist.is_main) as advance:
            store.extract(model, benchmark.video_path, videos, dist=dist, progress=advance)
        log(f"frozen track: {missing} videos in {time.time() - started:.1f} s "
            f"({store.size_bytes() / 2**20:.1f} MiB stored)")
    return store
