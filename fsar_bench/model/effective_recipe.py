"""The recipe a run trains with, resolved from the card and bench.toml, with where each value comes from.

Layers, later wins: ``Recipe`` defaults < the card's recipe for the dataset < bench.toml
``[methods.NAME.recipes.DATASET]`` < bench.toml ``[methods.NAME]`` (every dataset). A dataset without a card recipe
and without a ``[methods.NAME.recipes.DATASET]`` table is a usage error (exit 2) naming method, dataset and the table
to write: never a silent default. Only ``synthetic`` (not a real benchmark) may fall back to the card's
``"default"`` recipe.

Usage::

    effective = resolve_recipe(card, "ssv2-full", config.method_overrides("molo"))
    effective.recipe.lr              # 1e-4
    effective.sources["lr"]          # "configs/projects/MoLo/ssv2_full/MoLo_SSv2_Full_1shot_v1.yaml:63 BASE_LR"
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from fsar_bench.api import MethodCard, Recipe
from fsar_bench.config import recipe_with_overrides
from fsar_bench.errors import UsageError

NON_REAL_DATASETS = ("synthetic",)
"""Benchmarks that are not real data: they may use a card's "default" recipe."""
DEFAULT_SOURCE = "fsar-bench default (Recipe)"
UNLISTED_CARD_SOURCE = "card {method}: fsar-bench's choice (see the recipe notes)"
TRAINING_FIELDS = tuple(f.name for f in dataclasses.fields(Recipe) if f.name not in ("notes", "sources"))


@dataclass(frozen=True)
class EffectiveRecipe:
    """A resolved recipe and, for every training field, where its value comes from."""

    method: str
    dataset: str
    recipe: Recipe
    sources: dict[str, str]


def missing_recipe_error(method: str, dataset: str) -> UsageError:
    return UsageError(
        f"method {method!r} has no training recipe for dataset {dataset!r}, and fsar-bench never trains with a "
        f"silent default. Give one in bench.toml:\n"
        f"  [methods.{method}.recipes.{dataset}]\n"
        f"  optimizer = \"adam\"\n  lr = 1e-4\n  iterations = 20000   # episodes\n  episodes_per_step = 16\n"
        f"(any Recipe field; `fsar-bench recipe {method} --dataset <another dataset>` shows a complete one), "
        f"or evaluate a checkpoint trained elsewhere with --checkpoint."
    )


def resolve_recipe(card: MethodCard, dataset: str, method_table: dict[str, Any] | None = None) -> EffectiveRecipe:
    """The effective recipe of ``card`` on ``dataset`` with the ``[methods.NAME]`` table of bench.toml."""
    table = dict(method_table or {})
    per_dataset = dict(table.get("recipes", {}).get(dataset, {}))
    base = card.recipes.get(dataset)
    sources: dict[str, str] = {}
    if base is None and dataset in NON_REAL_DATASETS and "default" in card.recipes:
        base = card.recipes["default"]
    if base is None and not per_dataset:
        raise missing_recipe_error(card.name, dataset)
    if base is None:
        base = Recipe()
        card_label = None
    else:
        card_label = UNLISTED_CARD_SOURCE.format(method=card.name)
    defaults = Recipe()
    for name in TRAINING_FIELDS:
        if name in base.sources:
            sources[name] = base.sources[name]
        elif card_label and getattr(base, name) != getattr(defaults, name):
            sources[name] = card_label
        else:
            sources[name] = DEFAULT_SOURCE
    recipe = recipe_with_overrides(base, per_dataset)
    for name in per_dataset:
        sources[name] = f"bench.toml [methods.{card.name}.recipes.{dataset}] {name}"
    every_dataset = {key: value for key, value in table.items() if key in TRAINING_FIELDS}
    recipe = recipe_with_overrides(recipe, every_dataset)
    for name in every_dataset:
        sources[name] = f"bench.toml [methods.{card.name}] {name}"
    check_recipe(recipe, sources, card.name, dataset)
    return EffectiveRecipe(card.name, dataset, recipe, sources)


def check_recipe(recipe: Recipe, sources: dict[str, str], method: str, dataset: str) -> None:
    """UsageError (exit 2) naming the field, its value and where it was set, for a value training cannot use."""
    from fsar_bench.data.sampling import FRAME_SAMPLERS
    from fsar_bench.data.transforms import APPLY_TO, RESIZE_MODES
    from fsar_bench.schedule import SCHEDULE_MODES

    choices = {"optimizer": ("adam", "sgd"), "schedule": SCHEDULE_MODES, "frame_sampler": FRAME_SAMPLERS,
               "resize": ("", *RESIZE_MODES), "flip": APPLY_TO, "color_jitter": APPLY_TO}
    problems = [f"{name} = {getattr(recipe, name)!r} (from {sources.get(name, '?')}): use one of "
                f"{', '.join(repr(c) for c in allowed)}" for name, allowed in choices.items() if getattr(recipe, name) not in allowed]
    if len(recipe.jitter) != 5:
        problems.append(f"jitter = {recipe.jitter!r} (from {sources.get('jitter', '?')}): give 5 numbers "
                        "(brightness, contrast, saturation, hue, grayscale probability)")
    if recipe.steps_iter and (len(recipe.steps) != len(recipe.lrs) or not recipe.steps or recipe.steps[0] != 0):
        problems.append(f"steps = {recipe.steps!r}, lrs = {recipe.lrs!r}: as the released SOLVER block, STEPS starts at 0 "
                        "and has one LRS entry per step")
    for name in ("iterations", "episodes_per_step", "episodes_per_iteration", "val_every", "val_episodes"):
        if getattr(recipe, name) < 1:
            problems.append(f"{name} = {getattr(recipe, name)!r} (from {sources.get(name, '?')}): must be at least 1")
    if problems:
        raise UsageError(f"recipe of {method!r} on {dataset!r}:\n  " + "\n  ".join(problems))
