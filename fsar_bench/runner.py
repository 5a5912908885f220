"""What `fsar-bench run`, `train` and `evaluate` do, independent of the command line.

Usage::

    config = load_config()
    summary = run_method(config, RunRequest(method="otam", dataset="synthetic", shot=5))
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import fsar_bench
from fsar_bench.api import Recipe
from fsar_bench.backbones import default_backbone
from fsar_bench.config import Config, recipe_with_overrides
from fsar_bench.datasets import Benchmark, DataOptions, open_benchmark
from fsar_bench.episodes import EpisodeSet, Protocol, draw_episodes, save_manifest
from fsar_bench.errors import DataError, UsageError
from fsar_bench.evaluate import encode_videos, episode_accuracy, score_episodes
from fsar_bench.model import FSARModel, check_checkpoint_spec, read_checkpoint
from fsar_bench.registry import MethodEntry, discover_methods
from fsar_bench.store import EpisodeRecord, RunStore, check_writable
from fsar_bench.train import console_progress, train_model


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


def resolve_device(name: str) -> torch.device:
    """"auto": CUDA when available, else CPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} requested but CUDA is not available")
    return device


def get_method(config: Config, name: str) -> MethodEntry:
    return discover_methods(config.path("methods")).get(name)


def make_protocol(config: Config, benchmark: Benchmark, partition: str, shot: int, episodes: int | None = None) -> Protocol:
    p = config.protocol
    return Protocol(
        dataset=benchmark.name, partition=partition, split_sha256=benchmark.partition(partition).sha256,
        way=p["way"], shot=shot, queries_per_class=p["queries_per_class"], episodes=episodes or p["episodes"],
        frames=p["frames"], size=benchmark.size, seed=p["seed"], missing_videos=benchmark.missing.get(partition, ()),
    )


def method_recipe(config: Config, entry: MethodEntry, dataset: str) -> Recipe:
    """The card's recipe for ``dataset`` with the [methods.NAME] overrides of bench.toml applied."""
    return recipe_with_overrides(entry.card.recipe_for(dataset), config.method_overrides(entry.name))


def build_model(config: Config, entry: MethodEntry, benchmark: Benchmark, device: torch.device) -> FSARModel:
    """The method's model with fresh weights (seeded by the train seed, without touching global RNG state).

    Head options: card options < the recipe's loss weights and head options < [methods.NAME] options.
    """
    overrides = config.method_overrides(entry.name)
    recipe = method_recipe(config, entry, benchmark.name)
    options = {**recipe.loss_weights, **recipe.head_options, **overrides.get("options", {})}
    backbone = overrides.get("backbone") or (config.run["backbone"] if config.run["backbone"] != "auto" else default_backbone(benchmark.name))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.run["train_seed"])
        model = FSARModel.build(entry.card, backbone, config.run["backbone_weights"], config.protocol["frames"],
                                benchmark.size, len(benchmark.partition("train").classes), options)
    return model.to(device)


def default_checkpoint_path(config: Config, model: FSARModel, dataset: str, shot: int) -> Path:
    spec = model.spec
    name = f"{spec['method']}__{dataset}__{shot}shot__{spec['backbone']}__T{spec['frames']}__seed{config.run['train_seed']}"
    return config.path("results") / "checkpoints" / name / "best.pt"


def state_sha256(model: torch.nn.Module) -> str:
    """sha256 over a model's weights (names and bytes): identifies untrained (--no-train) models."""
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def ensure_checkpoint(config: Config, entry: MethodEntry, benchmark: Benchmark, model: FSARModel, request: RunRequest) -> tuple[str, Path | None, dict]:
    """Load (or train, then load) the checkpoint. Returns (sha256, path or None, training info)."""
    if request.checkpoint is not None:
        path = request.checkpoint
    else:
        path = default_checkpoint_path(config, model, benchmark.name, request.shot)
        if request.no_train and not path.is_file():
            return "untrained:" + state_sha256(model), None, {"trained": False}
        if request.retrain or not path.is_file():
            train_checkpoint(config, entry, benchmark, model, request.shot, path)
    payload = read_checkpoint(path)
    check_checkpoint_spec(path, payload["spec"], model.spec)
    model.load_state_dict(payload["state_dict"])
    from fsar_bench.model import file_sha256

    return file_sha256(path), path, {"trained": True, **payload.get("extra", {})}


