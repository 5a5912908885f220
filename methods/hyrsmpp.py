"""HyRSM++: hybrid relation guided temporal set matching (Wang et al., arXiv 2301.03330, the HyRSM authors'
follow-up in the MoLo codebase).

The HyRSM head (the same modules, weights and logits) trained with one more loss, a temporal-coherence
regulariser on the query-specific features that enter matching: frames within ``window_size`` of each other are
pulled together (weight ``1/((t−u)²+1)``), farther ones pushed apart until their cosine distance reaches
``1 − exp(−(|t−u|−W)²/τ)``. Per video (``encode``, cached): positional encoding, intra-relation self-attention,
ReLU and the frame half of the fusion conv; per episode (``logits``): set attention over {support items, the
query}, the token half of the fusion conv and Bi-MHM matching. Semantics: ``tests/data/parity/README.md``
(HyRSM, HyRSM++).

Usage::

    from fsar_bench.api import HeadConfig, add_episode_axis, support_to_episode
    from methods.hyrsmpp import HyrsmppHead

    head = HyrsmppHead(HeadConfig(dim=2048, frames=8, num_base_classes=64))
    support = support_to_episode(head.encode(support_features), way=5, shot=1)  # [N*K, T, d] class-major
    logits = head.logits(support, add_episode_axis(head.encode(query_features)))  # [1, Q, N]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsar_bench.api import (
    MOLO_REPOSITORY_CHECKPOINT,
    MOLO_RESNET50_PREPROCESS,
    FewShotHead,
    HeadConfig,
    LossOutput,
    MethodCard,
    OptionError,
    Recipe,
    Reps,
    TrainEpisode,
    add_episode_axis,
    loss_weight,
    MOLO_REPO,
    ReleasedConfig,
    adopted,
    molo_family_recipe,
    support_to_episode,
    synthetic_recipe,
)
from fsar_bench.layers import (
    HyrsmPositionalEncoding,
    PreNormSelfAttention,
    SetAttention,
    bi_mhm_distance,
    nest_rules,
    rename_keys,
)

TRAIN_QUERIES_BY_SHOT = {1: 7, 2: 6, 3: 5, 4: 4, 5: 3}
"""Training queries per class by shot in the released configs."""


# --------------------------------------------------------------------------- options
@dataclass(frozen=True)
class HyrsmppOptions:
    """HyRSM's sizes and constants plus the regulariser's (SSv2-Full values; recipes change some per dataset)."""

    heads: int = 8  # head_dim = dim // heads, as the reference derives it
    position_a: float = 10.0  # x·sqrt(d/A) + B·pe
    position_b: float = 1.0
    position_table_length: int = 20
    position_dropout: float = 0.1
    intra_dropout: float = 0.2  # self-attention output projection
    inter_dropout: float = 0.05  # set-attention output projection
    inter_attention_dropout: float = 0.1  # set-attention probabilities
    set_items: Literal["auto", "videos", "prototypes"] = "auto"  # "auto": videos if K == 1 else prototypes
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


class HyrsmppHead(FewShotHead):
    """HyRSM++ head over pooled frame features ``[V, T, d]`` (HyRSM's modules and reference keys).

    Cached per video: ``{"frames": W_f·relu(intra) + b  [V, T, d], "mean": time-mean of relu(intra)  [V, d],
    "set_qkv": the set attention's q/k/v projections of the mean  [V, 3, d]}``, where ``W = [W_f | W_z]`` is
    the fusion conv over ``[frame; video token]``.
    """

    options_class = HyrsmppOptions

    def __init__(self, config: HeadConfig) -> None:
        super().__init__(config)
        options: HyrsmppOptions = self.options
        dim, heads = config.dim, options.heads
        if config.frames > options.position_table_length:
            raise OptionError(f"hyrsmpp: {config.frames} frames exceed position_table_length")
        self.positional_encoding = HyrsmPositionalEncoding(
            dim, options.position_table_length, options.position_a, options.position_b, options.position_dropout
        )
        self.intra_attention = PreNormSelfAttention(dim, heads, options.intra_dropout)
        self.inter_attention = SetAttention(dim, heads, options.inter_dropout, options.inter_attention_dropout)
        self.fusion = nn.Conv1d(2 * dim, dim, kernel_size=1)  # over [frame; video token], split in two below
        self.base_classifier = nn.Linear(dim, config.num_base_classes)
        regular, label = temporal_coherence_targets(config.frames, options.window_size, options.temporal_balance)
        self.register_buffer("coherence_target", regular, persistent=False)  # R, the reference's temproal_regular
        self.register_buffer("coherence_window", label, persistent=False)  # L, temproal_regular_label

    # -- per video
    def intra_relation(self, features: Tensor) -> Tensor:
        """[V, T, d] -> intra-relation features before ReLU (attention + residual) [V, T, d]."""
        return self.intra_attention(self.positional_encoding(features))

    def encode(self, features: Tensor) -> Reps:
        """[V, T, d] -> {"frames": [V, T, d], "mean": [V, d], "set_qkv": [V, 3, d]}."""
        return self._encode_intra(torch.relu(self.intra_relation(features)))

    def _encode_intra(self, intra: Tensor) -> dict[str, Tensor]:
        mean = intra.mean(dim=-2)
        frames = F.linear(intra, self.fusion.weight[:, : self.config.dim, 0], self.fusion.bias)
        return {"frames": frames, "mean": mean, "set_qkv": self.inter_attention.project_qkv(mean)}

    # -- per episode
    def relation_outputs(self, support: Reps, query: Reps) -> dict[str, Tensor]:
        """support {"frames": [E, N, K, T, d], "mean": [E, N, K, d], ...}, query {"frames": [E, Q, T, d], ...}.

        Returns ``logits`` [E, Q, N], ``inter_set`` [E, Q, n+1, d] (before ReLU), ``final_support``
        [E, Q, n, T, d] and ``final_query`` [E, Q, T, d]; n = N (prototypes) or N·K (videos).
        """
        assert isinstance(support, dict) and isinstance(query, dict)
        episodes, way, shot = support["mean"].shape[:3]
        num_query = query["mean"].shape[1]
        use_videos = self.options.set_items == "videos" or (self.options.set_items == "auto" and shot == 1)
        has_qkv = "set_qkv" in support and "set_qkv" in query
        # videos: every support video is a set item; prototypes: per-frame shot means (fusion and the q/k/v
        # projections are linear, so the mean commutes with them)
        items = {key: value.flatten(1, 2) if use_videos else value.mean(dim=2)
                 for key, value in support.items() if key in ("frames", "mean", "set_qkv")}
        num_items = items["mean"].shape[1]
        inter_set = self.inter_attention.forward_sets(items["mean"], query["mean"], items.get("set_qkv") if has_qkv
                                                      else None, query["set_qkv"] if has_qkv else None)
        token_part = F.linear(torch.relu(inter_set), self.fusion.weight[:, self.config.dim :, 0])
        final_support = items["frames"][:, None] + token_part[:, :, :num_items, None, :]
        final_query = query["frames"] + token_part[:, :, num_items, None, :]
        distances = bi_mhm_distance(final_query[:, :, None], final_support)  # [E, Q, n]
        if use_videos:
            distances = distances.reshape(episodes, num_query, way, shot).mean(dim=-1)
        return {"logits": -distances, "inter_set": inter_set, "final_support": final_support,
                "final_query": final_query}

    def logits(self, support: Reps, query: Reps) -> Tensor:
        """support [E, N, K, ...] class-major, query [E, Q, ...] -> [E, Q, N]."""
        return self.relation_outputs(support, query)["logits"]

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

    # -- training
    def loss(self, support_features: Tensor, query_features: Tensor, episode: TrainEpisode) -> LossOutput:
        """CE(episode logits) + λ_cls·CE(base classifier on every intra frame) + λ_temp·temporal coherence.

        ``total`` is the reference's per-episode loss × BATCH_SIZE (4): the reference divides by 4 and
        accumulates 4 episodes per GPU over 4 GPUs, so ``total / episodes_per_step`` (16) gives its gradient.
        """
        num_support = support_features.shape[0]
        intra = torch.relu(self.intra_relation(torch.cat([support_features, query_features])))
        class_logits = self.base_classifier(intra).flatten(0, 1)  # [(N*K+Q)*T, classes]
        base_labels = torch.cat([episode.support_base_labels, episode.query_base_labels])
        encoded = self._encode_intra(intra)
        support = support_to_episode({key: value[:num_support] for key, value in encoded.items()},
                                     episode.way, episode.shot)
        query = add_episode_axis({key: value[num_support:] for key, value in encoded.items()})
        relation = self.relation_outputs(support, query)
        logits = relation["logits"][0]
        ce_episode = F.cross_entropy(logits, episode.query_labels)
        ce_base = F.cross_entropy(class_logits, base_labels.repeat_interleave(intra.shape[1]))
        coherence = self.temporal_coherence_loss(relation["final_support"], relation["final_query"])
        total = (ce_episode + self.options.classification_weight * ce_base
                 + self.options.temporal_loss_weight * coherence)
        terms = {"ce_episode": ce_episode, "ce_base_class_per_frame": ce_base, "loss_temporal_regular": coherence}
        return LossOutput(total=total, terms=terms, logits=logits)

    # -- reference checkpoints
    def reference_key_map(self) -> dict[str, str]:
        """Our key -> the reference's (HyRSM's keys; R and L are rebuilt from the options, never stored)."""
        rules = [
            ("positional_encoding.table", "pe.pe"),
            ("fusion.", "layer2.0."),
            ("base_classifier.", "classification_layer."),
            *nest_rules("intra_attention.", "temporal_atte_before.", PreNormSelfAttention.REFERENCE_RULES),
            *nest_rules("inter_attention.", "temporal_atte.", SetAttention.REFERENCE_RULES),
        ]
        return rename_keys(self.state_dict(), rules)


# --------------------------------------------------------------------------- recipes
def _released(folder: str, name: str, lines: dict[str, int], *, lr: float, warmup_from: float, steps_iter: int,
              steps: tuple[int, ...], lrs: tuple[float, ...], tasks: int, val_fre_iter: int, classification: float,
              temporal_weight: float, window: int, balance: float, coefficient: float, position_a: float | None = None,
              sampler: str = "molo-segment") -> Recipe:
    """One released ``configs/projects/hyrsmplusplus/<folder>/HyRSMplusplus_<name>_1shot_v1.yaml`` (values and their
    lines), on the MoLo-repository trainer as it runs (``molo_family_recipe``: as-run schedule, augmentation)."""
    path = f"configs/projects/hyrsmplusplus/{folder}/HyRSMplusplus_{name}_1shot_v1.yaml"
    config = ReleasedConfig(MOLO_REPO, path, lines)
    options = {"classification_weight": (classification, "USE_CLASSIFICATION_VALUE"),
               "temporal_loss_weight": (temporal_weight, "TEMPORAL_LOSS_WEIGHT"), "window_size": (window, "WINDOW_SIZE"),
               "temporal_balance": (balance, "TEMPORAL_BALANCE"), "balance_coefficient": (coefficient, "BALANCE_COEFFICIENT")}
    if position_a is not None:
        options["position_a"] = (position_a, "POSITION_A")
    return molo_family_recipe(
        config, lr=lr, warmup_start_lr=warmup_from, steps_iter=steps_iter, steps=steps, lrs=lrs, num_train_tasks=tasks,
        batch_size_per_task=4, val_fre_iter=val_fre_iter, query_per_class=TRAIN_QUERIES_BY_SHOT[1],
        frame_sampler=sampler, head_options=options, train_queries_by_shot=TRAIN_QUERIES_BY_SHOT,
        queries_by_shot_source=f"{MOLO_REPO} configs/projects/hyrsmplusplus/{folder}/HyRSMplusplus_{name}_{{1..5}}shot_v1.yaml "
                               "QUERY_PER_CLASS",
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
        train_queries_per_class=TRAIN_QUERIES_BY_SHOT[1], train_queries_by_shot=dict(TRAIN_QUERIES_BY_SHOT),
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
