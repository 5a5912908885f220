"""Checkpoints saved by the reference implementations, evaluated through `fsar-bench evaluate --checkpoint`.

The files are built here in each reference's layout (the facts are in tests/data/parity/README.md, "Loading real
reference checkpoints"): the wrapper dict the reference saves, its backbone prefix (``head.backbone.`` in the MoLo
repository, ``resnet.`` in trx/STRM, ``backbone.`` in TEAM), DataParallel ``module.`` parts and the head's
reference key names. Random weights, small sizes: the CLI tests use the synthetic benchmark's small CNN under the
reference's backbone prefix; the ResNet-50 layout is checked in memory against torchvision's own
``children()`` Sequential, the module every reference saves. Every registered card with a reference layout is
tested (the registry is iterated, so a new method's card is covered when it lands).

Usage::

    pytest tests/test_reference_checkpoints.py
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from fsar_bench.api import MethodCard
from fsar_bench.cli.main import app
from fsar_bench.config import load_config
from fsar_bench.data.benchmarks import open_benchmark
from fsar_bench.errors import ProtocolMismatchError
from fsar_bench.model.checkpoints import save_checkpoint
from fsar_bench.model.network import FSARModel
from fsar_bench.model.reference_checkpoints import backbone_reference_key_map, load_reference_checkpoint
from fsar_bench.model.registry import discover_methods
from fsar_bench.runner import build_model, get_method
from tests.conftest import PROJECT_ROOT, write_bench_toml

runner = CliRunner()
REGISTRY = discover_methods(PROJECT_ROOT / "methods")
WITH_LAYOUT = sorted(name for name in REGISTRY.names() if REGISTRY.get(name).card.reference_checkpoint is not None)
MOLO_REPOSITORY = "head."


class NotATensor:
    """Pickled into a file to check that checkpoint files are read with weights_only=True."""


def card(method: str) -> MethodCard:
    return REGISTRY.get(method).card


def native_wrapper(method: str, state: dict[str, torch.Tensor]) -> dict:
    """The dict the reference code saves around its weights (MoLo repository, or trx/STRM/TEAM)."""
    if card(method).reference_checkpoint.head_prefix == MOLO_REPOSITORY:
        return {"epoch": 7, "model_state": state, "optimizer_state": {"state": {}, "param_groups": []},
                "cfg": json.dumps({"TRAIN": {"SHOT": 1}})}
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[1_000_000], gamma=0.1)
    return {"iteration": 75_000, "model_state_dict": state, "optimizer_state_dict": optimizer.state_dict(),
            "scheduler": scheduler.state_dict()}


def reference_state(method: str, model: FSARModel, data_parallel: bool = True) -> dict[str, torch.Tensor]:
    """``model``'s weights renamed as the reference code names them in its checkpoint files."""
    layout = card(method).reference_checkpoint
    backbone_prefix = layout.backbone_prefix
    if data_parallel and layout.head_prefix != MOLO_REPOSITORY:  # trx/STRM/TEAM wrap the backbone alone
        backbone_prefix += "module."
    ours = model.state_dict()
    state = {f"{backbone_prefix}{ref}": ours[f"backbone.{key}"].clone()
             for key, ref in backbone_reference_key_map(model.backbone).items()}
    for key, ref in model.head.reference_key_map().items():
        state[f"{layout.head_prefix}{ref}"] = ours[f"head.{key}"].clone()
    for ref in model.head.ignored_reference_keys():  # saved by the reference, unused (TRX's norm_v)
        if ".norm_v." in ref:  # a LayerNorm of norm_k's size
            state[f"{layout.head_prefix}{ref}"] = torch.ones_like(state[f"{layout.head_prefix}{ref}".replace("norm_v", "norm_k")])
    for ref in model.head.optional_reference_keys():  # never saved by the reference (STRM's clsW)
        state.pop(f"{layout.head_prefix}{ref}", None)
    if data_parallel and layout.head_prefix == MOLO_REPOSITORY:  # DDP: "module." (stripped at save, not always)
        state = {f"module.{key}": value for key, value in state.items()}
    return state


def synthetic_model(config: Path, method: str, seed: int) -> FSARModel:
    """The model `fsar-bench evaluate METHOD -d synthetic` builds, with weights drawn from ``seed``."""
    settings = load_config(config)
    model = build_model(settings, get_method(settings, method), open_benchmark("synthetic", settings),
                        torch.device("cpu"), 5, "none")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, value in model.state_dict().items():
            if value.is_floating_point():  # a variance must stay positive (else NaN logits, refused since issue 15)
                offset = 0.5 if name.endswith("running_var") else -0.5
                value.copy_(torch.rand(value.shape, generator=generator) + offset)
    return model