def train_checkpoint(config: Config, entry: MethodEntry, benchmark: Benchmark, model: FSARModel, shot: int, path: Path) -> None:
    """Meta-train with the card's recipe (+ [methods.NAME] overrides); select on val; write ``path`` last."""
    recipe = method_recipe(config, entry, benchmark.name)
    for part in ("train", "val"):  # missing videos: refused (or dropped with --allow-missing)
        benchmark.present_partition(part)
    train_class, train_count = benchmark.partition("train").smallest_class()
    if shot + recipe.train_queries(shot) > train_count:
        raise UsageError(f"{benchmark.name} train: class {train_class!r} has {train_count} videos, but training with shot "
                         f"{shot} + {recipe.train_queries(shot)} queries per class needs {shot + recipe.train_queries(shot)}")
    val_protocol = make_protocol(config, benchmark, "val", shot, episodes=recipe.val_episodes)
    val_episodes = draw_episodes(val_protocol, benchmark.partition("val"))
    partial = path.with_name("training.partial.pt")
    update, close = console_progress(recipe.iterations, f"train {entry.name} {benchmark.name} {shot}-shot")
    try:
        result = train_model(model, recipe, benchmark, config.protocol["way"], shot, config.protocol["frames"],
                             config.run["train_seed"], val_episodes, partial,
                             checkpoint_extra={"dataset": benchmark.name, "shot": shot, "recipe": asdict(recipe),
                                               "train_seed": config.run["train_seed"]},
                             workers=config.run["workers"], on_progress=update)
    finally:
        close()
    (path.parent / "training.json").write_text(json.dumps({
        "recipe": asdict(recipe), "best_val_accuracy": result.best_val_accuracy, "best_iteration": result.best_iteration,
        "seconds": result.seconds, "history": result.history, "val_episode_fingerprint": val_episodes.fingerprint,
    }, indent=1, default=str))
    os.replace(partial, path)


def environment_stamps(config: Config, device: torch.device) -> dict[str, Any]:
    versions = {"fsar_bench": fsar_bench.__version__, "python": platform.python_version(), "torch": torch.__version__,
                "numpy": np.__version__}
    for package in ("torchvision", "decord", "av"):
        with contextlib.suppress(Exception):
            versions[package] = __import__(package).__version__
    commit = None
    with contextlib.suppress(Exception):
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=config.base_dir, capture_output=True, text=True, timeout=5).stdout.strip() or None
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=config.base_dir, capture_output=True, text=True, timeout=5).stdout.strip()
        if commit and dirty:
            commit += "+dirty"
    return {"versions": versions, "git_commit": commit, "device": str(device), "host": platform.node(),
            "argv": sys.argv, "config": config.values, "config_file": str(config.source) if config.source else None}


