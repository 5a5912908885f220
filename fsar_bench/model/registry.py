"""Method discovery: every ``methods/*.py`` file, plus pip-installed plugins (DESIGN §3).

A plugin module defines ``CARDS``: a tuple of ``MethodCard`` (a single ``CARD`` also works).
No central list is edited. A plugin that fails to import is reported by file and line and
every other method still works; a name defined twice is an error naming both origins.
Installed packages register through the entry-point group ``fsar_bench.methods``; an entry
point may name a module (with CARDS) or a MethodCard.

Usage::

    registry = discover_methods(Path("methods"))
    registry.get("otam").card.head      # the head class
    registry.failures                   # [PluginFailure(origin="methods/bad.py:3", ...)]
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from fsar_bench.api import MethodCard
from fsar_bench.errors import UnknownNameError, UsageError

ENTRY_POINT_GROUP = "fsar_bench.methods"


@dataclass(frozen=True)
class MethodEntry:
    name: str
    origin: str
    card: MethodCard


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded. ``origin`` is ``file:line`` where known."""

    origin: str
    message: str


@dataclass
class MethodRegistry:
    methods: dict[str, MethodEntry] = field(default_factory=dict)
    failures: list[PluginFailure] = field(default_factory=list)
    duplicates: dict[str, list[str]] = field(default_factory=dict)

    def names(self) -> list[str]:
        return sorted(self.methods)

    def get(self, name: str) -> MethodEntry:
        """The method called ``name``; did-you-mean on unknown names, both origins on duplicates."""
        if name in self.duplicates:
            raise UsageError(f"method {name!r} is defined twice: {' and '.join(self.duplicates[name])}. Rename one.")
        if name not in self.methods:
            broken = "; ".join(f"{f.origin}: {f.message}" for f in self.failures)
            hint = f"(Plugins that failed to load: {broken})" if broken else "Add a plugin file to methods/."
            raise UnknownNameError("method", name, self.methods, hint)
        return self.methods[name]

    def _add(self, card: MethodCard, origin: str) -> None:
        if card.name in self.duplicates:
            self.duplicates[card.name].append(origin)
        elif card.name in self.methods:
            self.duplicates[card.name] = [self.methods.pop(card.name).origin, origin]
        else:
            self.methods[card.name] = MethodEntry(card.name, origin, card)


def _cards_of(module: ModuleType | object) -> list[MethodCard]:
    if isinstance(module, MethodCard):
        return [module]
    cards = getattr(module, "CARDS", None)
    if cards is None and hasattr(module, "CARD"):
        cards = (module.CARD,)
    if cards is None:
        raise TypeError("defines no CARDS (a tuple of fsar_bench.api.MethodCard)")
    cards = list(cards)
    for card in cards:
        if not isinstance(card, MethodCard):
            raise TypeError(f"CARDS holds {type(card).__name__}, not MethodCard")
    return cards


def _failure_location(error: BaseException, path: Path) -> str:
    """``file:line`` of the error inside the plugin file, when it can be found."""
    if isinstance(error, SyntaxError) and error.lineno is not None:
        return f"{error.filename or path}:{error.lineno}"
    frames = [f for f in traceback.extract_tb(error.__traceback__) if Path(f.filename).resolve() == path.resolve()]
    return f"{path}:{frames[-1].lineno}" if frames else str(path)


def load_plugin_file(path: Path) -> ModuleType:
    """Import one plugin file under a private module name (``fsar_bench_plugins.<stem>``)."""
    module_name = f"fsar_bench_plugins.{path.stem.replace('-', '_')}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def discover_methods(methods_dir: Path | None, entry_points: bool = True) -> MethodRegistry:
    """Load every plugin file in ``methods_dir`` (sorted) and every installed entry point."""
    registry = MethodRegistry()
    files = sorted(methods_dir.glob("*.py")) if methods_dir is not None and methods_dir.is_dir() else []
    for path in files:
        if path.name.startswith("_"):
            continue
        try:
            cards = _cards_of(load_plugin_file(path))
        except Exception as error:  # a broken plugin must not break the others
            registry.failures.append(PluginFailure(_failure_location(error, path), f"{type(error).__name__}: {error}"))
            continue
        for card in cards:
            registry._add(card, str(path))
    if entry_points:
        for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            origin = f"entry point {point.name} = {point.value}"
            try:
                cards = _cards_of(point.load())
            except Exception as error:
                registry.failures.append(PluginFailure(origin, f"{type(error).__name__}: {error}"))
                continue
            for card in cards:
                registry._add(card, origin)
    return registry