def evaluate(config: Path, method: str, checkpoint: Path):
    return runner.invoke(app, ["--config", str(config), "evaluate", method, "--dataset", "synthetic", "--shots", "1",
                               "--checkpoint", str(checkpoint)], env={"COLUMNS": "250"})


@pytest.fixture
def config(tmp_path: Path, synthetic_cache: Path) -> Path:
    """Five-episode protocol, so that the runs are complete (not smoke) and the report shows them."""
    return write_bench_toml(tmp_path, synthetic_cache, "[protocol]\nepisodes = 5\n")


def test_every_method_whose_reference_saves_checkpoints_has_a_layout() -> None:
    assert {"molo", "hyrsm", "trx", "hyrsmpp", "strm", "team"} <= set(WITH_LAYOUT)


# --------------------------------------------------------------------------- through the CLI, small sizes
@pytest.mark.parametrize("method", WITH_LAYOUT)
def test_reference_checkpoint_evaluates_with_its_sha256_and_label(config: Path, tmp_path: Path, method: str) -> None:
    model = synthetic_model(config, method, seed=11)
    path = tmp_path / "reference.pth"
    torch.save(native_wrapper(method, reference_state(method, model)), path)
    result = evaluate(config, method, path)
    assert result.exit_code == 0, result.output
    assert "reference checkpoint" in result.stdout
    run = next((tmp_path / "results" / "runs").iterdir())
    stamps = json.loads((run / "stamps.json").read_text())
    assert stamps["checkpoint_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert stamps["weights"] == "reference checkpoint" and stamps["seeds"]["train"] is None
    training = stamps["training"]
    assert training["reference_code"] == card(method).reference_checkpoint.code
    assert training["wrapper"] in ("model_state", "model_state_dict") and training["module_parts_dropped"]
    assert training.get("iteration", training.get("epoch")) in (75_000, 7)


@pytest.mark.parametrize("method", WITH_LAYOUT)
@pytest.mark.parametrize("wrapper", ["native", "bare", "model_state", "model_state_dict"])
def test_every_wrapper_and_prefix_loads_the_same_weights(config: Path, method: str, wrapper: str) -> None:
    source = synthetic_model(config, method, seed=3)
    state = reference_state(method, source, data_parallel=wrapper != "bare")
    payload = {"native": native_wrapper(method, state), "bare": state, "model_state": {"epoch": 1, "model_state": state},
               "model_state_dict": {"iteration": 1, "model_state_dict": state}}[wrapper]
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    buffer.seek(0)
    target = synthetic_model(config, method, seed=4)
    load_reference_checkpoint(target, card(method), Path("file.pth"), torch.load(buffer, weights_only=True))
    expected, loaded = source.state_dict(), target.state_dict()
    optional = {f"head.{key}" for key, ref in source.head.reference_key_map().items()
                if ref in source.head.optional_reference_keys()}
    for key in expected:
        if key not in optional:
            assert torch.equal(loaded[key], expected[key]), key


# --------------------------------------------------------------------------- ResNet-50 layout (in memory)
def _one_method_per_backbone_prefix() -> list[str]:
    chosen: dict[str, str] = {}
    for method in WITH_LAYOUT:
        chosen.setdefault(card(method).reference_checkpoint.backbone_prefix, method)
    return sorted(chosen.values())


@pytest.mark.parametrize("method", _one_method_per_backbone_prefix())
def test_resnet50_keys_of_the_reference_load_into_our_backbone(method: str) -> None:
    """The reference saves ``nn.Sequential(*list(torchvision resnet50().children())[:-1])`` (MoLo, HyRSM, trx)
    or ``[:-2]`` (STRM, TEAM): the same indices, 0 conv1, 1 bn1, 4-7 layer1-4, under its prefix."""
    import torchvision

    torch.manual_seed(5)
    reference_trunk = torch.nn.Sequential(*list(torchvision.models.resnet50(weights=None).children())[:-1])
    layout = card(method).reference_checkpoint
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(6)
        model = FSARModel.build(card(method), "resnet50", "none", 8, 224, 64, {"out_dim": 64} if method == "trx" else {})
    head_state = {f"{layout.head_prefix}{ref}": model.head.state_dict()[key]
                  for key, ref in model.head.reference_key_map().items()}
    wrapped = "module." if layout.head_prefix != MOLO_REPOSITORY else ""
    state = {f"{layout.backbone_prefix}{wrapped}{key}": value for key, value in reference_trunk.state_dict().items()}
    load_reference_checkpoint(model, card(method), Path("resnet.pth"), {"model_state_dict": {**state, **head_state}})
    ours = model.backbone.state_dict()
    for key, value in reference_trunk.state_dict().items():
        assert torch.equal(ours[f"trunk.{key}"], value), key


# --------------------------------------------------------------------------- refusals: exit 4, every key named
def test_checkpoint_of_another_method_lists_missing_and_unexpected_keys(config: Path, tmp_path: Path) -> None:
    path = tmp_path / "trx.pth"
    torch.save(native_wrapper("trx", reference_state("trx", synthetic_model(config, "trx", 1))), path)
    result = evaluate(config, "hyrsm", path)
    assert result.exit_code == 4, result.output
    assert "Traceback" not in result.output and "does not fit hyrsm" in result.output
    assert "missing: head.temporal_atte.w_qs.weight" in result.output
    assert "neither backbone nor head:" in result.output  # trx's top-level keys, resnet.* and transformers.*
    assert "unexpected: resnet.stages.0.weight" in result.output and "missing: head.backbone.stages.0.weight" in result.output
    assert "more missing" in result.output  # long lists are cut, with the count


def test_mis_shaped_keys_are_listed_with_both_shapes(config: Path, tmp_path: Path) -> None:
    model = synthetic_model(config, "trx", 1)
    state = reference_state("trx", model)
    state["transformers.0.k_linear.weight"] = torch.zeros(7, 3)
    path = tmp_path / "trx.pth"
    torch.save(native_wrapper("trx", state), path)
    result = evaluate(config, "trx", path)
    assert result.exit_code == 4, result.output
    weight = model.head.state_dict()["temporal_sets.0.key_projection.weight"]
    assert f"wrong shape: transformers.0.k_linear.weight: reference (7, 3), ours {tuple(weight.shape)}" in result.output
    assert not (tmp_path / "results" / "runs").exists() or not any((tmp_path / "results" / "runs").iterdir())


def test_file_with_python_objects_is_refused_without_running_them(config: Path, tmp_path: Path) -> None:
    path = tmp_path / "pickled.pth"
    torch.save({"model_state_dict": {}, "args": NotATensor()}, path)
    result = evaluate(config, "trx", path)
    assert result.exit_code == 4, result.output
    assert "weights_only=True" in result.output and "Traceback" not in result.output


def test_file_without_weights_is_refused(config: Path, tmp_path: Path) -> None:
    path = tmp_path / "empty.pth"
    torch.save({"iteration": 3, "notes": "nothing"}, path)
    result = evaluate(config, "molo", path)
    assert result.exit_code == 4, result.output
    assert "holds neither model_state_dict nor model_state nor a bare state dict" in result.output
    assert "iteration, notes" in result.output


def test_method_without_a_reference_layout_says_so(config: Path, tmp_path: Path) -> None:
    path = tmp_path / "bare.pth"
    torch.save({"resnet.stages.0.weight": torch.zeros(1)}, path)
    result = evaluate(config, "tsn", path)
    assert result.exit_code == 4, result.output
    assert "not an fsar-bench checkpoint, and tsn has no reference checkpoint layout" in result.output


def test_corrupt_file_is_a_data_error(config: Path, tmp_path: Path) -> None:
    path = tmp_path / "broken.pth"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    result = evaluate(config, "trx", path)
    assert result.exit_code == 3, result.output
    assert "cannot be read" in result.output


# --------------------------------------------------------------------------- the report keeps it apart
def test_report_labels_reference_rows_apart_from_rows_trained_here(config: Path, tmp_path: Path) -> None:
    reference = tmp_path / "reference.pth"
    torch.save(native_wrapper("trx", reference_state("trx", synthetic_model(config, "trx", 2))), reference)
    ours = tmp_path / "ours.pt"
    save_checkpoint(synthetic_model(config, "trx", 2), ours, {"dataset": "synthetic", "shot": 1, "recipe": {"x": 1}})
    for path in (reference, ours):
        assert evaluate(config, "trx", path).exit_code == 0
    csv = runner.invoke(app, ["--config", str(config), "report", "--format", "csv"])
    assert csv.exit_code == 0, csv.output
    table = pd.read_csv(io.StringIO(csv.stdout))
    assert sorted(zip(table["label"], table["weights"])) == [("trx", "trained here"),
                                                             ("trx (reference checkpoint)", "reference checkpoint")]
    # the same weights, so the same predictions: paired on the same episodes, never pooled as two seeds
    assert list(table["seeds"]) == [1, 1] and len(set(table["accuracy"])) == 1
    markdown = runner.invoke(app, ["--config", str(config), "report", "--format", "markdown"]).stdout
    assert "trx (reference checkpoint)" in markdown and "the method's own reference code" in markdown
    report = json.loads(runner.invoke(app, ["--config", str(config), "report", "--format", "json"]).stdout)
    rows = [row for table in report["tables"] for row in table["rows"]]
    assert sorted(row["weights"] for row in rows) == ["reference checkpoint", "trained here"]
