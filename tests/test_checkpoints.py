"""A checkpoint trained for another method, backbone or frame count is refused (exit code 4, mismatch named).

The checkpoints are built, not trained: ``FSARModel.build`` + ``save_checkpoint`` write exactly what training
writes (spec, weights), which is all ``fsar-bench run --checkpoint PATH`` checks before loading.

Usage::

    pytest tests/test_checkpoints.py
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fsar_bench.cli.main import app
from fsar_bench.model.checkpoints import save_checkpoint
from fsar_bench.model.network import FSARModel
from fsar_bench.model.registry import discover_methods
from tests.conftest import PROJECT_ROOT, write_bench_toml

SYNTHETIC_TRAIN_CLASSES = 28
runner = CliRunner()


def make_checkpoint(path: Path, method: str, backbone: str = "small-cnn", frames: int = 8) -> Path:
    """Write an fsar-bench checkpoint for ``method`` as training would (weights as built, seed 0)."""
    card = discover_methods(PROJECT_ROOT / "methods").get(method).card
    torch.manual_seed(0)
    model = FSARModel.build(card, backbone, "none", frames, 64, SYNTHETIC_TRAIN_CLASSES)
    save_checkpoint(model, path, {"dataset": "synthetic", "shot": 1})
    return path


def run_with_checkpoint(config: Path, method: str, checkpoint: Path, *extra: str):
    arguments = ["--config", str(config), "run", method, "--dataset", "synthetic", "--shots", "1",
                 "--episodes", "5", "--checkpoint", str(checkpoint), *extra]
    return runner.invoke(app, arguments, env={"COLUMNS": "250"})


@pytest.fixture
def config(tmp_path: Path, synthetic_cache: Path) -> Path:
    return write_bench_toml(tmp_path, synthetic_cache)


def test_matching_checkpoint_is_accepted(config: Path, tmp_path: Path) -> None:
    checkpoint = make_checkpoint(tmp_path / "tsn.pt", "tsn")
    result = run_with_checkpoint(config, "tsn", checkpoint)
    assert result.exit_code == 0, result.output


def test_checkpoint_of_another_method_is_refused(config: Path, tmp_path: Path) -> None:
    checkpoint = make_checkpoint(tmp_path / "otam.pt", "otam")
    result = run_with_checkpoint(config, "tsn", checkpoint)
    assert result.exit_code == 4, result.output
    assert "method: checkpoint has 'otam', this run needs 'tsn'" in result.output
    assert "otam.pt" in result.output


def test_checkpoint_of_another_method_with_weights_is_refused(config: Path, tmp_path: Path) -> None:
    """Heads with parameters too: a HyRSM checkpoint never reaches TRX's load_state_dict."""
    checkpoint = make_checkpoint(tmp_path / "hyrsm.pt", "hyrsm")
    result = run_with_checkpoint(config, "trx", checkpoint)
    assert result.exit_code == 4, result.output
    assert "method: checkpoint has 'hyrsm', this run needs 'trx'" in result.output


def test_checkpoint_of_another_backbone_is_refused(config: Path, tmp_path: Path) -> None:
    checkpoint = make_checkpoint(tmp_path / "small.pt", "otam", backbone="small-cnn")
    result = run_with_checkpoint(config, "otam", checkpoint, "--backbone", "resnet50", "--backbone-weights", "none")
    assert result.exit_code == 4, result.output
    assert "backbone: checkpoint has 'small-cnn', this run needs 'resnet50'" in result.output
    assert "backbone_dim: checkpoint has 128, this run needs 2048" in result.output


def test_checkpoint_of_another_frame_count_is_refused(config: Path, tmp_path: Path) -> None:
    checkpoint = make_checkpoint(tmp_path / "four_frames.pt", "trx", frames=4)
    result = run_with_checkpoint(config, "trx", checkpoint)
    assert result.exit_code == 4, result.output
    assert "frames: checkpoint has 4, this run needs 8" in result.output
    assert "method:" not in result.output and "backbone:" not in result.output


def test_file_that_is_not_a_checkpoint_is_refused(config: Path, tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": {}}, path)
    result = run_with_checkpoint(config, "tsn", path)
    assert result.exit_code == 4, result.output
    assert "not an fsar-bench checkpoint" in result.output


def test_checkpoint_paths_follow_the_recipe_and_survive_new_default_fields(config: Path) -> None:
    """An edited recipe gets a new path; a recipe field added later, left at its default, changes no path
    (existing checkpoints stay found). The digest here leaves ``warmup_start_lr`` and the small CNN's weight stamp
    out, as before they existed, and keys loss weights (head options since issue 10) apart under ``loss_weights``,
    as when they were a Recipe field."""
    import hashlib
    import json
    from dataclasses import asdict

    from fsar_bench.config import load_config
    from fsar_bench.data.benchmarks import open_benchmark
    from fsar_bench.data.synthetic import benchmark_data_version
    from fsar_bench.runner import TRAINING_PIPELINE_VERSION, build_model, default_checkpoint_path, get_method, method_recipe

    settings = load_config(config)
    entry = get_method(settings, "otam")
    model = build_model(settings, entry, open_benchmark("synthetic", settings), torch.device("cpu"), 1)
    recipe = method_recipe(settings, entry, "synthetic")
    before = {key: value for key, value in asdict(recipe).items()
              if key not in ("warmup_start_lr", "head_options_by_shot", "sources")}  # fields added later, at default
    before["loss_weights"] = {}  # OTAM has no loss weights
    assert model.spec["backbone_weights"] == "none"  # small-cnn's only weights: a stamp added later, left out at it
    spec = {key: value for key, value in model.spec.items() if key != "backbone_weights"}
    keyed = [before, spec, benchmark_data_version("synthetic")]  # generated data: its version is keyed too
    keyed.append({"training_pipeline": TRAINING_PIPELINE_VERSION})  # a changed trainer retrains
    digest = hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:8]
    path = default_checkpoint_path(settings, model, "synthetic", 1)
    assert path.parent.name.endswith(f"__r{digest}")
    config.write_text(config.read_text() + "[methods.otam]\nwarmup_start_lr = 1e-5\nwarmup = 10\n")
    edited = default_checkpoint_path(load_config(config), model, "synthetic", 1)
    assert edited != path and edited.parent.name.split("__r")[0] == path.parent.name.split("__r")[0]
