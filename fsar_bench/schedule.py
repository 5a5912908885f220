"""Learning-rate schedules and optimiser parameter groups, as the reference code runs them.

A recipe with ``steps_iter`` > 0 holds a MoLo-repository ``SOLVER`` block as released: ``steps_iter`` (S),
``steps`` (epochs at which the relative lr changes, ``steps[0] = 0``), ``lrs`` (lr relative to ``lr`` from each
step on), ``warmup_epochs`` and ``warmup_start_lr``; one reference iteration is ``episodes_per_iteration``
episodes (4 GPUs, one episode each). The reference's ``lr_policy.py`` (``steps_with_relative_lrs`` + linear
warm-up) is evaluated at an *epoch* computed from the iteration ``it``:

* ``as-run`` (the default: the code that produced the published numbers): ``epoch = it // S + it / S``
  (``runs/train_net_few_shot.py`` l.59, 66, 95). The warm-up then spans all of the first S iterations and a step
  at nominal epoch s fires at iteration ``S·⌈s/2⌉``.
* ``as-configured``: ``epoch = it / S``, what the config's numbers say (a step at s fires at ``S·s``).

The optimiser steps every ``episodes_per_step`` episodes with the lr the reference set at the last iteration of
that step. Recipes without ``steps_iter`` use the simple form: linear warm-up over ``warmup`` episodes, then
``lr_steps``/``lr_factors``.

Usage::

    lr = learning_rate(recipe, step)              # lr of optimizer step ``step`` (0-based)
    decay_points(recipe)                          # [(reference iteration, relative lr), ...]
    groups = parameter_groups(model, recipe)      # weight decay 0 for names holding recipe.no_decay parts
"""

from __future__ import annotations

import math

import torch

SCHEDULE_MODES = ("as-run", "as-configured")


def schedule_epoch(iteration: float, steps_iter: int, mode: str) -> float:
    """The reference's schedule epoch at reference iteration ``iteration``."""
    if mode == "as-run":
        return iteration // steps_iter + iteration / steps_iter
    if mode == "as-configured":
        return iteration / steps_iter
    raise ValueError(f"unknown schedule mode {mode!r}: use one of {', '.join(SCHEDULE_MODES)}")


def relative_lr_at_epoch(steps: tuple[int, ...], lrs: tuple[float, ...], epoch: float) -> float:
    """``lrs[i]`` for the last ``steps[i] <= epoch`` (``get_step_index``; steps past the last stay there)."""
    index = 0
    for position, step in enumerate(steps):
        if epoch >= step:
            index = position
    return lrs[index]


def reference_lr(recipe, iteration: float) -> float:
    """lr at reference iteration ``iteration`` of a recipe with a released schedule (``steps_iter`` > 0)."""
    epoch = schedule_epoch(iteration, recipe.steps_iter, recipe.schedule)
    if epoch < recipe.warmup_epochs:
        end = recipe.lr * relative_lr_at_epoch(recipe.steps, recipe.lrs, recipe.warmup_epochs)
        return recipe.warmup_start_lr + epoch * (end - recipe.warmup_start_lr) / recipe.warmup_epochs
    return recipe.lr * relative_lr_at_epoch(recipe.steps, recipe.lrs, epoch)


def reference_iterations(recipe) -> int:
    """The run's length in reference iterations (``NUM_TRAIN_TASKS``)."""
    return recipe.iterations // recipe.episodes_per_iteration


def decay_points(recipe) -> list[tuple[int, float]]:
    """``[(reference iteration, relative lr from then on)]`` of each lr step that fires inside the run, derived from
    ``steps_iter``/``steps``/``lrs`` and the schedule mode. A step landing on iteration ``NUM_TRAIN_TASKS`` never
    acts (the reference's loop stops before it)."""
    points = []
    for step, relative in zip(recipe.steps[1:], recipe.lrs[1:]):
        nominal = recipe.steps_iter * step
        fires = recipe.steps_iter * math.ceil(step / 2) if recipe.schedule == "as-run" else nominal
        if fires < reference_iterations(recipe):
            points.append((fires, relative))
    return points


def learning_rate(recipe, step: int) -> float:
    """lr of optimizer step ``step`` (0-based; it applies the gradients of episodes
    ``step·episodes_per_step .. (step+1)·episodes_per_step - 1``)."""
    if recipe.steps_iter:
        last_episode = min((step + 1) * recipe.episodes_per_step, recipe.iterations) - 1
        return reference_lr(recipe, last_episode // recipe.episodes_per_iteration)
    iteration = step * recipe.episodes_per_step
    lr = recipe.lr * recipe.lr_multiplier(iteration)
    if recipe.warmup and iteration < recipe.warmup:
        start = recipe.warmup_start_lr
        lr = start + (lr - start) * (iteration + 1) / recipe.warmup if start else lr * (iteration + 1) / recipe.warmup
    return lr


def reference_parameter_name(model, name: str) -> str:
    """The name the reference gives parameter ``name`` of an FSARModel: the head's own names go through its
    ``reference_key_map``; backbone names already follow torchvision's (``nn.Sequential`` children)."""
    if name.startswith("head."):
        key_map = model.head.reference_key_map()
        return "head." + key_map.get(name[len("head."):], name[len("head."):])
    return name


def parameter_groups(model, recipe) -> list[dict]:
    """Optimiser groups: parameters whose reference name contains any of ``recipe.no_decay`` get weight decay 0
    (the MoLo repository: "bn", "norm", "embd", "cls_token", ``models/utils/optimizer.py`` l.57–72), the rest
    ``recipe.weight_decay``. Group order: exempt first, as the reference."""
    exempt, decayed = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        reference = reference_parameter_name(model, name)
        (exempt if any(part in reference for part in recipe.no_decay) else decayed).append(parameter)
    groups = []
    if exempt:
        groups.append({"params": exempt, "weight_decay": 0.0, "names": "no-decay"})
    groups.append({"params": decayed, "weight_decay": recipe.weight_decay, "names": "decayed"})
    return groups


def make_optimizer(model, recipe) -> torch.optim.Optimizer:
    """Adam (β 0.9, 0.999) or SGD (``momentum``, ``nesterov``) over ``parameter_groups``."""
    groups = [{key: value for key, value in group.items() if key != "names"} for group in parameter_groups(model, recipe)]
    if recipe.optimizer == "adam":
        return torch.optim.Adam(groups, lr=recipe.lr, betas=(0.9, 0.999))
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r} (use 'adam' or 'sgd')")

