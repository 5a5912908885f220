"""The checkpoint of a (method, dataset, shot): its key (recipe digest, model spec, data version, training pipeline),
training it under a lock when it is missing, and loading it (ours, verified against the code that made it, or the
reference's own file).

Usage::

    path = default_checkpoint_path(config, model, "synthetic", shot=5)
    sha, path, info = ensure_checkpoint(config, entry, benchmark, model, RunRequest("otam", "synthetic", 5))
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from fsar_bench.api import Recipe, loss_weight_names
from fsar_bench.model.backbones import LEGACY_WEIGHT_STAMPS
from fsar_bench.config import Config
from fsar_bench.data.benchmarks import Benchmark
from fsar_bench.episodes import draw_episodes
from fsar_bench.code_digest import TRAINING_MODULES, backbone_code, changed_modules, code_digest
from fsar_bench.errors import ProtocolMismatchError, UsageError
from fsar_bench.evaluation.checks import BadOutputError
from fsar_bench.locks import exclusive
from fsar_bench.distributed import SINGLE, Distributed, from_environment
from fsar_bench.model.checkpoints import load_checkpoint_weights, read_checkpoint
from fsar_bench.model.network import FSARModel
from fsar_bench.model.reference_checkpoints import is_fsar_checkpoint, load_reference_checkpoint, read_checkpoint_file
from fsar_bench.files import file_sha256, json_sha256, write_json_atomic
from fsar_bench.model.registry import MethodEntry
from fsar_bench.store import (
    WEIGHTS_TRAINED_HERE, WEIGHTS_UNTRAINED, check_writable,
)
from fsar_bench.progress import training_progress
from fsar_bench.train import train_model
from fsar_bench.train_state import STATE_FILE
from fsar_bench.data.synthetic import benchmark_data_version


from fsar_bench.build import RunRequest, feature_store, get_method, make_protocol, method_recipe


TRAINING_PIPELINE_VERSION = 3
"""Bumped when training itself changes (2: augmentation, samplers, two backbone calls, schedules as run, optimiser
groups; 3: counter-based clip streams, which move every training clip), so that checkpoints trained by an older
trainer are not reused."""
RECIPE_FIELDS_SINCE_V2 = {"warmup_start_lr": 0.0, "head_options_by_shot": {}}
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


def training_code_digest(entry: MethodEntry, model: FSARModel) -> dict[str, str]:
    """The code a checkpoint of ``model`` is trained by: the method's, its backbone plugin's and TRAINING_MODULES."""
    return code_digest(entry.card.head, TRAINING_MODULES, backbone_code(model.spec["backbone"]))


def load_own_checkpoint(model: FSARModel, entry: MethodEntry, path: Path, request: RunRequest) -> dict[str, Any]:
    """Load a checkpoint fsar-bench saved (verified) into ``model``; its info. One trained by code that changed
    since is refused (exit 4) unless ``request.accept_code_change`` (then said in the info)."""
    payload = read_checkpoint(path, accept_unstamped=request.accept_code_change)
    load_checkpoint_weights(model, path, payload)
    info = {"trained": True, "weights": WEIGHTS_TRAINED_HERE, **payload.get("extra", {})}
    if payload["format"] == 1:
        info["code_change_accepted"] = ["(format-1 checkpoint: no integrity stamp, no code digest)"]
    elif "code" in info:  # a checkpoint without a digest (converted from elsewhere) is the user's choice
        changed = changed_modules(info["code"], training_code_digest(entry, model))
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
                                               "code": training_code_digest(entry, model)},
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
