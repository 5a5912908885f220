"""Every method trains with the reference's recipe on every real benchmark, and says where each value comes from.

``tests/data/reference_recipes.toml`` holds the reference values, read from the released configs and code; each
card's effective recipe (no bench.toml) must equal them, with sources naming the same repository and config file.
A real benchmark without a recipe is refused with exit 2; docs/recipes.md is generated from the cards.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fsar_bench.cli.main import app
from fsar_bench.data.benchmarks import benchmark_names
from fsar_bench.errors import UsageError
from fsar_bench.model.effective_recipe import resolve_recipe
from fsar_bench.model.recipe_report import recipes_markdown
from fsar_bench.model.registry import discover_methods

ROOT = Path(__file__).resolve().parents[1]
TABLE = tomllib.loads((ROOT / "tests" / "data" / "reference_recipes.toml").read_text())
REGISTRY = discover_methods(ROOT / "methods")
REAL_BENCHMARKS = [name for name in benchmark_names() if name != "synthetic"]
DATASET_FIELDS = ("lr", "warmup_start_lr", "steps_iter", "steps", "lrs", "iterations", "episodes_per_step",
                  "train_queries_per_class", "head_options")
"""Fields whose source must name the dataset's own config file (the others come from repository-wide files)."""


def _expected(value):
    if isinstance(value, list):
        return tuple(value)
    return value


@pytest.mark.parametrize("method", sorted(TABLE))
def test_effective_recipe_equals_the_reference_table(method):
    card = REGISTRY.get(method).card
    assert sorted(TABLE[method]) == sorted(REAL_BENCHMARKS), f"{method}: the table must cover every real benchmark"
    for dataset, reference in TABLE[method].items():
        effective = resolve_recipe(card, dataset)
        repo, _, config = reference["config"].partition(" ")
        for field, value in reference.items():
            if field == "config":
                continue
            ours = getattr(effective.recipe, field)
            if field == "train_queries_by_shot":
                value = {int(shot): queries for shot, queries in value.items()}
                ours = dict(ours)
            elif field == "head_options_by_shot":
                value = {int(shot): options for shot, options in value.items()}
                ours = {shot: dict(options) for shot, options in ours.items()}
            elif field == "head_options":
                ours = dict(ours)
            assert ours == _expected(value), f"{method} on {dataset}: {field} is {ours!r}, the reference {value!r}"
            source = effective.sources[field]
            assert repo in source, f"{method} on {dataset}: the source of {field} ({source!r}) does not name {repo}"
            if field in DATASET_FIELDS and config.endswith(".yaml"):
                assert config in source, f"{method} on {dataset}: {field} should come from {config}, not {source!r}"


def test_every_method_has_a_recipe_for_every_real_benchmark():
    for name in REGISTRY.names():
        card = REGISTRY.methods[name].card
        for dataset in [*REAL_BENCHMARKS, "synthetic"]:
            recipe = resolve_recipe(card, dataset).recipe  # raises (exit 2) when missing
            if dataset != "synthetic":
                assert recipe.val_episodes >= 1000, f"{name} on {dataset}: validate on at least 1,000 episodes"
                looks = recipe.iterations / recipe.val_every
                assert 10 <= looks <= 100, f"{name} on {dataset}: {looks:.0f} validations per run"
                assert recipe.random_crop, f"{name} on {dataset}: no training augmentation"
                no_flip = "no AUGMENTATION.SUPPORT_QUERY_DIFF" in resolve_recipe(card, dataset).sources["flip"]  # the reference's own
                assert recipe.flip != "none" or no_flip, f"{name} on {dataset}: unflipped without a reason"
            else:
                assert recipe.flip == "none", f"{name}: synthetic is never flipped"


def test_published_numbers_are_keyed_to_the_list_they_were_measured_on():
    for name in REGISTRY.names():
        card = REGISTRY.methods[name].card
        for dataset, _ in [*card.published, *card.published_unconfirmed]:
            assert dataset in REAL_BENCHMARKS, f"{name}: published number on unknown benchmark {dataset!r}"
    for name in ("molo", "hyrsm"):  # measured on the MoLo/HyRSM Kinetics list
        keys = {dataset for dataset, _ in [*REGISTRY.get(name).card.published, *REGISTRY.get(name).card.published_unconfirmed]}
        assert "kinetics100-molo" in keys and "kinetics100" not in keys
    for name in ("otam", "trx"):  # measured on the CMN list
        keys = {dataset for dataset, _ in [*REGISTRY.get(name).card.published, *REGISTRY.get(name).card.published_unconfirmed]}
        assert "kinetics100" in keys and "kinetics100-molo" not in keys


