"""OpenAI CLIP towers through ``open_clip`` (extra ``[clip]``), shared by ``clip_rn50.py`` and ``clip_vit_b16.py``.

Usage::

    model = build_clip("clip-rn50", "RN50", weights, image_size=224)      # the whole open_clip model

    class ClipRN50(ClipBackbone):                                          # a backbone plugin on it
        backbone_name, model_name = "clip-rn50", "RN50"
"""

from __future__ import annotations

import contextlib
import logging
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsar_bench.api import Preprocess
from fsar_bench.backbones._base import FrameBackbone, Weights, WeightsTag, missing_weights_error, offline, placed_file, require_extra

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_PREPROCESS = Preprocess(resize="short-side", resize_to=224, crop=224, mean=CLIP_MEAN, std=CLIP_STD)
"""open_clip's eval transform for the OpenAI models: shortest side to 224, centre crop 224, CLIP mean/std."""
HF_FILE = "open_clip_pytorch_model.bin"


def openai_tag(hub_repo: str, model_name: str) -> WeightsTag:
    return WeightsTag("openai", f"open_clip:{model_name}/openai", HF_FILE,
                      f"https://huggingface.co/{hub_repo}/resolve/main/{HF_FILE}")


@contextlib.contextmanager
def _quiet_open_clip():
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)  # open_clip logs "No pretrained weights loaded" at WARNING for random weights
    try:
        yield
    finally:
        logger.setLevel(level)


def build_clip(backbone: str, model_name: str, weights: Weights, image_size: int) -> nn.Module:
    """The full open_clip model (image and text towers) at ``image_size``, with the requested weights."""
    open_clip = require_extra("open_clip", "clip", backbone)
    with _quiet_open_clip():
        if weights.kind == "none":
            return open_clip.create_model(model_name, pretrained=None, force_image_size=image_size)
        if weights.kind == "file":
            source = str(weights.path)
        else:
            assert weights.spec is not None
            placed = placed_file(backbone, weights.spec)
            source = str(placed) if placed.is_file() else "openai"
            if source == "openai" and offline():
                raise missing_weights_error(backbone, weights.spec, "FSAR_OFFLINE=1: no download attempted")
        native = 224
        try:
            model = open_clip.create_model(model_name, pretrained=source, force_image_size=native)
        except Exception as error:
            if weights.spec is None:
                raise
            raise missing_weights_error(backbone, weights.spec, f"open_clip could not load them: "
                                        f"{str(error).splitlines()[0][:160]}") from None
    if image_size != native:
        _resize_positions(model.visual, native, image_size)
    return model


def _resize_positions(visual: nn.Module, native: int, image_size: int) -> None:
    """Bicubic resize of a pretrained position table to another input size (RN50 attention pool, ViT)."""
    holder, name = (visual.attnpool, "positional_embedding") if hasattr(visual, "attnpool") else (visual, "positional_embedding")
    table: Tensor = getattr(holder, name).data
    stride = native // int(round((table.shape[0] - 1) ** 0.5))
    old, new = native // stride, image_size // stride
    grid = table[1:].reshape(1, old, old, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False)
    resized = torch.cat([table[:1], grid.permute(0, 2, 3, 1).reshape(new * new, -1)])
    setattr(holder, name, nn.Parameter(resized))
    if hasattr(visual, "grid_size"):
        visual.grid_size = (new, new)


def clip_prompts_to_text(model: nn.Module, model_name: str, prompts: list[str]) -> Tensor:
    """``encode_text(tokenize(prompts))`` in fp32, not normalised: [len(prompts), embed dim]."""
    import open_clip

    tokens = open_clip.get_tokenizer(model_name)(prompts).to(next(model.parameters()).device)
    return model.encode_text(tokens).float()


class ClipBackbone(FrameBackbone):
    """A CLIP model split in two: ``visual``, the image tower (a submodule: trained, in state dicts), and the text
    tower, held outside state dicts and optimisers and never trained (it embeds class prompts once)."""

    backbone_name: ClassVar[str]
    model_name: ClassVar[str]

    def __init__(self, weights: Weights, image_size: int = 224) -> None:
        super().__init__()
        model = build_clip(self.backbone_name, self.model_name, weights, image_size)
        self.visual = model.visual
        model.visual = None
        object.__setattr__(self, "_text_model", model)  # not a submodule
        self._text_model.requires_grad_(False)

    def encode_text(self, prompts: list[str]) -> Tensor:
        """``len(prompts)`` embeddings ``[P, d]`` in the image tower's pooled space."""
        self._text_model.to(next(self.visual.parameters()).device)
        return clip_prompts_to_text(self._text_model, self.model_name, prompts)
