"""`fsar-bench report`: a pure function of ``results/`` (DESIGN §5).

Each row is one run: method, dataset, shot, way, episodes, accuracy (mean %), ci95 = 1.96·s/√N
with s the sample standard deviation over episodes (ddof = 1), std, and the short protocol
fingerprint. Runs with different fingerprints are never merged; runs with fewer episodes than
their protocol's standard ("smoke") and unfinished runs get labelled rows.

Usage::

    table = collect_runs(Path("results"))
    print(format_table(table, "markdown"))
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from fsar_bench.stats import mean_ci
from fsar_bench.store import RECORDS_FILE, STAMPS_FILE, SUMMARY_FILE, StoreError, read_records, run_folders

COLUMNS = ["method", "dataset", "shot", "way", "episodes", "accuracy", "ci95", "std", "protocol", "status"]
FORMATS = ("table", "markdown", "csv", "latex")


def load_run(folder: Path) -> tuple[dict, np.ndarray, bool]:
    """(stamps, per-episode accuracy % in episode order, finished) of one run folder."""
    stamps = json.loads((folder / STAMPS_FILE).read_text(encoding="utf-8"))
    records = read_records(folder / RECORDS_FILE)
    accuracy = np.array([100.0 * r.correct / r.queries for r in records], dtype=np.float64)
    return stamps, accuracy, (folder / SUMMARY_FILE).exists()


def run_status(stamps: dict, episodes: int, finished: bool) -> str:
    """"complete", "incomplete" (killed or running: never a result) or "smoke" (fewer episodes than standard)."""
    if not finished or episodes < stamps["protocol"]["episodes"]:
        return "incomplete"
    if stamps["protocol"]["episodes"] < stamps.get("standard_episodes", stamps["protocol"]["episodes"]):
        return "smoke"
    return "complete"


def collect_runs(results_dir: Path) -> pd.DataFrame:
    """One row per run folder; corrupt folders are skipped with a warning naming them."""
    rows = []
    for folder in run_folders(results_dir):
        try:
            stamps, accuracy, finished = load_run(folder)
        except (OSError, ValueError, KeyError, StoreError) as error:
            warnings.warn(f"skipping {folder}: {error}", stacklevel=2)
            continue
        summary = mean_ci(accuracy) if len(accuracy) else None
        rows.append({
            "method": stamps["method"], "dataset": stamps["dataset"], "shot": stamps["shot"], "way": stamps["way"],
            "episodes": len(accuracy),
            "accuracy": summary.mean if summary else float("nan"),
            "ci95": summary.ci95 if summary else float("nan"),
            "std": summary.std if summary else float("nan"),
            "protocol": stamps["protocol_fingerprint"][:8],
            "status": run_status(stamps, len(accuracy), finished),
            "episode_fingerprint": stamps["episode_fingerprint"],
            "train_seed": stamps.get("seeds", {}).get("train"),
            "checkpoint": stamps["checkpoint_sha256"].split(":")[-1][:10],
            "run": folder.name,
        })
    frame = pd.DataFrame(rows, columns=[*COLUMNS, "episode_fingerprint", "train_seed", "checkpoint", "run"])
    return frame.sort_values(["dataset", "shot", "protocol", "accuracy"], ascending=[True, True, True, False]).reset_index(drop=True)


def format_table(frame: pd.DataFrame, fmt: str = "table") -> str:
    """Render the report in one of FORMATS (``table`` is plain text; the CLI renders it with rich)."""
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
        body = shown.to_latex(index=False, escape=True)
        return body.replace("±", r"$\pm$")
    if fmt == "table":
        return shown.to_string(index=False)
    raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
