"""Reading ``results/`` for the report: one ``RunData`` per run folder, never re-running anything.

A run folder is ``results/runs/<run_id>/{stamps.json, records.jsonl, summary.json}`` (see
``fsar_bench.store``). Each run gets a ``status``:

- ``incomplete``: no ``summary.json`` yet (running or killed) or fewer records than its protocol's
  episodes. Listed as incomplete, never used as a result.
- ``smoke``: finished, but its protocol has fewer episodes than the standard one.
- ``other-protocol``: finished, from a protocol other than the configured one (way, queries, frames,
  seed or episodes differ, test videos were left out with ``--allow-missing``, split files that differ
  from the published ones were accepted with ``--trust-splits``, or a generated dataset of another version).
- ``complete``: finished, standard protocol.

A folder whose stamps or records cannot be read is skipped and named in ``LoadedResults.skipped``.

Usage::

    loaded = load_results(Path("results"), expected_protocol=config.protocol)
    for run in loaded.runs:
        print(run.run_id, run.status, run.accuracy.mean())
    table = collect_runs(Path("results"))          # one row per run (pandas), as `fsar-bench run` prints it
    print(format_table(table, "markdown"))
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from fsar_bench.report.stats import mean_ci
from fsar_bench.store import (
    RECORDS_FILE, STAMPS_FILE, SUMMARY_FILE, WEIGHTS_REFERENCE, WEIGHTS_TRAINED_HERE, WEIGHTS_UNTRAINED, StoreError,
    read_records, run_folders,
)
from fsar_bench.data.synthetic import benchmark_data_version

STATUSES = ("complete", "smoke", "other-protocol", "incomplete")
LEGACY_WEIGHT_STAMPS = {"small-cnn": "none", "resnet50": "torchvision:ResNet50_Weights.IMAGENET1K_V1"}
"""Weights of runs stamped before weight tags existed (as ``fsar_bench.model.backbones``; the report imports no torch)."""
PROTOCOL_KEYS = ("way", "queries_per_class", "frames", "seed")
"""Protocol settings compared with the configured protocol (besides ``episodes``)."""
REQUIRED_STAMPS = ("method", "dataset", "shot", "way", "protocol", "protocol_fingerprint", "episode_fingerprint",
                   "checkpoint_sha256")


@dataclass(frozen=True)
class RunData:
    """One run folder as the report sees it. ``accuracy`` ``[E]`` is % per episode, aligned with ``episodes``."""

    run_id: str
    stamps: dict[str, Any]
    episodes: NDArray[np.int64]  # [E] recorded episode ids, sorted
    accuracy: NDArray[np.float64]  # [E] 100 * correct / queries
    status: str  # one of STATUSES
    detail: str = ""  # why smoke / other-protocol / incomplete, in words

    @property
    def method(self) -> str:
        return str(self.stamps["method"])

    @property
    def dataset(self) -> str:
        return str(self.stamps["dataset"])

    @property
    def shot(self) -> int:
        return int(self.stamps["shot"])

    @property
    def way(self) -> int:
        return int(self.stamps["way"])

    @property
    def protocol_fingerprint(self) -> str:
        return str(self.stamps["protocol_fingerprint"])

    @property
    def episode_fingerprint(self) -> str:
        return str(self.stamps["episode_fingerprint"])

    @property
    def backbone(self) -> str:
        """The backbone the run was measured with (runs from before backbones were stamped: their model spec's)."""
        return str(self.stamps.get("backbone") or (self.stamps.get("model") or {}).get("backbone") or "unknown")

    @property
    def backbone_weights(self) -> str:
        """The backbone's weight tag; runs from before weights were stamped get their backbone's legacy tag."""
        stamped = self.stamps.get("backbone_weights") or (self.stamps.get("model") or {}).get("backbone_weights")
        return str(stamped or LEGACY_WEIGHT_STAMPS.get(self.backbone, "unknown"))

    @property
    def track(self) -> str:
        """"finetune" (backbone trained with the head; every run from before tracks existed) or "frozen"."""
        return str(self.stamps.get("track") or (self.stamps.get("model") or {}).get("track") or "finetune")

    @property
    def train_seed(self) -> int | None:
        seed = (self.stamps.get("seeds") or {}).get("train")
        return None if seed is None else int(seed)

    @property
    def untrained(self) -> bool:
        return str(self.stamps["checkpoint_sha256"]).startswith("untrained:")

    @property
    def weights(self) -> str:
        """"trained here", "untrained" or "reference checkpoint" (stamped; derived for runs stamped before)."""
        stamped = self.stamps.get("weights")
        if stamped:
            return str(stamped)
        return WEIGHTS_UNTRAINED if self.untrained else WEIGHTS_TRAINED_HERE

    @property
    def reference_checkpoint(self) -> bool:
        """Weights trained and saved by the method's own reference code, not by fsar-bench's trainer."""
        return self.weights == WEIGHTS_REFERENCE


@dataclass(frozen=True)
class SkippedRun:
    """A run folder that could not be read (corrupt stamps or records); ``reason`` names the file."""

    run_id: str
    reason: str


@dataclass
class LoadedResults:
    """Every run folder under ``results_dir``: readable runs (any status) and skipped ones."""

    results_dir: Path
    runs: list[RunData] = field(default_factory=list)
    skipped: list[SkippedRun] = field(default_factory=list)

    @property
    def n_folders(self) -> int:
        return len(self.runs) + len(self.skipped)


def classify_protocol(stamps: Mapping[str, Any], expected: Mapping[str, Any] | None) -> tuple[str, str]:
    """("complete" | "smoke" | "other-protocol", detail) of a finished run's protocol.

    ``expected`` is the configured ``[protocol]`` table (way, queries_per_class, episodes, frames,
    seed); None accepts any protocol whose episodes reach the run's ``standard_episodes`` stamp.
    """
    protocol = stamps["protocol"]
    episodes = int(protocol["episodes"])
    standard = int(stamps.get("standard_episodes") or episodes)
    if protocol.get("missing_videos"):  # `--allow-missing`: a separate, named protocol
        return "other-protocol", f"allow-missing: {len(protocol['missing_videos'])} test videos left out"
    current = benchmark_data_version(str(stamps.get("dataset", "")))
    if protocol.get("data_version", "") != current:  # generated data of another version: other frames
        return "other-protocol", f"data {protocol.get('data_version') or 'unversioned'} (current: {current or 'none'})"
    changed = [Path(str(check.get("file", "?"))).name for check in stamps.get("split_files") or []
               if str(check.get("status", "")).startswith("MISMATCH")]
    if changed:  # `--trust-splits`: not the published split
        verb = "differs" if len(changed) == 1 else "differ"
        return "other-protocol", f"trust-splits: {', '.join(changed)} {verb} from the published split"
    if expected is not None:
        differing = [key for key in PROTOCOL_KEYS if key in expected and protocol.get(key) != expected[key]]
        if differing:
            return "other-protocol", ", ".join(f"{key} {protocol.get(key)} instead of {expected[key]}" for key in differing)
        standard = max(standard, int(expected.get("episodes", standard)))
    if episodes < standard:
        return "smoke", f"smoke run: {episodes:,} of {standard:,} episodes"
    if expected is not None and episodes != int(expected.get("episodes", episodes)):
        return "other-protocol", f"episodes {episodes} instead of {expected['episodes']}"
    return "complete", ""


def load_run(folder: Path, expected_protocol: Mapping[str, Any] | None = None) -> RunData:
    """Read one run folder; raises StoreError (naming the file) when stamps or records are corrupt."""
    stamps_path = folder / STAMPS_FILE
    if not stamps_path.exists():
        return RunData(folder.name, {}, np.zeros(0, np.int64), np.zeros(0), "incomplete",
                       "no stamps.json yet (started or killed before writing it)")
    try:
        stamps = json.loads(stamps_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise StoreError(f"{stamps_path}: unreadable stamps ({error})") from None
    missing = [key for key in REQUIRED_STAMPS if key not in stamps] if isinstance(stamps, dict) else ["(not an object)"]
    if missing or not isinstance(stamps.get("protocol"), dict) or "episodes" not in stamps["protocol"]:
        raise StoreError(f"{stamps_path}: stamps lack {', '.join(missing) or 'protocol.episodes'}")
    try:
        records = read_records(folder / RECORDS_FILE)
        episodes = np.array([r.episode for r in records], dtype=np.int64)
        accuracy = np.array([100.0 * r.correct / r.queries for r in records], dtype=np.float64)
    except (OSError, ZeroDivisionError, TypeError) as error:
        raise StoreError(f"{folder / RECORDS_FILE}: corrupt record ({error})") from None
    expected = int(stamps["protocol"]["episodes"])
    if len(records) and (episodes[0] < 0 or episodes[-1] >= expected):
        raise StoreError(f"{folder / RECORDS_FILE}: episode ids {episodes[0]}..{episodes[-1]} outside 0..{expected - 1}")
    if not np.all(np.isfinite(accuracy)) or np.any((accuracy < 0) | (accuracy > 100)):
        raise StoreError(f"{folder / RECORDS_FILE}: a record has correct outside 0..queries")
    finished = (folder / SUMMARY_FILE).exists()
    if not finished:
        return RunData(folder.name, stamps, episodes, accuracy, "incomplete",
                       f"running or killed: {len(records):,} of {expected:,} episodes recorded, no summary.json")
    if len(records) < expected:
        return RunData(folder.name, stamps, episodes, accuracy, "incomplete",
                       f"summary.json present but only {len(records):,} of {expected:,} episodes recorded")
    status, detail = classify_protocol(stamps, expected_protocol)
    return RunData(folder.name, stamps, episodes, accuracy, status, detail)


def load_results(results_dir: Path, expected_protocol: Mapping[str, Any] | None = None) -> LoadedResults:
    """Every run folder under ``results_dir/runs``; corrupt ones go to ``skipped`` with the reason."""
    loaded = LoadedResults(results_dir)
    for folder in run_folders(results_dir):
        try:
            loaded.runs.append(load_run(folder, expected_protocol))
        except StoreError as error:
            reason = str(error).replace(str(results_dir.resolve()) + "/", "").replace(str(results_dir) + "/", "")
            loaded.skipped.append(SkippedRun(folder.name, reason))
    return loaded


# --------------------------------------------------------------------------- one row per run (pandas)
COLUMNS = ["method", "dataset", "shot", "way", "backbone", "track", "episodes", "accuracy", "ci95", "std", "protocol",
           "status", "weights"]
FORMATS = ("table", "markdown", "csv", "latex")


def collect_runs(results_dir: Path, expected_protocol: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """One row per readable run folder (any status); corrupt folders are left out.

    Used by `fsar-bench run` to print what it just stored; `fsar-bench report` builds the full
    report from ``load_results`` instead.
    """
    rows = []
    for run in load_results(results_dir, expected_protocol).runs:
        if not run.stamps:
            continue
        summary = mean_ci(run.accuracy) if len(run.accuracy) else None
        rows.append({
            "method": run.method, "dataset": run.dataset, "shot": run.shot, "way": run.way,
            "backbone": run.backbone, "track": run.track, "episodes": len(run.accuracy),
            "accuracy": summary.mean if summary else float("nan"),
            "ci95": summary.ci95 if summary else float("nan"),
            "std": summary.std if summary else float("nan"),
            "protocol": run.protocol_fingerprint[:8], "status": run.status, "weights": run.weights,
            "episode_fingerprint": run.episode_fingerprint, "train_seed": run.train_seed,
            "checkpoint": str(run.stamps["checkpoint_sha256"]).split(":")[-1][:10], "run": run.run_id,
        })
    frame = pd.DataFrame(rows, columns=[*COLUMNS, "episode_fingerprint", "train_seed", "checkpoint", "run"])
    return frame.sort_values(["dataset", "shot", "protocol", "accuracy"], ascending=[True, True, True, False],
                             ignore_index=True)


def format_table(frame: pd.DataFrame, fmt: str = "table") -> str:
    """Render a ``collect_runs`` frame in one of FORMATS (``table`` is plain text)."""
    shown = frame[COLUMNS].copy()
    if fmt == "csv":
        return shown.to_csv(index=False, float_format="%.4f")
    shown["accuracy"] = [f"{a:.2f} ± {c:.2f}" for a, c in zip(frame["accuracy"], frame["ci95"])]
    shown = shown.drop(columns=["ci95"]).rename(columns={"accuracy": "accuracy ± ci95"})
    shown["std"] = shown["std"].map(lambda s: f"{s:.2f}")
    if fmt == "markdown":
        header = "| " + " | ".join(shown.columns) + " |\n|" + "|".join("---" for _ in shown.columns) + "|\n"
        return header + "".join("| " + " | ".join(str(v) for v in row) + " |\n" for row in shown.itertuples(index=False))
    if fmt == "latex":
        return shown.to_latex(index=False, escape=True).replace("±", r"$\pm$")
    if fmt == "table":
        return shown.to_string(index=False)
    raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
