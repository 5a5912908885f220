"""The backbone plugin contract: ``BackboneCard`` (what a backbone is) and ``FrameBackbone`` (what it computes).

A backbone maps frames ``[B, 3, H, W]`` to per-frame features. Its card declares the kinds of output it gives
(``"pooled"`` ``[B, d]``, ``"maps"`` ``[B, d_maps, h, w]``, ``"tokens"`` ``[B, L, d_tokens]``), its own
preprocessing, and its pinned weight tags; heads receive ``d`` from the card, never a literal.

Usage, in a plugin file ``fsar_bench/backbones/mybackbone.py`` (or a package's ``fsar_bench.backbones`` entry point)::

    from fsar_bench.backbones import BackboneCard, FrameBackbone, WeightsTag

    class MyBackbone(FrameBackbone):
        def __init__(self, weights):                     # weights: a resolved Weights
            super().__init__()
            self.body = nn.Conv2d(3, 64, 32, stride=32)
        def maps(self, frames):                          # [B, 3, H, W] -> [B, 64, H/32, W/32]
            return self.body(frames)

    CARDS = (BackboneCard(name="my-backbone", build=MyBackbone, outputs={"pooled": 64, "maps": 64}, stride=32,
                          preprocess=Preprocess(resize_to=256, crop=224),
                          weights=(WeightsTag("random", "random initialisation"),)),)
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from fsar_bench.api import Preprocess
from fsar_bench.errors import DataError, UsageError
from fsar_bench.files import file_sha256

OUTPUT_KINDS = ("pooled", "maps", "tokens")
NO_WEIGHTS = "none"
PRETRAINED = "pretrained"


@dataclass(frozen=True)
class WeightsTag:
    """One pinned set of weights: ``tag`` is what ``--backbone-weights`` accepts, ``pin`` what runs stamp.

    ``file``/``source``: the file a user places by hand when offline, and where it is published.
    """

    tag: str
    pin: str
    file: str = ""
    source: str = ""


@dataclass(frozen=True)
class Weights:
    """Resolved weights for one build: ``kind`` is "pretrained" (``spec`` set), "none" or "file" (``path`` set).

    ``stamp`` is the weight tag written into checkpoints, protocols and runs.
    """

    kind: str
    stamp: str
    spec: WeightsTag | None = None
    path: Path | None = None


@dataclass(frozen=True)
class BackboneCard:
    """Everything fsar-bench knows about a backbone.

    ``outputs`` maps each output kind the backbone gives to its feature size (``{"pooled": 1024, "maps": 2048}``);
    ``stride`` is the pixel stride of its maps or tokens; ``weights`` lists its pinned tags, the first being the
    default ("pretrained"); ``extra`` names the pip extra holding its optional dependencies; ``text_tower``: it can
    embed text (``FrameBackbone.encode_text``).
    """

    name: str
    build: Callable[..., FrameBackbone]
    outputs: Mapping[str, int]
    stride: int
    preprocess: Preprocess
    weights: Sequence[WeightsTag]
    summary: str = ""
    extra: str = ""
    text_tower: bool = False
    notes: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.outputs) - set(OUTPUT_KINDS)
        if unknown or "pooled" not in self.outputs:
            raise ValueError(f"backbone {self.name}: outputs must include 'pooled' and be among {OUTPUT_KINDS}")
        if not self.weights:
            raise ValueError(f"backbone {self.name}: declare at least one weights tag")

    @property
    def dim(self) -> int:
        """d of the pooled per-frame features."""
        return int(self.outputs["pooled"])

    def feature_dim(self, kind: str) -> int:
        """d of output ``kind``; UsageError naming what the backbone gives when it has no such output."""
        if kind not in self.outputs:
            raise UsageError(f"backbone {self.name} gives {' and '.join(self.outputs)} features, not {kind}")
        return int(self.outputs[kind])

    def resolve_weights(self, weights: str) -> Weights:
        """``--backbone-weights``: "pretrained" (the first tag), a tag of this card, "none", or a file path."""
        if weights == NO_WEIGHTS:
            return Weights(NO_WEIGHTS, NO_WEIGHTS)
        tags = {spec.tag: spec for spec in self.weights}
        if weights == PRETRAINED:
            spec = self.weights[0]
            return Weights(PRETRAINED, spec.pin, spec=spec)
        if weights in tags:
            return Weights(PRETRAINED, tags[weights].pin, spec=tags[weights])
        path = Path(weights).expanduser()
        if path.suffix in (".pt", ".pth", ".bin", ".safetensors") or os.sep in weights:
            if not path.is_file():
                raise DataError(f"backbone weights file {path} does not exist")
            return Weights("file", f"file:{file_sha256(path)[:16]}", path=path)
        known = ", ".join([PRETRAINED, *tags, NO_WEIGHTS])
        raise UsageError(f"backbone {self.name} has no weights {weights!r}: use one of {known}, or a path to a file")


class FrameBackbone(nn.Module):
    """Per-frame feature extractor. Subclasses implement ``maps`` or ``pooled`` (or both), and ``tokens`` /
    ``encode_text`` when their card declares them. ``pooled`` defaults to the spatial mean of ``maps``."""

    def maps(self, frames: Tensor) -> Tensor:
        """[B, 3, H, W] -> [B, d_maps, h, w]."""
        raise NotImplementedError(f"{type(self).__name__} gives no conv maps")

    def pooled(self, frames: Tensor) -> Tensor:
        """[B, 3, H, W] -> [B, d]."""
        return self.maps(frames).mean(dim=(2, 3))

    def tokens(self, frames: Tensor) -> Tensor:
        """[B, 3, H, W] -> [B, L, d_tokens]."""
        raise NotImplementedError(f"{type(self).__name__} gives no tokens")

    def encode_text(self, prompts: list[str]) -> Tensor:
        """Prompts -> text embeddings [len(prompts), d] in the pooled image feature space."""
        raise NotImplementedError(f"{type(self).__name__} has no text tower")

    def forward(self, frames: Tensor) -> Tensor:
        return self.pooled(frames)


def require_extra(module: str, extra: str, backbone: str) -> ModuleType:
    """Import an optional dependency lazily; UsageError naming the pip extra when it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UsageError(f"backbone {backbone} needs the Python package {module!r}: "
                         f"pip install 'fsar-bench[{extra}]'") from None


