"""What `fsar-bench run`, `train` and `evaluate` do, independent of the command line.

Usage::

    config = load_config()
    summary = run_method(config, RunRequest(method="otam", dataset="synthetic", shot=5))
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import platform
import subprocess
import sys
import time
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

import fsar_bench
from fsar_bench.model.checkpoints import WEIGHTS_FROM_CHECKPOINT
from fsar_bench.config import Config
from fsar_bench.data.benchmarks import Benchmark, open_benchmark
from fsar_bench.episodes import EpisodeSet, draw_episodes, save_manifest
from fsar_bench.code_digest import SCORING_MODULES, backbone_code, code_digest
from fsar_bench.errors import DataError
from fsar_bench.evaluation.checks import BadOutputError
from fsar_bench.locks import exclusive
from fsar_bench.evaluation.cache import EncodingCache, EncodingContext, cache_folder, code_sha256
from fsar_bench.distributed import SINGLE, Distributed, from_environment
from fsar_bench.evaluation.evaluate import episode_accuracy, evaluate_episodes
from fsar_bench.model.network import FSARModel
from fsar_bench.frozen import FeatureStore, encode_from_store
from fsar_bench.store import (
    WEIGHTS_REFERENCE, WEIGHTS_TRAINED_HERE, WEIGHTS_UNTRAINED, EpisodeRecord, RunStore, check_writable,
)
from fsar_bench.precision import resolve_precision
from fsar_bench.data.video import open_reader
from fsar_bench.build import (  # re-exported: the CLI and tests import them from here
    RunRequest, build_model, feature_store, get_method, make_protocol, method_recipe, resolve_device,
)
from fsar_bench.checkpointing import (  # re-exported
    TRAINING_PIPELINE_VERSION, backbone_stamp, default_checkpoint_path, ensure_checkpoint, state_sha256,
    train_checkpoint, training_lock,
)

__all__ = ["RunRequest", "TRAINING_PIPELINE_VERSION", "backbone_stamp", "build_model", "default_checkpoint_path",
           "encoding_cache", "ensure_checkpoint", "environment_stamps", "evaluate_into", "feature_store", "get_method",
           "make_protocol", "method_recipe", "resolve_device", "run_method", "state_sha256", "train_checkpoint",
           "training_lock"]


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
    model = build_model(config, entry, benchmark, device, request.shot,
                        "none" if request.checkpoint is not None else None)
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
        "processes": dist.world_size, "eval_precision": precision.name,
        "code": code_digest(entry.card.head, SCORING_MODULES, backbone_code(model.spec["backbone"])),
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
                                  code_sha256(entry.card.head, backbone_code(model.spec["backbone"])))
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
