"""HyRSM++: hybrid relation guided temporal set matching (Wang et al., arXiv 2301.03330, the HyRSM authors'
follow-up in the MoLo codebase).

The HyRSM head (``fsar_bench/model/hyrsm_family.py``, shared with ``methods/hyrsm.py``: the same modules, weights
and logits) trained with one more loss, a temporal-coherence regulariser on the query-specific features that
enter matching: frames within ``window_size`` of each other are pulled together (weight ``1/((t−u)²+1)``), farther
ones pushed apart until their cosine distance reaches ``1 − exp(−(|t−u|−W)²/τ)``. Per video (``encode``, cached):
positional encoding, intra-relation self-attention, ReLU and the frame half of the fusion conv; per episode
(``logits``): set attention over {support items, the query}, the token half of the fusion conv and Bi-MHM
matching. Semantics: ``tests/data/parity/README.md`` (HyRSM, HyRSM++). This file holds the regulariser, the
options, recipes and card.

Usage::

    from fsar_bench.api import HeadConfig, add_episode_axis, support_to_episode
    from methods.hyrsmpp import HyrsmppHead

    head = HyrsmppHead(HeadConfig(dim=2048, frames=8, num_base_classes=64))
    support = support_to_episode(head.encode(support_features), way=5, shot=1)  # [N*K, T, d] class-major
    logits = head.logits(support, add_episode_axis(head.encode(query_features)))  # [1, Q, N]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from fsar_bench.api import (
    MOLO_REPOSITORY_CHECKPOINT,
    MOLO_RESNET50_PREPROCESS,
    MOLO_REPO,
    HeadConfig,
    LossOutput,
    MethodCard,
    Recipe,
    TrainEpisode,
    adopted,
    loss_weight,
    synthetic_recipe,
)
from fsar_bench.model.hyrsm_family import (
    HYRSM_TRAIN_QUERIES_BY_SHOT,
    HyrsmFamilyHead,
    HyrsmFamilyOptions,
    hyrsm_released_recipe,
)


# --------------------------------------------------------------------------- options
@dataclass(frozen=True)
class HyrsmppOptions(HyrsmFamilyOptions):
    """HyRSM's sizes and constants (``HyrsmFamilyOptions``: heads, positional encoding, dropouts, set_items) plus
    the regulariser's and the loss weights (SSv2-Full values; recipes change some per dataset)."""

    window_size: int = 1  # WINDOW_SIZE: frames within it are pulled together
    temporal_balance: float = 51.0  # TEMPORAL_BALANCE τ
    balance_coefficient: float = 10.0  # BALANCE_COEFFICIENT β (0: 1)
    classification_weight: float = loss_weight(0.6)  # λ_cls (USE_CLASSIFICATION_VALUE)
    temporal_loss_weight: float = loss_weight(0.3)  # TEMPORAL_LOSS_WEIGHT


# --------------------------------------------------------------------------- head
def temporal_coherence_targets(frames: int, window: int, balance: float) -> tuple[Tensor, Tensor]:
    """(R, L), each ``[T, T]`` float32: inside the window L = 1 and R = 1/((t−u)²+1); outside L = 0 and
    R = 1 − exp(−(|t−u| − W)²/τ)."""
    gap = (torch.arange(frames)[:, None] - torch.arange(frames)[None, :]).abs().float()
    inside = gap <= window
    near = 1.0 / (gap.square() + 1.0)
    far = 1.0 - torch.exp(-(gap - window).square() / balance)
    return torch.where(inside, near, far), inside.float()


