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
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from fsar_bench.backbones._base import (NO_WEIGHTS, OUTPUT_KINDS, PRETRAINED, BackboneCard, FrameBackbone, Weights,
                                        WeightsTag, require_extra)
from fsar_bench.errors import UnknownNameError, UsageError
from fsar_bench.model.registry import PluginRegistry

ENTRY_POINT_GROUP = "fsar_bench.backbones"
__all__ = ["BackboneCard", "BackboneRegistry", "FrameBackbone", "NO_WEIGHTS", "OUTPUT_KINDS", "PRETRAINED", "Weights",
           "WeightsTag", "discover_backbones", "get_backbone_card", "require_extra"]


@dataclass(frozen=True)
class BackboneEntry:
    name: str
    origin: str
    card: BackboneCard


class BackboneRegistry(PluginRegistry[BackboneEntry]):
    kind = "backbone"
    add_hint = "Add a file to fsar_bench/backbones/."

    @property
    def backbones(self) -> dict[str, BackboneEntry]:
        return self.entries

    def get(self, name: str) -> BackboneCard:
        """The card called ``name``; did-you-mean on unknown names, both origins on duplicates."""
        return self.entry(name).card

    def add_card(self, card: BackboneCard, origin: str) -> None:
        self._add(card.name, BackboneEntry(card.name, origin, card), origin)


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
        if builtin:
            load = lambda stem=path.stem: importlib.import_module(f"{__name__}.{stem}")  # noqa: E731
        else:
            from fsar_bench.model.registry import load_plugin_file

            load = lambda path=path: load_plugin_file(path)  # noqa: E731
        registry.add_plugin(str(path), load, _cards_of, path)
    if entry_points:
        registry.add_entry_points(ENTRY_POINT_GROUP, _cards_of)
    return registry


@functools.lru_cache(maxsize=1)
def _default_registry() -> BackboneRegistry:
    return discover_backbones()


def get_backbone_card(name: str) -> BackboneCard:
    """The registered backbone called ``name`` (built-in files and entry points, discovered once)."""
    return _default_registry().get(name)
