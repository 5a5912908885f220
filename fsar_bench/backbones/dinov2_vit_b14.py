"""DINOv2 ViT-B/14 (``timm`` ``vit_base_patch14_dinov2.lvd142m``): pooled = class token ``[B, 768]``,
tokens = patch tokens ``[B, (H/14)·(W/14), 768]``.

Needs ``pip install 'fsar-bench[dinov2]'``.

Usage::

    card = get_backbone_card("dinov2-vit-b14")
    vit = card.build(card.resolve_weights("none"), image_size=224)
    vit.pooled(frames)      # [B, 768]
"""

from __future__ import annotations

from torch import Tensor

from fsar_bench.api import Preprocess
from fsar_bench.backbones._base import (BackboneCard, FrameBackbone, Weights, WeightsTag, missing_weights_error,
                                        offline, placed_file, require_extra)

TIMM_NAME = "vit_base_patch14_dinov2.lvd142m"
LVD142M = WeightsTag("lvd142m", f"timm:{TIMM_NAME}", "model.safetensors",
                     "https://huggingface.co/timm/vit_base_patch14_dinov2.lvd142m/resolve/main/model.safetensors")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DinoV2ViTB14(FrameBackbone):
    """timm VisionTransformer without its classifier, built for ``image_size`` (position table resampled)."""

    def __init__(self, weights: Weights, image_size: int = 224) -> None:
        super().__init__()
        timm = require_extra("timm", "dinov2", "dinov2-vit-b14")
        arguments = {"num_classes": 0, "img_size": image_size}
        if weights.kind == "none":
            self.vit = timm.create_model(TIMM_NAME, pretrained=False, **arguments)
            return
        if weights.kind == "file":
            overlay = {"file": str(weights.path)}
        else:
            placed = placed_file("dinov2-vit-b14", LVD142M)
            overlay = {"file": str(placed)} if placed.is_file() else None
            if overlay is None and offline():
                raise missing_weights_error("dinov2-vit-b14", LVD142M, "FSAR_OFFLINE=1: no download attempted")
        try:
            self.vit = timm.create_model(TIMM_NAME, pretrained=True, pretrained_cfg_overlay=overlay, **arguments)
        except Exception as error:
            raise missing_weights_error("dinov2-vit-b14", LVD142M, f"timm could not load them: "
                                        f"{str(error).splitlines()[0][:160]}") from None

    def pooled(self, frames: Tensor) -> Tensor:
        """[B, 3, H, W] -> class token after the final norm [B, 768]."""
        return self.vit.forward_head(self.vit.forward_features(frames), pre_logits=True)

    def tokens(self, frames: Tensor) -> Tensor:
        """[B, 3, H, W] -> patch tokens [B, L, 768]."""
        return self.vit.forward_features(frames)[:, self.vit.num_prefix_tokens:]


CARDS = (
    BackboneCard(
        name="dinov2-vit-b14",
        build=DinoV2ViTB14,
        outputs={"pooled": 768, "tokens": 768},
        stride=14,
        preprocess=Preprocess(resize="short-side", resize_to=256, crop=224, mean=IMAGENET_MEAN, std=IMAGENET_STD),
        weights=(LVD142M,),
        summary="DINOv2 ViT-B/14 (LVD-142M) via timm: 768-d class token and patch tokens",
        extra="dinov2",
        notes="No conv maps: heads that need them (MoLo, STRM, TEAM) refuse this backbone.",
    ),
)
