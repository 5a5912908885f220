"""Recipes of the two reference code bases, every value with the file and line it comes from.

* ``molo_family_recipe``: the MoLo repository's trainer, shared by MoLo, HyRSM, HyRSM++ and CLIP-FSAR (and
  HyRSM's own repository, a copy): Adam, weight decay 1e-3 except "bn"/"norm" parameters, the ``SOLVER`` schedule
  as run, 4 GPUs of one episode per iteration, frames squashed to 256x256 and randomly cropped, queries flipped and
  colour-jittered (``SUPPORT_QUERY_DIFF``). A method passes its config's per-dataset values and their lines.
* ``perrett_family_recipe``: the Perrett library (OTAM, TSN) and the official TRX: SGD lr 1e-3, constant, resize
  256 (frames squashed beforehand for SSv2/UCF101/HMDB51 by fsar-lib's extraction), random flip and crop.
* ``adopted``: a recipe reused on another benchmark (e.g. the MoLo family's Kinetics config on the CMN list), its
  sources saying so.

Validation cadence and size are fsar-bench's (the references validate on the test split): at least 1,000 val
episodes, every ``max(reference cadence, 400)`` episodes (MoLo family) or 1/50 of the run (Perrett family).

Usage (plugins import these from ``fsar_bench.api``)::

    config = ReleasedConfig(MOLO_REPO, "configs/projects/MoLo/ssv2_full/MoLo_SSv2_Full_1shot_v1.yaml",
                            {"BASE_LR": 63, "WARMUP_START_LR": 72, ...})
    recipe = molo_family_recipe(config, lr=1e-4, warmup_start_lr=2e-5, steps_iter=6000, steps=(0, 6, 9), ...)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fsar_bench.model.recipes import Recipe, reference_recipe

MOLO_REPO = "alibaba-mmai-research/MoLo@f7f73b6"
HYRSM_REPO = "alibaba-mmai-research/HyRSM@82100b6"
PERRETT_LIB = "tobyperrett/few-shot-action-recognition@3687f3a"
TRX_REPO = "tobyperrett/trx@390c20a"
MOLO_EPISODES_PER_ITERATION = 4
MIN_VAL_EVERY = 400
VAL_EPISODES = 1000
PERRETT_VAL_LOOKS = 50


@dataclass(frozen=True)
class ReleasedConfig:
    """A released config file and the line of each key a recipe takes from it."""

    repo: str
    path: str
    lines: Mapping[str, int]

    def source(self, *keys: str, note: str = "") -> str:
        """"repo path:line KEY" (several keys: their lines joined), with an optional note."""
        where = ",".join(str(self.lines[key]) for key in keys)
        return f"{self.repo} {self.path}:{where} {'/'.join(keys)}" + (f" ({note})" if note else "")


def _molo_repo_sources(repo: str) -> dict[str, str]:
    """The fields every config of the MoLo-repository trainer shares, with their sources."""
    return {
        "optimizer": f"{repo} configs/pool/run/training/finetune.yaml:54 OPTIMIZER.OPTIM_METHOD (Adam, betas (0.9, 0.999))",
        "weight_decay": f"{repo} configs/pool/run/training/finetune.yaml:51 OPTIMIZER.WEIGHT_DECAY (the configs' "
                        "SOLVER.WEIGHT_DECAY is never read)",
        "no_decay": f"{repo} models/utils/optimizer.py:57-72 (BN.WEIGHT_DECAY 0 for names holding these)",
        "episodes_per_iteration": f"{repo} NUM_GPUS 4 in every released config, one episode per GPU",
        "warmup_epochs": f"{repo} SOLVER.WARMUP_EPOCHS 1 in every released config",
        "schedule": f"{repo} runs/train_net_few_shot.py:59,66,95 (epoch = it//STEPS_ITER + it/STEPS_ITER)",
        "resize": f"{repo} DATA.TRAIN_JITTER_SCALES [256, 256] (datasets/utils/transformations.py "
                  "KineticsResizedCropFewshot: interpolate to 256x256)",
        "resize_to": f"{repo} DATA.TRAIN_JITTER_SCALES [256, 256]",
        "antialias": f"{repo} datasets/utils/transformations.py KineticsResizedCropFewshot (F.interpolate, bilinear)",
        "random_crop": f"{repo} datasets/utils/transformations.py KineticsResizedCropFewshot._get_random_crop",
        "flip": f"{repo} datasets/base/ssv2_few_shot.py:246,530 (AUGMENTATION.SUPPORT_QUERY_DIFF: queries only)",
        "color_jitter": f"{repo} datasets/base/ssv2_few_shot.py:246,567 (AUGMENTATION.SUPPORT_QUERY_DIFF: queries only)",
        "jitter": f"{repo} configs/pool/base.yaml:140-147 AUGMENTATION (CONSISTENT, SHUFFLE, GRAY_FIRST)",
        "val_episodes": "fsar-bench: >= 1,000 val episodes (the reference validates on 10,000 test tasks)",
    }


def molo_family_recipe(
    config: ReleasedConfig,
    *,
    lr: float,
    warmup_start_lr: float,
    steps_iter: int,
    steps: tuple[int, ...],
    lrs: tuple[float, ...],
    num_train_tasks: int,
    batch_size_per_task: int,
    val_fre_iter: int,
    query_per_class: int,
    frame_sampler: str,
    head_options: Mapping[str, tuple[Any, str]] | None = None,
    train_queries_by_shot: Mapping[int, int] | None = None,
    queries_by_shot_source: str = "",
    query_augmentation: bool = True,
    notes: str = "",
) -> Recipe:
    """One released MoLo-repository config -> Recipe with sources. ``head_options`` maps an option to (value,
    config key); ``frame_sampler`` is "molo-segment" (``SAMPLING_RATE`` 50) or "molo-kinetics" (35);
    ``query_augmentation`` False when the config does not set ``SUPPORT_QUERY_DIFF`` (queries then get the
    supports' pipeline: no flip, no colour)."""
    options = dict(head_options or {})
    val_every = max(val_fre_iter * MOLO_EPISODES_PER_ITERATION, MIN_VAL_EVERY)
    sources = _molo_repo_sources(config.repo)
    sources.update({
        "lr": config.source("BASE_LR"),
        "warmup_start_lr": config.source("WARMUP_START_LR"),
        "steps_iter": config.source("STEPS_ITER"),
        "steps": config.source("STEPS"),
        "lrs": config.source("LRS"),
        "iterations": config.source("NUM_TRAIN_TASKS", note=f"x{MOLO_EPISODES_PER_ITERATION} episodes"),
        "episodes_per_step": config.source("BATCH_SIZE_PER_TASK", note=f"x{MOLO_EPISODES_PER_ITERATION} episodes"),
        "train_queries_per_class": config.source("QUERY_PER_CLASS"),
        "frame_sampler": config.source("SAMPLING_RATE", note="datasets/base/base_dataset.py:493-528"),
        "val_every": f"fsar-bench: {config.source('VAL_FRE_ITER')} x{MOLO_EPISODES_PER_ITERATION} episodes, "
                     f"at least {MIN_VAL_EVERY}",
    })
    if options:
        sources["head_options"] = config.source(*[key for _, key in options.values()])
    if train_queries_by_shot:
        sources["train_queries_by_shot"] = queries_by_shot_source or config.source("QUERY_PER_CLASS")
    augmentation = {"flip": "queries", "color_jitter": "queries"} if query_augmentation else {}
    if not query_augmentation:
        sources["flip"] = sources["color_jitter"] = f"{config.repo} {config.path}: no AUGMENTATION.SUPPORT_QUERY_DIFF " \
                                                    "(queries get the supports' pipeline)"
    recipe = reference_recipe(
        optimizer="adam", lr=lr, iterations=num_train_tasks, steps_iter=steps_iter, steps=steps, relative_lrs=lrs,
        warmup_start_lr=warmup_start_lr, weight_decay=1e-3, val_every=val_every // MOLO_EPISODES_PER_ITERATION,
        episodes_per_iteration=MOLO_EPISODES_PER_ITERATION, iterations_per_step=batch_size_per_task,
        train_queries_per_class=query_per_class, train_queries_by_shot=train_queries_by_shot,
        head_options={name: value for name, (value, _) in options.items()}, val_episodes=VAL_EPISODES, notes=notes,
        no_decay=("bn", "norm", "embd", "cls_token"), warmup_epochs=1, schedule="as-run", frame_sampler=frame_sampler,
        resize="squash", resize_to=256, antialias=False, random_crop=True, jitter=(0.5, 0.5, 0.5, 0.25, 0.3),
        sources=sources, **augmentation,
    )
    return dataclasses.replace(recipe, val_every=val_every)


PERRETT_SOURCES: Mapping[str, Mapping[str, str]] = {
    PERRETT_LIB: {
        "optimizer": "run.py:88 --opt sgd",
        "lr": "run.py:71 --learning_rate 0.001 (MultiStepLR milestone 1e6 at run.py:43,92: constant)",
        "momentum": "run.py:41 torch.optim.SGD(params, lr): no momentum",
        "weight_decay": "run.py:41 torch.optim.SGD(params, lr): no weight decay",
        "train_queries_per_class": "run.py:79 --query_per_class 5",
        "iterations": "run.py:75 --training_iterations 60000",
        "episodes_per_step": "run.py:72 --tasks_per_batch 16",
        "resize_to": "video_reader.py:102 Resize(256)",
        "antialias": "videotransforms/functional.py:55-59 (PIL bilinear)",
        "flip": "video_reader.py:107 RandomHorizontalFlip (every training clip)",
        "random_crop": "video_reader.py:108 RandomCrop(224)",
        "color_jitter": "video_reader.py:96-116 setup_transforms (no colour jitter)",
        "frame_sampler": "video_reader.py:143 linspace(0, n-1, 8) at train and test",
        "val_episodes": "run.py:82 --num_val_tasks 1000",
        "squash": "scripts/extract_ssv2.py, extract_ucf.py, extract_hmdb.py:7-8 (ffmpeg scale=256:256 before Resize(256))",
        "short-side": "video_reader.py:102 Resize(256) on the extracted frames (short side)",
    },
    TRX_REPO: {
        "optimizer": "run.py:97 --opt sgd",
        "lr": "run.py:80 --learning_rate 0.001 (MultiStepLR milestone 1e6 at run.py:52,106: constant)",
        "momentum": "run.py:49 torch.optim.SGD(params, lr): no momentum",
        "weight_decay": "run.py:49 torch.optim.SGD(params, lr): no weight decay",
        "train_queries_per_class": "run.py:88 --query_per_class 5",
        "iterations": "run.py:84 --training_iterations 100020",
        "episodes_per_step": "run.py:81 --tasks_per_batch 16",
        "resize_to": "video_reader.py:88 Resize(256)",
        "antialias": "videotransforms (PIL bilinear)",
        "flip": "video_reader.py:93 RandomHorizontalFlip (every training clip)",
        "random_crop": "video_reader.py:94 RandomCrop(224)",
        "color_jitter": "video_reader.py:80-100 setup_transforms (no colour jitter)",
        "frame_sampler": "video_reader.py:248-271 (linspace with both ends jittered by up to 5 frames)",
        "val_episodes": "fsar-bench: >= 1,000 val episodes (TRX tests at fixed iterations, README.md:40)",
        "squash": "run.py:131 somethingsomethingv2_256x256q5_7l8.zip (frames 256x256, 8 per video)",
        "short-side": "run.py:134-140 kinetics_256q5, UCF-101_320, hmdb51_256q5 zips (not squashed like SSv2's "
                      "256x256: inferred from the names) + video_reader.py:88 Resize(256)",
    },
}


def perrett_family_recipe(
    repo: str,
    *,
    resize: str,
    frame_sampler: tuple[str, str] | None = None,
    iterations: tuple[int, str] | None = None,
    episodes_per_step: tuple[int, str] | None = None,
    notes: str = "",
) -> Recipe:
    """The Perrett library's (``PERRETT_LIB``) or official TRX's (``TRX_REPO``) trainer on one benchmark:
    ``resize`` "squash" or "short-side"; (value, source) pairs override the repository's defaults."""
    facts = PERRETT_SOURCES[repo]
    sources = {key: f"{repo} {text}" for key, text in facts.items() if key not in ("squash", "short-side")}
    sources["resize"] = f"{repo} {facts[resize]}"
    sampler, sampler_source = frame_sampler or ("trx-jitter" if repo == TRX_REPO else "evenly-spaced", "")
    total, total_source = iterations or (100_020 if repo == TRX_REPO else 60_000, "")
    per_step, per_step_source = episodes_per_step or (16, "")
    for key, text in (("frame_sampler", sampler_source), ("iterations", total_source), ("episodes_per_step", per_step_source)):
        if text:
            sources[key] = text
    val_every = max(total // PERRETT_VAL_LOOKS // 100 * 100, 100)
    sources["val_every"] = f"fsar-bench: 1/{PERRETT_VAL_LOOKS} of the run (the reference validates at --val_iters, none by default)"
    return Recipe(
        optimizer="sgd", lr=1e-3, momentum=0.0, weight_decay=0.0, iterations=total, episodes_per_step=per_step,
        train_queries_per_class=5, frame_sampler=sampler, resize=resize, resize_to=256, antialias=True,
        random_crop=True, flip="all", val_every=val_every, val_episodes=VAL_EPISODES, notes=notes, sources=sources,
    )


def adopted(recipe: Recipe, why: str) -> Recipe:
    """``recipe`` used on another benchmark: every source says so (``why``), the notes too."""
    sources = {key: f"{text} [{why}]" for key, text in recipe.sources.items()}
    return dataclasses.replace(recipe, sources=sources, notes=f"{why}. {recipe.notes}".strip())
