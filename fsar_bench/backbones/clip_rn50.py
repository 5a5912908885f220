"""OpenAI CLIP RN50 image tower (``open_clip``, pretrained="openai"): pooled = attention-pool output ``[B, 1024]``,
maps = layer4 ``[B, 2048, H/32, W/32]``; the text tower embeds prompts into the 1024-d pooled space.

What CLIP-FSAR (RN50 branch) fine-tunes. Needs ``pip install 'fsar-bench[clip]'``.

Usage::

    card = get_backbone_card("clip-rn50")
    clip = card.build(card.resolve_weights("none"), image_size=224)
    clip.pooled(frames)                        # [B, 1024]
    clip.encode_text(["a photo of archery"])   # [1, 1024]
"""

from __future__ import annotations

from torch import Tensor

from fsar_bench.backbones._base import BackboneCard
from fsar_bench.backbones._clip import CLIP_PREPROCESS, ClipBackbone, openai_tag

MODEL_NAME = "RN50"


class ClipRN50(ClipBackbone):
    """``visual``: CLIP's ModifiedResNet (trained); the text tower is held outside the state dict."""

    backbone_name, model_name = "clip-rn50", MODEL_NAME

    def maps(self, frames: Tensor) -> Tensor:
        """[B, 3, H, W] -> layer4 maps [B, 2048, H/32, W/32]."""
        visual = self.visual
        x = visual.stem(frames.to(visual.conv1.weight.dtype))
        return visual.layer4(visual.layer3(visual.layer2(visual.layer1(x))))

    def pooled(self, frames: Tensor) -> Tensor:
        """[B, 3, H, W] -> attention-pool output [B, 1024] (not post-ReLU, not normalised)."""
        return self.visual.attnpool(self.maps(frames))


CARDS = (
    BackboneCard(
        name="clip-rn50",
        build=ClipRN50,
        outputs={"pooled": 1024, "maps": 2048},
        stride=32,
        preprocess=CLIP_PREPROCESS,
        weights=(openai_tag("timm/resnet50_clip.openai", MODEL_NAME),),
        summary="OpenAI CLIP RN50 via open_clip: attention-pooled 1024-d frames, layer4 maps, text tower",
        extra="clip",
        text_tower=True,
        notes="CLIP-FSAR's RN50 backbone; its text tower embeds class prompts (never trained).",
    ),
)
