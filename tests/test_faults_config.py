"""Fault injection, part 1 (issue 15): bad settings and misleading hints end in the documented exit code and a
message naming the key or file and what to do, never a traceback. Fast: nothing here trains or scores."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import PROJECT_ROOT, write_bench_toml
from tests.fault_tools import assert_error, in_process

RUN = ("run", "tsn", "-d", "synthetic", "--shots", "1", "--episodes", "5", "--no-train")


@pytest.fixture
def bench(tmp_path):
    """A bench.toml with ``extra`` appended (results and cache in tmp_path)."""
    def make(extra: str = ""):
        return write_bench_toml(tmp_path, tmp_path / "cache", extra)
    return make


@pytest.mark.parametrize("extra, key, allowed", [
    ("[methods.tsn]\niterations = 0\n", "methods.tsn.iterations", "at least 1"),
    ("[methods.tsn]\niterations = -5\n", "methods.tsn.iterations", "at least 1"),
    ("[methods.tsn]\nval_every = 0\n", "methods.tsn.val_every", "at least 1"),
    ("[methods.tsn]\nlr = -1\n", "methods.tsn.lr", "above 0"),
    ("[methods.tsn]\nval_episodes = 0\n", "methods.tsn.val_episodes", "at least 1"),
    ("[methods.tsn]\noptimizer = \"adamw\"\n", "methods.tsn.optimizer", "'adam', 'sgd'"),
    ("episode_batch = -4\n", "run.episode_batch", "at least 0 (0 chooses it from memory)"),
    ("cache_max_gb = -1\n", "run.cache_max_gb", "at least 0 (0 turns the disk cache off)"),
])
def test_out_of_range_settings_name_the_key_and_the_range(bench, extra, key, allowed):
    config = bench(extra)  # extra lands in [run] unless it opens a table
    assert_error(in_process(config, *RUN), 2, str(config), key, allowed)


@pytest.mark.parametrize("option, key", [(["--seed", "-1"], "protocol.seed (--seed)"),
                                         (["--workers", "-1"], "run.workers (--workers)"),
                                         (["--train-seed", "-3"], "run.train_seed (--train-seed)")])
def test_out_of_range_options_name_the_option(bench, option, key):
    assert_error(in_process(bench(), *RUN, *option), 2, "command line", key, "at least 0")


def test_no_train_with_retrain_is_a_usage_error(bench):
    assert_error(in_process(bench(), *RUN, "--retrain"), 2, "--no-train and --retrain exclude each other")


@pytest.mark.parametrize("table, hint", [("[methods.otma]\nlr = 0.1\n", "unknown method 'otma'. Did you mean 'otam'"),
                                         ("[datasets.ucf102]\nroot = \"/data\"\n", "unknown dataset 'ucf102'. Did you mean 'ucf101'")])
def test_misspelt_tables_are_refused_with_did_you_mean(bench, table, hint):
    config = bench(table)
    assert_error(in_process(config, *RUN), 2, hint, str(config))


def test_the_feasibility_error_points_to_the_setting_that_exists(bench, synthetic_cache):
    config = write_bench_toml(bench().parent, synthetic_cache, "[protocol]\nway = 60\n")
    stderr = assert_error(in_process(config, *RUN), 2, "set way = ", "under [protocol] in bench.toml")
    assert "--way" not in stderr


def test_small_cnn_fits_videos_of_any_size_to_the_protocol():
    """Its preprocessing resizes (short side) and centre-crops: real videos of any size, e.g. 240x320, run."""
    from fsar_bench.model.network import FSARModel
    from fsar_bench.model.registry import discover_methods

    card = discover_methods(PROJECT_ROOT / "methods").get("tsn").card
    model = FSARModel.build(card, "small-cnn", "none", frames=2, size=224, num_base_classes=5)
    for height, width in ((240, 320), (360, 240), (90, 120)):
        pixels = model.prepare(torch.zeros(1, 2, height, width, 3, dtype=torch.uint8))
        assert tuple(pixels.shape) == (1, 2, 3, 224, 224)


def _kinetics_tree(root, layout_of_class) -> None:
    """Empty files for kinetics100's test videos, each class stored as ``layout_of_class(class)`` says."""
    from fsar_bench.data.benchmarks import open_benchmark
    from fsar_bench.config import load_config

    config = load_config(None, search_from=root)
    benchmark = open_benchmark("kinetics100", config)
    partition = benchmark.partition("test")
    for class_name in partition.classes:
        for video in partition.videos[class_name]:
            name = video.rsplit("/", 1)[-1]
            path = root / layout_of_class(class_name) / f"{name}.mp4"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()


def test_a_tree_in_another_layout_that_partly_matches_gets_the_layout_hint(tmp_path):
    """Kinetics with underscore class folders: class names without spaces match the default layout too, so only
    some videos are "missing". The error says which layout the tree uses, not --allow-missing."""
    root = tmp_path / "kinetics"
    _kinetics_tree(root, lambda c: c.replace(" ", "_"))
    config = write_bench_toml(tmp_path, tmp_path / "cache", f'[datasets.kinetics100]\nroot = "{root}"\n')
    result = in_process(config, "run", "tsn", "-d", "kinetics100", "--shots", "1", "--episodes", "5", "--no-train")
    stderr = assert_error(result, 3, "Layout 'class-folders-underscore'",
                          'set layout = "class-folders-underscore" under [datasets.kinetics100]')
    assert "--allow-missing runs without them" not in stderr
    check = in_process(config, "data", "check", "kinetics100", "--partition", "test")
    assert_error(check, 3, "Layout 'class-folders-underscore'")
    assert "what to do (missing): restore the files, or fix root / layout under [datasets.kinetics100]" in check.stdout


def test_the_layout_error_of_run_points_to_the_bench_toml_key(tmp_path):
    root = tmp_path / "kinetics"
    _kinetics_tree(root, lambda c: "train_256/" + c.replace(" ", "_"))
    config = write_bench_toml(tmp_path, tmp_path / "cache", f'[datasets.kinetics100]\nroot = "{root}"\n')
    result = in_process(config, "run", "tsn", "-d", "kinetics100", "--shots", "1", "--episodes", "5", "--no-train")
    stderr = assert_error(result, 3, 'set layout = "molo" under [datasets.kinetics100] in bench.toml')
    assert "(or pass --layout" not in stderr
