"""What `fsar-bench run`, `train` and `evaluate` do, independent of the command line.

Usage::

    config = load_config()
    summary = run_method(config, RunRequest(method="otam", dataset="synthetic", shot=5))
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
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
from fsar_bench.api import Recipe, loss_weight_names
from fsar_bench.model.backbones import LEGACY_WEIGHT_STAMPS, default_backbone
from fsar_bench.model.checkpoints import WEIGHTS_FROM_CHECKPOINT
from fsar_bench.config import Config, check_table_names
from fsar_bench.model.effective_recipe import resolve_recipe
from fsar_bench.data.benchmarks import Benchmark, DataOptions, benchmark_names, open_benchmark
from fsar_bench.episodes import EpisodeSet, Protocol, draw_episodes, save_manifest
from fsar_bench.code_digest import SCORING_MODULES, TRAINING_MODULES, changed_modules, code_digest
from fsar_bench.errors import DataError, ProtocolMismatchError, UsageError
from fsar_bench.evaluation.checks import BadOutputError
from fsar_bench.locks import exclusive
from fsar_bench.evaluation.cache import EncodingCache, EncodingContext, cache_folder, code_sha256
from fsar_bench.distributed import SINGLE, Distributed, from_environment, launched_by_torchrun, single_device
from fsar_bench.evaluation.evaluate import episode_accuracy, evaluate_episodes
from fsar_bench.model.checkpoints import load_checkpoint_weights, read_checkpoint
from fsar_bench.model.network import FSARModel
from fsar_bench.model.reference_checkpoints import is_fsar_checkpoint, load_reference_checkpoint, read_checkpoint_file
from fsar_bench.frozen import FROZEN, TRACKS, FeatureStore, encode_from_store, freeze_backbone, pretrained_small_cnn
from fsar_bench.progress import step_progress
from fsar_bench.files import file_sha256, json_sha256, write_json_atomic
from fsar_bench.model.registry import MethodEntry, discover_methods
from fsar_bench.store import (
    WEIGHTS_REFERENCE, WEIGHTS_TRAINED_HERE, WEIGHTS_UNTRAINED, EpisodeRecord, RunStore, check_writable,
)
from fsar_bench.progress import training_progress
from fsar_bench.train import train_model
from fsar_bench.train_state import STATE_FILE
from fsar_bench.precision import resolve_precision
from fsar_bench.data.video import open_reader
from fsar_bench.data.synthetic import benchmark_data_version


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


def build_model(config: Config, entry: MethodEntry, benchmark: Benchmark, device: torch.device,
                backbone_weights: str | None = None) -> FSARModel:
    """The method's model with fresh weights (seeded by the train seed, without touching global RNG state).

    Head options: card options < the recipe's head options (loss weights included) < [methods.NAME] options.
    ``backbone_weights`` overrides ``run.backbone_weights`` ("none" when a checkpoint replaces every weight).
    """
    overrides = config.method_overrides(entry.name)
    recipe = method_recipe(config, entry, benchmark.name)
    options = {**recipe.head_options, **overrides.get("options", {})}
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


TRAINING_PIPELINE_VERSION = 2
"""Bumped when training itself changes (2: augmentation, samplers, two backbone calls, schedules as run, optimiser
groups), so that checkpoints trained by an older trainer are not reused."""
RECIPE_FIELDS_SINCE_V2 = {"warmup_start_lr": 0.0}
"""Recipe fields added after checkpoints were first keyed, with their defaults: left out of the digest while at
the default, so that existing checkpoints keep their paths."""


def recipe_digest_fields(recipe: Recipe, options_class: type) -> dict[str, Any]:
    """The recipe as the checkpoint digest has always keyed it: loss weights (now head options declared with
    ``loss_weight``) are keyed apart under ``loss_weights``, as when they were a Recipe field."""
    fields = {key: value for key, value in asdict(recipe).items()
              if key != "sources" and not (key in RECIPE_FIELDS_SINCE_V2 and value == RECIPE_FIELDS_SINCE_V2[key])}
    weights = set(loss_weight_names(options_class))
    fields["loss_weights"] = {key: value for key, value in recipe.head_options.items() if key in weights}
    fields["head_options"] = {key: value for key, value in recipe.head_options.items() if key not in weights}
    return fields


def default_checkpoint_path(config: Config, model: FSARModel, dataset: str, shot: int, frames_from: str = "") -> Path:
    """``results/checkpoints/<method>__<dataset>__<K>shot__<backbone>__T<T>__seed<S>__r<recipe>/best.pt``.

    ``<recipe>`` hashes the training recipe (with bench.toml overrides), the head options and, for a generated
    benchmark, its content version, so an edited recipe or regenerated data trains a new checkpoint instead of
    silently reusing the old one.
    """
    spec = model.spec
    entry = get_method(config, spec["method"])
    fields = recipe_digest_fields(method_recipe(config, entry, dataset), entry.card.head.options_class)
    data_version = benchmark_data_version(dataset)
    spec = {key: value for key, value in spec.items() if not _legacy_spec_value(spec, key, value)}
    keyed = [fields, spec, data_version] if data_version else [fields, spec]
    keyed.append({"training_pipeline": TRAINING_PIPELINE_VERSION})
    if frames_from:  # trained on frames whose pixels differ from the videos' (a JPEG frame store)
        keyed.append(frames_from)
    recipe_digest = json_sha256(keyed)[:8]
    name = (f"{spec['method']}__{dataset}__{shot}shot__{spec['backbone']}__T{spec['frames']}"
            f"__seed{config.run['train_seed']}__r{recipe_digest}")
    return config.path("results") / "checkpoints" / name / "best.pt"


def _legacy_spec_value(spec: dict, key: str, value: Any) -> bool:
    """Spec entries added after checkpoints were first keyed, at the values those checkpoints had (left out of the
    digest, so that existing checkpoints keep their paths)."""
    if key == "backbone_weights":
        return value in LEGACY_WEIGHT_STAMPS.get(spec["backbone"], ())
    return key == "track" and value == "finetune"


def backbone_stamp(model: FSARModel) -> dict[str, str]:
    """What a result's numbers were measured with besides the protocol: backbone, its weight tag, the track."""
    return {"backbone": model.spec["backbone"], "backbone_weights": model.spec["backbone_weights"],
            "track": model.spec.get("track", "finetune")}


