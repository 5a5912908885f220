"""HyRSM: hybrid relation guided set matching (Wang et al., CVPR 2022).

Per video (``encode``, cached): positional encoding, pre-norm self-attention over the T frames
(intra-relation) and ReLU, then the frame half of the 1×1 fusion conv. Per episode (``logits``):
multi-head attention over the set {N support items, the query} of time-means (inter-relation), the token
half of the fusion conv, and Bi-MHM matching. Semantics: ``tests/data/parity/README.md`` (HyRSM).
The head's code is ``fsar_bench/model/hyrsm_family.py``, shared with HyRSM++ (``methods/hyrsmpp.py``); this file
holds HyRSM's loss weight, recipes and card.

Usage::

    from fsar_bench.api import HeadConfig, support_to_episode, add_episode_axis
    from methods.hyrsm import HyrsmHead

    head = HyrsmHead(HeadConfig(dim=2048, frames=8, num_base_classes=64))
    support = support_to_episode(head.encode(support_features), way=5, shot=1)  # [N*K, T, d] class-major
    logits = head.logits(support, add_episode_axis(head.encode(query_features)))  # [1, Q, N]
"""

from __future__ import annotations

from dataclasses import dataclass

from fsar_bench.api import (
    MOLO_REPOSITORY_CHECKPOINT,
    MOLO_RESNET50_PREPROCESS,
    HYRSM_REPO,
    MethodCard,
    Recipe,
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
class HyrsmOptions(HyrsmFamilyOptions):
    """HyRSM's sizes and constants (``HyrsmFamilyOptions``: heads, positional encoding, dropouts, set_items) and
    its loss weight (the reference's defaults; recipes change some per dataset)."""

    classification_weight: float = loss_weight(0.6)  # λ_cls


# --------------------------------------------------------------------------- head
class HyrsmHead(HyrsmFamilyHead):
    """HyRSM head over pooled frame features ``[V, T, d]``: ``HyrsmFamilyHead`` as it is (modules, cached reps
    ``{"frames", "mean", "set_qkv"}``, logits, reference keys), trained with CE + λ_cls·CE_base_per_frame."""

    options_class = HyrsmOptions
    method_name = "hyrsm"


# --------------------------------------------------------------------------- recipes
def _released(folder: str, name: str, lines: dict[str, int], *, lr: float, warmup_from: float, steps_iter: int,
              steps: tuple[int, ...], lrs: tuple[float, ...], tasks: int, val_fre_iter: int, classification: float,
              batch_size_per_task: int = 4, sampler: str = "molo-segment",
              position: tuple[float, float] | None = None) -> Recipe:
    """One released ``configs/projects/hyrsm/<folder>/HyRSM_<name>_1shot_v1.yaml`` (values and their lines)."""
    options = {"classification_weight": (classification, "USE_CLASSIFICATION_VALUE")}
    if position:
        options.update(position_a=(position[0], "POSITION_A"), position_b=(position[1], "POSITION_B"))
    return hyrsm_released_recipe(
        HYRSM_REPO, f"configs/projects/hyrsm/{folder}/HyRSM_{name}_1shot_v1.yaml", lines, options, lr=lr,
        warmup_from=warmup_from, steps_iter=steps_iter, steps=steps, lrs=lrs, tasks=tasks, val_fre_iter=val_fre_iter,
        batch_size_per_task=batch_size_per_task, sampler=sampler, queries_note=" 7/6/5/4/3",
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
