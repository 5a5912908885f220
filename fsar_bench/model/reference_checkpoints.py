"""Checkpoints saved by the reference implementations themselves, loaded into our model (backbone and head).

``fsar-bench evaluate METHOD --dataset D --checkpoint FILE`` accepts, besides fsar-bench's own checkpoints, the
files the method's reference code saves, when its card has a ``ReferenceCheckpoint`` (MoLo, HyRSM, HyRSM++:
``{epoch, model_state, optimizer_state, cfg}`` with ``head.backbone.<i>.*`` and ``head.<head keys>``; TRX and
STRM: ``{iteration, model_state_dict, optimizer_state_dict, scheduler}`` or a bare ``fully_trained.pt`` state
dict with ``resnet.<i>.*``; TEAM: ``{iteration, model_state_dict, optimizer_state_dict}`` with ``backbone.<i>.*``).

- Wrappers: ``model_state_dict``, then ``model_state`` (never the EMA copy), else the file itself when every
  value is a tensor.
- ``module.`` parts (DataParallel, DDP; TRX/STRM/TEAM wrap single sub-modules: ``resnet.module.0.weight``) are
  dropped wherever they occur.
- The backbone's keys follow ``ReferenceCheckpoint.backbone_prefix``; the backbone maps its own names to the
  reference's with ``reference_key_map()`` (ResNet-50: torchvision's ``children()`` indices, the layout every
  reference uses), or keeps its own names. The rest, after ``head_prefix``, goes through the head's
  ``convert_reference_state_dict`` (its ``reference_key_map``, ignored and optional keys).
- Every missing, unexpected and mis-shaped key of both halves is listed at once (ProtocolMismatchError, exit 4);
  nothing is loaded unless everything fits. Files are read with ``weights_only=True``: no code from a
  downloaded file ever runs.

Usage::

    payload = read_checkpoint_file(path)                   # any torch.save'd file, tensors only
    if not is_fsar_checkpoint(payload):
        info = load_reference_checkpoint(model, card, path, payload)   # raises, listing every problem
        info["reference_code"], info["wrapper"], info["iteration"]
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fsar_bench.api import MethodCard
from fsar_bench.errors import DataError, ProtocolMismatchError
from fsar_bench.store import WEIGHTS_REFERENCE
WRAPPER_KEYS = ("model_state_dict", "model_state")
"""Where the reference codes put the weights in the dict they save (trx/STRM/TEAM, then the MoLo repository)."""
PROVENANCE_KEYS = ("iteration", "epoch")
"""Scalars of a reference file copied into the run's stamps."""
SHOWN_PER_KIND = 8
PROBLEM_KINDS = ("missing", "unexpected", "wrong shape")


def read_checkpoint_file(path: Path) -> Any:
    """``torch.load`` of any checkpoint file (CPU, tensors and plain containers only, memory-mapped when the
    file allows it); DataError (exit 3) when it is absent or unreadable, ProtocolMismatchError (exit 4) when
    it holds Python objects that only ``weights_only=False`` would build."""
    if not path.is_file():
        raise DataError(f"checkpoint {path} does not exist")
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:  # files in torch's legacy (pre-zip) format cannot be memory-mapped
            if "mmap" not in str(error):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        first = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
        if "weights only load failed" in str(error).lower() or "weights_only" in str(error):
            raise ProtocolMismatchError(
                f"checkpoint {path} holds Python objects other than tensors ({first}); fsar-bench reads checkpoint "
                "files with weights_only=True and never runs code from them. Re-save its weights from a trusted "
                "Python session: torch.save(torch.load(FILE, weights_only=False)['model_state_dict'], NEW_FILE)"
            ) from None
        raise DataError(f"checkpoint {path} cannot be read ({first}): it is corrupt or not a checkpoint") from None


def is_fsar_checkpoint(payload: Any) -> bool:
    """True for a file fsar-bench wrote (a dict with its ``format`` stamp)."""
    return isinstance(payload, dict) and "format" in payload and "state_dict" in payload


def unwrap_state_dict(payload: Any, path: Path) -> tuple[dict[str, Tensor], str]:
    """(the weights, where they were: ``model_state_dict`` | ``model_state`` | ``bare``)."""
    if isinstance(payload, Mapping):
        for key in WRAPPER_KEYS:
            if isinstance(payload.get(key), Mapping):
                return dict(payload[key]), key
        if payload and all(isinstance(key, str) and isinstance(value, Tensor) for key, value in payload.items()):
            return dict(payload), "bare"
    keys = ", ".join(sorted(str(k) for k in payload)[:12]) if isinstance(payload, Mapping) else type(payload).__name__
    raise ProtocolMismatchError(
        f"{path} is not an fsar-bench checkpoint, nor a reference checkpoint: it holds neither "
        f"{' nor '.join(WRAPPER_KEYS)} nor a bare state dict (top level: {keys or 'empty'})"
    )


def drop_module_parts(key: str) -> str:
    """``resnet.module.0.weight`` -> ``resnet.0.weight`` (DataParallel/DDP wrappers, at any depth)."""
    return ".".join(part for part in key.split(".") if part != "module")


def backbone_reference_key_map(backbone: nn.Module) -> dict[str, str]:
    """Our backbone key -> its name inside a reference checkpoint (after the backbone prefix)."""
    own = getattr(backbone, "reference_key_map", None)
    return own() if callable(own) else {key: key for key in backbone.state_dict()}


