"""Released schedules as the reference code runs them (TRAINING.md §2 worked rows) and optimiser groups."""

from __future__ import annotations

import math

import pytest
import torch

from fsar_bench.api import Recipe
from fsar_bench.schedule import decay_points, learning_rate, parameter_groups, reference_lr, schedule_epoch


def _released(lr, warmup_from, steps_iter, steps, lrs, iterations, mode="as-run", per_step=4):
    return Recipe(optimizer="adam", lr=lr, warmup_start_lr=warmup_from, steps_iter=steps_iter, steps=steps, lrs=lrs,
                  iterations=iterations * 4, episodes_per_iteration=4, episodes_per_step=per_step * 4, schedule=mode)


# TRAINING.md §2 and parity/README.md (HyRSM++, CLIP-FSAR), each checked against its released config:
# (config, lr, warm-up from, STEPS_ITER, STEPS, LRS, NUM_TRAIN_TASKS) -> decays as run [(iteration, relative lr)]
WORKED_ROWS = [
    ("MoLo_SSv2_Full", 1e-4, 2e-5, 6000, (0, 6, 9), (1, 0.1, 0.01), 50_000, [(18000, 0.1), (30000, 0.01)]),
    ("MoLo_SSv2_Small", 1e-4, 2e-5, 1500, (0, 4, 8), (1, 0.1, 0.01), 20_000, [(3000, 0.1), (6000, 0.01)]),
    ("MoLo_K100", 2e-5, 5e-6, 350, (0, 4, 6), (1, 0.1, 0.01), 5000, [(700, 0.1), (1050, 0.01)]),
    ("MoLo_UCF101", 5e-5, 1e-5, 2000, (0, 3, 6), (1, 0.1, 0.01), 6000, [(4000, 0.1)]),  # x0.01 at 6000 = the end
    ("MoLo_HMDB51", 5e-5, 1e-5, 500, (0, 3, 5, 7), (1, 0.5, 0.1, 0.01), 2000, [(1000, 0.5), (1500, 0.1)]),
    ("HyRSM_HMDB51", 5e-5, 1e-5, 300, (0, 2, 3, 7), (1, 0.5, 0.1, 0.01), 2000, [(300, 0.5), (600, 0.1), (1200, 0.01)]),
    ("HyRSM_UCF101", 5e-5, 1e-5, 700, (0, 3, 5, 7), (1, 0.5, 0.1, 0.01), 2500, [(1400, 0.5), (2100, 0.1)]),
    ("HyRSMpp_SSv2_Full", 1e-4, 2e-5, 3000, (0, 6, 9), (1, 0.1, 0.01), 40_000, [(9000, 0.1), (15000, 0.01)]),
    ("HyRSMpp_K100", 2.2e-5, 5e-6, 100, (0, 4, 6, 9), (1, 0.5, 0.1, 0.05), 1500, [(200, 0.5), (300, 0.1), (500, 0.05)]),
    ("CLIPFSAR_SSv2_Full", 5e-5, 1e-5, 4000, (0, 4, 6), (1, 0.1, 0.01), 30_000, [(8000, 0.1), (12000, 0.01)]),
    ("CLIPFSAR_K100", 1e-5, 5e-6, 250, (0, 6, 9), (1, 0.1, 0.01), 5000, [(750, 0.1), (1250, 0.01)]),
]


@pytest.mark.parametrize("row", WORKED_ROWS, ids=[row[0] for row in WORKED_ROWS])
def test_as_run_decays_reproduce_the_worked_rows(row):
    _, lr, warmup_from, steps_iter, steps, lrs, iterations, expected = row
    recipe = _released(lr, warmup_from, steps_iter, steps, lrs, iterations)
    assert decay_points(recipe) == expected
    for iteration, relative in expected:  # the lr itself changes exactly there
        assert math.isclose(reference_lr(recipe, iteration), lr * relative)
        assert reference_lr(recipe, iteration - 1) > lr * relative


def test_as_run_warmup_spans_all_of_the_first_interval():
    recipe = _released(1e-4, 2e-5, 6000, (0, 6, 9), (1, 0.1, 0.01), 50_000)
    assert reference_lr(recipe, 0) == 2e-5
    assert math.isclose(reference_lr(recipe, 3000), 2e-5 + 0.5 * 8e-5)  # half-way through S: half-way up
    assert reference_lr(recipe, 5999) < 1e-4 and reference_lr(recipe, 6000) == 1e-4
    assert schedule_epoch(6000, 6000, "as-run") == 2.0 and schedule_epoch(5999, 6000, "as-run") < 1


def test_as_configured_uses_the_nominal_epochs():
    recipe = _released(1e-4, 2e-5, 6000, (0, 6, 9), (1, 0.1, 0.01), 60_000, mode="as-configured")
    assert decay_points(recipe) == [(36000, 0.1), (54000, 0.01)]
    assert math.isclose(reference_lr(recipe, 3000), 2e-5 + 0.5 * 8e-5)
    with pytest.raises(ValueError, match="unknown schedule mode"):
        reference_lr(_released(1e-4, 0, 10, (0,), (1,), 100, mode="nominal"), 5)


def test_optimizer_step_uses_the_lr_of_its_last_iteration():
    """4 episodes per reference iteration, a step every 4 iterations: step n applies at iteration 4n+3."""
    recipe = _released(5e-5, 1e-5, 300, (0, 2, 3, 7), (1, 0.5, 0.1, 0.01), 2000, per_step=2)  # HyRSM HMDB51
    assert learning_rate(recipe, 0) == reference_lr(recipe, 1)
    assert learning_rate(recipe, 149) == reference_lr(recipe, 299) < 5e-5
    assert learning_rate(recipe, 150) == 2.5e-5  # the x0.5 step coincides with the end of warm-up


def test_simple_schedule_without_released_fields():
    recipe = Recipe(lr=1e-3, iterations=100, warmup=10, lr_steps=(50,), lr_decay=0.1)
    assert math.isclose(learning_rate(recipe, 0), 1e-4)
    assert learning_rate(recipe, 20) == 1e-3 and math.isclose(learning_rate(recipe, 60), 1e-4)


class _Tiny(torch.nn.Module):
    """Names as in a ResNet trunk: the stem BatchNorm ('1') and a block's 'bn1'."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
        self.block = torch.nn.ModuleDict({"conv1": torch.nn.Conv2d(4, 4, 1), "bn1": torch.nn.BatchNorm2d(4)})
        self.layer_norm = torch.nn.LayerNorm(4)


def test_norm_and_bn_parameters_are_exempt_by_reference_name():
    model = _Tiny()
    recipe = Recipe(weight_decay=1e-3, no_decay=("bn", "norm", "embd", "cls_token"))
    groups = parameter_groups(model, recipe)
    names = {id(p): n for n, p in model.named_parameters()}
    exempt = sorted(names[id(p)] for p in groups[0]["params"])
    assert groups[0]["weight_decay"] == 0.0 and groups[1]["weight_decay"] == 1e-3
    # the stem BatchNorm ('trunk.1') holds neither part in its name: decayed, as in the reference
    assert exempt == ["block.bn1.bias", "block.bn1.weight", "layer_norm.bias", "layer_norm.weight"]
    assert len(parameter_groups(model, Recipe(weight_decay=1e-3))) == 1