def state_sha256(model: torch.nn.Module) -> str:
    """sha256 over a model's weights (names and bytes): identifies untrained (--no-train) models."""
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def training_lock(path: Path, is_main: bool = True, log=print):
    """The checkpoint key's lock (the main process alone takes it): one process trains or reads a key at a time."""
    return exclusive(path.parent / "train.lock", "training this checkpoint", log) if is_main else contextlib.nullcontext()


def ensure_checkpoint(config: Config, entry: MethodEntry, benchmark: Benchmark, model: FSARModel, request: RunRequest,
                      dist: Distributed = SINGLE, log=print) -> tuple[str, Path | None, dict]:
    """Load (or train, then load) the checkpoint. Returns (sha256, path or None, training info).

    ``request.checkpoint`` may also be a file saved by the method's reference code (``reference_checkpoints``):
    its info then says ``weights: "reference checkpoint"`` and where it came from.

    Holds the checkpoint key's lock: a second process asking for the same key waits, then loads what the
    first trained. A checkpoint trained by other code is refused (exit 4) unless ``request.retrain`` or
    ``request.accept_code_change``. Under torchrun every rank trains (DDP); rank 0 decides, writes and reads
    the checkpoint and sends its weights to the others (no shared file system needed).
    """
    if request.checkpoint is not None:
        path, lock = request.checkpoint, contextlib.nullcontext()
    else:
        path = default_checkpoint_path(config, model, benchmark.name, request.shot, benchmark.frames_from)
        if dist.is_main and not request.no_train:
            check_writable(path.parent)
        # reading needs no lock (a checkpoint is replaced by an atomic rename); training does
        lock = contextlib.nullcontext() if request.no_train else training_lock(path, dist.is_main, log)
    with lock:
        if request.checkpoint is None:
            exists = dist.broadcast_object(path.is_file())
            if request.no_train and not exists:
                return "untrained:" + state_sha256(model), None, {"trained": False, "weights": WEIGHTS_UNTRAINED}
            if request.retrain or not exists:
                train_checkpoint(config, entry, benchmark, model, request.shot, path, dist, fresh=request.retrain)
        loaded = None
        if dist.is_main:
            peeked = read_checkpoint_file(path) if request.checkpoint is not None else None
            if peeked is not None and not is_fsar_checkpoint(peeked):  # the reference code's own file
                info = load_reference_checkpoint(model, entry.card, path, peeked)
            else:
                info = load_own_checkpoint(model, entry, path, request)
            loaded = (file_sha256(path), path, info)
        loaded = dist.broadcast_object(loaded)
    dist.broadcast_module(model)
    return loaded


