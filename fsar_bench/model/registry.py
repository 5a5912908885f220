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
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from types import ModuleType
from typing import Generic, TypeVar

from fsar_bench.api import MethodCard
from fsar_bench.errors import UnknownNameError, UsageError

ENTRY_POINT_GROUP = "fsar_bench.methods"
E = TypeVar("E")


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


class PluginRegistry(Generic[E]):
    """Plugins of one kind by name (methods, backbones): ``entries`` name -> entry (with an ``origin``), the
    ``failures`` of plugins that did not load, and names defined twice (``duplicates``: name -> origins)."""

    kind = "plugin"
    add_hint = ""

    def __init__(self) -> None:
        self.entries: dict[str, E] = {}
        self.failures: list[PluginFailure] = []
        self.duplicates: dict[str, list[str]] = {}

    def names(self) -> list[str]:
        return sorted(self.entries)

    def entry(self, name: str) -> E:
        """The entry called ``name``; did-you-mean on unknown names (naming plugins that failed to load), both
        origins on duplicates."""
        if name in self.duplicates:
            raise UsageError(f"{self.kind} {name!r} is defined twice: {' and '.join(self.duplicates[name])}. Rename one.")
        if name not in self.entries:
            broken = "; ".join(f"{f.origin}: {f.message}" for f in self.failures)
            hint = f"({self.kind.capitalize()} plugins that failed to load: {broken})" if broken else self.add_hint
            raise UnknownNameError(self.kind, name, self.entries, hint)
        return self.entries[name]

    def add_card(self, card, origin: str) -> None:
        raise NotImplementedError

    def add_plugin(self, origin: str, load: Callable[[], object], cards_of: Callable[[object], list],
                   path: Path | None = None) -> None:
        """Add the cards of one plugin (``load()`` imports it); a plugin that fails to load is recorded in
        ``failures`` (at its file and line when ``path`` is given), never raised: the others still work."""
        try:
            cards = cards_of(load())
        except Exception as error:
            where = _failure_location(error, path) if path is not None else origin
            self.failures.append(PluginFailure(where, f"{type(error).__name__}: {error}"))
            return
        for card in cards:
            self.add_card(card, origin)

    def add_entry_points(self, group: str, cards_of: Callable[[object], list]) -> None:
        """Every installed package's plugins registered under the entry-point ``group``."""
        for point in importlib.metadata.entry_points(group=group):
            self.add_plugin(f"entry point {point.name} = {point.value}", point.load, cards_of)

    def _add(self, name: str, entry: E, origin: str) -> None:
        if name in self.duplicates:
            self.duplicates[name].append(origin)
        elif name in self.entries:
            self.duplicates[name] = [self.entries.pop(name).origin, origin]
        else:
            self.entries[name] = entry


class MethodRegistry(PluginRegistry[MethodEntry]):
    kind = "method"
    add_hint = "Add a plugin file to methods/."

    @property
    def methods(self) -> dict[str, MethodEntry]:
        return self.entries

    def get(self, name: str) -> MethodEntry:
        return self.entry(name)

    def add_card(self, card: MethodCard, origin: str) -> None:
        self._add(card.name, MethodEntry(card.name, origin, card), origin)


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
        if not path.name.startswith("_"):
            registry.add_plugin(str(path), lambda path=path: load_plugin_file(path), _cards_of, path)
    if entry_points:
        registry.add_entry_points(ENTRY_POINT_GROUP, _cards_of)
    return registry