def convert_reference_state(model: nn.Module, card: MethodCard, state: Mapping[str, Tensor]
                            ) -> tuple[dict[str, Tensor], list[tuple[str, str]]]:
    """A reference checkpoint's weights (``module.`` already dropped) -> (our full-model weights, problems).

    ``model`` is an ``FSARModel`` (``backbone`` and ``head``). Each problem is (part, line): part is
    ``backbone``, ``head`` or ``other`` (keys under neither prefix); lines read ``missing: KEY``, ``unexpected:
    KEY`` or ``wrong shape: KEY: reference (..), ours (..)``, KEY in the reference's naming, prefix included.
    """
    layout = card.reference_checkpoint
    assert layout is not None
    backbone_part = {key[len(layout.backbone_prefix):]: value for key, value in state.items()
                     if key.startswith(layout.backbone_prefix)}
    rest = {key: value for key, value in state.items() if not key.startswith(layout.backbone_prefix)}
    head_part = {key[len(layout.head_prefix):]: value for key, value in rest.items() if key.startswith(layout.head_prefix)}
    problems = [("other", f"unexpected: {key}") for key in sorted(rest) if not key.startswith(layout.head_prefix)]

    converted: dict[str, Tensor] = {}
    ours = model.backbone.state_dict()
    key_map = backbone_reference_key_map(model.backbone)
    for our, ref in key_map.items():
        if ref in backbone_part:
            value = backbone_part[ref]
            if tuple(value.shape) != tuple(ours[our].shape):
                problems.append(("backbone", f"wrong shape: {layout.backbone_prefix}{ref}: reference "
                                             f"{tuple(value.shape)}, ours {tuple(ours[our].shape)}"))
            converted[f"backbone.{our}"] = value
        elif not ref.endswith("num_batches_tracked"):  # absent from files of old torch; unused at evaluation
            problems.append(("backbone", f"missing: {layout.backbone_prefix}{ref}"))
    problems += [("backbone", f"unexpected: {layout.backbone_prefix}{key}")
                 for key in sorted(set(backbone_part) - set(key_map.values()))]

    head_weights, head_problems = model.head.convert_reference_state_dict(head_part)
    for line in head_problems:
        kind, _, detail = line.partition(": ")
        named = kind in ("missing", "unexpected", "wrong shape")
        problems.append(("head", f"{kind}: {layout.head_prefix}{detail}" if named else line))
    converted.update({f"head.{key}": value for key, value in head_weights.items()})
    return converted, problems


def load_reference_checkpoint(model: nn.Module, card: MethodCard, path: Path, payload: Any) -> dict[str, Any]:
    """Load a reference-layout checkpoint into ``model`` (an FSARModel) or raise ProtocolMismatchError listing
    every problem. Returns its provenance for the run's stamps (weights, code, wrapper, iteration or epoch)."""
    layout = card.reference_checkpoint
    if layout is None:
        raise ProtocolMismatchError(
            f"{path} is not an fsar-bench checkpoint, and {card.name} has no reference checkpoint layout "
            "(its reference code saves none we know of); evaluate an fsar-bench checkpoint instead")
    raw, wrapper = unwrap_state_dict(payload, path)
    state: dict[str, Tensor] = {}
    for key, value in raw.items():
        name = drop_module_parts(str(key))
        if name in state:
            raise ProtocolMismatchError(f"checkpoint {path}: keys {key!r} and another one both become {name!r} "
                                        "once 'module.' parts are dropped")
        state[name] = value
    converted, problems = convert_reference_state(model, card, state)
    if problems:
        raise ProtocolMismatchError(_mismatch_message(card, path, wrapper, problems))
    ours = model.state_dict()
    model.load_state_dict({**ours, **{key: value.to(ours[key].dtype) for key, value in converted.items()}})
    info: dict[str, Any] = {"trained": True, "weights": WEIGHTS_REFERENCE, "reference_code": layout.code,
                            "wrapper": wrapper, "module_parts_dropped": any(key != drop_module_parts(key) for key in raw),
                            "selection": layout.selection}
    if isinstance(payload, Mapping):
        info.update({key: payload[key] for key in PROVENANCE_KEYS if isinstance(payload.get(key), (int, float))})
    return info


def _mismatch_message(card: MethodCard, path: Path, wrapper: str, problems: list[tuple[str, str]]) -> str:
    """Every problem, grouped by part and kind; long groups cut at SHOWN_PER_KIND with their count."""
    layout = card.reference_checkpoint
    assert layout is not None
    lines = [f"checkpoint {path} does not fit {card.name} as its reference code saves it ({layout.code}); weights "
             f"from {wrapper!r}, 'module.' parts dropped:"]
    where = {"backbone": f"backbone (keys under {layout.backbone_prefix!r})",
             "head": f"head (keys under {layout.head_prefix!r})" if layout.head_prefix else "head (the other keys)",
             "other": "neither backbone nor head"}
    for part in ("backbone", "head", "other"):
        of_part = [line for owner, line in problems if owner == part]
        if not of_part:
            continue
        counts = {kind: sum(line.startswith(kind + ": ") for line in of_part) for kind in PROBLEM_KINDS}
        lines.append(f"  {where[part]}: " + ", ".join(f"{count} {kind}" for kind, count in counts.items() if count)
                     + (f", {len(of_part) - sum(counts.values())} other" if len(of_part) > sum(counts.values()) else ""))
        for kind in PROBLEM_KINDS:
            of_kind = [line for line in of_part if line.startswith(kind + ": ")]
            lines += [f"    {line}" for line in of_kind[:SHOWN_PER_KIND]]
            if len(of_kind) > SHOWN_PER_KIND:
                lines.append(f"    ... and {len(of_kind) - SHOWN_PER_KIND} more {kind}")
        lines += [f"    {line}" for line in of_part if not line.startswith(tuple(kind + ": " for kind in PROBLEM_KINDS))]
    lines.append("  Is it a checkpoint of another method, backbone or dataset? Head sizes come from the card's recipe for "
                 f"the dataset and [methods.{card.name}] options in bench.toml.")
    return "\n".join(lines)