def run_method(config: Config, request: RunRequest, standard_episodes: int | None = None, log=print) -> dict[str, Any]:
    """Train if needed, then evaluate the test episodes, resuming a killed run. Returns the summary."""
    started = time.time()
    check_writable(config.path("results"))  # before any work: a run must be able to store its results
    entry = get_method(config, request.method)
    benchmark = open_benchmark(request.dataset, config, request.data)
    device = resolve_device(config.run["device"])
    test = benchmark.present_partition("test")  # refuses missing videos unless --allow-missing
    protocol = make_protocol(config, benchmark, "test", request.shot)
    protocol.check_feasible(test)
    model = build_model(config, entry, benchmark, device)
    checkpoint_sha, checkpoint_path, train_info = ensure_checkpoint(config, entry, benchmark, model, request)
    episodes = draw_episodes(protocol, test)
    results_dir = config.path("results")
    manifest = save_manifest(episodes, results_dir / "episodes")
    run_id = f"{entry.name}__{benchmark.name}__{request.shot}shot__p{protocol.fingerprint[:10]}__c{checkpoint_sha.split(':')[-1][:10]}"
    stamps = {
        "method": entry.name, "method_origin": entry.origin, "dataset": benchmark.name, "shot": request.shot,
        "way": protocol.way, "protocol": protocol.to_dict(), "protocol_fingerprint": protocol.fingerprint,
        "episode_fingerprint": episodes.fingerprint, "episode_manifest": str(manifest),
        "standard_episodes": standard_episodes or protocol.episodes, "checkpoint_sha256": checkpoint_sha,
        "checkpoint_path": str(checkpoint_path) if checkpoint_path else None, "training": train_info,
        "seeds": {"episodes": protocol.seed, "train": config.run["train_seed"]}, "model": model.spec,
        "missing_videos": list(protocol.missing_videos), "split_files": benchmark.split_stamps(),
        "comparable_to_papers": benchmark.comparable_to_papers,
        "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(), **environment_stamps(config, device),
    }
    run = RunStore.open(results_dir, run_id, stamps)
    summary = evaluate_into(run, model, benchmark, episodes, config, device, log)
    summary["seconds_total"] = time.time() - started
    run.stamps["timings"] = {**run.stamps.get("timings", {}), "total_seconds": summary["seconds_total"]}
    run.finish(summary)
    return summary


def evaluate_into(run: RunStore, model: FSARModel, benchmark: Benchmark, episodes: EpisodeSet, config: Config,
                  device: torch.device, log=print) -> dict[str, Any]:
    """Score every episode without a record (encoding only the videos they use); return the summary."""
    todo = np.array(sorted(set(range(len(episodes))) - run.done), dtype=np.int64)
    timings = {"encode_seconds": 0.0, "score_seconds": 0.0, "videos_encoded": 0}
    if len(todo):
        needed = episodes.videos_of(todo)
        log(f"{run.stamps['method']} {benchmark.name} {episodes.protocol.shot}-shot: {len(todo)} episodes to score, "
            f"{len(needed)} unique videos to encode" + (f" (resuming: {len(run.done)} already recorded)" if run.done else ""))
        t0 = time.time()
        reps = encode_videos(model, [benchmark.video_path(episodes.video_ids[v]) for v in needed],
                             episodes.protocol.frames, config.run["workers"])
        timings["encode_seconds"], timings["videos_encoded"] = time.time() - t0, int(len(needed))
        row_of = np.full(len(episodes.video_ids), -1, dtype=np.int64)
        row_of[needed] = np.arange(len(needed))
        t0 = time.time()
        batch = config.run["episode_batch"] or 256
        for ids, predictions in score_episodes(model.head, reps, row_of, episodes, todo, batch, device):
            correct = episode_accuracy(episodes, ids, predictions)
            run.append([EpisodeRecord(int(e), int(c), int(predictions.shape[1]), predictions[i].tolist())
                        for i, (e, c) in enumerate(zip(ids, correct))])
        timings["score_seconds"] = time.time() - t0
    records = run.records()
    if len(records) != len(episodes):
        raise DataError(f"{run.folder}: {len(records)} records for {len(episodes)} episodes after scoring")
    accuracy = np.array([100.0 * r.correct / r.queries for r in records])
    run.stamps["timings"] = timings
    return {"episodes": len(records), "accuracy": float(accuracy.mean()),
            "std": float(accuracy.std(ddof=1)) if len(records) > 1 else float("nan"),
            "ci95": float(1.96 * accuracy.std(ddof=1) / np.sqrt(len(records))) if len(records) > 1 else float("nan"),
            "ddof": 1, **timings}