def load_own_checkpoint(model: FSARModel, entry: MethodEntry, path: Path, request: RunRequest) -> dict[str, Any]:
    """Load a checkpoint fsar-bench saved (verified) into ``model``; its info. One trained by code that changed
    since is refused (exit 4) unless ``request.accept_code_change`` (then said in the info)."""
    payload = read_checkpoint(path, accept_unstamped=request.accept_code_change)
    load_checkpoint_weights(model, path, payload)
    info = {"trained": True, "weights": WEIGHTS_TRAINED_HERE, **payload.get("extra", {})}
    if payload["format"] == 1:
        info["code_change_accepted"] = ["(format-1 checkpoint: no integrity stamp, no code digest)"]
    elif "code" in info:  # a checkpoint without a digest (converted from elsewhere) is the user's choice
        changed = changed_modules(info["code"], code_digest(entry.card.head, TRAINING_MODULES))
        if changed and not request.accept_code_change:
            raise ProtocolMismatchError(
                f"checkpoint {path} was trained by other code; changed since: {'; '.join(changed)}. Pass "
                "--retrain to train it again with the current code, or --accept-code-change if the change "
                "cannot alter results (this is stamped into the run)")
        if changed:
            info["code_change_accepted"] = changed
    return info


def train_checkpoint(config: Config, entry: MethodEntry, benchmark: Benchmark, model: FSARModel, shot: int, path: Path,
                     dist: Distributed | None = None, fresh: bool = False) -> None:
    """Meta-train with the card's recipe (+ [methods.NAME] overrides); select on val; write ``path`` last.

    A training state left by a killed training of the same checkpoint is resumed, unless ``fresh`` (``--retrain``).

    Under torchrun (``dist`` from the environment when None) every rank trains, rank 0 writes.
    """
    dist = dist or from_environment(config.run["device"])[0]
    if dist.is_main:
        check_writable(path.parent)  # before training, not at its first checkpoint save
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
    state_path = path.with_name(STATE_FILE)
    if fresh and dist.is_main:
        state_path.unlink(missing_ok=True)
    update, close = training_progress(recipe.iterations, f"train {entry.name} {benchmark.name} {shot}-shot",
                                     quiet=not dist.is_main)
    try:
        store = feature_store(config, model, benchmark, ("train", "val"), dist)
        result = train_model(model, recipe, benchmark, config.protocol["way"], shot, config.protocol["frames"],
                             config.run["train_seed"], val_episodes, partial,
                             checkpoint_extra={"dataset": benchmark.name, "shot": shot, "recipe": asdict(recipe),
                                               "train_seed": config.run["train_seed"],
                                               "code": code_digest(entry.card.head, TRAINING_MODULES)},
                             workers=config.run["workers"], on_progress=update, dist=dist,
                             precision=config.run["precision"], state_path=state_path,
                             save_every_minutes=config.run["save_every_minutes"], feature_store=store)
    except BadOutputError:
        partial.unlink(missing_ok=True)  # diverged: nothing of this training is kept (resuming would diverge again)
        if dist.is_main:
            state_path.unlink(missing_ok=True)
        raise
    finally:
        close()
    if not dist.is_main:
        dist.barrier()
        return
    write_json_atomic(path.parent / "training.json", {
        "recipe": asdict(recipe), "best_val_accuracy": result.best_val_accuracy, "best_iteration": result.best_iteration,
        "seconds": result.seconds, "history": result.history, "val_episode_fingerprint": val_episodes.fingerprint,
    })
    os.replace(partial, path)
    state_path.unlink(missing_ok=True)  # the training is complete: its resumable state is no longer needed
    dist.barrier()


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


