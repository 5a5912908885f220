"""TSN: the order-free control (mean over frames, then a prototypical-network classifier).

Each video is its frame-mean feature; a class prototype is the mean of its K support
encodings; the logit is the negative squared Euclidean distance (ProtoNet, Snell et al. 2017).
Frame order cannot matter, so TSN is the floor that temporal methods must beat.

Usage::

    from fsar_bench.api import HeadConfig, add_episode_axis, support_to_episode
    from methods.tsn import TSNHead

    head = TSNHead(HeadConfig(dim=2048, frames=8, num_base_classes=64))
    support = support_to_episode(head.encode(support_features), way=5, shot=5)  # [N*K, T, d], class-major
    query = add_episode_axis(head.encode(query_features))                      # [Q, T, d]
    logits = head.logits(support, query)                                       # [1, Q, N]
"""

from __future__ import annotations

import torch
from torch import Tensor

from fsar_bench.api import PERRETT_RESNET50_PREPROCESS, FewShotHead, MethodCard, NoOptions, reference_recipe, synthetic_recipe

# --------------------------------------------------------------------------- options
TSNOptions = NoOptions
"""TSN takes no options: any key given is an error."""


# --------------------------------------------------------------------------- head
class TSNHead(FewShotHead):
    """Frame-mean video features, ProtoNet classifier on squared Euclidean distance; parameter-free."""

    options_class = TSNOptions

    def encode(self, features: Tensor) -> Tensor:
        """features [V, T, d] -> [V, d] (mean over frames)."""
        return features.mean(dim=1)

    def logits(self, support: Tensor, query: Tensor) -> Tensor:
        """support [E, N, K, d], query [E, Q, d] -> [E, Q, N] = -||query - prototype||².

        Expanded as ||q||² - 2 q·p + ||p||² so that the cross term is one GEMM per episode.
        """
        prototypes = support.mean(dim=2)  # [E, N, d]
        query_sq_norms = query.pow(2).sum(dim=-1, keepdim=True)  # [E, Q, 1]
        prototype_sq_norms = prototypes.pow(2).sum(dim=-1).unsqueeze(1)  # [E, 1, N]
        cross = torch.bmm(query, prototypes.transpose(1, 2))  # [E, Q, N]
        return -(query_sq_norms - 2 * cross + prototype_sq_norms).clamp_min(0)


# --------------------------------------------------------------------------- recipes
_TSN_RECIPE = reference_recipe(
    optimizer="sgd",
    momentum=0.0,
    lr=1e-3,
    iterations=60_000,
    iterations_per_step=1,
    train_queries_per_class=5,
    val_every=100,
    val_episodes=200,
    notes=(
        "No published recipe (TSN is our control). Same as OTAM's: Perrett-library SGD (no momentum), lr 1e-3, "
        "5 train queries/class, 60k iterations (run.py default), one episode per step."
    ),
)

_SYNTHETIC_RECIPE = synthetic_recipe(
    "Synthetic (small CNN, d=128, CPU): Adam lr 1e-3, 600 iterations of one episode each, 5 train queries per "
    "class, val (200 episodes) every 100 iterations: the same budget as OTAM, so the control is not starved."
)

# --------------------------------------------------------------------------- cards
CARDS = (
    MethodCard(
        name="tsn",
        head=TSNHead,
        summary=(
            "Order-free control: mean over frames, prototype = mean of the class's support encodings, "
            "logits = -squared Euclidean distance (ProtoNet); no head parameters."
        ),
        paper=(
            "Wang, Xiong, Wang, Qiao, Lin, Tang, Van Gool. Temporal Segment Networks: Towards Good Practices "
            "for Deep Action Recognition. ECCV 2016. arXiv:1608.00859 (few-shot use: ProtoNet classifier)"
        ),
        reference_code=(
            "closest: tobyperrett/few-shot-action-recognition@3687f3a972b496d5010f879a4b0dce7c1ac408ea "
            "model.py CNN_TSN (its default is mean cosine to each support video; its norm_sq_dist option is ours)"
        ),
        published={},
        published_source="none: TSN is our control",
        recipes={
            "default": _TSN_RECIPE,
            **{dataset: _TSN_RECIPE for dataset in ("ssv2-full", "ssv2-small", "kinetics100", "ucf101", "hmdb51")},
            "synthetic": _SYNTHETIC_RECIPE,
        },
        preprocess={"resnet50": PERRETT_RESNET50_PREPROCESS},
        notes=(
            "Distance choice: squared Euclidean to the class prototype (ProtoNet), not cosine. The Perrett "
            "library's CNN_TSN defaults to the mean of cos(query, support) over the class's supports (eps 0.01) "
            "and offers this squared-Euclidean prototype variant as an option. No published numbers: TSN is a "
            "control. Loss: mean CE over the episode's queries. Cached encoding per video: the frame mean, d floats "
            "(8 KiB at d=2048)."
        ),
    ),
)
