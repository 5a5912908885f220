"""bench.toml: precedence defaults < file < CLI, unknown keys and wrong types are errors."""

from __future__ import annotations

import pytest

from fsar_bench.config import load_config
from fsar_bench.errors import UsageError


def test_defaults_without_file(tmp_path):
    config = load_config(None, search_from=tmp_path)
    assert config.source is None
    assert config.protocol == {"way": 5, "queries_per_class": 1, "episodes": 10_000, "frames": 8, "seed": 0}


def test_file_overrides_defaults_and_cli_overrides_file(tmp_path):
    path = tmp_path / "bench.toml"
    path.write_text("[protocol]\nseed = 7\nepisodes = 500\n[paths]\nresults = 'out'\n")
    config = load_config(path, cli={"protocol.seed": 9, "protocol.episodes": None})
    assert config.protocol["seed"] == 9
    assert config.protocol["episodes"] == 500, "an unset CLI option must not override the file"
    assert config.path("results") == (tmp_path / "out").resolve()


def test_config_is_found_in_parent_folders(tmp_path):
    (tmp_path / "bench.toml").write_text("[protocol]\nframes = 16\n")
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    assert load_config(search_from=nested).protocol["frames"] == 16


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[protocol]\nwya = 5\n", r"unknown key 'wya' in \[protocol\]"),
        ("[protcol]\nway = 5\n", r"unknown section or key 'protcol'"),
        ("[protocol]\nway = 'five'\n", r"protocol.way must be an integer, got 'five'"),
        ("[protocol]\nepisodes = 0\n", r"protocol.episodes must be at least 1"),
        ("[datasets.ucf101]\nroot = 3\n", r"datasets.ucf101.root must be a string"),
        ("[datasets.ucf101]\nrot = '/x'\n", r"unknown key 'rot' in \[datasets.ucf101\]"),
        ("[methods.otam]\nlearning_rate = 0.1\n", r"unknown key 'learning_rate' in \[methods.otam\]"),
        ("[protocol\n", r"not valid TOML"),
    ],
)
def test_bad_files_name_the_key_and_file(tmp_path, text, message):
    path = tmp_path / "bench.toml"
    path.write_text(text)
    with pytest.raises(UsageError, match=message) as error:
        load_config(path)
    assert str(path) in str(error.value)


def test_method_overrides_reach_the_recipe(tmp_path):
    from fsar_bench.api import Recipe
    from fsar_bench.config import recipe_with_overrides

    path = tmp_path / "bench.toml"
    path.write_text("[methods.otam]\niterations = 12\nlr_steps = [5, 8]\ntrain_queries_by_shot = {1 = 3}\n")
    recipe = recipe_with_overrides(Recipe(), load_config(path).method_overrides("otam"))
    assert recipe.iterations == 12 and recipe.lr_steps == (5, 8) and recipe.train_queries(1) == 3
