"""--precision: what ``auto`` resolves to, autocast and loss scaling per precision, and the report never merging
runs evaluated at different precisions without saying so."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fsar_bench.errors import UsageError
from fsar_bench.precision import resolve_precision
from fsar_bench.report import build_report, load_results
from tests.test_report_support import STANDARD, simulate_correct, write_run

CPU = torch.device("cpu")


def test_auto_is_fp32_on_cpu_and_names_are_checked():
    assert resolve_precision("auto", CPU).name == "fp32"
    assert resolve_precision("bf16", CPU).dtype == torch.bfloat16
    with pytest.raises(UsageError, match="bf16"):
        resolve_precision("half", CPU)


def test_autocast_and_scaler_follow_the_precision():
    layer = torch.nn.Linear(4, 4)
    x = torch.randn(2, 4)
    with resolve_precision("bf16", CPU).autocast(CPU):
        assert layer(x).dtype == torch.bfloat16
    with resolve_precision("fp32", CPU).autocast(CPU):
        assert layer(x).dtype == torch.float32
    assert not resolve_precision("bf16", CPU).grad_scaler(CPU).is_enabled()
    assert resolve_precision("fp16", CPU).grad_scaler(CPU).is_enabled()


def test_report_separates_and_labels_evaluation_precisions(tmp_path):
    results = tmp_path / "results"
    correct = simulate_correct(200, {"a": 0.0, "b": 1.0}, np.random.default_rng(3))
    write_run(results, "otam", "synthetic", 5, correct["a"])
    write_run(results, "otam", "synthetic", 5, correct["b"], eval_precision="bf16")
    (table,) = build_report(load_results(results, STANDARD), n_bootstrap=100).tables
    labels = sorted(row.label for row in table.rows)
    assert labels == ["otam (eval bf16)", "otam (eval fp32)"], "two rows, each saying its precision"
    assert all(row.n_seeds == 1 for row in table.rows)
    write_run(results, "tsn", "synthetic", 5, correct["a"], eval_precision="bf16")
    (table,) = build_report(load_results(results, STANDARD), n_bootstrap=100).tables
    assert "tsn (eval bf16)" in [row.label for row in table.rows]
