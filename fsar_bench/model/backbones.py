"""Per-frame backbones: torchvision ResNet-50 (the benchmarks) and a small CNN (``synthetic``, CPU).

Both map frames ``[B, 3, H, W]`` to stride-32 maps ``[B, d, H/32, W/32]``; pooled features are
their spatial mean, exactly as ResNet-50's average pool.

Usage::

    backbone = build_backbone("resnet50", weights="imagenet")   # or weights="none" / a .pth path
    maps = backbone(frames)                                      # [B, 2048, 7, 7] at 224x224
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from fsar_bench.api import MOLO_RESNET50_PREPROCESS, PERRETT_RESNET50_PREPROCESS, Preprocess  # noqa: F401 (re-exported)
from fsar_bench.errors import DataError, UsageError

RESNET50_IMAGENET_FILE = "resnet50-0676ba61.pth"  # torchvision's ResNet50_Weights.IMAGENET1K_V1
BACKBONES = ("resnet50", "small-cnn")


class SmallCNN(nn.Module):
    """Five stride-2 conv stages (stride 32, like ResNet-50) with two coordinate input channels.

    The coordinate channels let position survive global pooling, which temporal matching of
    moving shapes needs. At 64x64 input: maps ``[B, dim, 2, 2]``.
    """

    def __init__(self, dim: int = 128, widths: tuple[int, ...] = (16, 32, 64, 96)) -> None:
        super().__init__()
        channels = (5, *widths, dim)
        stages: list[nn.Module] = []
        for index, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:])):
            stages += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out)]
            if index < len(channels) - 2:
                stages.append(nn.ReLU(inplace=True))
        self.stages = nn.Sequential(*stages)
        self.out_dim = dim

    def forward(self, frames: Tensor) -> Tensor:
        """[B, 3, H, W] -> [B, dim, H/32, W/32] (non-negative after the final ReLU)."""
        batch, _, height, width = frames.shape
        ys = torch.linspace(-1.0, 1.0, height, device=frames.device, dtype=frames.dtype)
        xs = torch.linspace(-1.0, 1.0, width, device=frames.device, dtype=frames.dtype)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        coords = torch.stack([grid_x, grid_y]).expand(batch, 2, height, width)
        return torch.relu(self.stages(torch.cat([frames, coords], dim=1)))


class ResNet50Trunk(nn.Module):
    """torchvision ResNet-50 up to layer4 (no pooling, no fc)."""

    def __init__(self, weights: str = "imagenet") -> None:
        super().__init__()
        import torchvision

        resnet = torchvision.models.resnet50(weights=None)
        if weights != "none":
            resnet.load_state_dict(_load_resnet50_weights(weights))
        self.trunk = nn.Sequential(*list(resnet.children())[:-2])
        self.out_dim = 2048

    def forward(self, frames: Tensor) -> Tensor:
        """[B, 3, 224, 224] -> [B, 2048, 7, 7]."""
        return self.trunk(frames)

    def reference_key_map(self) -> dict[str, str]:
        """Our key -> the reference checkpoints' name after their backbone prefix: every reference wraps
        ``nn.Sequential(*list(resnet50.children())[:-1 or -2])``, so ``trunk.4.0.conv1.weight`` -> ``4.0.conv1.weight``
        (0 conv1, 1 bn1, 4-7 layer1-layer4)."""
        return {key: key.removeprefix("trunk.") for key in self.state_dict()}


def _torch_home() -> Path:
    return Path(os.environ.get("TORCH_HOME", Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "torch")).expanduser()


def _load_resnet50_weights(weights: str) -> dict[str, Tensor]:
    """``"imagenet"``: torchvision's file in $TORCH_HOME (downloaded when online), or a path."""
    if weights != "imagenet":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise DataError(f"backbone weights file {path} does not exist")
        return torch.load(path, map_location="cpu", weights_only=True)
    expected = _torch_home() / "hub" / "checkpoints" / RESNET50_IMAGENET_FILE
    if expected.is_file():
        return torch.load(expected, map_location="cpu", weights_only=True)
    if os.environ.get("FSAR_OFFLINE") != "1":
        try:
            import torchvision

            return torchvision.models.ResNet50_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
        except Exception as error:  # offline: fall through to the actionable message
            reason = f" (download failed: {str(error).splitlines()[0][:120]})"
    else:
        reason = " (FSAR_OFFLINE=1: no download attempted)"
    raise DataError(
        f"ImageNet weights for ResNet-50 not found at {expected}{reason}. Place torchvision's "
        f"{RESNET50_IMAGENET_FILE} there (the folder follows $TORCH_HOME), pass a file with "
        "--backbone-weights PATH, or train from random weights with --backbone-weights none."
    )


def build_backbone(name: str, weights: str = "imagenet", dim: int = 128) -> nn.Module:
    """A backbone by name; ``dim`` only sizes the small CNN."""
    if name == "resnet50":
        return ResNet50Trunk(weights)
    if name == "small-cnn":
        return SmallCNN(dim)
    raise UsageError(f"unknown backbone {name!r}: use one of {', '.join(BACKBONES)}")


def default_backbone(dataset: str) -> str:
    """``small-cnn`` for the CPU-sized synthetic benchmark, ResNet-50 for real benchmarks."""
    return "small-cnn" if dataset == "synthetic" else "resnet50"


def default_preprocess(backbone: str) -> Preprocess:
    """The backbone's own preprocessing when the method card gives none."""
    if backbone == "small-cnn":
        return Preprocess(resize_to=0, crop=0)
    return Preprocess(resize="short-side", resize_to=256, crop=224)
