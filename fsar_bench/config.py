"""Settings: defaults < bench.toml < command line. Unknown keys and wrong types are errors.

``bench.toml`` is looked for in the current folder and its parents (or given with ``--config``);
relative paths in it are relative to its own folder.

Usage::

    config = load_config(Path("bench.toml"), cli={"protocol.seed": 3, "protocol.episodes": None})
    config.protocol["way"]          # 5
    config.path("results")          # absolute Path
    config.method_overrides("otam") # {"lr": ..., "options": {...}}
"""

from __future__ import annotations

import copy
import dataclasses
import json
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fsar_bench.api import Recipe
from fsar_bench.errors import UnknownNameError, UsageError

CONFIG_FILE_NAME = "bench.toml"

DEFAULTS: dict[str, dict[str, Any]] = {
    "protocol": {
        "way": 5,
        "queries_per_class": 1,
        "episodes": 10_000,
        "frames": 8,
        "seed": 0,
    },
    "paths": {
        "results": "results",
        "cache": "~/.cache/fsar-bench",
        "methods": "methods",
        "splits": "splits",
    },
    "run": {
        "device": "auto",
        "backbone": "auto",
        "backbone_weights": "pretrained",
        "track": "finetune",
        "train_seed": 0,
        "episode_batch": 0,
        "workers": 2,
        "cache_max_gb": 20,
        "frame_store": "auto",
        "precision": "auto",
        "save_every_minutes": 10.0,
    },
}
DATASET_KEYS: dict[str, type | tuple[type, ...]] = {"root": str, "layout": str, "splits_dir": str}
_TOML_TYPES: dict[str, type | tuple[type, ...]] = {"str": str, "int": int, "float": (int, float), "bool": bool}
RECIPE_KEYS: dict[str, type | tuple[type, ...]] = {
    field.name: _TOML_TYPES.get(str(field.type), list if str(field.type).startswith("tuple") else dict)
    for field in dataclasses.fields(Recipe) if field.name != "sources"
}
METHOD_KEYS: dict[str, type | tuple[type, ...]] = {**RECIPE_KEYS, "options": dict, "backbone": str, "recipes": dict}
"""[methods.NAME]: recipe fields for every dataset, head options, backbone, and ``recipes.DATASET`` tables (recipe
fields for one dataset: a recipe for a benchmark the card has none for, or changes to the card's)."""
PATH_KEYS = {"results", "cache", "methods", "splits"}

# Allowed values of every numeric setting: (lowest, whether the lowest itself is allowed, highest or None, note).
RANGES: dict[str, tuple[float, bool, float | None, str]] = {
    "protocol.way": (1, True, None, ""), "protocol.queries_per_class": (1, True, None, ""),
    "protocol.episodes": (1, True, None, ""), "protocol.frames": (1, True, None, ""), "protocol.seed": (0, True, None, ""),
    "run.train_seed": (0, True, None, ""), "run.episode_batch": (0, True, None, "0 chooses it from memory"),
    "run.workers": (0, True, None, "0 decodes in the main process"),
    "run.cache_max_gb": (0, True, None, "0 turns the disk cache off"),
    "lr": (0, False, None, ""), "iterations": (1, True, None, ""), "episodes_per_step": (1, True, None, ""),
    "train_queries_per_class": (1, True, None, ""), "weight_decay": (0, True, None, ""), "momentum": (0, True, 1, ""),
    "warmup": (0, True, None, ""), "warmup_start_lr": (0, True, None, ""), "lr_decay": (0, False, None, ""),
    "val_every": (1, True, None, ""), "val_episodes": (1, True, None, ""),
}
RANGE_OF_ITEMS = {"lr_steps": (0, True, None, ""), "lr_factors": (0, False, None, ""), "loss_weights": (0, True, None, ""),
                  "train_queries_by_shot": (1, True, None, "")}
CHOICES = {"optimizer": ("adam", "sgd")}
CLI_OPTIONS = {"protocol.episodes": "--episodes", "protocol.seed": "--seed", "run.train_seed": "--train-seed",
               "run.workers": "--workers"}


