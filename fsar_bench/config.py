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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fsar_bench.api import Recipe
from fsar_bench.errors import UsageError

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
    },
}
DATASET_KEYS: dict[str, type | tuple[type, ...]] = {"root": str, "layout": str, "splits_dir": str}
_TOML_TYPES: dict[str, type | tuple[type, ...]] = {"str": str, "int": int, "float": (int, float)}
RECIPE_KEYS: dict[str, type | tuple[type, ...]] = {
    field.name: _TOML_TYPES.get(str(field.type), list if str(field.type).startswith("tuple") else dict)
    for field in dataclasses.fields(Recipe)
}
METHOD_KEYS: dict[str, type | tuple[type, ...]] = {**RECIPE_KEYS, "options": dict, "backbone": str}
PATH_KEYS = {"results", "cache", "methods", "splits"}


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


def validate(values: dict[str, Any], source: Path | str) -> None:
    """Raise UsageError naming the key and file for any unknown key or wrong type."""
    for section, table in values.items():
        if section in DEFAULTS:
            _check_value(table, dict, f"[{section}]", source)
            for key, value in table.items():
                if key not in DEFAULTS[section]:
                    raise UsageError(f"{source}: unknown key '{key}' in [{section}]. Known: {', '.join(DEFAULTS[section])}")
                _check_value(value, type(DEFAULTS[section][key]), f"{section}.{key}", source)
        elif section in ("datasets", "methods"):
            schema = DATASET_KEYS if section == "datasets" else METHOD_KEYS
            _check_value(table, dict, f"[{section}]", source)
            for name, entries in table.items():
                _check_value(entries, dict, f"[{section}.{name}]", source)
                for key, value in entries.items():
                    if key not in schema:
                        raise UsageError(f"{source}: unknown key '{key}' in [{section}.{name}]. Known: {', '.join(schema)}")
                    _check_value(value, schema[key], f"{section}.{name}.{key}", source)
        else:
            known = ", ".join([*DEFAULTS, "datasets", "methods"])
            raise UsageError(f"{source}: unknown section or key '{section}'. Known sections: {known}")
    protocol = values.get("protocol", {})
    for key in ("way", "queries_per_class", "episodes", "frames"):
        if key in protocol and protocol[key] < 1:
            raise UsageError(f"{source}: protocol.{key} must be at least 1, got {protocol[key]}")


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
    return dataclasses.replace(recipe, **fields)
