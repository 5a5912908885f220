"""Numeric precision of training and evaluation: ``fp32``, ``bf16`` or ``fp16`` autocast (``run.precision``).

``auto`` is bf16 on a CUDA GPU that supports it, else fp16 (with a GradScaler in training) on CUDA, else fp32.
The resolved name is stamped into checkpoints (training precision) and runs (evaluation precision): results
computed at another evaluation precision are reported apart (``fsar_bench.report``).

Usage::

    precision = resolve_precision("auto", device)      # Precision(name="bf16", ...)
    with precision.autocast(device):
        loss = model(...)
    scaler = precision.grad_scaler(device)              # enabled for fp16 only
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from fsar_bench.errors import UsageError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    name: str  # fp32 | bf16 | fp16

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES[self.name]

    def autocast(self, device: torch.device):
        """Autocast to ``dtype`` on ``device`` (nothing for fp32)."""
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)

    def grad_scaler(self, device: torch.device) -> torch.amp.GradScaler:
        """Loss scaling for fp16 (its range is too small for small gradients); a no-op scaler otherwise."""
        return torch.amp.GradScaler(device.type, enabled=self.name == "fp16")


def resolve_precision(name: str, device: torch.device) -> Precision:
    """``auto`` -> bf16 (CUDA with bf16), fp16 (other CUDA), fp32 (CPU); an explicit name is kept (bf16 and fp16
    autocast also run on CPU, slowly: for checks). On CUDA it also turns on cudnn.benchmark."""
    if name not in PRECISIONS:
        raise UsageError(f"unknown precision {name!r}: use one of {', '.join(PRECISIONS)}")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes per method: pick the fastest kernels once
        if name == "auto":
            name = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    elif name == "auto":
        name = "fp32"
    return Precision(name)
