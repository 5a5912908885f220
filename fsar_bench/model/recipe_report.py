"""What ``fsar-bench recipe`` prints: every value of an effective recipe with its source, the derived schedule, the
optimiser groups, the frames and the transforms of training and test clips; and docs/recipes.md (every method x
benchmark), generated from the cards so that it cannot drift (tests/test_recipes.py checks the file is current).

Usage::

    rows = recipe_rows(effective, shot=5, backbone="resnet50", card=card)   # [(item, value, source)]
    text = recipes_markdown(registry)                                       # docs/recipes.md
"""

from __future__ import annotations

from fsar_bench.api import MethodCard, Preprocess
from fsar_bench.model.backbones import default_backbone, default_preprocess
from fsar_bench.model.effective_recipe import TRAINING_FIELDS, EffectiveRecipe, resolve_recipe
from fsar_bench.model.network import dataset_preprocess
from fsar_bench.errors import UsageError
from fsar_bench.schedule import decay_points, reference_iterations

DOC_DATASETS = ("ssv2-full", "ssv2-small", "kinetics100", "kinetics100-molo", "ucf101", "hmdb51", "finegym", "synthetic")
"""The benchmarks docs/recipes.md covers, in this order (every real benchmark, then ``synthetic``)."""
DERIVED = "derived (fsar_bench/schedule.py, fsar_bench/data/transforms.py)"


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(_format(v) for v in value) + ")" if value else "()"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_format(v)}" for k, v in value.items()) + "}" if value else "{}"
    return str(value)


def test_preprocess(card: MethodCard, effective: EffectiveRecipe, backbone: str) -> Preprocess:
    base = card.preprocess_for(backbone) or default_preprocess(backbone)
    return dataset_preprocess(base, effective.recipe)


def derived_rows(card: MethodCard, effective: EffectiveRecipe, shot: int, backbone: str) -> list[tuple[str, str, str]]:
    """Schedule points, queries at this shot, optimiser groups, transforms: what the values above amount to."""
    recipe = effective.recipe
    rows = [("train queries per class at this shot", str(recipe.train_queries(shot)), "train_queries_by_shot / train_queries_per_class")]
    if recipe.head_options_by_shot:
        rows.append(("head options at this shot", _format(recipe.head_options_at(shot)),
                     "head_options_by_shot / head_options"))
    optimizer_steps = -(-recipe.iterations // recipe.episodes_per_step)
    rows.append(("optimizer steps", f"{optimizer_steps} of {recipe.episodes_per_step} episodes", DERIVED))
    if recipe.steps_iter:
        points = ", ".join(f"{it} (x{_format(rel)})" for it, rel in decay_points(recipe)) or "none"
        rows.append((f"lr decays ({recipe.schedule}), reference iterations of {recipe.episodes_per_iteration} episodes",
                     f"{points}; run = {reference_iterations(recipe)} iterations", DERIVED))
        warmup = recipe.steps_iter if recipe.schedule == "as-run" else recipe.steps_iter * recipe.warmup_epochs
        rows.append(("linear warm-up", f"{_format(recipe.warmup_start_lr)} -> {_format(recipe.lr)} over reference "
                     f"iterations [0, {warmup})", DERIVED))
    elif recipe.warmup or recipe.lr_steps:
        rows.append(("lr schedule (episodes)", f"warm-up {recipe.warmup}, steps {_format(recipe.lr_steps)} "
                     f"x{_format(recipe.lr_factors or recipe.lr_decay)}", DERIVED))
    else:
        rows.append(("lr schedule", "constant", DERIVED))
    exempt = ", ".join(f'"{part}"' for part in recipe.no_decay)
    rows.append(("weight decay groups", f"{_format(recipe.weight_decay)}; 0 for parameters whose reference name holds "
                 f"{exempt}" if exempt else f"{_format(recipe.weight_decay)} on every parameter", DERIVED))
    test = test_preprocess(card, effective, backbone)
    resize = "none" if not test.resize_to else f"{test.resize} {test.resize_to}" + ("" if test.antialias else " (no antialias)")
    normalise = "none (pixels in [0, 1])" if test.mean is None else f"mean {_format(test.mean)}, std {_format(test.std)}"
    crop = "random crop" if recipe.random_crop else "centre crop"
    rows.append(("training clips", f"frames: {recipe.frame_sampler}; resize {resize}; {crop}; flip {recipe.flip}; "
                 f"colour jitter {recipe.color_jitter}" + (f" {_format(recipe.jitter)}" if recipe.color_jitter != "none" else ""),
                 DERIVED))
    rows.append(("test clips", f"frames: segment centres; resize {resize}; centre crop {test.crop or 'none'}", "the protocol"))
    rows.append(("normalisation", normalise, f"card {card.name} preprocessing for {backbone}"))
    return rows


def recipe_rows(card: MethodCard, effective: EffectiveRecipe, shot: int, backbone: str) -> list[tuple[str, str, str]]:
    """Every training field (value, source), then the derived rows."""
    rows = [(name, _format(getattr(effective.recipe, name)), effective.sources[name]) for name in TRAINING_FIELDS]
    return rows + derived_rows(card, effective, shot, backbone)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def recipes_markdown(cards: list[MethodCard]) -> str:
    """docs/recipes.md: one table per (method, benchmark), 5-shot values, ResNet-50 on real data."""
    lines = [
        "# Training recipes (generated)",
        "",
        "Generated by `fsar-bench recipe --markdown > docs/recipes.md` from the method cards; a test fails when this",
        "file is not current. Each table is what `fsar-bench recipe METHOD --dataset D --shots 5` prints without a",
        "bench.toml: every value and where it comes from (reference file and line, or fsar-bench's choice), then what",
        "the values amount to (schedule as run, optimiser groups, transforms). Reference iterations are the released",
        "configs' iterations (one episode per GPU); our counts are episodes. The backbone is ResNet-50 on real data and",
        "the small CNN on `synthetic`.",
        "",
    ]
    seen: dict[int, str] = {}
    for card in sorted(cards, key=lambda c: c.name):
        lines += [f"## {card.name}", ""]
        if id(card.recipes) in seen:
            lines += [f"Same recipes as `{seen[id(card.recipes)]}`.", ""]
            continue
        seen[id(card.recipes)] = card.name
        for dataset in DOC_DATASETS:
            lines += [f"### {card.name} on {dataset}", ""]
            try:
                effective = resolve_recipe(card, dataset)
            except UsageError:
                lines += ["No recipe: training is refused (exit 2) until bench.toml gives one "
                          f"(`[methods.{card.name}.recipes.{dataset}]`).", ""]
                continue
            if effective.recipe.notes:
                lines += [_cell(effective.recipe.notes), ""]
            lines += ["| item | value | source |", "|---|---|---|"]
            for item, value, source in recipe_rows(card, effective, 5, default_backbone(dataset, card)):
                lines.append(f"| {_cell(item)} | {_cell(value)} | {_cell(source)} |")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"
