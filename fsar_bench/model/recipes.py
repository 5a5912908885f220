"""Training recipes and frame preprocessing on the method cards, and the two recipe factories every card uses.

* ``synthetic_recipe(notes, **changes)``: the shared CPU budget on the built-in ``synthetic`` benchmark
  (Adam, lr 1e-3, 600 episodes of one step each, 5 train queries per class, val of 200 episodes every 100).
  A method states only what it changes, and why, in ``notes``.
* ``reference_recipe(...)``: a released reference config (lr, iterations, STEPS_ITER / STEPS / LRS schedule,
  episodes per iteration, iterations per optimizer step) -> a Recipe counted in episodes, schedule as released.
  The two reference families build theirs with ``fsar_bench.model.reference_recipes`` (values with sources).

Usage (plugins import these names from ``fsar_bench.api``)::

    SYNTHETIC = synthetic_recipe("Synthetic: the shared budget; key size 128 (= d)", head_options={"out_dim": 128})
    TRX = reference_recipe(optimizer="sgd", momentum=0.0, lr=1e-3, iterations=100_000, iterations_per_step=16)
    SSV2 = reference_recipe(lr=1e-4, iterations=40_000, steps_iter=3000, steps=(0, 6, 9),
                            relative_lrs=(1, 0.1, 0.01), warmup_start_lr=2e-5, weight_decay=5e-5,
                            val_every=1000, episodes_per_iteration=4, iterations_per_step=4)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Recipe:
    """A training recipe. ``iterations`` counts episodes; the optimizer steps every ``episodes_per_step``.

    ``lr_steps`` are iteration counts at which the lr is multiplied by ``lr_decay`` (or, when
    ``lr_factors`` is given, by ``lr_factors[i]`` at ``lr_steps[i]``); ``warmup`` iterations ramp it
    linearly from ``warmup_start_lr`` (the reference configs' WARMUP_START_LR; default 0).
    ``head_options`` are passed to the head as options (per-dataset constants and loss weights: a loss weight
    is a head option, declared with ``loss_weight`` in the head's options dataclass).
    ``train_queries_by_shot`` overrides ``train_queries_per_class`` per shot, and ``head_options_by_shot`` adds to
    (or replaces in) ``head_options`` per shot (e.g. TEAM's 5-shot scripts use more pattern tokens):
    ``recipe.head_options_at(shot)`` is what a model of that shot is built with.
    ``val_every``/``val_episodes`` control checkpoint selection on the val split.
    Training clips: ``frame_sampler`` (``fsar_bench.data.sampling.FRAME_SAMPLERS``), ``resize``/``resize_to``/
    ``antialias`` (also the test-time resize of this dataset), ``random_crop`` (else centre), ``flip`` and
    ``color_jitter`` ("none", "queries" or "all" clips) with ``jitter`` = (brightness, contrast, saturation, hue,
    grayscale probability).
    Released schedules (``steps_iter`` > 0): ``steps_iter``, ``steps``, ``lrs``, ``warmup_epochs``, ``warmup_start_lr``
    in reference iterations of ``episodes_per_iteration`` episodes, evaluated as the released code runs them
    (``schedule`` "as-run") or as configured (``fsar_bench.schedule``). ``no_decay``: name parts of parameters
    without weight decay. ``sources`` says where each value comes from (reference file and line, or why we chose
    it); it is shown by ``fsar-bench recipe`` and is not part of what is trained.
    """

    optimizer: str = "adam"  # "adam" | "sgd"
    lr: float = 1e-3
    iterations: int = 1000
    episodes_per_step: int = 1
    train_queries_per_class: int = 5
    weight_decay: float = 0.0
    momentum: float = 0.9
    warmup: int = 0
    warmup_start_lr: float = 0.0
    lr_steps: tuple[int, ...] = ()
    lr_decay: float = 0.1
    lr_factors: tuple[float, ...] = ()
    head_options: Mapping[str, Any] = field(default_factory=dict)
    train_queries_by_shot: Mapping[int, int] = field(default_factory=dict)
    head_options_by_shot: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)
    val_every: int = 100
    val_episodes: int = 200
    notes: str = ""
    # -- training clips (fsar_bench/data/sampling.py, fsar_bench/data/transforms.py)
    frame_sampler: str = "segment-random"
    resize: str = ""  # "squash" | "short-side" | "none"; "": the card's preprocessing for the backbone
    resize_to: int = 0
    antialias: bool = True
    random_crop: bool = False
    flip: str = "none"  # "none" | "queries" | "all"
    color_jitter: str = "none"  # "none" | "queries" | "all"
    jitter: tuple[float, ...] = (0.5, 0.5, 0.5, 0.25, 0.3)  # brightness, contrast, saturation, hue, grayscale p
    # -- released schedules and optimiser groups (fsar_bench/schedule.py)
    schedule: str = "as-run"  # "as-run" | "as-configured"; used when steps_iter > 0
    steps_iter: int = 0  # SOLVER.STEPS_ITER (reference iterations); 0: the simple warmup/lr_steps form
    steps: tuple[int, ...] = ()  # SOLVER.STEPS (epochs)
    lrs: tuple[float, ...] = ()  # SOLVER.LRS (relative to lr)
    warmup_epochs: int = 1  # SOLVER.WARMUP_EPOCHS
    episodes_per_iteration: int = 1  # episodes per reference iteration (its GPUs, one episode each)
    no_decay: tuple[str, ...] = ()  # parameter-name parts with weight decay 0 (reference names)
    nesterov: bool = False
    sources: Mapping[str, str] = field(default_factory=dict)  # field -> where its value comes from (file:line)

    def train_queries(self, shot: int) -> int:
        """Training queries per class at this shot."""
        return int(self.train_queries_by_shot.get(shot, self.train_queries_per_class))

    def head_options_at(self, shot: int) -> dict[str, Any]:
        """The head options a model trained and evaluated at ``shot`` is built with."""
        return {**self.head_options, **self.head_options_by_shot.get(shot, {})}

    def lr_multiplier(self, iteration: float) -> float:
        """Product of the decays whose step has passed (before warm-up)."""
        factor = 1.0
        for index, step in enumerate(self.lr_steps):
            if iteration >= step:
                factor *= self.lr_factors[index] if self.lr_factors else self.lr_decay
        return factor


SYNTHETIC_BUDGET: Mapping[str, Any] = {
    "optimizer": "adam",
    "lr": 1e-3,
    "iterations": 600,
    "episodes_per_step": 1,
    "train_queries_per_class": 5,
    "val_every": 100,
    "val_episodes": 200,
}
"""What every method gets on ``synthetic`` (small CNN, d=128, CPU) unless its card says otherwise."""


def synthetic_recipe(notes: str, **changes: Any) -> Recipe:
    """The shared ``synthetic`` budget with a method's ``changes`` (any Recipe field); ``notes`` say why."""
    return Recipe(**{**SYNTHETIC_BUDGET, **changes}, notes=notes)


def reference_recipe(
    *,
    lr: float,
    iterations: int,
    steps_iter: int = 0,
    steps: tuple[int, ...] = (0,),
    relative_lrs: tuple[float, ...] = (1.0,),
    warmup_start_lr: float = 0.0,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    val_every: int = 100,
    episodes_per_iteration: int = 1,
    iterations_per_step: int = 1,
    train_queries_per_class: int = 5,
    train_queries_by_shot: Mapping[int, int] | None = None,
    head_options: Mapping[str, Any] | None = None,
    val_episodes: int = 1000,
    optimizer: str = "adam",
    notes: str = "",
    **fields: Any,
) -> Recipe:
    """A released config -> Recipe counted in episodes, its schedule kept as released.

    The config's ``SOLVER``: ``STEPS_ITER`` (one "epoch" of the schedule, in reference iterations), ``STEPS``
    (epochs at which the relative lr changes; STEPS[0] = 0), ``LRS`` (``relative_lrs``: lr relative to BASE_LR from
    each step on), one warm-up epoch from ``warmup_start_lr`` (``steps_iter`` 0: a constant lr, no warm-up); they
    are evaluated as the released code runs them (``fsar_bench.schedule``, ``schedule`` "as-run"). One reference
    iteration is ``episodes_per_iteration`` episodes (one per GPU); ``iterations_per_step`` is the config's
    BATCH_SIZE_PER_TASK; ``iterations`` and ``val_every`` are in reference iterations. ``fields``: any other
    Recipe field (transforms, ``sources``, ...).
    """
    scale = episodes_per_iteration
    return Recipe(
        optimizer=optimizer,
        lr=lr,
        iterations=iterations * scale,
        episodes_per_step=iterations_per_step * scale,
        train_queries_per_class=train_queries_per_class,
        train_queries_by_shot=dict(train_queries_by_shot or {}),
        weight_decay=weight_decay,
        momentum=momentum,
        warmup_start_lr=warmup_start_lr if steps_iter else 0.0,
        steps_iter=steps_iter,
        steps=tuple(steps) if steps_iter else (),
        lrs=tuple(relative_lrs) if steps_iter else (),
        episodes_per_iteration=scale,
        head_options=dict(head_options or {}),
        val_every=val_every * scale,
        val_episodes=val_episodes,
        notes=notes,
        **fields,
    )


@dataclass(frozen=True)
class Preprocess:
    """Frame preprocessing. ``resize``: "short-side" keeps aspect, "squash" resizes both sides.

    ``resize_to`` 0 means no resize; ``crop`` is the centre crop (0: none); mean/std None means
    no normalisation (pixels in [0, 1]).
    """

    resize: str = "short-side"
    resize_to: int = 0
    crop: int = 0
    mean: tuple[float, float, float] | None = (0.45, 0.45, 0.45)
    std: tuple[float, float, float] | None = (0.225, 0.225, 0.225)
    antialias: bool = True


PERRETT_RESNET50_PREPROCESS = Preprocess(resize="short-side", resize_to=256, crop=224, mean=None, std=None)
"""OTAM/TSN/TRX (Perrett library and official TRX): short side 256, centre crop 224, no normalisation."""
MOLO_RESNET50_PREPROCESS = Preprocess(resize="squash", resize_to=256, crop=224)
"""MoLo/HyRSM: squash to 256x256, centre crop 224, normalise with mean 0.45, std 0.225."""