def run_method(config: Config, request: RunRequest, standard_episodes: int | None = None, log=print,
               cache: EncodingCache | None = None) -> dict[str, Any]:
    """Train if needed, then evaluate the test episodes, resuming a killed run. Returns the summary.

    Under torchrun (``torchrun --nproc_per_node N -m fsar_bench run ...``) every rank calls this; rank 0
    alone writes results and logs. ``cache``: share one EncodingCache between calls (default: from config).
    """
    started = time.time()
    dist, device = from_environment(config.run["device"])
    log = log if dist.is_main else (lambda message: None)
    if dist.is_main:
        check_writable(config.path("results"))  # before any work: a run must be able to store its results
    entry = get_method(config, request.method)
    benchmark = open_benchmark(request.dataset, config, request.data)
    test = benchmark.present_partition("test")  # refuses missing videos unless --allow-missing
    protocol = make_protocol(config, benchmark, "test", request.shot)
    protocol.check_feasible(test)
    # a given checkpoint replaces every weight: no ImageNet file needed to evaluate it
    model = build_model(config, entry, benchmark, device, "none" if request.checkpoint is not None else None)
    if request.checkpoint is not None:  # every weight comes from the file: its stamp replaces ours when it loads
        model.spec["backbone_weights"] = WEIGHTS_FROM_CHECKPOINT
    checkpoint_sha, checkpoint_path, train_info = ensure_checkpoint(config, entry, benchmark, model, request, dist, log)
    episodes = draw_episodes(protocol, test)
    results_dir = config.path("results")
    manifest = save_manifest(episodes, results_dir / "episodes", warn=lambda m: log(f"warning: {m}")) if dist.is_main else None
    precision = resolve_precision(config.run["precision"], device)
    run_id = f"{entry.name}__{benchmark.name}__{request.shot}shot__p{protocol.fingerprint[:10]}__c{checkpoint_sha.split(':')[-1][:10]}"
    run_id += "" if precision.name == "fp32" else f"__{precision.name}"  # fp32 runs keep their earlier ids
    stamps = {
        "method": entry.name, "method_origin": entry.origin, "dataset": benchmark.name, "shot": request.shot,
        "way": protocol.way, "protocol": protocol.to_dict(), "protocol_fingerprint": protocol.fingerprint,
        **backbone_stamp(model),  # beside the protocol: the same episodes serve every backbone and track
        "episode_fingerprint": episodes.fingerprint, "episode_manifest": str(manifest),
        "standard_episodes": standard_episodes or protocol.episodes, "checkpoint_sha256": checkpoint_sha,
        "checkpoint_path": str(checkpoint_path) if checkpoint_path else None, "training": train_info,
        "weights": train_info.get("weights", WEIGHTS_TRAINED_HERE if train_info.get("trained") else WEIGHTS_UNTRAINED),
        "seeds": {"episodes": protocol.seed,  # a reference checkpoint was not trained with our seed
                  "train": None if train_info.get("weights") == WEIGHTS_REFERENCE else config.run["train_seed"]},
        "model": model.spec,
        "missing_videos": list(protocol.missing_videos), "split_files": benchmark.split_stamps(),
        "comparable_to_papers": benchmark.comparable_to_papers,
        "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(), **environment_stamps(config, device),
        "processes": dist.world_size, "code": code_digest(entry.card.head, SCORING_MODULES), "eval_precision": precision.name,
    }
    lock = exclusive(results_dir / "locks" / f"{run_id}.lock", "scoring this run", log) if dist.is_main \
        else contextlib.nullcontext()
    with lock:  # a second process scoring the same run waits, then finds it complete
        run = RunStore.open(results_dir, run_id, stamps, query_labels=episodes.query_labels[0].tolist(),
                            accept_code_change=request.accept_code_change, set_aside_other_code=request.retrain,
                            warn=lambda message: log(f"warning: {message}")) if dist.is_main else None
        if dist.broadcast_object(run is not None and run.finished):
            log(f"{run_id}: already complete; its stored results are reported (nothing recomputed)")
            stored = dist.broadcast_object(run.summary() if run is not None else None)
            dist.barrier()
            return stored
        context = EncodingContext(checkpoint_sha, entry.name, model.spec, asdict(model.preprocess), protocol.frames,
                                  protocol.sampling,
                                  open_reader().name + (f" {benchmark.frames_from}" if benchmark.frames_from else ""),
                                  code_sha256(entry.card.head))
        cache = cache if cache is not None else encoding_cache(config, log)
        store = feature_store(config, model, benchmark, ("test",), dist, log)
        digest = context.digest() if precision.name == "fp32" else hashlib.sha256(
            f"{context.digest()} {precision.name}".encode()).hexdigest()  # encodings at another precision are others
        try:
            summary = evaluate_into(run, model, benchmark, episodes, config, log, dist=dist, cache=cache,
                                    context=digest, precision=precision, store=store)
        except BadOutputError as error:
            raise BadOutputError(f"method {entry.name}: {error}") from None
        summary["seconds_total"] = time.time() - started
        summary.update(run_id=run_id, protocol_fingerprint=protocol.fingerprint, episode_fingerprint=episodes.fingerprint)
        if run is not None:
            run.stamps["timings"] = {**run.stamps.get("timings", {}), "total_seconds": summary["seconds_total"]}
            run.finish(summary)
    dist.barrier()
    return summary


