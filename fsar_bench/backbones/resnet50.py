"""ResNet-50 (torchvision, ImageNet ``IMAGENET1K_V1``): conv5 maps ``[B, 2048, H/32, W/32]``, pooled = their mean.

The benchmarks' default backbone (what OTAM, TRX, HyRSM and MoLo were published with).

Usage::

    card = get_backbone_card("resnet50")
    trunk = card.build(card.resolve_weights("pretrained"), image_size=224)
    trunk.maps(frames)      # [B, 2048, 7, 7]
    trunk.pooled(frames)    # [B, 2048]
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from fsar_bench.api import Preprocess
from fsar_bench.backbones._base import (BackboneCard, FrameBackbone, Weights, WeightsTag, load_state_file,
                                        missing_weights_error, offline, placed_file)

RESNET50_IMAGENET_FILE = "resnet50-0676ba61.pth"  # torchvision's ResNet50_Weights.IMAGENET1K_V1
IMAGENET = WeightsTag("imagenet", "torchvision:ResNet50_Weights.IMAGENET1K_V1", RESNET50_IMAGENET_FILE,
                      "https://download.pytorch.org/models/" + RESNET50_IMAGENET_FILE)


class ResNet50Trunk(FrameBackbone):
    """torchvision ResNet-50 up to layer4 (no pooling, no fc)."""

    def __init__(self, weights: Weights, image_size: int = 224) -> None:
        super().__init__()
        import torchvision

        resnet = torchvision.models.resnet50(weights=None)
        if weights.kind == "file":
            resnet.load_state_dict(load_state_file(weights.path))
        elif weights.kind == "pretrained":
            resnet.load_state_dict(_imagenet_state_dict())
        self.trunk = nn.Sequential(*list(resnet.children())[:-2])
        self.out_dim = 2048

    def maps(self, frames: Tensor) -> Tensor:
        """[B, 3, 224, 224] -> [B, 2048, 7, 7]."""
        return self.trunk(frames)

    def reference_key_map(self) -> dict[str, str]:
        """Our key -> the reference checkpoints' name after their backbone prefix: every reference wraps
        ``nn.Sequential(*list(resnet50.children())[:-1 or -2])``, so ``trunk.4.0.conv1.weight`` -> ``4.0.conv1.weight``
        (0 conv1, 1 bn1, 4-7 layer1-layer4)."""
        return {key: key.removeprefix("trunk.") for key in self.state_dict()}


def _torch_home() -> Path:
    return Path(os.environ.get("TORCH_HOME", Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "torch")).expanduser()


def _imagenet_state_dict() -> dict[str, Tensor]:
    """torchvision's file in $TORCH_HOME (downloaded there when online), or a copy placed in the weights folder."""
    expected = _torch_home() / "hub" / "checkpoints" / RESNET50_IMAGENET_FILE
    for candidate in (expected, placed_file("resnet50", IMAGENET)):
        if candidate.is_file():
            return torch.load(candidate, map_location="cpu", weights_only=True)
    if offline():
        reason = "FSAR_OFFLINE=1: no download attempted"
    else:
        try:
            import torchvision

            return torchvision.models.ResNet50_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
        except Exception as error:  # offline: fall through to the actionable message
            reason = f"not found at {expected}; download failed: {str(error).splitlines()[0][:120]}"
    error = missing_weights_error("resnet50", IMAGENET, reason)
    return _raise(type(error)(f"{error} torchvision's own cache is {expected} (it follows $TORCH_HOME)."))


def _raise(error: Exception) -> dict[str, Tensor]:
    raise error


CARDS = (
    BackboneCard(
        name="resnet50",
        build=ResNet50Trunk,
        outputs={"pooled": 2048, "maps": 2048},
        stride=32,
        preprocess=Preprocess(resize="short-side", resize_to=256, crop=224),
        weights=(IMAGENET,),
        summary="torchvision ResNet-50, ImageNet-1k (IMAGENET1K_V1); conv5 maps, pooled by their mean",
        notes="What OTAM, TRX, HyRSM, HyRSM++, MoLo, STRM and TEAM were published with.",
    ),
)
