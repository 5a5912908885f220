"""Backbones are plugins, like methods: one file per backbone in this folder, plus installed packages'
``fsar_bench.backbones`` entry points (a module with ``CARDS``, or a ``BackboneCard``).

A file defines ``CARDS`` (a tuple of ``BackboneCard``); dropping a file here registers it, with no central list.
A name defined twice is an error naming both origins; an unknown name gets "did you mean"; a plugin that fails
to import (a missing optional dependency does not: those are imported when a backbone is built) is reported by
file and line, and every other backbone still works.

Usage::

    from fsar_bench.backbones import discover_backbones, get_backbone_card

    card = get_backbone_card("clip-rn50")
    card.dim, card.outputs                      # 1024, {"pooled": 1024, "maps": 2048}
    trunk = card.build(card.resolve_weights("none"), image_size=224)
    discover_backbones().names()                # ['clip-rn50', 'clip-vit-b16', 'dinov2-vit-b14', 'resnet50', 'small-cnn']
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from fsar_bench.backbones._base import (NO_WEIGHTS, OUTPUT_KINDS, PRETRAINED, BackboneCard, FrameBackbone, Weights,
                                        WeightsTag, require_extra)
from fsar_bench.errors import UnknownNameError, UsageError
from fsar_bench.model.registry import PluginFailure, _failure_location

ENTRY_POINT_GROUP = "fsar_bench.backbones"
__all__ = ["BackboneCard", "BackboneRegistry", "FrameBackbone", "NO_WEIGHTS", "OUTPUT_KINDS", "PRETRAINED", "Weights",
           "WeightsTag", "discover_backbones", "get_backbone_card", "require_extra"]


@dataclass(frozen=True)
class BackboneEntry:
    name: str
    origin: str
    card: BackboneCard


@dataclass
class BackboneRegistry:
    backbones: dict[str, BackboneEntry] = field(default_factory=dict)
    failures: list[PluginFailure] = field(default_factory=list)
    duplicates: dict[str, list[str]] = field(default_factory=dict)

    def names(self) -> list[str]:
        return sorted(self.backbones)

    def get(self, name: str) -> BackboneCard:
        """The card called ``name``; did-you-mean on unknown names, both origins on duplicates."""
        if name in self.duplicates:
            raise UsageError(f"backbone {name!r} is defined twice: {' and '.join(self.duplicates[name])}. Rename one.")
        if name not in self.backbones:
            broken = "; ".join(f"{f.origin}: {f.message}" for f in self.failures)
            hint = f"(Backbone plugins that failed to load: {broken})" if broken else "Add a file to fsar_bench/backbones/."
            raise UnknownNameError("backbone", name, self.backbones, hint)
        return self.backbones[name].card

    def _add(self, card: BackboneCard, origin: str) -> None:
        if card.name in self.duplicates:
            self.duplicates[card.name].append(origin)
        elif card.name in self.backbones:
            self.duplicates[card.name] = [self.backbones.pop(card.name).origin, origin]
        else:
            self.backbones[card.name] = BackboneEntry(card.name, origin, card)


def _cards_of(module: ModuleType | object) -> list[BackboneCard]:
    if isinstance(module, BackboneCard):
        return [module]
    cards = getattr(module, "CARDS", None)
    if cards is None:
        raise TypeError("defines no CARDS (a tuple of fsar_bench.backbones.BackboneCard)")
    cards = list(cards)
    for card in cards:
        if not isinstance(card, BackboneCard):
            raise TypeError(f"CARDS holds {type(card).__name__}, not BackboneCard")
    return cards


def discover_backbones(folder: Path | None = None, entry_points: bool = True) -> BackboneRegistry:
    """Every backbone file of ``folder`` (default: this package's folder, imported as its modules) and entry point."""
    registry = BackboneRegistry()
    builtin = folder is None
    folder = folder or Path(__file__).parent
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("_"):
            continue
        try:
            if builtin:
                module = importlib.import_module(f"{__name__}.{path.stem}")
            else:
                from fsar_bench.model.registry import load_plugin_file

                module = load_plugin_file(path)
            cards = _cards_of(module)
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


@functools.lru_cache(maxsize=1)
def _default_registry() -> BackboneRegistry:
    return discover_backbones()


def get_backbone_card(name: str) -> BackboneCard:
    """The registered backbone called ``name`` (built-in files and entry points, discovered once)."""
    return _default_registry().get(name)
