"""Resumable training: a training killed with SIGKILL at several points and resumed by running the same command
ends with a best-on-val checkpoint bit-identical to an uninterrupted training's (CPU, one thread); the
training log, curve and precision stamps are written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import write_bench_toml

RECIPE = """
[methods.otam]
iterations = 16
episodes_per_step = 2
val_every = 4
val_episodes = 10
train_queries_per_class = 2
warmup = 4
lr_steps = [8]
"""


def _setup(folder: Path, synthetic_cache: Path) -> Path:
    folder.mkdir()
    cache = folder / "cache"
    cache.mkdir()
    (cache / "datasets").symlink_to(synthetic_cache / "datasets")
    config = write_bench_toml(folder, cache, f'save_every_minutes = 0\n{RECIPE}')
    config.write_text(config.read_text().replace("workers = 0", "workers = 1"))  # episodes from a loader worker
    return config


def _command(config: Path) -> list[str]:
    return [sys.executable, "-m", "fsar_bench", "--config", str(config), "train", "otam", "--dataset", "synthetic",
            "--shot", "1", "--precision", "fp32"]


def _environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _checkpoint_folder(config: Path) -> Path:
    [folder] = list((config.parent / "results" / "checkpoints").iterdir())
    return folder


def _kill_when(config: Path, ready, extra_delay: float) -> None:
    process = subprocess.Popen(_command(config), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True, env=_environment())
    deadline = time.time() + 400
    while time.time() < deadline and process.poll() is None and not ready():
        time.sleep(0.01)
    time.sleep(extra_delay)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@pytest.mark.slow
def test_killed_training_resumes_to_the_same_checkpoint(tmp_path, synthetic_cache):
    straight = _setup(tmp_path / "straight", synthetic_cache)
    done = subprocess.run(_command(straight), capture_output=True, text=True, timeout=900, env=_environment())
    assert done.returncode == 0, done.stderr
    reference = _checkpoint_folder(straight)

    resumed = _setup(tmp_path / "resumed", synthetic_cache)
    checkpoints = resumed.parent / "results" / "checkpoints"

    def state_file() -> Path | None:
        found = list(checkpoints.glob("*/training.state.pt"))
        return found[0] if found else None

    def log_lines() -> int:
        found = list(checkpoints.glob("*/training.jsonl"))
        return len(found[0].read_text().splitlines()) if found else 0

    _kill_when(resumed, lambda: state_file() is not None, 0.0)          # right after the first save (step 1)
    assert state_file() is not None and not list(checkpoints.glob("*/best.pt"))
    _kill_when(resumed, lambda: log_lines() >= 2, 0.05)                  # mid-step, after the second validation
    _kill_when(resumed, lambda: log_lines() >= 3, 0.0)                   # right after a validation line
    assert not list(checkpoints.glob("*/best.pt")), "the training finished before its last kill"
    finish = subprocess.run(_command(resumed), capture_output=True, text=True, timeout=900, env=_environment())
    assert finish.returncode == 0, finish.stderr
    folder = _checkpoint_folder(resumed)
    import torch

    ours_best, theirs_best = (torch.load(f / "best.pt", weights_only=True) for f in (folder, reference))
    assert ours_best["extra"] == theirs_best["extra"]
    assert all(torch.equal(ours_best["state_dict"][k], v) for k, v in theirs_best["state_dict"].items())
    assert (folder / "best.pt").read_bytes() == (reference / "best.pt").read_bytes()
    assert not (folder / "training.state.pt").exists(), "a finished training's state is removed"

    ours = json.loads((folder / "training.json").read_text())
    theirs = json.loads((reference / "training.json").read_text())
    strip = lambda history: [{k: v for k, v in e.items() if k not in ("episodes_per_second", "data_wait_fraction")}  # noqa: E731
                             for e in history]
    assert strip(ours["history"]) == strip(theirs["history"])
    lines = [json.loads(line) for line in (folder / "training.jsonl").read_text().splitlines()]
    assert strip(lines) == strip(json.loads(line) for line in (reference / "training.jsonl").read_text().splitlines())
    assert [line["iteration"] for line in lines] == [4, 8, 12, 16]
    for line in lines:
        assert {"loss_mean", "loss_terms", "lr", "data_wait_fraction", "val_acc", "val_ci", "episodes_per_second"} <= set(line)
        assert 0.0 <= line["data_wait_fraction"] <= 1.0 and line["val_ci"] > 0
    assert (folder / "training.png").stat().st_size > 1000
    extra = torch.load(folder / "best.pt", weights_only=True)["extra"]
    assert extra["precision"] == "fp32"
