"""Head options: a typed, frozen dataclass per head, parsed from plain mappings by one helper.

Options reach a head from three places, merged in this order: the card's ``options`` (e.g. an ablation's
switch), the recipe's ``head_options`` (per-dataset constants and loss weights), and ``[methods.NAME] options``
in bench.toml. ``parse_options`` turns the merged mapping into the head's options dataclass: an unknown key is
a usage error (exit 2) naming the method and the key, with "did you mean"; a value of the wrong type is one too.
Loss weights are ordinary options declared with ``loss_weight(default)``, so recipes and bench.toml set them
like any other option and ``loss_weight_names`` lists them.

Usage (plugins import these names from ``fsar_bench.api``)::

    @dataclass(frozen=True)
    class MyOptions:
        heads: int = 8
        cardinalities: tuple[int, ...] = (2, 3)
        classification_weight: float = loss_weight(0.6)

    options = parse_options(MyOptions, {"heads": 4, "cardinalities": [2]}, method="mymethod")
    options.cardinalities            # (2,)
    parse_options(MyOptions, {"head": 4}, method="mymethod")
    # OptionError: unknown mymethod option 'head'. Did you mean 'heads'? Known: cardinalities, ...
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, get_args, get_origin

from fsar_bench.errors import UsageError

T = TypeVar("T")
LOSS_WEIGHT = "loss_weight"
"""Field metadata key that marks an option as a loss weight."""


class OptionError(UsageError, ValueError):
    """A head option that does not exist, has the wrong type or an impossible value (exit code 2)."""


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """The options of a head that has none (TSN, OTAM): any key given is unknown."""


def loss_weight(default: float) -> Any:
    """A dataclass field for a loss weight: an option like any other, listed by ``loss_weight_names``."""
    return dataclasses.field(default=default, metadata={LOSS_WEIGHT: True})


def loss_weight_names(options_class: type) -> tuple[str, ...]:
    """The options of ``options_class`` declared with ``loss_weight``."""
    return tuple(field.name for field in dataclasses.fields(options_class) if field.metadata.get(LOSS_WEIGHT))


def option_names(options_class: type) -> tuple[str, ...]:
    """Every option of ``options_class``, in declaration order."""
    return tuple(field.name for field in dataclasses.fields(options_class))


def parse_options(options_class: type[T], given: Mapping[str, Any], method: str) -> T:
    """``given`` (plain values, e.g. from TOML) -> a frozen ``options_class`` instance.

    Lists become tuples, integers become floats where a float is declared; anything else of the wrong type, and
    any unknown key, raises OptionError naming ``method`` and the key.
    """
    if not dataclasses.is_dataclass(options_class):
        raise TypeError(f"{method}: options_class must be a dataclass, got {options_class!r}")
    known = option_names(options_class)
    hints = typing.get_type_hints(options_class)
    values = {}
    for key, value in given.items():
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=3, cutoff=0.5)
            hint = f" Did you mean {' or '.join(repr(name) for name in close)}?" if close else ""
            listed = ", ".join(sorted(known)) if known else f"(none: {method} takes no options)"
            raise OptionError(f"unknown {method} option {key!r}.{hint} Known: {listed}.")
        values[key] = _coerce(value, hints[key], f"{method} option {key!r}")
    return options_class(**values)


def _coerce(value: Any, expected: Any, where: str) -> Any:
    """``value`` as the declared type ``expected``, or OptionError."""
    origin, args = get_origin(expected), get_args(expected)
    if expected is Any:
        return value
    if origin is Literal:
        if value not in args:
            raise OptionError(f"{where} must be one of {', '.join(repr(arg) for arg in args)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise OptionError(f"{where} must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(item, args[0], where) for item in value)
        if len(args) != len(value):
            raise OptionError(f"{where} must have {len(args)} items, got {value!r}")
        return tuple(_coerce(item, arg, where) for item, arg in zip(args, value))
    if expected is bool:
        if not isinstance(value, bool):
            raise OptionError(f"{where} must be true or false, got {value!r}")
        return value
    if expected is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise OptionError(f"{where} must be an integer, got {value!r}")
        return value
    if expected is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise OptionError(f"{where} must be a number, got {value!r}")
        return float(value)
    if expected is str:
        if not isinstance(value, str):
            raise OptionError(f"{where} must be a string, got {value!r}")
        return value
    return value