def test_a_missing_recipe_is_exit_2_with_the_table_to_write(tmp_path):
    card = REGISTRY.get("otam").card
    bare = type(card)(name="bare", head=card.head, recipes={"synthetic": card.recipes["synthetic"]})
    with pytest.raises(UsageError, match=r"'bare' has no training recipe for dataset 'ucf101'") as error:
        resolve_recipe(bare, "ucf101")
    assert "[methods.bare.recipes.ucf101]" in str(error.value)
    given = resolve_recipe(bare, "ucf101", {"recipes": {"ucf101": {"lr": 0.01, "iterations": 500}}, "momentum": 0.5})
    assert given.recipe.lr == 0.01 and given.recipe.iterations == 500 and given.recipe.momentum == 0.5
    assert given.sources["lr"] == "bench.toml [methods.bare.recipes.ucf101] lr"
    assert given.sources["momentum"] == "bench.toml [methods.bare] momentum"


def test_recipe_command_prints_values_with_sources_and_refuses_missing_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bench.toml").write_text(
        f"[paths]\nmethods = '{ROOT / 'methods'}'\n[methods.molo.recipes.hmdb51]\nlr = 1e-5\n")
    runner = CliRunner()
    result = runner.invoke(app, ["recipe", "molo", "--dataset", "hmdb51", "--shots", "5"])
    assert result.exit_code == 0, result.output
    assert "MoLo_HMDB51_1shot_v1.yaml:68 STEPS_ITER" in result.output
    assert "bench.toml [methods.molo.recipes.hmdb51] lr" in result.output
    assert "1000 (x0.5), 1500 (x0.1)" in result.output  # decays as run
    (tmp_path / "bench.toml").write_text(f"[paths]\nmethods = '{ROOT / 'methods'}'\n[methods.molo.recipes.hmdb51]\nlrr = 1\n")
    result = runner.invoke(app, ["recipe", "molo", "--dataset", "hmdb51"])
    assert result.exit_code == 2 and "unknown key 'lrr' in [methods.molo.recipes.hmdb51]" in result.output
    result = runner.invoke(app, ["recipe", "molo", "--dataset", "ucf-101"])
    assert result.exit_code == 2


def test_docs_recipes_is_current():
    cards = [REGISTRY.methods[name].card for name in REGISTRY.names()]
    expected = recipes_markdown(cards)
    current = (ROOT / "docs" / "recipes.md").read_text()
    assert current == expected, "docs/recipes.md is stale: run `fsar-bench recipe --markdown > docs/recipes.md`"


def test_unusable_values_are_refused_naming_field_and_source():
    card = REGISTRY.get("molo").card
    with pytest.raises(UsageError, match=r"schedule = 'asrun' \(from bench.toml \[methods.molo\] schedule\)") as error:
        resolve_recipe(card, "hmdb51", {"schedule": "asrun", "recipes": {"hmdb51": {"frame_sampler": "random"}}})
    assert "frame_sampler = 'random' (from bench.toml [methods.molo.recipes.hmdb51] frame_sampler)" in str(error.value)


def test_head_options_can_differ_by_shot_as_the_released_scripts_do():
    """TEAM's 5-shot scripts train with more pattern tokens (run_hmdb.sh:8 70, run_ucf.sh:8 80); bench.toml can set
    per-shot options too (TOML keys are strings)."""
    from fsar_bench.config import recipe_with_overrides

    card = REGISTRY.get("team").card
    hmdb = resolve_recipe(card, "hmdb51").recipe
    assert [hmdb.head_options_at(shot)["pattern_tokens"] for shot in (1, 3, 5)] == [60, 60, 70]
    assert resolve_recipe(card, "ucf101").recipe.head_options_at(5)["pattern_tokens"] == 80
    edited = recipe_with_overrides(hmdb, {"head_options_by_shot": {"5": {"pattern_tokens": 90}}})
    assert edited.head_options_at(5) == {"pattern_tokens": 90} and edited.head_options_at(1) == {"pattern_tokens": 60}