@dataclass(frozen=True)
class Config:
    """The resolved settings. ``source`` is the bench.toml used (None: defaults only)."""

    values: dict[str, Any]
    source: Path | None
    base_dir: Path

    @property
    def protocol(self) -> dict[str, Any]:
        return self.values["protocol"]

    @property
    def run(self) -> dict[str, Any]:
        return self.values["run"]

    def path(self, key: str) -> Path:
        """An absolute path from [paths] (relative ones are relative to bench.toml's folder)."""
        path = Path(self.values["paths"][key]).expanduser()
        return path if path.is_absolute() else (self.base_dir / path).resolve()

    def dataset_settings(self, name: str) -> dict[str, Any]:
        """The [datasets.NAME] table (root, layout, ...), empty when absent."""
        return dict(self.values.get("datasets", {}).get(name, {}))

    def method_overrides(self, name: str) -> dict[str, Any]:
        """The [methods.NAME] table (recipe fields, options, backbone), empty when absent."""
        return copy.deepcopy(self.values.get("methods", {}).get(name, {}))

    def to_json(self) -> str:
        return json.dumps(self.values, indent=2, sort_keys=True, default=str)


def find_config_file(start: Path) -> Path | None:
    """bench.toml in ``start`` or the nearest parent, or None."""
    for folder in (start, *start.parents):
        candidate = folder / CONFIG_FILE_NAME
        if candidate.is_file():
            return candidate
    return None


def _type_name(expected: type | tuple[type, ...]) -> str:
    names = [t.__name__ for t in (expected if isinstance(expected, tuple) else (expected,))]
    words = {"str": "a string", "int": "an integer", "float": "a number", "dict": "a table", "list": "an array"}
    return " or ".join(words.get(n, n) for n in names)


def _check_value(value: Any, expected: type | tuple[type, ...], where: str, source: Path | str) -> None:
    if isinstance(value, bool) and expected in (int, (int, float)):
        raise UsageError(f"{source}: {where} must be {_type_name(expected)}, got {value!r}")
    if not isinstance(value, expected):
        raise UsageError(f"{source}: {where} must be {_type_name(expected)}, got {value!r} ({type(value).__name__})")


def _range_text(low: float, inclusive: bool, high: float | None, note: str) -> str:
    text = f"{'at least' if inclusive else 'above'} {low:g}" + (f" and at most {high:g}" if high is not None else "")
    return text + (f" ({note})" if note else "")


def check_range(where: str, value: Any, bounds: tuple[float, bool, float | None, str], source: Path | str) -> None:
    """UsageError naming the key, its allowed range and the file (or CLI option) when ``value`` is outside."""
    low, inclusive, high, note = bounds
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return  # types are checked by _check_value
    if value < low or (value == low and not inclusive) or (high is not None and value > high) or value != value:
        option = f" ({CLI_OPTIONS[where]})" if source == "command line" and where in CLI_OPTIONS else ""
        raise UsageError(f"{source}: {where}{option} must be {_range_text(*bounds)}, got {value!r}")


def _check_method_values(name: str, table: dict[str, Any], source: Path | str) -> None:
    for key, value in table.items():
        where = f"methods.{name}.{key}"
        if key in RANGES:
            check_range(where, value, RANGES[key], source)
        elif key in CHOICES and value not in CHOICES[key]:
            raise UsageError(f"{source}: {where} must be one of {', '.join(map(repr, CHOICES[key]))}, got {value!r}")
        elif key in RANGE_OF_ITEMS:
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for item_key, item in items:
                check_range(f"{where}[{item_key!r}]", item, RANGE_OF_ITEMS[key], source)


