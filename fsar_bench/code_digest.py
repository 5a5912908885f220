"""Digests of the code that produced a checkpoint, a run or an encoding, so that edited code never reuses
results computed by the old code without saying so.

A digest is a mapping ``{module name: sha256 of its source file}`` over the method's own module (its file in
``methods/``), the modules of the head classes its head derives from (``fsar_bench.model.hyrsm_family``, the head
HyRSM and HyRSM++ share), the module of a backbone plugin the package does not ship (``backbone_code``) and the
package modules its results run through. Checkpoints stamp ``TRAINING_MODULES``' digest, runs
``SCORING_MODULES``'; reusing either under code whose digest differs is
refused (exit 4) naming the changed files, unless the user retrains (``--retrain``) or declares the change
harmless (``--accept-code-change``, which is stamped into the run). The encoding cache keys the same
``method_modules``. Modules are hashed as imported objects, so a moved file stays hashed; a module without its
source file is an error, never silently skipped.

Usage::

    code_digest(OTAMHead, TRAINING_MODULES)      # {"fsar_bench_plugins.otam": "3f1c…", "fsar_bench.train": …}
    changed_modules(stored_digest, current)      # ["fsar_bench_plugins.otam (methods/otam.py)"]
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from fsar_bench.errors import FsarError

# What a trained checkpoint depends on, besides the method's module: the model, its training loop, the
# training episodes and clips, and the validation that selects the checkpoint.
# The shipped backbone plugins (their imports of open_clip / timm are lazy): any of them changing may change features.
BACKBONE_MODULES = ("fsar_bench.backbones._base", "fsar_bench.backbones._clip", "fsar_bench.backbones.small_cnn",
                    "fsar_bench.backbones.resnet50", "fsar_bench.backbones.clip_rn50", "fsar_bench.backbones.clip_vit_b16",
                    "fsar_bench.backbones.dinov2_vit_b14")
TRAINING_MODULES = ("fsar_bench.api", "fsar_bench.layers", "fsar_bench.sequence_layers", "fsar_bench.model.backbones", "fsar_bench.model.network",
                    "fsar_bench.train", "fsar_bench.episodes", "fsar_bench.data.video", "fsar_bench.data.loading",
                    "fsar_bench.evaluation.evaluate",
                    "fsar_bench.schedule", "fsar_bench.data.sampling", "fsar_bench.data.transforms",
                    "fsar_bench.data.episode_loader", "fsar_bench.data.frame_store", "fsar_bench.train_state",
                    "fsar_bench.precision", "fsar_bench.frozen", *BACKBONE_MODULES)
# What a run's records depend on, besides the method's module and its checkpoint: encoding and scoring.
SCORING_MODULES = ("fsar_bench.api", "fsar_bench.layers", "fsar_bench.sequence_layers", "fsar_bench.model.backbones", "fsar_bench.model.network",
                   "fsar_bench.episodes", "fsar_bench.data.video", "fsar_bench.data.loading",
                   "fsar_bench.evaluation.evaluate", "fsar_bench.evaluation.pairs", "fsar_bench.data.frame_store", "fsar_bench.precision",
                   "fsar_bench.frozen", *BACKBONE_MODULES)


def module_source(module: ModuleType) -> bytes:
    """The bytes of ``module``'s source file, or FsarError when it has none on disk."""
    source = inspect.getsourcefile(module)
    if not source or not os.path.isfile(source):
        raise FsarError(f"cannot hash the code of {module.__name__}: its source file {source!r} is missing; "
                        "reinstall fsar-bench (an installed copy without sources cannot key its results)")
    return Path(source).read_bytes()


def head_modules(head_class: type) -> list[str]:
    """The names of the modules of ``head_class`` and of every head class (``FewShotHead`` subclass) it derives
    from, its own first: a head written once in a package module and shared by several plugins (HyRSM and
    HyRSM++ derive from ``fsar_bench.model.hyrsm_family``) is hashed with each of them."""
    return [cls.__module__ for cls in _head_classes(head_class)]


def _head_classes(head_class: type) -> list[type]:
    """``head_class`` and the head classes it derives from, one per module, its own first."""
    from fsar_bench.api import FewShotHead  # here, not above: store.py reads digests without importing torch

    classes: dict[str, type] = {head_class.__module__: head_class}
    for base in head_class.__mro__:
        if issubclass(base, FewShotHead):
            classes.setdefault(base.__module__, base)
    return list(classes.values())


def _module_of(code: Any) -> ModuleType:
    """The module that defines ``code`` (a class or function); for a module executed from a file without being
    registered in ``sys.modules`` (``importlib.util.module_from_spec``, as a plugin deriving from another plugin's
    file may do), a stand-in naming the file its code was compiled from, so that it is hashed all the same."""
    module = sys.modules.get(code.__module__)
    if module is not None:
        return module
    functions = vars(code).values() if isinstance(code, type) else [code]
    files = {value.__code__.co_filename for value in functions if hasattr(value, "__code__")}
    if len(files) != 1:
        raise FsarError(f"cannot hash the code of {code.__qualname__}: its module {code.__module__!r} is not imported "
                        "and its source file cannot be told from its code; import it as a module")
    stand_in = ModuleType(code.__module__)
    stand_in.__file__ = files.pop()
    return stand_in


def method_modules(head_class: type, module_names: Iterable[str], extra_code: Iterable[Any] = ()) -> list[ModuleType]:
    """The head's own module, the modules of the head classes it derives from (``head_modules``) and of
    ``extra_code`` (e.g. the backbone plugin's ``build``: ``backbone_code``) that ``module_names`` does not list,
    then ``module_names`` imported."""
    listed = tuple(module_names)
    own, *bases = _head_classes(head_class)
    modules = {own.__module__: _module_of(own)}
    for code in (*bases, *extra_code):
        if code.__module__ not in listed:
            modules.setdefault(code.__module__, _module_of(code))
    return [*modules.values(), *(importlib.import_module(name) for name in listed)]


def backbone_code(backbone: str) -> tuple[Any, ...]:
    """What builds backbone plugin ``backbone`` (its card's ``build``), for ``extra_code``: a backbone installed
    from another package, or dropped in as a file, is hashed like the shipped ones (``BACKBONE_MODULES``)."""
    from fsar_bench.backbones import get_backbone_card

    build = get_backbone_card(backbone).build
    return (getattr(build, "func", build),)  # a functools.partial: the function it wraps


def code_digest(head_class: type, module_names: Iterable[str], extra_code: Iterable[Any] = ()) -> dict[str, str]:
    """``{module name: sha256 of its source}`` for the head's module, ``extra_code``'s and ``module_names``."""
    return {module.__name__: hashlib.sha256(module_source(module)).hexdigest()
            for module in method_modules(head_class, module_names, extra_code)}


def _where(name: str) -> str:
    module = sys.modules.get(name)
    source = getattr(module, "__file__", None) if module is not None else None
    if not source:
        return name
    try:
        shown = os.path.relpath(source)
    except ValueError:
        shown = source
    return f"{name} ({shown if not shown.startswith('..') else source})"


def changed_modules(stored: Mapping[str, str] | None, current: Mapping[str, str]) -> list[str]:
    """Modules whose code differs between a stored digest and the current one (named with their files);
    [] when equal. A stored digest of None (made before digests were stamped) counts as every module changed."""
    if stored is None:
        return ["(no code digest stamped: made by an older fsar-bench)"]
    names = sorted(set(stored) | set(current))
    return [_where(name) + ("" if name in current else " (no longer used)")
            for name in names if stored.get(name) != current.get(name)]
