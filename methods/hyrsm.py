"""HyRSM: hybrid relation guided set matching (Wang et al., CVPR 2022).

Per video (``encode``, cached): positional encoding, pre-norm self-attention over the T frames
(intra-relation) and ReLU, then the frame half of the 1×1 fusion conv. Per episode (``logits``):
multi-head attention over the set {N support items, the query} of time-means (inter-relation), the token
half of the fusion conv, and Bi-MHM matching. Semantics: ``tests/data/parity/README.md`` (HyRSM).

Usage::

    from fsar_bench.api import HeadConfig, support_to_episode, add_episode_axis
    from methods.hyrsm import HyrsmHead

    head = HyrsmHead(HeadConfig(dim=2048, frames=8, num_base_classes=64))
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
    Reps,
    TrainEpisode,
    HYRSM_REPO,
    Recipe,
    ReleasedConfig,
    add_episode_axis,
    adopted,
    loss_weight,
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

HYRSM_TRAIN_QUERIES_BY_SHOT = {1: 7, 2: 6, 3: 5, 4: 4, 5: 3}
"""Training queries per class by shot in the released configs (Recipe holds the 1-shot value)."""


# --------------------------------------------------------------------------- options
@dataclass(frozen=True)
class HyrsmOptions:
    """HyRSM's sizes, constants and loss weight (the reference's defaults; recipes change some per dataset)."""

    heads: int = 8  # head_dim = dim // heads, as the reference derives it
    position_a: float = 10.0  # x·sqrt(d/A) + B·pe
    position_b: float = 1.0
    position_table_length: int = 20
    position_dropout: float = 0.1
    intra_dropout: float = 0.2  # self-attention output projection
    inter_dropout: float = 0.05  # set-attention output projection
    inter_attention_dropout: float = 0.1  # set-attention probabilities
    set_items: Literal["auto", "videos", "prototypes"] = "auto"  # "auto": videos if K == 1 else prototypes
    classification_weight: float = loss_weight(0.6)  # λ_cls


# --------------------------------------------------------------------------- head
class HyrsmHead(FewShotHead):
    """HyRSM head over pooled frame features ``[V, T, d]``.

    Cached per video: ``{"frames": W_f·relu(intra) + b  [V, T, d], "mean": time-mean of relu(intra)  [V, d],
    "set_qkv": the set attention's q/k/v projections of the mean  [V, 3, d]}``, where ``W = [W_f | W_z]`` is
    the fusion conv over ``[frame; video token]``.
    """

    options_class = HyrsmOptions

    def __init__(self, config: HeadConfig) -> None:
        super().__init__(config)
        options: HyrsmOptions = self.options
        dim, heads = config.dim, options.heads
        if config.frames > options.position_table_length:
            raise OptionError(f"hyrsm: {config.frames} frames exceed position_table_length")
        self.positional_encoding = HyrsmPositionalEncoding(
            dim, options.position_table_length, options.position_a, options.position_b, options.position_dropout
        )
        self.intra_attention = PreNormSelfAttention(dim, heads, options.intra_dropout)
        self.inter_attention = SetAttention(dim, heads, options.inter_dropout, options.inter_attention_dropout)
        self.fusion = nn.Conv1d(2 * dim, dim, kernel_size=1)  # over [frame; video token], split in two below
        self.base_classifier = nn.Linear(dim, config.num_base_classes)

    # -- per video
    def intra_relation(self, features: Tensor) -> Tensor:
        """[V, T, d] -> intra-relation features before ReLU (attention + residual) [V, T, d]."""
        return self.intra_attention(self.positional_encoding(features))

    def encode(self, features: Tensor) -> Reps:
        """[V, T, d] -> {"frames": [V, T, d], "mean": [V, d], "set_qkv": [V, 3, d]}."""
        return self._encode_intra(torch.relu(self.intra_relation(features)))

    def _encode_intra(self, intra: Tensor) -> dict[str, Tensor]:
        frame_weight = self.fusion.weight[:, : self.config.dim, 0]
        mean = intra.mean(dim=-2)
        return {"frames": F.linear(intra, frame_weight, self.fusion.bias), "mean": mean,
                "set_qkv": self.inter_attention.project_qkv(mean)}

    # -- per episode
    def relation_outputs(self, support: Reps, query: Reps) -> dict[str, Tensor]:
        """support {"frames": [E, N, K, T, d], "mean": [E, N, K, d]}, query {"frames": [E, Q, T, d], "mean": [E, Q, d]}.

        Returns ``logits`` [E, Q, N], ``inter_set`` [E, Q, n+1, d] (before ReLU), ``final_support``
        [E, Q, n, T, d] and ``final_query`` [E, Q, T, d]; n = N (prototypes) or N·K (videos).
        """
        assert isinstance(support, dict) and isinstance(query, dict)
        episodes, way, shot = support["mean"].shape[:3]
        num_query = query["mean"].shape[1]
        use_videos = self.options.set_items == "videos" or (self.options.set_items == "auto" and shot == 1)
        has_qkv = "set_qkv" in support and "set_qkv" in query
        if use_videos:  # every support video is a set item (the reference's 1-shot class)
            item_frames = support["frames"].flatten(1, 2)
            item_means = support["mean"].flatten(1, 2)
            item_qkv = support["set_qkv"].flatten(1, 2) if has_qkv else None
        else:  # class prototypes: per-frame mean over shots (fusion is linear, so the mean commutes with W_f)
            item_frames = support["frames"].mean(dim=2)
            item_means = support["mean"].mean(dim=2)
            item_qkv = support["set_qkv"].mean(dim=2) if has_qkv else None  # q/k/v are linear too
        num_items = item_means.shape[1]
        inter_set = self.inter_attention.forward_sets(item_means, query["mean"], item_qkv,
                                                      query["set_qkv"] if has_qkv else None)  # [E, Q, n+1, d]
        token_part = F.linear(torch.relu(inter_set), self.fusion.weight[:, self.config.dim :, 0])
        final_support = item_frames[:, None] + token_part[:, :, :num_items, None, :]
        final_query = query["frames"] + token_part[:, :, num_items, None, :]
        distances = bi_mhm_distance(final_query[:, :, None], final_support)  # [E, Q, n]
        if use_videos:
            distances = distances.reshape(episodes, num_query, way, shot).mean(dim=-1)
        return {
            "logits": -distances, "inter_set": inter_set, "final_support": final_support, "final_query": final_query
        }

    def logits(self, support: Reps, query: Reps) -> Tensor:
        """support [E, N, K, ...] class-major, query [E, Q, ...] -> [E, Q, N]."""
        return self.relation_outputs(support, query)["logits"]

    # -- training
    def loss(self, support_features: Tensor, query_features: Tensor, episode: TrainEpisode) -> LossOutput:
        """CE(episode logits) + λ_cls·CE(base classifier on every intra frame).

        ``total`` is the reference's per-episode loss × BATCH_SIZE (4): the reference divides by 4 and
        accumulates 4 episodes per GPU over 4 GPUs, so ``total / episodes_per_step`` (16) gives its gradient.
        """
        num_support = support_features.shape[0]
        intra = torch.relu(self.intra_relation(torch.cat([support_features, query_features])))
        class_logits = self.base_classifier(intra).flatten(0, 1)  # [(N*K+Q)*T, classes]
        base_labels = torch.cat([episode.support_base_labels, episode.query_base_labels])
        base_labels = base_labels.repeat_interleave(intra.shape[1])
        encoded = self._encode_intra(intra)
        support_reps = {key: value[:num_support] for key, value in encoded.items()}
        support = support_to_episode(support_reps, episode.way, episode.shot)
        query = add_episode_axis({key: value[num_support:] for key, value in encoded.items()})
        logits = self.logits(support, query)[0]
        ce_episode = F.cross_entropy(logits, episode.query_labels)
        ce_base = F.cross_entropy(class_logits, base_labels)
        total = ce_episode + self.options.classification_weight * ce_base
        terms = {"ce_episode": ce_episode, "ce_base_class_per_frame": ce_base}
        return LossOutput(total=total, terms=terms, logits=logits)

    # -- reference checkpoints
    def reference_key_map(self) -> dict[str, str]:
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
              batch_size_per_task: int = 4, sampler: str = "molo-segment",
              position: tuple[float, float] | None = None) -> Recipe:
    """One released ``configs/projects/hyrsm/<folder>/HyRSM_<name>_1shot_v1.yaml`` (values and their lines)."""
    path = f"configs/projects/hyrsm/{folder}/HyRSM_{name}_1shot_v1.yaml"
    config = ReleasedConfig(HYRSM_REPO, path, lines)
    options = {"classification_weight": (classification, "USE_CLASSIFICATION_VALUE")}
    if position:
        options.update(position_a=(position[0], "POSITION_A"), position_b=(position[1], "POSITION_B"))
    return molo_family_recipe(
        config, lr=lr, warmup_start_lr=warmup_from, steps_iter=steps_iter, steps=steps, lrs=lrs, num_train_tasks=tasks,
        batch_size_per_task=batch_size_per_task, val_fre_iter=val_fre_iter,
        query_per_class=HYRSM_TRAIN_QUERIES_BY_SHOT[1], frame_sampler=sampler, head_options=options,
        train_queries_by_shot=HYRSM_TRAIN_QUERIES_BY_SHOT,
        queries_by_shot_source=f"{HYRSM_REPO} configs/projects/hyrsm/{folder}/HyRSM_{name}_{{1..5}}shot_v1.yaml "
                               "QUERY_PER_CLASS 7/6/5/4/3",
    )


_SSV2_FULL = _released(
    "ssv2_full", "SSv2_Full", dict(BASE_LR=57, WARMUP_START_LR=66, STEPS_ITER=59, STEPS=60, LRS=61, NUM_TRAIN_TASKS=16,
                                   VAL_FRE_ITER=18, BATCH_SIZE_PER_TASK=20, QUERY_PER_CLASS=14, SAMPLING_RATE=44,
                                   USE_CLASSIFICATION_VALUE=7),
    lr=1e-4, warmup_from=2e-5, steps_iter=3000, steps=(0, 6, 9), lrs=(1, 0.1, 0.01), tasks=40_000, val_fre_iter=1000,
    classification=0.6)
_KINETICS = _released(
    "kinetics100", "K100", dict(BASE_LR=61, WARMUP_START_LR=70, STEPS_ITER=63, STEPS=64, LRS=65, NUM_TRAIN_TASKS=20,
                                VAL_FRE_ITER=22, BATCH_SIZE_PER_TASK=24, QUERY_PER_CLASS=18, SAMPLING_RATE=48,
                                USE_CLASSIFICATION_VALUE=8, POSITION_A=10, POSITION_B=11),
    lr=2.2e-5, warmup_from=5e-6, steps_iter=100, steps=(0, 4, 6, 9), lrs=(1, 0.5, 0.1, 0.05), tasks=1200,
    val_fre_iter=50, classification=0.4, sampler="molo-kinetics", position=(2048.0, 0.01))

HYRSM_RECIPES = {
    "ssv2-full": _SSV2_FULL,
    "ssv2-small": _released(
        "ssv2_small", "SSv2_Small", dict(BASE_LR=60, WARMUP_START_LR=69, STEPS_ITER=62, STEPS=63, LRS=64,
                                         NUM_TRAIN_TASKS=19, VAL_FRE_ITER=21, BATCH_SIZE_PER_TASK=23, QUERY_PER_CLASS=17,
                                         SAMPLING_RATE=47, USE_CLASSIFICATION_VALUE=8),
        lr=1e-4, warmup_from=2e-5, steps_iter=1500, steps=(0, 4, 8), lrs=(1, 0.1, 0.01), tasks=20_000,
        val_fre_iter=1000, classification=0.15),
    "kinetics100-molo": _KINETICS,
    "kinetics100": adopted(_KINETICS, "HyRSM trained and published on the MoLo/HyRSM Kinetics list "
                           "(kinetics100-molo); the same config on the CMN list"),
    "ucf101": _released(
        "ucf101", "UCF101", dict(BASE_LR=60, WARMUP_START_LR=69, STEPS_ITER=62, STEPS=63, LRS=64, NUM_TRAIN_TASKS=18,
                                 VAL_FRE_ITER=20, BATCH_SIZE_PER_TASK=22, QUERY_PER_CLASS=16, SAMPLING_RATE=46,
                                 USE_CLASSIFICATION_VALUE=8),
        lr=5e-5, warmup_from=1e-5, steps_iter=700, steps=(0, 3, 5, 7), lrs=(1, 0.5, 0.1, 0.01), tasks=2500,
        val_fre_iter=100, classification=0.15),
    "hmdb51": _released(
        "hmdb51", "HMDB51", dict(BASE_LR=61, WARMUP_START_LR=70, STEPS_ITER=63, STEPS=64, LRS=65, NUM_TRAIN_TASKS=18,
                                 VAL_FRE_ITER=20, BATCH_SIZE_PER_TASK=22, QUERY_PER_CLASS=16, SAMPLING_RATE=46,
                                 USE_CLASSIFICATION_VALUE=8),
        lr=5e-5, warmup_from=1e-5, steps_iter=300, steps=(0, 2, 3, 7), lrs=(1, 0.5, 0.1, 0.01), tasks=2000,
        val_fre_iter=50, classification=0.15, batch_size_per_task=2),
    "finegym": adopted(_SSV2_FULL, "fsar-bench's choice for finegym (no reference trained on FineGym): the "
                       "SSv2-Full config, the other fine-grained motion benchmark"),
    "synthetic": synthetic_recipe(
        train_queries_per_class=HYRSM_TRAIN_QUERIES_BY_SHOT[1], train_queries_by_shot=dict(HYRSM_TRAIN_QUERIES_BY_SHOT),
        head_options={"classification_weight": 0.6},
        notes="Synthetic (small CNN, d=128, CPU): Adam lr 1e-3, 600 iterations of one episode each (no accumulation, "
        "no schedule), the reference's 7/6/5/4/3 train queries per class, λ_cls 0.6 (SSv2-Full), 8 heads of d/8; "
        "val (200 episodes) every 100 iterations; no augmentation (never flipped: synthetic has mirror-pair classes)",
    ),
}

HYRSM_NOTES = """\
Recipes: the released HyRSM configs (alibaba-mmai-research/HyRSM@82100b6 configs/projects/hyrsm/*/
HyRSM_*_1shot_v1.yaml; the 2-5-shot files differ only in SHOT, QUERY_PER_CLASS and the head class), every value
with its file and line (`fsar-bench recipe hyrsm --dataset D`, docs/recipes.md). Counts are episodes: one
reference iteration is 4 episodes (4 GPUs, one episode each); the optimizer steps every BATCH_SIZE_PER_TASK
iterations (4: 16 episodes; HMDB51 2: 8 episodes). Adam with weight decay 1e-3 (the base config's
OPTIMIZER.WEIGHT_DECAY; the configs' SOLVER.WEIGHT_DECAY is never read), 0 for "bn"/"norm" parameters; the
SOLVER schedule as the released loop runs it (epoch = it//STEPS_ITER + it/STEPS_ITER: warm-up over the first
STEPS_ITER iterations from WARMUP_START_LR, a step at s fires at STEPS_ITER·ceil(s/2); `schedule =
"as-configured"` gives the nominal one). Training queries per class by shot 7/6/5/4/3. Training clips: squashed to
256x256, random 224 crop; queries also flipped and colour-jittered (SUPPORT_QUERY_DIFF). λ_cls per dataset and
Kinetics' positional encoding A=2048, B=0.01 are head options. Kinetics: HyRSM's own list (kinetics100-molo;
published numbers are keyed to it).
Reference quirks, documented and not copied:
- validation: the reference "validates" on the test split every VAL_FRE_ITER and keeps the best; we select on
  the val split (>= 1,000 episodes, every max(VAL_FRE_ITER x 4, 400) episodes), never reading test in training.
- test frames are sampled randomly for SSv2/UCF101/HMDB51 in the reference; ours are segment centres.
Loss: total = CE + λ_cls·CE_base_per_frame; the reference's per-episode loss is total/4 (its BATCH_SIZE), summed
over 4 accumulated episodes and averaged over 4 GPUs, so total/episodes_per_step (16) reproduces its gradient.
The 1-shot class uses every support video as a set item, the 5-shot class (K>1) class prototypes: option
set_items="auto" does both.
Cached encoding per video: frames [T, d] + time-mean [d] + its set-attention q/k/v [3, d] = (T+4)·d floats
(12·d at T=8; 96 KiB at d=2048)."""

CARDS = (
    MethodCard(
        name="hyrsm",
        head=HyrsmHead,
        summary="intra/inter-relation transformers, query-specific features, Bi-MHM set matching",
        paper="Wang et al., Hybrid Relation Guided Set Matching for Few-shot Action Recognition, CVPR 2022 "
        "(arXiv 2204.13423)",
        reference_code=(
            "alibaba-mmai-research/HyRSM@82100b62b34f9efa440b27f2591e10e2d370d8aa models/base/few_shot.py "
            "(CNN_HyRSM_1shot, CNN_HyRSM_5shot; byte-identical in alibaba-mmai-research/MoLo@f7f73b6)"
        ),
        published={
            ("ssv2-full", 1): 54.3, ("ssv2-full", 5): 69.0, ("kinetics100-molo", 5): 86.1, ("ssv2-small", 5): 56.1,
            ("ucf101", 5): 94.7, ("hmdb51", 5): 76.0,
        },
        published_unconfirmed={("kinetics100-molo", 1): 73.7, ("ssv2-small", 1): 40.6, ("ucf101", 1): 83.9, ("hmdb51", 1): 60.3},
        published_source="MoLo paper tables (arXiv 2304.00946); confirmed cells checked against a second public source",
        recipes=HYRSM_RECIPES,
        preprocess={"resnet50": MOLO_RESNET50_PREPROCESS},
        test_options={"heads": 4},
        notes=HYRSM_NOTES,
        reference_checkpoint=MOLO_REPOSITORY_CHECKPOINT,
    ),
)
