"""A method's full model: preprocessing + backbone + head (checkpoint files: ``model/checkpoints.py``).

Usage::

    model = FSARModel.build(card, backbone="small-cnn", weights="none", frames=8, size=64, num_base_classes=28)
    model.spec["backbone_weights"]         # the weight tag stamped into checkpoints and runs ("none" here)
    pixels = model.prepare(clips)          # uint8 [V, T, H, W, 3] -> float [V, T, 3, S, S]
    reps = model.encode(pixels)            # head.encode(backbone features), per video
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from fsar_bench.api import FewShotHead, HeadConfig, MethodCard, Preprocess, Recipe, Reps
from fsar_bench.backbones import get_backbone_card
from fsar_bench.data.transforms import centre_crop, resize_frames
from fsar_bench.model.backbones import build_backbone, run_preprocess
from fsar_bench.errors import DataError, UsageError


class FSARModel(nn.Module):
    """Backbone (per frame) + method head. ``spec`` holds what a checkpoint must match."""

    def __init__(self, backbone: nn.Module, head: FewShotHead, preprocess: Preprocess, spec: dict[str, Any]) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.preprocess = preprocess
        self.spec = spec
        self.class_text_row: dict[str, int] = {}  # video id -> row of ``class_text_table`` (heads using class text)

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
        class_videos: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
        recipe: Recipe | None = None,
    ) -> FSARModel:
        """The method's head on backbone ``backbone`` (a plugin name) with ``weights`` ("pretrained", a tag of the
        backbone, "none" or a file). The head's ``d`` is the backbone's: pooled, or conv maps for map heads.

        ``class_videos`` ({partition: {class name: video ids}}, train first) is needed by heads that use class
        text (``needs_class_text``): the backbone's text tower embeds each class's prompt once, here. ``recipe``:
        the training recipe on this dataset, whose ``resize`` sets the test-time resize too."""
        kind = "maps" if card.head.feature_maps else "pooled"
        outputs = get_backbone_card(backbone).outputs
        if kind not in outputs:
            raise UsageError(f"method {card.name} needs conv maps [T, d, h, w]; backbone {backbone} gives "
                             f"{' and '.join(outputs)} features. Use a convolutional backbone "
                             "(resnet50, clip-rn50, small-cnn).")
        backbone_card, trunk, resolved = build_backbone(backbone, weights, image_size=size)
        dim = backbone_card.feature_dim(kind)
        merged = {**card.options, **(options or {})}
        grid = size // backbone_card.stride
        spec = {"method": card.name, "backbone": backbone, "backbone_dim": dim, "backbone_weights": resolved.stamp,
                "frames": frames, "size": size, "num_base_classes": num_base_classes, "options": merged}
        texts = None
        if card.head.needs_class_text:
            texts = _class_texts(card, backbone_card, trunk, class_videos, num_base_classes)
            spec["class_prompts_sha256"] = texts.prompts_sha256
        config = HeadConfig(dim=dim, frames=frames, num_base_classes=num_base_classes, feature_size=(grid, grid),
                            options=merged, method=card.name, class_text={"train": texts.table[:num_base_classes]} if texts else {})
        trunk = trunk.to(memory_format=torch.channels_last)  # 30-55% faster convolutions on CPU; backbone only
        preprocess = run_preprocess(backbone_card, card.preprocess_for(backbone), size)
        if recipe is not None:
            preprocess = dataset_preprocess(preprocess, recipe)
        if not preprocess.resize_to and not preprocess.crop:  # e.g. small-cnn: fit any video to the protocol size
            preprocess = dataclasses.replace(preprocess, resize="short-side", resize_to=size, crop=size)
        model = cls(trunk, card.head(config), preprocess, spec)
        if texts is not None:
            model.register_buffer("class_text_table", texts.table, persistent=False)
            model.class_text_row = texts.row_of_video
        return model

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
        flat = pixels.flatten(0, 1).contiguous(memory_format=torch.channels_last)
        if self.head.feature_maps:
            maps = self.backbone.maps(flat)
            return maps.reshape(videos, frames, *maps.shape[1:])
        return self.backbone.pooled(flat).reshape(videos, frames, -1)

    def encode(self, pixels: Tensor, video_ids: Sequence[str] | None = None) -> Reps:
        """Per-video representation: ``head.encode(features(pixels))``; heads using class text also get
        ``"class_text"`` [V, d], the text embedding of each video's class (``video_ids`` name the videos)."""
        return self.attach_class_text(self.head.encode(self.features(pixels)), video_ids)

    def attach_class_text(self, reps: Reps, video_ids: Sequence[str] | None) -> Reps:
        """``reps`` plus ``"class_text"`` for heads with ``needs_class_text`` (unchanged for the others)."""
        if not self.head.needs_class_text:
            return reps
        if video_ids is None:
            raise ValueError(f"{self.spec['method']} uses class text: encode needs the video ids")
        unknown = [video for video in video_ids if video not in self.class_text_row]
        if unknown:
            raise DataError(f"{self.spec['method']}: videos {unknown[:3]} are in no class of the split")
        rows = torch.tensor([self.class_text_row[video] for video in video_ids], device=self.class_text_table.device)
        assert isinstance(reps, dict), "heads with class text return dict reps"
        return {**reps, "class_text": self.class_text_table.index_select(0, rows).to(next(iter(reps.values())).dtype)}


@dataclass(frozen=True)
class ClassTexts:
    """Text embeddings of every class of a split: ``table`` [classes, d] (train classes first, in base-id order),
    each video's row, and the sha256 of the prompts (keyed into checkpoints and encodings)."""

    table: Tensor
    row_of_video: dict[str, int]
    prompts_sha256: str


def class_prompt_name(name: str) -> str:
    """A class folder name as words: underscores become spaces (``air_drumming`` -> ``air drumming``)."""
    return name.replace("_", " ")


def _class_texts(card: MethodCard, backbone_card: Any, trunk: nn.Module,
                 class_videos: Mapping[str, Mapping[str, Sequence[str]]] | None, num_base_classes: int) -> ClassTexts:
    if not backbone_card.text_tower:
        raise UsageError(f"method {card.name} builds class prompts through the backbone's text tower; backbone "
                         f"{backbone_card.name} has none. Use clip-rn50 or clip-vit-b16.")
    if not class_videos or "train" not in class_videos:
        raise UsageError(f"method {card.name} needs the split's class names (class_videos with a train partition)")
    partitions = ["train", *[name for name in class_videos if name != "train"]]
    prompts: list[str] = []
    row_of_video: dict[str, int] = {}
    for partition in partitions:
        for name in sorted(class_videos[partition]):
            for video in class_videos[partition][name]:
                row_of_video[video] = len(prompts)
            prompts.append(card.head.class_prompt.format(class_prompt_name(name)))
    if len(class_videos["train"]) != num_base_classes:
        raise UsageError(f"{card.name}: {len(class_videos['train'])} train classes, {num_base_classes} base classes")
    with torch.no_grad():
        table = trunk.encode_text(prompts).float().cpu()
    digest = hashlib.sha256(json.dumps(prompts).encode()).hexdigest()
    return ClassTexts(table, row_of_video, digest)


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

