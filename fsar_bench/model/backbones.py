"""Backbones by name for the model: build one from its plugin card (``fsar_bench/backbones/``), pick the default
per dataset, and the preprocessing a run uses.

Usage::

    card, trunk, weights = build_backbone("resnet50", weights="pretrained", image_size=224)   # or "none" / a path
    trunk.maps(frames)                                            # [B, 2048, 7, 7] at 224x224
    default_backbone("synthetic")                                 # "small-cnn"
    default_backbone("ucf101", card)                              # the card's published_backbone (e.g. clip-rn50)
"""

from __future__ import annotations

from fsar_bench.api import Preprocess
from fsar_bench.backbones import BackboneCard, FrameBackbone, Weights, get_backbone_card
from fsar_bench.backbones.resnet50 import RESNET50_IMAGENET_FILE, ResNet50Trunk  # noqa: F401 (re-exported)
from fsar_bench.backbones.small_cnn import SmallCNN  # noqa: F401 (re-exported)

LEGACY_WEIGHT_STAMPS = {"small-cnn": ("none",), "resnet50": ("torchvision:ResNet50_Weights.IMAGENET1K_V1",)}
"""Weight stamps of checkpoints keyed before weights were stamped: left out of checkpoint digests (paths kept)."""


def build_backbone(name: str, weights: str = "pretrained", image_size: int = 224) -> tuple[BackboneCard, FrameBackbone, Weights]:
    """(card, module, resolved weights) of backbone ``name``; ``weights``: "pretrained", a tag, "none" or a path."""
    card = get_backbone_card(name)
    resolved = card.resolve_weights(weights)
    return card, card.build(resolved, image_size=image_size), resolved


def default_backbone(dataset: str, card=None) -> str:
    """What ``backbone = "auto"`` means: on real benchmarks the backbone the method's numbers were published with
    (``MethodCard.published_backbone``: ResNet-50 for most, clip-rn50 for CLIP-FSAR); on the CPU-sized synthetic
    benchmark the small CNN, unless the method needs a text tower (then its published backbone)."""
    published = getattr(card, "published_backbone", "resnet50") if card is not None else "resnet50"
    if dataset != "synthetic":
        return published
    needs_text = card is not None and getattr(card.head, "needs_class_text", False)
    return published if needs_text else "small-cnn"


def run_preprocess(card: BackboneCard, method_preprocess: Preprocess | None, size: int) -> Preprocess:
    """The method card's preprocessing for this backbone, else the backbone's own. When the protocol's frame size
    is not the preprocessing's crop (``synthetic``: 64x64 frames), frames are used at their size, normalised only."""
    preprocess = method_preprocess or card.preprocess
    if preprocess.crop and preprocess.crop != size:
        return Preprocess(resize_to=0, crop=0, mean=preprocess.mean, std=preprocess.std)
    return preprocess


def default_preprocess(backbone: str) -> Preprocess:
    """The backbone's own preprocessing."""
    return get_backbone_card(backbone).preprocess