def weights_folder() -> Path:
    """Where hand-placed weight files are looked for: ``$FSAR_WEIGHTS``, else ``~/.cache/fsar-bench/weights``."""
    return Path(os.environ.get("FSAR_WEIGHTS", "~/.cache/fsar-bench/weights")).expanduser()


def offline() -> bool:
    """``FSAR_OFFLINE=1``: never try a download."""
    return os.environ.get("FSAR_OFFLINE") == "1"


def placed_file(backbone: str, spec: WeightsTag) -> Path:
    """The path where a hand-placed copy of ``spec.file`` is expected: ``<weights folder>/<backbone>/<file>``."""
    return weights_folder() / backbone / spec.file


def missing_weights_error(backbone: str, spec: WeightsTag, reason: str) -> DataError:
    """The offline error: the exact file, where it is published and where to put it."""
    target = placed_file(backbone, spec)
    return DataError(
        f"weights {spec.pin} for backbone {backbone} are not available ({reason}). Download {spec.file} from "
        f"{spec.source} and place it at {target} (the folder follows $FSAR_WEIGHTS), or pass the file with "
        f"--backbone-weights PATH, or use random weights with --backbone-weights none."
    )


def load_state_file(path: Path) -> dict[str, Tensor]:
    """A state dict from a .pt/.pth/.bin (torch) or .safetensors file; DataError when it cannot be read."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise DataError(f"backbone weights file {path} cannot be read ({str(error).splitlines()[0][:160]})") from None
    if isinstance(payload, dict) and "state_dict" in payload and isinstance(payload["state_dict"], dict):
        payload = payload["state_dict"]
    if not isinstance(payload, dict):
        raise DataError(f"backbone weights file {path} does not hold a state dict")
    return payload