def validate(values: dict[str, Any], source: Path | str) -> None:
    """Raise UsageError naming the key and file for any unknown key or wrong type."""
    for section, table in values.items():
        if section in DEFAULTS:
            _check_value(table, dict, f"[{section}]", source)
            for key, value in table.items():
                if key not in DEFAULTS[section]:
                    raise UsageError(f"{source}: unknown key '{key}' in [{section}]. Known: {', '.join(DEFAULTS[section])}")
                expected = type(DEFAULTS[section][key])
                _check_value(value, (int, float) if expected is float else expected, f"{section}.{key}", source)
        elif section in ("datasets", "methods"):
            schema = DATASET_KEYS if section == "datasets" else METHOD_KEYS
            _check_value(table, dict, f"[{section}]", source)
            for name, entries in table.items():
                _check_value(entries, dict, f"[{section}.{name}]", source)
                for key, value in entries.items():
                    if key not in schema:
                        raise UsageError(f"{source}: unknown key '{key}' in [{section}.{name}]. Known: {', '.join(schema)}")
                    _check_value(value, schema[key], f"{section}.{name}.{key}", source)
                if section == "methods":
                    _validate_dataset_recipes(entries.get("recipes", {}), name, source)
                    _check_method_values(name, entries, source)
        else:
            known = ", ".join([*DEFAULTS, "datasets", "methods"])
            raise UsageError(f"{source}: unknown section or key '{section}'. Known sections: {known}")
    for section in DEFAULTS:
        for key, value in values.get(section, {}).items():
            if f"{section}.{key}" in RANGES:
                check_range(f"{section}.{key}", value, RANGES[f"{section}.{key}"], source)


def check_table_names(config: Config, methods: Iterable[str], datasets: Iterable[str]) -> None:
    """Every [methods.NAME] and [datasets.NAME] of the config names a known method / benchmark, or
    UnknownNameError (exit 2) with "did you mean" (a misspelt table would otherwise be silently ignored)."""
    for section, kind, known in (("methods", "method", methods), ("datasets", "dataset", datasets)):
        known = list(known)
        for name in config.values.get(section, {}):
            if name not in known:
                raise UnknownNameError(kind, name, known, f"(table [{section}.{name}] in {config.source or 'the config'})")


def _validate_dataset_recipes(recipes: dict[str, Any], method: str, source: Path | str) -> None:
    """[methods.NAME.recipes.DATASET] tables hold recipe fields only."""
    for dataset, table in recipes.items():
        where = f"methods.{method}.recipes.{dataset}"
        _check_value(table, dict, f"[{where}]", source)
        for key, value in table.items():
            if key not in RECIPE_KEYS:
                raise UsageError(f"{source}: unknown key '{key}' in [{where}]. Recipe fields: {', '.join(RECIPE_KEYS)}")
            _check_value(value, RECIPE_KEYS[key], f"{where}.{key}", source)


def load_config(path: Path | None = None, cli: dict[str, Any] | None = None, search_from: Path | None = None) -> Config:
    """Resolve defaults < file < CLI. ``cli`` maps "section.key" to a value; None values are ignored."""
    source = path if path is not None else find_config_file((search_from or Path.cwd()).resolve())
    values = copy.deepcopy(DEFAULTS)
    if source is not None:
        if not source.is_file():
            raise UsageError(f"config file {source} does not exist")
        try:
            loaded = tomllib.loads(source.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as error:
            raise UsageError(f"{source}: not valid TOML ({error})") from None
        validate(loaded, source)
        for section, table in loaded.items():
            values.setdefault(section, {}).update(table)
    overrides: dict[str, dict[str, Any]] = {}
    for dotted, value in (cli or {}).items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        overrides.setdefault(section, {})[key] = value
    validate(overrides, "command line")
    for section, table in overrides.items():
        values[section].update(table)
    base_dir = source.parent.resolve() if source is not None else (search_from or Path.cwd()).resolve()
    return Config(values=values, source=source.resolve() if source else None, base_dir=base_dir)


def recipe_with_overrides(recipe: Recipe, overrides: dict[str, Any]) -> Recipe:
    """Apply [methods.NAME] recipe fields (not ``options``/``backbone``) to a Recipe."""
    fields = {k: (tuple(v) if isinstance(v, list) else v) for k, v in overrides.items() if k in RECIPE_KEYS}
    if "train_queries_by_shot" in fields:  # TOML table keys are strings
        fields["train_queries_by_shot"] = {int(shot): int(q) for shot, q in fields["train_queries_by_shot"].items()}
    if "head_options_by_shot" in fields:
        fields["head_options_by_shot"] = {int(shot): dict(options)
                                          for shot, options in fields["head_options_by_shot"].items()}
    return dataclasses.replace(recipe, **fields)
