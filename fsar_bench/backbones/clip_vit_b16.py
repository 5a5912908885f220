"""OpenAI CLIP ViT-B/16 image tower (``open_clip``, pretrained="openai"): pooled = projected class token ``[B, 512]``,
tokens = patch tokens ``[B, (H/16)·(W/16), 768]``; the text tower embeds prompts into the 512-d pooled space.

Needs ``pip install 'fsar-bench[clip]'``.

Usage::

    card = get_backbone_card("clip-vit-b16")
    clip = card.build(card.resolve_weights("none"), image_size=224)
    clip.pooled(frames)     # [B, 512]
    clip.tokens(frames)     # [B, 196, 768]
"""

from __future__ import annotations

from torch import Tensor

from fsar_bench.backbones._base import BackboneCard, Weights
from fsar_bench.backbones._clip import CLIP_PREPROCESS, ClipBackbone, openai_tag

MODEL_NAME = "ViT-B-16"


class ClipViTB16(ClipBackbone):
    """``visual``: CLIP's VisionTransformer (trained, returning its patch tokens too); the text tower is held
    outside the state dict."""

    backbone_name, model_name = "clip-vit-b16", MODEL_NAME

    def __init__(self, weights: Weights, image_size: int = 224) -> None:
        super().__init__(weights, image_size)
        self.visual.output_tokens = True

    def pooled(self, frames: Tensor) -> Tensor:
        """[B, 3, H, W] -> projected class token [B, 512]."""
        return self.visual(frames)[0]

    def tokens(self, frames: Tensor) -> Tensor:
        """[B, 3, H, W] -> patch tokens after the final LayerNorm [B, L, 768]."""
        return self.visual(frames)[1]


CARDS = (
    BackboneCard(
        name="clip-vit-b16",
        build=ClipViTB16,
        outputs={"pooled": 512, "tokens": 768},
        stride=16,
        preprocess=CLIP_PREPROCESS,
        weights=(openai_tag("timm/vit_base_patch16_clip_224.openai", MODEL_NAME),),
        summary="OpenAI CLIP ViT-B/16 via open_clip: projected 512-d class token, 768-d patch tokens, text tower",
        extra="clip",
        text_tower=True,
        notes="No conv maps: heads that need them (MoLo, STRM, TEAM) refuse this backbone.",
    ),
)