class HyrsmppHead(HyrsmFamilyHead):
    """HyRSM++ head over pooled frame features ``[V, T, d]``: ``HyrsmFamilyHead`` (HyRSM's modules, cached reps
    ``{"frames", "mean", "set_qkv"}``, logits and reference keys) with the temporal-coherence loss added.

    The regulariser's R and L are buffers rebuilt from the options, never stored (not in the state dict).
    """

    options_class = HyrsmppOptions
    method_name = "hyrsmpp"

    def __init__(self, config: HeadConfig) -> None:
        super().__init__(config)
        options: HyrsmppOptions = self.options
        regular, label = temporal_coherence_targets(config.frames, options.window_size, options.temporal_balance)
        self.register_buffer("coherence_target", regular, persistent=False)  # R, the reference's temproal_regular
        self.register_buffer("coherence_window", label, persistent=False)  # L, temproal_regular_label

    # -- training
    def temporal_coherence_loss(self, final_support: Tensor, final_query: Tensor) -> Tensor:
        """``mean(E_s) + mean(E_q)`` with ``E = D·L·R + β·(1−L)·relu(R − D)``, D = 1 − cos between the frames of
        each sequence. final_support [..., n, T, d], final_query [..., T, d] -> scalar."""
        balance = self.options.balance_coefficient or 1.0

        def term(sequences: Tensor) -> Tensor:
            unit = F.normalize(sequences, dim=-1)
            distances = 1.0 - unit @ unit.transpose(-1, -2)
            target, window = self.coherence_target, self.coherence_window
            return (distances * window * target + balance * (1.0 - window) * torch.relu(target - distances)).mean()

        return term(final_support) + term(final_query)

    def loss(self, support_features: Tensor, query_features: Tensor, episode: TrainEpisode) -> LossOutput:
        """CE(episode logits) + λ_cls·CE(base classifier on every intra frame) + λ_temp·temporal coherence.

        ``total`` is the reference's per-episode loss × BATCH_SIZE (4): the reference divides by 4 and
        accumulates 4 episodes per GPU over 4 GPUs, so ``total / episodes_per_step`` (16) gives its gradient.
        """
        relation, terms = self.classification_losses(support_features, query_features, episode)
        coherence = self.temporal_coherence_loss(relation["final_support"], relation["final_query"])
        total = (terms["ce_episode"] + self.options.classification_weight * terms["ce_base_class_per_frame"]
                 + self.options.temporal_loss_weight * coherence)
        return LossOutput(total=total, terms={**terms, "loss_temporal_regular": coherence},
                          logits=relation["logits"][0])


# --------------------------------------------------------------------------- recipes
def _released(folder: str, name: str, lines: dict[str, int], *, lr: float, warmup_from: float, steps_iter: int,
              steps: tuple[int, ...], lrs: tuple[float, ...], tasks: int, val_fre_iter: int, classification: float,
              temporal_weight: float, window: int, balance: float, coefficient: float, position_a: float | None = None,
              sampler: str = "molo-segment") -> Recipe:
    """One released ``configs/projects/hyrsmplusplus/<folder>/HyRSMplusplus_<name>_1shot_v1.yaml`` (values and their
    lines), on the MoLo-repository trainer as it runs (``molo_family_recipe``: as-run schedule, augmentation)."""
    options = {"classification_weight": (classification, "USE_CLASSIFICATION_VALUE"),
               "temporal_loss_weight": (temporal_weight, "TEMPORAL_LOSS_WEIGHT"), "window_size": (window, "WINDOW_SIZE"),
               "temporal_balance": (balance, "TEMPORAL_BALANCE"), "balance_coefficient": (coefficient, "BALANCE_COEFFICIENT")}
    if position_a is not None:
        options["position_a"] = (position_a, "POSITION_A")
    return hyrsm_released_recipe(
        MOLO_REPO, f"configs/projects/hyrsmplusplus/{folder}/HyRSMplusplus_{name}_1shot_v1.yaml", lines, options,
        lr=lr, warmup_from=warmup_from, steps_iter=steps_iter, steps=steps, lrs=lrs, tasks=tasks,
        val_fre_iter=val_fre_iter, batch_size_per_task=4, sampler=sampler,
    )


_SSV2_FULL = _released(
    "ssv2_full", "SSv2_Full", dict(USE_CLASSIFICATION_VALUE=7, WINDOW_SIZE=14, TEMPORAL_LOSS_WEIGHT=16,
                                   TEMPORAL_BALANCE=17, BALANCE_COEFFICIENT=18, QUERY_PER_CLASS=21, NUM_TRAIN_TASKS=23,
                                   VAL_FRE_ITER=25, BATCH_SIZE_PER_TASK=27, SAMPLING_RATE=51, BASE_LR=64, STEPS_ITER=66,
                                   STEPS=67, LRS=68, WARMUP_START_LR=73),
    lr=1e-4, warmup_from=2e-5, steps_iter=3000, steps=(0, 6, 9), lrs=(1, 0.1, 0.01), tasks=40_000, val_fre_iter=1000,
    classification=0.6, temporal_weight=0.3, window=1, balance=51.0, coefficient=10.0)