def encoding_cache(config: Config, log=print) -> EncodingCache:
    """The encoding cache of ``[paths] cache`` (disk layer off when ``run.cache_max_gb`` is 0)."""
    max_gb = config.run.get("cache_max_gb", 20)
    root = cache_folder(config.path("cache")) if max_gb > 0 else None
    return EncodingCache(root, max_bytes=int(max_gb * (1 << 30)), warn=lambda message: log(f"warning: {message}"))


def evaluate_into(run: RunStore | None, model: FSARModel, benchmark: Benchmark, episodes: EpisodeSet, config: Config,
                  log=print, dist: Distributed = SINGLE, cache: EncodingCache | None = None,
                  context: str = "", precision=None, store: FeatureStore | None = None) -> dict[str, Any]:
    """Score every episode without a record (encoding only the videos they use, through ``cache``, or from the
    frozen track's feature ``store``); return the summary. Under torchrun ``run`` is None except on rank 0, which
    alone appends records."""
    done = run.done if run is not None else set()
    todo = dist.broadcast_object(np.array(sorted(set(range(len(episodes))) - done), dtype=np.int64))
    timings: dict[str, Any] = {"encode_seconds": 0.0, "score_seconds": 0.0, "videos_encoded": 0,
                               "encodings_from_cache": 0, "episode_batch": 0, "processes": dist.world_size}
    if len(todo):
        def record(ids: np.ndarray, predictions: np.ndarray) -> None:
            if run is not None:
                correct = episode_accuracy(episodes, ids, predictions)
                run.append([EpisodeRecord(int(e), int(c), int(predictions.shape[1]), predictions[i].tolist())
                            for i, (e, c) in enumerate(zip(ids, correct))])

        if done:
            log(f"resuming: {len(done)} already recorded")
        label = f"{model.spec['method']} {benchmark.name} {episodes.protocol.shot}-shot"
        timings.update(evaluate_episodes(model, episodes, todo, benchmark.video_path, record, cache=cache,
                                         context=context, workers=config.run["workers"],
                                         batch=config.run["episode_batch"], dist=dist, show_progress=True,
                                         log=lambda message: log(f"{label}: {message}"), precision=precision,
                                         encode=None if store is None else (
                                             lambda ids: encode_from_store(model, store, ids, episodes.protocol.frames))))
    if run is None:
        return dist.broadcast_object(None)
    records = run.records()
    if len(records) != len(episodes):
        raise DataError(f"{run.folder}: {len(records)} records for {len(episodes)} episodes after scoring")
    from fsar_bench.report.stats import mean_ci  # scipy: imported when a summary is written, not at start-up

    summary = mean_ci([100.0 * r.correct / r.queries for r in records])
    run.stamps["timings"] = timings
    return dist.broadcast_object({"episodes": summary.n, "accuracy": summary.mean, "std": summary.std,
                                  "ci95": summary.ci95, "ddof": summary.ddof, **timings})
