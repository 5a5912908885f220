"""Checkpoint files: reproducible bytes, an integrity stamp verified on every load, and the fit checks.

A checkpoint is a ``torch.save`` dict (format 2): ``spec`` (what the model must match), ``extra`` (training
provenance: dataset, shot, recipe, iteration, val accuracy, code digest), ``state_dict`` (CPU tensors) and
``content_sha256``, the sha256 of everything else in it (see :func:`content_sha256`).

- Reproducible: the archive is serialised in memory (``torch.save`` names its zip records after the file it
  writes to; a buffer is always named ``archive``), then written atomically through ``fsar_bench.files``.
  Identical weights and provenance therefore give identical bytes, the same file sha256, the same run id
  and a warm encoding cache.
- Verified: ``read_checkpoint`` recomputes the stamp; a file whose bytes changed (bit rot, a bad copy, an
  edit) is refused with exit 3 naming the file and suggesting ``--retrain``. A checkpoint without a stamp
  (format 1, fsar-bench before this check) is refused with exit 4 for the same reason.

Usage::

    sha = save_checkpoint(model, path, extra={"dataset": "synthetic", "shot": 1})   # file sha256
    payload = read_checkpoint(path)                                                  # verified
    load_checkpoint_weights(model, path, payload)                                    # spec + tensors checked
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from fsar_bench.errors import DataError, ProtocolMismatchError
from fsar_bench.files import write_bytes_atomic
from fsar_bench.model.backbones import LEGACY_WEIGHT_STAMPS

CHECKPOINT_FORMAT = 2
SPEC_KEYS_THAT_MUST_MATCH = ("method", "backbone", "backbone_dim", "backbone_weights", "track", "frames", "size")


def content_sha256(payload: dict[str, Any]) -> str:
    """sha256 over a checkpoint's format, spec, extra (canonical JSON) and every tensor (name, dtype, shape,
    bytes, in name order): independent of the zip container, so it survives any faithful copy."""
    digest = hashlib.sha256()
    header = {key: payload.get(key) for key in ("format", "spec", "extra")}
    digest.update(json.dumps(header, sort_keys=True, default=str).encode())
    for name, tensor in sorted(payload["state_dict"].items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"\0{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def checkpoint_bytes(spec: dict[str, Any], state_dict: dict[str, Tensor], extra: dict[str, Any]) -> bytes:
    """The file content of a checkpoint: the same arguments always give the same bytes."""
    payload: dict[str, Any] = {"format": CHECKPOINT_FORMAT, "spec": spec, "extra": extra,
                               "state_dict": {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}}
    payload["content_sha256"] = content_sha256(payload)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def save_checkpoint(model: torch.nn.Module, path: Path, extra: dict[str, Any]) -> str:
    """Write ``model`` (its ``spec`` and weights) with ``extra`` atomically; returns the file's sha256."""
    data = checkpoint_bytes(model.spec, model.state_dict(), extra)
    write_bytes_atomic(path, data)
    return hashlib.sha256(data).hexdigest()


def read_checkpoint(path: Path, accept_unstamped: bool = False) -> dict[str, Any]:
    """Load and verify a checkpoint dict (CPU tensors), or raise an error naming the file and the fix.

    ``accept_unstamped`` loads a format-1 checkpoint (no stamp to verify) instead of refusing it; the caller
    says so in the run (``--accept-code-change``).
    """
    if not path.is_file():
        raise DataError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise DataError(f"checkpoint {path} cannot be read ({str(error).splitlines()[0][:160]}): it is corrupt or "
                        "not a checkpoint; retrain it with --retrain") from None
    if not isinstance(payload, dict) or payload.get("format") not in (1, CHECKPOINT_FORMAT):
        raise ProtocolMismatchError(f"{path} is not an fsar-bench checkpoint (format {CHECKPOINT_FORMAT})")
    if payload["format"] == 1:
        if accept_unstamped:
            return payload
        raise ProtocolMismatchError(f"checkpoint {path} was written by an older fsar-bench without an integrity "
                                    "stamp or code digest, so it cannot be verified; retrain it with --retrain, or pass "
                                    "--accept-code-change to use it unverified (stamped into the run)")
    stamp = payload.get("content_sha256")
    try:
        actual = content_sha256(payload)
    except Exception:  # a mangled state_dict or spec that still unpickled
        actual = None
    if actual is None or stamp != actual:
        raise DataError(f"checkpoint {path} is corrupt: its content does not match the sha256 stamped in it when it "
                        "was saved; retrain it with --retrain (or restore an intact copy)")
    return payload


WEIGHTS_FROM_CHECKPOINT = "from checkpoint"
"""A model's backbone weight stamp while a checkpoint given by path is to replace every weight (then: the file's)."""


def stored_spec_value(stored: dict[str, Any], key: str) -> Any:
    """A checkpoint's spec entry; checkpoints written before weights and tracks were stamped get their legacy values."""
    if key in stored:
        return stored[key]
    if key == "backbone_weights":
        return LEGACY_WEIGHT_STAMPS.get(stored.get("backbone", ""), (None,))[0]
    if key == "track":
        return "finetune"
    return None


def check_checkpoint_spec(path: Path, stored: dict[str, Any], expected: dict[str, Any]) -> None:
    """Refuse a checkpoint trained for another method, backbone, weights, track, frame count or size."""
    def differs(key: str, value: Any) -> bool:
        if key == "backbone_weights" and value == WEIGHTS_FROM_CHECKPOINT:
            return False
        if key == "backbone_weights" and key not in stored:  # written before weight tags: its backbone's legacy tag
            return value not in LEGACY_WEIGHT_STAMPS.get(stored.get("backbone", ""), (None,))
        return stored_spec_value(stored, key) != value

    mismatches = [f"{key}: checkpoint has {stored_spec_value(stored, key)!r}, this run needs {value!r}"
                  for key, value in expected.items() if key in SPEC_KEYS_THAT_MUST_MATCH and differs(key, value)]
    if mismatches:
        raise ProtocolMismatchError(f"checkpoint {path} does not fit this run:\n  " + "\n  ".join(mismatches))


def load_checkpoint_weights(model: torch.nn.Module, path: Path, payload: dict[str, Any]) -> None:
    """Check the spec, then load the weights; any missing, unexpected or mis-shaped tensor is refused by name."""
    check_checkpoint_spec(path, payload["spec"], model.spec)
    if model.spec.get("backbone_weights") == WEIGHTS_FROM_CHECKPOINT:
        model.spec["backbone_weights"] = stored_spec_value(payload["spec"], "backbone_weights")
    ours, theirs = model.state_dict(), payload["state_dict"]
    problems = [f"missing: {k}" for k in ours if k not in theirs]
    problems += [f"unexpected: {k}" for k in theirs if k not in ours]
    problems += [f"shape of {k}: checkpoint {tuple(theirs[k].shape)}, model {tuple(v.shape)}"
                 for k, v in ours.items() if k in theirs and tuple(theirs[k].shape) != tuple(v.shape)]
    if problems:
        shown = "\n  ".join(problems[:12]) + (f"\n  ... and {len(problems) - 12} more" if len(problems) > 12 else "")
        raise ProtocolMismatchError(f"checkpoint {path} does not fit this model (another version or options?):\n  {shown}")
    model.load_state_dict(theirs)