_KINETICS = _released(
    "kinetics100", "K100", dict(USE_CLASSIFICATION_VALUE=8, WINDOW_SIZE=10, TEMPORAL_LOSS_WEIGHT=12, TEMPORAL_BALANCE=13,
                                BALANCE_COEFFICIENT=14, QUERY_PER_CLASS=21, NUM_TRAIN_TASKS=23, VAL_FRE_ITER=25,
                                BATCH_SIZE_PER_TASK=27, SAMPLING_RATE=51, BASE_LR=64, STEPS_ITER=66, STEPS=67, LRS=68,
                                WARMUP_START_LR=73),
    lr=2.2e-5, warmup_from=5e-6, steps_iter=100, steps=(0, 4, 6, 9), lrs=(1, 0.5, 0.1, 0.05), tasks=1500,
    val_fre_iter=20, classification=0.1, temporal_weight=0.1, window=3, balance=23.0, coefficient=10.0,
    sampler="molo-kinetics")
"""The 2-5-shot Kinetics configs set BATCH_SIZE 1 with 4 GPUs and crash at start-up as released (per-GPU batch
int(1/4) = 0): the 1-shot batching is used at every shot."""

HYRSMPP_RECIPES = {
    "ssv2-full": _SSV2_FULL,
    "ssv2-small": _released(
        "ssv2_small", "SSv2_Small", dict(USE_CLASSIFICATION_VALUE=8, QUERY_PER_CLASS=17, WINDOW_SIZE=19,
                                         TEMPORAL_LOSS_WEIGHT=21, TEMPORAL_BALANCE=22, BALANCE_COEFFICIENT=23,
                                         NUM_TRAIN_TASKS=24, VAL_FRE_ITER=26, BATCH_SIZE_PER_TASK=28, SAMPLING_RATE=52,
                                         BASE_LR=65, STEPS_ITER=67, STEPS=68, LRS=69, WARMUP_START_LR=74),
        lr=1e-4, warmup_from=2e-5, steps_iter=1500, steps=(0, 4, 8), lrs=(1, 0.1, 0.01), tasks=20_000,
        val_fre_iter=1000, classification=0.2, temporal_weight=0.3, window=3, balance=23.0, coefficient=10.0),
    "kinetics100-molo": _KINETICS,
    "kinetics100": adopted(_KINETICS, "HyRSM++ trained and published on the MoLo/HyRSM Kinetics list "
                           "(kinetics100-molo); the same config on the CMN list"),
    "ucf101": _released(
        "ucf101", "UCF101", dict(USE_CLASSIFICATION_VALUE=8, QUERY_PER_CLASS=16, WINDOW_SIZE=18, TEMPORAL_LOSS_WEIGHT=20,
                                 TEMPORAL_BALANCE=21, BALANCE_COEFFICIENT=22, NUM_TRAIN_TASKS=23, VAL_FRE_ITER=25,
                                 BATCH_SIZE_PER_TASK=27, SAMPLING_RATE=51, BASE_LR=65, STEPS_ITER=67, STEPS=68, LRS=69,
                                 WARMUP_START_LR=74),
        lr=5e-5, warmup_from=1e-5, steps_iter=700, steps=(0, 3, 5, 7), lrs=(1, 0.5, 0.1, 0.01), tasks=2500,
        val_fre_iter=100, classification=0.6, temporal_weight=0.1, window=3, balance=23.0, coefficient=10.0),
    "hmdb51": _released(
        "hmdb51", "HMDB51", dict(USE_CLASSIFICATION_VALUE=8, POSITION_A=10, WINDOW_SIZE=16, TEMPORAL_LOSS_WEIGHT=18,
                                 TEMPORAL_BALANCE=19, BALANCE_COEFFICIENT=20, QUERY_PER_CLASS=23, NUM_TRAIN_TASKS=25,
                                 VAL_FRE_ITER=27, BATCH_SIZE_PER_TASK=29, SAMPLING_RATE=53, BASE_LR=68, STEPS_ITER=70,
                                 STEPS=71, LRS=72, WARMUP_START_LR=77),
        lr=5e-5, warmup_from=1e-5, steps_iter=300, steps=(0, 2, 3, 7), lrs=(1, 0.5, 0.1, 0.01), tasks=2000,
        val_fre_iter=100, classification=0.15, temporal_weight=0.2, window=1, balance=51.0, coefficient=20.0,
        position_a=50.0),
    "finegym": adopted(_SSV2_FULL, "fsar-bench's choice for finegym (no reference trained on FineGym): the "
                       "SSv2-Full config, the other fine-grained motion benchmark"),
    "synthetic": synthetic_recipe(
        train_queries_per_class=HYRSM_TRAIN_QUERIES_BY_SHOT[1], train_queries_by_shot=dict(HYRSM_TRAIN_QUERIES_BY_SHOT),
        head_options={"classification_weight": 0.6, "temporal_loss_weight": 0.3},
        notes="Synthetic (small CNN, d=128, CPU): hyrsm's synthetic recipe (the shared budget, 7/6/5/4/3 train "
        "queries per class, λ_cls 0.6) plus the SSv2-Full regulariser (weight 0.3, W 1, τ 51, β 10)",
    ),
}

