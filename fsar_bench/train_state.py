"""Resumable training: the full training state on disk, and what the trainer logs beside its checkpoint.

``training.state.pt`` (beside ``best.pt``) holds everything the next optimizer step depends on: model weights
and buffers, optimizer and GradScaler state, the step to run next (so the schedule position and the episode
counter), torch's RNG state (dropout), the history, the best-so-far on val and its checkpoint's sha256. It is
written atomically every ``run.save_every_minutes`` and after each validation, so a training killed at any
moment (kill -9) resumes by running the same command, and on CPU with the same thread count reaches the
same final checkpoint bit for bit (tests/test_resume_training.py). A state written by another training
(other recipe, seed, data, precision, world size) is refused by its ``identity``.

``TrainingLog`` appends one line per validation to ``training.jsonl`` (every loss term averaged since the
previous line, lr, data-wait fraction, episodes/s, val accuracy ± 95% CI) and redraws ``training.png``.

Usage::

    state = load_training_state(path, identity, model, optimizer, scaler)   # None: start from step 0
    save_training_state(path, identity, model, optimizer, scaler, state)
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from fsar_bench.errors import DataError, ProtocolMismatchError
from fsar_bench.files import atomic_write, write_bytes_atomic, write_text_atomic

STATE_FORMAT = "fsar-bench-training-state-1"
STATE_FILE = "training.state.pt"
LOG_FILE = "training.jsonl"
PLOT_FILE = "training.png"


@dataclass
class TrainingProgress:
    """The trainer's own counters (everything but tensors)."""

    step: int = 0  # the next optimizer step to run
    best_accuracy: float = float("-inf")
    best_iteration: int = -1
    best_sha256: str = ""
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0  # training time before this process (for the final figures)
    window: dict = field(default_factory=dict)  # the loss sums since the last validation line (training.jsonl)


def training_identity(**values: Any) -> str:
    """sha256 naming one training (recipe, seeds, shot, frames, data, precision, world size...)."""
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


def save_training_state(path: Path, identity: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        scaler: torch.amp.GradScaler, progress: TrainingProgress) -> None:
    """Write the full state atomically (a kill during the write leaves the previous state intact)."""
    payload = {"format": STATE_FORMAT, "identity": identity, "progress": asdict(progress),
               "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
               "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
               "torch_rng": torch.get_rng_state(),
               "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_bytes_atomic(path, buffer.getvalue())


def load_training_state(path: Path, identity: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        scaler: torch.amp.GradScaler) -> TrainingProgress | None:
    """Restore a saved state into ``model``, ``optimizer``, ``scaler`` and torch's RNG; None when there is none."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        raise DataError(f"training state {path} cannot be read ({str(error).splitlines()[0][:160]}): delete it to "
                        "train from the start") from None
    if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
        raise DataError(f"{path} is not an fsar-bench training state ({STATE_FORMAT}): delete it to train from the start")
    if payload["identity"] != identity:
        raise ProtocolMismatchError(f"training state {path} belongs to another training (recipe, seed, data, precision "
                                    "or process count differ): delete it, or run with the settings it was started with")
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    scaler.load_state_dict(payload["scaler"])
    torch.set_rng_state(payload["torch_rng"])
    if payload["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(payload["cuda_rng"])
    return TrainingProgress(**payload["progress"])


class TrainingLog:
    """``training.jsonl`` (one line per validation) and its plot ``training.png``, beside the checkpoint."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOG_FILE
        self.plot = folder / PLOT_FILE

    def rewrite(self, lines: list[dict]) -> None:
        """Make the file hold exactly ``lines`` (after a resume, lines past the restored state are dropped)."""
        text = "".join(json.dumps(line, sort_keys=True) + "\n" for line in lines)
        write_text_atomic(self.path, text)

    def append(self, line: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as stream:
            stream.write(json.dumps(line, sort_keys=True) + "\n")
        self.draw()

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def draw(self) -> None:
        """Loss terms and val accuracy (± CI) against iterations."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        lines = self.read()
        if not lines:
            return
        iterations = [line["iteration"] for line in lines]
        figure, (losses, accuracy) = plt.subplots(1, 2, figsize=(10, 3.6))
        terms = sorted({key for line in lines for key in line.get("loss_terms", {})})
        losses.plot(iterations, [line["loss"] for line in lines], label="loss", linewidth=2)
        for term in terms:
            losses.plot(iterations, [line["loss_terms"].get(term, float("nan")) for line in lines], label=term, linewidth=1)
        losses.set_xlabel("iteration (episodes)")
        losses.set_title("training loss (mean since the previous validation)")
        losses.legend(fontsize=7)
        values = [line["val_acc"] for line in lines]
        accuracy.errorbar(iterations, values, yerr=[line.get("val_ci", 0.0) for line in lines], marker="o", capsize=3)
        accuracy.set_xlabel("iteration (episodes)")
        accuracy.set_title("val accuracy % (± 95% CI)")
        figure.tight_layout()
        try:
            atomic_write(self.plot, lambda stream: figure.savefig(stream, format="png", dpi=90), durable=False)
        finally:
            plt.close(figure)
