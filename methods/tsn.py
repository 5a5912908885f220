"""TSN: the order-free control (mean over frames, then a nearest-class classifier).

Each video is its frame-mean feature. ``tsn`` is the Perrett library's control: the logit of a class is the mean,
over the class's K support videos, of the cosine between the query and the support (0.01 added to the product of
norms, no temperature), as ``CNN_TSN`` computes it. ``tsn-euclidean`` is the ProtoNet form (Snell et al. 2017):
minus the squared Euclidean distance to the class prototype. Frame order cannot matter, so TSN is the floor that
temporal methods must beat.

Usage::

    from fsar_bench.api import HeadConfig, add_episode_axis, support_to_episode
    from methods.tsn import TSNHead

    head = TSNHead(HeadConfig(dim=2048, frames=8, num_base_classes=64))          # options={"distance": "euclidean"}
    support = support_to_episode(head.encode(support_features), way=5, shot=5)  # [N*K, T, d], class-major
    query = add_episode_axis(head.encode(query_features))                      # [Q, T, d]
    logits = head.logits(support, query)                                       # [1, Q, N]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from fsar_bench.api import (
    PERRETT_LIB,
    PERRETT_RESNET50_PREPROCESS,
    FewShotHead,
    MethodCard,
    adopted,
    perrett_family_recipe,
    synthetic_recipe,
)

COSINE_EPS = 0.01
"""Added to the product of norms in the cosine (fsar-lib ``utils.cos_sim(..., epsilon=0.01)``)."""


# --------------------------------------------------------------------------- options
@dataclass(frozen=True)
class TSNOptions:
    distance: Literal["cosine", "euclidean"] = "cosine"  # cosine: fsar-lib CNN_TSN; euclidean: ProtoNet


# --------------------------------------------------------------------------- head
class TSNHead(FewShotHead):
    """Frame-mean video features; mean cosine to the class's supports, or -squared distance to its prototype.
    Parameter-free."""

    options_class = TSNOptions

    def encode(self, features: Tensor) -> Tensor:
        """features [V, T, d] -> [V, d] (mean over frames)."""
        return features.mean(dim=1)

    def logits(self, support: Tensor, query: Tensor) -> Tensor:
        """support [E, N, K, d], query [E, Q, d] -> [E, Q, N]."""
        if self.options.distance == "euclidean":
            return _negative_squared_distance(support.mean(dim=2), query)
        episodes, way, shot, dim = support.shape
        flat = support.reshape(episodes, way * shot, dim)
        # elementwise product and a last-axis sum, not bmm: a batched GEMM picks its blocking by batch size, so its
        # rounding would depend on how many episodes are scored together (batch invariance, tests/test_evaluate.py)
        dots = (query.unsqueeze(2) * flat.unsqueeze(1)).sum(dim=-1)  # [E, Q, N*K]
        norms = query.norm(dim=-1).unsqueeze(-1) * flat.norm(dim=-1).unsqueeze(1)  # [E, Q, N*K]
        cosines = dots / (norms + COSINE_EPS)
        return cosines.reshape(episodes, query.shape[1], way, shot).mean(dim=-1)


def _negative_squared_distance(prototypes: Tensor, query: Tensor) -> Tensor:
    """prototypes [E, N, d], query [E, Q, d] -> -||query - prototype||² [E, Q, N], expanded as
    ||q||² - 2 q·p + ||p||² so that the cross term is one GEMM per episode."""
    query_sq_norms = query.pow(2).sum(dim=-1, keepdim=True)  # [E, Q, 1]
    prototype_sq_norms = prototypes.pow(2).sum(dim=-1).unsqueeze(1)  # [E, 1, N]
    cross = torch.bmm(query, prototypes.transpose(1, 2))  # [E, Q, N]
    return -(query_sq_norms - 2 * cross + prototype_sq_norms).clamp_min(0)


# --------------------------------------------------------------------------- recipes
_TSN_NOTES = (
    "The Perrett library's trainer for its CNN_TSN (few-shot-action-recognition@3687f3a run.py defaults): plain SGD "
    "(no momentum), lr 1e-3, constant, 16 tasks per optimizer step, 60k iterations, 5 train queries/class. Frames: "
    "int(linspace(0, n-1, 8)) at train as at test; SSv2/UCF101/HMDB51 frames squashed to 256x256 by its extraction "
    "scripts, then resize 256, random flip, random 224 crop; no normalisation."
)
_SQUASHED = perrett_family_recipe(PERRETT_LIB, resize="squash", notes=_TSN_NOTES)
_KINETICS = perrett_family_recipe(PERRETT_LIB, resize="short-side", notes=_TSN_NOTES)
TSN_RECIPES = {
    "ssv2-full": _SQUASHED,
    "ssv2-small": _SQUASHED,
    "kinetics100": _KINETICS,
    "kinetics100-molo": adopted(_KINETICS, "the CMN-list recipe on the MoLo/HyRSM Kinetics list"),
    "ucf101": _SQUASHED,
    "hmdb51": _SQUASHED,
    "finegym": adopted(_SQUASHED, "fsar-bench's choice for finegym (no reference trained on FineGym): the SSv2 recipe"),
    "synthetic": synthetic_recipe(
        "Synthetic (small CNN, d=128, CPU): Adam lr 1e-3, 600 iterations of one episode each, 5 train queries per "
        "class, val (200 episodes) every 100 iterations: the same budget as OTAM, so the control is not starved; no "
        "augmentation (never flipped: synthetic has mirror-pair classes)."
    ),
}

# --------------------------------------------------------------------------- cards
_COMMON = {
    "head": TSNHead,
    "paper": (
        "Wang, Xiong, Wang, Qiao, Lin, Tang, Van Gool. Temporal Segment Networks: Towards Good Practices "
        "for Deep Action Recognition. ECCV 2016. arXiv:1608.00859 (few-shot use: fsar-lib's CNN_TSN control)"
    ),
    "reference_code": (
        "tobyperrett/few-shot-action-recognition@3687f3a972b496d5010f879a4b0dce7c1ac408ea model.py:305-341 CNN_TSN "
        "(default: mean cosine to each support video; norm_sq_dist: squared distance to the prototype)"
    ),
    "published": {},
    "published_source": "none: TSN is our control",
    "recipes": TSN_RECIPES,
    "preprocess": {"resnet50": PERRETT_RESNET50_PREPROCESS},
}

CARDS = (
    MethodCard(
        name="tsn",
        summary=(
            "Order-free control (fsar-lib CNN_TSN): mean over frames, logit = mean cosine (eps 0.01) to the class's "
            "support videos; no head parameters."
        ),
        notes=(
            "Distance: fsar-lib's default, the mean over the class's K supports of cos(query, support) with 0.01 "
            "added to the norm product and no temperature (at 1 shot: the cosine to the prototype). No published "
            "numbers: TSN is a control. Loss: mean CE over the episode's queries. Cached encoding per video: the "
            "frame mean, d floats (8 KiB at d=2048)."
        ),
        **_COMMON,
    ),
    MethodCard(
        name="tsn-euclidean",
        summary=(
            "Order-free control, ProtoNet form: mean over frames, logits = -squared Euclidean distance to the class "
            "prototype (fsar-lib CNN_TSN norm_sq_dist); no head parameters."
        ),
        options={"distance": "euclidean"},
        notes=(
            "Variant of tsn (fsar-lib's norm_sq_dist option): prototype = mean of the class's support encodings, "
            "logits = -||query - prototype||² (ProtoNet). fsar-bench's control before issue 11. Same recipes as tsn."
        ),
        **_COMMON,
    ),
)
