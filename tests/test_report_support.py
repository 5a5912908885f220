"""Builders of synthetic ``results/`` folders for the report tests (no tests here).

Runs are written through ``fsar_bench.store.RunStore`` exactly as ``fsar-bench run`` writes them, with
stamps shaped like ``fsar_bench.runner.run_method``'s, so the report reads the real format.

Usage::

    correct = simulate_correct(200, {"tsn": 0.0, "otam": 6.0}, np.random.default_rng(0))
    write_run(tmp_path / "results", "otam", "synthetic", 5, correct["otam"])
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from fsar_bench.episodes import Protocol
from fsar_bench.store import EpisodeRecord, RunStore
from fsar_bench.data.synthetic import benchmark_data_version

QUERIES = 5  # 5-way, 1 query per class
STANDARD = {"way": 5, "queries_per_class": 1, "episodes": 200, "frames": 8, "seed": 0}
"""The configured protocol the tests report against (bench.toml's [protocol] with 200 episodes)."""


def standard(episodes: int) -> dict[str, int]:
    """STANDARD with another number of episodes."""
    return {**STANDARD, "episodes": episodes}


def simulate_correct(n_episodes: int, offsets: dict[str, float], rng: np.random.Generator,
                     shared: float = 0.5) -> dict[str, np.ndarray]:
    """Correct answers per episode ``[E]`` (0..5) of correlated methods; ``offsets`` in accuracy points.

    Every method sees the same episode difficulty p ~ Beta(4, 3) and, for a ``shared`` fraction of
    queries, the same uniform draw, so methods agree on easy and hard queries as real ones do.
    Expected accuracy of a method: 100·E[p] + offset ≈ 57.1 + offset.
    """
    difficulty = rng.beta(4.0, 3.0, size=(n_episodes, 1))
    common = rng.random((n_episodes, QUERIES))
    correct = {}
    for method, offset in offsets.items():
        draws = np.where(rng.random((n_episodes, QUERIES)) < shared, common, rng.random((n_episodes, QUERIES)))
        correct[method] = (draws < difficulty + offset / 100.0).sum(axis=1)
    return correct


def protocol_for(dataset: str, shot: int, episodes: int = 200, seed: int = 0, way: int = 5) -> Protocol:
    return Protocol(dataset=dataset, partition="test", split_sha256=hashlib.sha256(dataset.encode()).hexdigest(),
                    way=way, shot=shot, queries_per_class=1, episodes=episodes, frames=8, size=64, seed=seed,
                    data_version=benchmark_data_version(dataset))


def write_run(results_dir: Path, method: str, dataset: str, shot: int, correct: np.ndarray, *,
              protocol_episodes: int | None = None, standard_episodes: int | None = None, protocol_seed: int = 0,
              train_seed: int = 0, untrained: bool = False, finished: bool = True, backbone: str = "small-cnn",
              episode_fingerprint: str | None = None, eval_precision: str | None = None, track: str | None = None,
              backbone_weights: str | None = None) -> Path:
    """Store one run of ``len(correct)`` scored episodes; returns its folder.

    ``protocol_episodes`` (default ``len(correct)``) above ``len(correct)`` makes a half-written run when
    ``finished`` is False; ``standard_episodes`` (default: the protocol's) above it makes a smoke run.
    ``track``/``backbone_weights`` None: stamped as before tracks and weight tags existed (no keys).
    """
    episodes = protocol_episodes or len(correct)
    protocol = protocol_for(dataset, shot, episodes, protocol_seed)
    variant = f"/{track}/{backbone_weights}" if track or backbone_weights else ""
    digest = hashlib.sha256(f"{method}/{dataset}/{shot}/{train_seed}/{backbone}/{untrained}{variant}".encode()).hexdigest()
    checkpoint = f"untrained:{digest}" if untrained else digest
    stamps = {
        "method": method, "method_origin": f"methods/{method}.py", "dataset": dataset, "shot": shot, "way": protocol.way,
        "protocol": protocol.to_dict(), "protocol_fingerprint": protocol.fingerprint,
        "episode_fingerprint": episode_fingerprint or hashlib.sha256(f"episodes/{protocol.fingerprint}".encode()).hexdigest(),
        "standard_episodes": standard_episodes or episodes, "checkpoint_sha256": checkpoint,
        "seeds": {"episodes": protocol.seed, "train": train_seed},
        "model": {"method": method, "backbone": backbone, "frames": 8, "size": 64, "options": {}},
        "training": {"trained": not untrained, **({} if untrained else {"recipe": {"iterations": 600}})},
        "started_at": "2026-01-01T00:00:00+00:00",
        **({"track": track} if track else {}), **({"backbone_weights": backbone_weights} if backbone_weights else {}),
    }
    run_id = f"{method}__{dataset}__{shot}shot__p{protocol.fingerprint[:10]}__c{checkpoint.split(':')[-1][:10]}"
    if eval_precision:
        stamps["eval_precision"] = eval_precision
        run_id += f"__{eval_precision}"
    run = RunStore.open(results_dir, run_id, stamps)
    run.append([EpisodeRecord(e, int(c), QUERIES, [0] * QUERIES) for e, c in enumerate(correct)])
    if finished:
        accuracy = 100.0 * np.asarray(correct) / QUERIES
        run.finish({"episodes": len(correct), "accuracy": float(accuracy.mean())})
    return run.folder


OFFSETS = {"tsn": 0.0, "otam": 6.0, "trx": 7.0, "hyrsm": 1.0}


def golden_results(results_dir: Path) -> Path:
    """The folder every golden file is rendered from: 4 cells (synthetic on small-cnn, ucf101 on resnet50 × 1, 5
    shots), tsn/otam/trx everywhere, hyrsm in three cells, two training seeds of otam, an untrained tsn, a smoke run,
    a run of another protocol, a half-written run and a corrupt one; plus ucf101 5-shot on clip-rn50 (its own table,
    no published numbers) and synthetic 5-shot on the frozen track (its own table)."""
    rng = np.random.default_rng(20260101)
    for dataset in ("synthetic", "ucf101"):
        backbone = "small-cnn" if dataset == "synthetic" else "resnet50"
        for shot in (1, 5):
            correct = simulate_correct(200, {**OFFSETS, "otam-seed1": 5.0, "tsn-untrained": -30.0}, rng)
            for method in ("tsn", "otam", "trx"):
                write_run(results_dir, method, dataset, shot, correct[method], backbone=backbone)
            if (dataset, shot) != ("ucf101", 1):
                write_run(results_dir, "hyrsm", dataset, shot, correct["hyrsm"], backbone=backbone)
            if (dataset, shot) == ("synthetic", 5):
                write_run(results_dir, "otam", dataset, shot, correct["otam-seed1"], train_seed=1)
            if (dataset, shot) == ("synthetic", 1):
                write_run(results_dir, "tsn", dataset, shot, correct["tsn-untrained"], untrained=True)
    clip = simulate_correct(200, {"tsn": 3.0, "otam": 9.0, "trx": 8.0}, rng)
    for method in ("tsn", "otam", "trx"):
        write_run(results_dir, method, "ucf101", 5, clip[method], backbone="clip-rn50", track="finetune",
                  backbone_weights="open_clip:RN50/openai")
    frozen = simulate_correct(200, {"tsn": -4.0, "otam": 2.0, "trx": 1.0}, rng)
    for method in ("tsn", "otam", "trx"):
        write_run(results_dir, method, "synthetic", 5, frozen[method], track="frozen", backbone_weights="synthetic-train")
    smoke = simulate_correct(50, {"otam": 6.0}, rng)["otam"]
    write_run(results_dir, "otam", "synthetic", 5, smoke, standard_episodes=200)  # 50 of 200 episodes: smoke
    other = simulate_correct(200, {"tsn": 0.0}, rng)["tsn"]
    write_run(results_dir, "tsn", "synthetic", 5, other, protocol_seed=1)
    half = simulate_correct(80, {"molo": 8.0}, rng)["molo"]
    write_run(results_dir, "molo", "synthetic", 5, half, protocol_episodes=200, finished=False)
    corrupt = write_run(results_dir, "hyrsm", "ucf101", 1, simulate_correct(200, {"hyrsm": 1.0}, rng)["hyrsm"])
    records = corrupt / "records.jsonl"
    lines = records.read_text().splitlines(keepends=True)
    lines[2] = '{"episode": 2, "correct": 3, "queries"\n'
    records.write_text("".join(lines))
    return results_dir
