"""Checks on what a method returns, before anything computed from it is stored.

Every batch of episode logits must be ``[E, Q, N]`` (episodes, queries, way) and finite; a head that returns
another shape, NaN or ±inf stops the run (exit 1) naming the method's class and file, the first bad episode and
what was wrong, and nothing is written for that batch. Training losses are checked the same way (see train.py).

Usage::

    check_logits(logits, head, episode_ids, queries=5, way=5)   # raises BadOutputError
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from fsar_bench.errors import FsarError


class BadOutputError(FsarError):
    """A method returned logits of the wrong shape or non-finite values (a bug in the method)."""


def head_method(head: object, method: str) -> str:
    """"OTAMHead.logits (methods/otam.py)" for messages."""
    cls = type(head)
    try:
        where = inspect.getsourcefile(cls) or cls.__module__
    except TypeError:
        where = cls.__module__
    return f"{cls.__name__}.{method} ({where})"


def check_logits(logits: object, head: object, episode_ids: Sequence[int], queries: int, way: int) -> None:
    """Raise BadOutputError unless ``logits`` is a finite tensor ``[len(episode_ids), queries, way]``."""
    expected = (len(episode_ids), queries, way)
    first = int(episode_ids[0]) if len(episode_ids) else -1
    if not isinstance(logits, Tensor):
        raise BadOutputError(f"{head_method(head, 'logits')} returned {type(logits).__name__}, not a tensor "
                             f"[E, Q, N] = {list(expected)} (episodes {first}..{int(episode_ids[-1])}); nothing was stored")
    if tuple(logits.shape) != expected:
        raise BadOutputError(f"{head_method(head, 'logits')} returned shape {list(logits.shape)} for episodes {first}.."
                             f"{int(episode_ids[-1])}; expected [E, Q, N] = {list(expected)} (episodes, queries, way); "
                             "nothing was stored for them")
    finite = torch.isfinite(logits)
    if not bool(finite.all()):
        bad_episode = int(episode_ids[int((~finite).flatten(1).any(dim=1).nonzero()[0])])
        values = logits[~finite]
        kinds = [name for name, present in (("NaN", bool(torch.isnan(values).any())),
                                            ("+inf", bool((values == float("inf")).any())),
                                            ("-inf", bool((values == float("-inf")).any()))) if present]
        raise BadOutputError(f"{head_method(head, 'logits')} returned {' and '.join(kinds)} values, first in episode "
                             f"{bad_episode}; nothing was stored for this batch")


def check_loss(total: Tensor, terms: Mapping[str, Tensor], head: object, iteration: int) -> None:
    """Raise BadOutputError when a training loss is NaN or ±inf, naming the iteration and every loss term."""
    if bool(torch.isfinite(total.detach()).all()):
        return
    shown = ", ".join(f"{name} = {float(value.detach().float().mean()):.4g}" for name, value in terms.items())
    raise BadOutputError(f"training diverged at iteration {iteration}: loss = {float(total.detach()):.4g}"
                         f"{' (' + shown + ')' if shown else ''} from {head_method(head, 'loss')}; training stopped and no "
                         "checkpoint from this point was kept. Lower the learning rate ([methods.NAME] lr in bench.toml) "
                         "or fix the method's loss")