# --------------------------------------------------------------------------- cards
HYRSMPP_NOTES = """\
Recipes: the released configs (alibaba-mmai-research/MoLo@f7f73b6 configs/projects/hyrsmplusplus/*), schedules as
the training loop runs them (tests/data/parity/README.md, recipe table): Adam, weight decay 1e-3 from the base
config (the reference exempts parameters named *bn*/*norm*; a Recipe has one group), linear warm-up over the whole
first STEPS_ITER from WARMUP_START_LR, decays at the iterations the loop actually reaches. Counts are episodes:
one reference iteration is 4 episodes (4 GPUs), an optimizer step 16 (BATCH_SIZE_PER_TASK 4). Training queries
per class 7/6/5/4/3 for 1-5 shots. TEMPORAL_WEIGHT (0.5 in every config) is never read by the code.
Loss: total = CE + λ_cls·CE_base_per_frame + λ_temp·loss_temporal_regular; the reference's per-episode loss is
total/4 (its BATCH_SIZE), so total/episodes_per_step (16) reproduces its gradient.
Reference quirks, documented: validation runs on the test split (we select on val); test frames are sampled
randomly for SSv2/UCF101/HMDB51 (ours are segment centres); the Kinetics 2-5-shot configs crash as released.
No checkpoints were released. Reference checkpoints would be HyRSM's layout ('head.' prefix, the same keys);
the regulariser's R and L matrices are not stored and are rebuilt from the options.
Cached encoding per video: HyRSM's, (T+4)·d floats (96 KiB at d=2048, T=8)."""

CARDS = (
    MethodCard(
        name="hyrsmpp",
        head=HyrsmppHead,
        summary="HyRSM (intra/inter-relation, query-specific features, Bi-MHM set matching) trained with a "
        "temporal-coherence regulariser",
        paper="Wang, Zhang, Qing, Zuo, Gao, Jin, Sang. HyRSM++: Hybrid Relation Guided Temporal Set Matching for "
        "Few-shot Action Recognition. Pattern Recognition 2024. arXiv:2301.03330",
        reference_code="alibaba-mmai-research/MoLo@f7f73b6dd8cba446b414b1c47652ab26033bc88e models/base/few_shot.py "
        "(CNN_HyRSM_plusplus_1shot, CNN_HyRSM_plusplus_5shot), runs/train_net_few_shot.py",
        published={},
        published_unconfirmed={("ssv2-full", 1): 55.0},
        published_source="not yet checked against the paper's tables (arXiv 2301.03330; the repository README "
        "publishes none): ssv2-full 1-shot 55.0 is quoted by a later paper; no cell is confirmed",
        recipes=HYRSMPP_RECIPES,
        preprocess={"resnet50": MOLO_RESNET50_PREPROCESS},
        test_options={"heads": 4},
        notes=HYRSMPP_NOTES,
        reference_checkpoint=MOLO_REPOSITORY_CHECKPOINT,  # no released files; the layout is HyRSM's
    ),
)
