"""A method's full model: preprocessing + backbone + head (checkpoint files: ``model/checkpoints.py``).

Usage::

    model = FSARModel.build(card, backbone="small-cnn", weights="none", frames=8, size=64, num_base_classes=28)
    pixels = model.prepare(clips)          # uint8 [V, T, H, W, 3] -> float [V, T, 3, S, S]
    reps = model.encode(pixels)            # head.encode(backbone features), per video
"""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from fsar_bench.api import FewShotHead, HeadConfig, MethodCard, Preprocess, Recipe, Reps
from fsar_bench.data.transforms import centre_crop, resize_frames
from fsar_bench.model.backbones import build_backbone, default_preprocess
from fsar_bench.errors import DataError


class FSARModel(nn.Module):
    """Backbone (per frame) + method head. ``spec`` holds what a checkpoint must match."""

    def __init__(self, backbone: nn.Module, head: FewShotHead, preprocess: Preprocess, spec: dict[str, Any]) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.preprocess = preprocess
        self.spec = spec

    @classmethod
    def build(
        cls,
        card: MethodCard,
        backbone: str,
        weights: str,
        frames: int,
        size: int,
        num_base_classes: int,
        options: dict[str, Any] | None = None,
        backbone_dim: int = 128,
        recipe: Recipe | None = None,
    ) -> FSARModel:
        """``recipe``: the training recipe on this dataset, whose ``resize`` sets the test-time resize too."""
        trunk = build_backbone(backbone, weights, backbone_dim)
        merged = {**card.options, **(options or {})}
        config = HeadConfig(dim=trunk.out_dim, frames=frames, num_base_classes=num_base_classes,
                            feature_size=(size // 32, size // 32), options=merged, method=card.name)
        spec = {"method": card.name, "backbone": backbone, "backbone_dim": trunk.out_dim, "frames": frames,
                "size": size, "num_base_classes": num_base_classes, "options": merged}
        trunk = trunk.to(memory_format=torch.channels_last)  # 30-55% faster convolutions on CPU; backbone only
        preprocess = card.preprocess_for(backbone) or default_preprocess(backbone)
        if recipe is not None:
            preprocess = dataset_preprocess(preprocess, recipe)
        if not preprocess.resize_to and not preprocess.crop:  # e.g. small-cnn: fit any video to the protocol size
            preprocess = dataclasses.replace(preprocess, resize="short-side", resize_to=size, crop=size)
        return cls(trunk, card.head(config), preprocess, spec)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def prepare(self, clips: Tensor) -> Tensor:
        """uint8 ``[V, T, H, W, 3]`` -> float ``[V, T, 3, S, S]`` on the model's device."""
        videos, frames = clips.shape[:2]
        x = clips.to(self.device, non_blocking=True).flatten(0, 1).permute(0, 3, 1, 2).float().div_(255.0)
        x = _resize_and_crop(x, self.preprocess)
        if x.shape[-1] != self.spec["size"] or x.shape[-2] != self.spec["size"]:
            raise DataError(f"frames are {tuple(x.shape[-2:])} after preprocessing; the protocol expects {self.spec['size']}x{self.spec['size']}")
        if self.preprocess.mean is not None and self.preprocess.std is not None:
            mean = torch.tensor(self.preprocess.mean, device=x.device).view(1, 3, 1, 1)
            std = torch.tensor(self.preprocess.std, device=x.device).view(1, 3, 1, 1)
            x = (x - mean) / std
        return x.reshape(videos, frames, *x.shape[1:])

    def normalize(self, pixels: Tensor) -> Tensor:
        """Training clips float ``[V, T, 3, S, S]`` in [0, 1] -> the network input on the model's device (the
        same mean/std as ``prepare``)."""
        x = pixels.to(self.device, non_blocking=True)
        if self.preprocess.mean is not None and self.preprocess.std is not None:
            mean = torch.tensor(self.preprocess.mean, device=x.device, dtype=x.dtype).view(1, 1, 3, 1, 1)
            std = torch.tensor(self.preprocess.std, device=x.device, dtype=x.dtype).view(1, 1, 3, 1, 1)
            x = (x - mean) / std
        return x

    def features(self, pixels: Tensor) -> Tensor:
        """``[V, T, 3, S, S]`` -> pooled ``[V, T, d]``, or maps ``[V, T, d, h, w]`` for map heads."""
        videos, frames = pixels.shape[:2]
        maps = self.backbone(pixels.flatten(0, 1).contiguous(memory_format=torch.channels_last))
        if self.head.feature_maps:
            return maps.reshape(videos, frames, *maps.shape[1:])
        return maps.mean(dim=(2, 3)).reshape(videos, frames, -1)

    def encode(self, pixels: Tensor) -> Reps:
        """Per-video representation: ``head.encode(features(pixels))``."""
        return self.head.encode(self.features(pixels))


def _resize_and_crop(x: Tensor, preprocess: Preprocess) -> Tensor:
    """[B, 3, H, W] in [0, 1]: resize ("short-side" or "squash") then centre crop."""
    if preprocess.resize_to:
        x = resize_frames(x, preprocess.resize, preprocess.resize_to, preprocess.antialias)
    return centre_crop(x, preprocess.crop)


def dataset_preprocess(base: Preprocess, recipe: Recipe) -> Preprocess:
    """The test-time preprocessing on a dataset: ``base`` (the card's, per backbone) with the recipe's resize
    (``recipe.resize`` "": unchanged), e.g. SSv2 squashed to 256x256 where Kinetics keeps its aspect."""
    if not recipe.resize or not base.resize_to:  # a backbone that takes frames as they are (small CNN) keeps its own
        return base
    if recipe.resize == "none":
        return replace(base, resize="short-side", resize_to=0, antialias=recipe.antialias)
    return replace(base, resize=recipe.resize, resize_to=recipe.resize_to, antialias=recipe.antialias)

