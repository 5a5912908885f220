"""A small CNN for the CPU-sized ``synthetic`` benchmark: five stride-2 conv stages (stride 32, like ResNet-50).

Two coordinate input channels let position survive global pooling, which temporal matching of moving shapes
needs. At 64x64 input: maps ``[B, 128, 2, 2]``; pooled = their mean. Its only weights are a random
initialisation (seeded by the training seed): on the fine-tune track it learns with the head.

Usage::

    card = get_backbone_card("small-cnn")
    cnn = card.build(card.resolve_weights("none"), image_size=64)
    cnn.maps(frames)        # [B, 128, 2, 2]
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fsar_bench.api import Preprocess
from fsar_bench.backbones._base import BackboneCard, FrameBackbone, Weights, WeightsTag, load_state_file

SMALL_CNN_DIM = 128


class SmallCNN(FrameBackbone):
    """Conv stages ``(5 -> 16 -> 32 -> 64 -> 96 -> dim)``, BatchNorm, ReLU; non-negative maps."""

    def __init__(self, weights: Weights | None = None, image_size: int = 64, dim: int = SMALL_CNN_DIM,
                 widths: tuple[int, ...] = (16, 32, 64, 96)) -> None:
        super().__init__()
        channels = (5, *widths, dim)
        stages: list[nn.Module] = []
        for index, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:])):
            stages += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out)]
            if index < len(channels) - 2:
                stages.append(nn.ReLU(inplace=True))
        self.stages = nn.Sequential(*stages)
        self.out_dim = dim
        if weights is not None and weights.kind == "file":
            state = load_state_file(weights.path)
            self.load_state_dict({key.removeprefix("backbone."): value for key, value in state.items()
                                  if key.removeprefix("backbone.").startswith("stages.")})

    def maps(self, frames: Tensor) -> Tensor:
        """[B, 3, H, W] -> [B, dim, H/32, W/32] (non-negative after the final ReLU)."""
        batch, _, height, width = frames.shape
        ys = torch.linspace(-1.0, 1.0, height, device=frames.device, dtype=frames.dtype)
        xs = torch.linspace(-1.0, 1.0, width, device=frames.device, dtype=frames.dtype)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        coords = torch.stack([grid_x, grid_y]).expand(batch, 2, height, width)
        return torch.relu(self.stages(torch.cat([frames, coords], dim=1)))


CARDS = (
    BackboneCard(
        name="small-cnn",
        build=SmallCNN,
        outputs={"pooled": SMALL_CNN_DIM, "maps": SMALL_CNN_DIM},
        stride=32,
        preprocess=Preprocess(resize_to=0, crop=0),
        weights=(WeightsTag("none", "none"),),
        summary="5-stage stride-32 CNN with coordinate channels (synthetic, CPU); random initialisation (weights 'none')",
        notes="A file (--backbone-weights PATH) may hold its 'stages.*' weights, e.g. from an fsar-bench checkpoint.",
    ),
)
