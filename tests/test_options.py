"""Head options: one typed, frozen dataclass per head, parsed by one helper that rejects unknown keys."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import pytest
from typer.testing import CliRunner

from fsar_bench.api import (
    HeadConfig,
    NoOptions,
    OptionError,
    loss_weight,
    loss_weight_names,
    parse_options,
)
from fsar_bench.cli.main import app
from fsar_bench.errors import UsageError
from methods import otam, trx
from tests.conftest import write_bench_toml


@dataclass(frozen=True)
class DemoOptions:
    heads: int = 8
    scale: float = 1.0
    sizes: tuple[int, ...] = (2, 3)
    mode: Literal["auto", "videos"] = "auto"
    enabled: bool = True
    classification_weight: float = loss_weight(0.6)


def test_parse_options_types_values_and_keeps_defaults() -> None:
    options = parse_options(DemoOptions, {"heads": 4, "scale": 2, "sizes": [1], "mode": "videos"}, method="demo")
    assert options == DemoOptions(heads=4, scale=2.0, sizes=(1,), mode="videos")
    assert isinstance(options.scale, float) and isinstance(options.sizes, tuple)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.heads = 2  # type: ignore[misc]
    assert loss_weight_names(DemoOptions) == ("classification_weight",)


def test_unknown_key_names_method_and_key_with_did_you_mean() -> None:
    with pytest.raises(OptionError) as error:
        parse_options(DemoOptions, {"head": 4}, method="demo")
    message = str(error.value)
    assert "unknown demo option 'head'" in message and "Did you mean 'heads'" in message and "Known: " in message
    assert isinstance(error.value, UsageError) and error.value.exit_code == 2


@pytest.mark.parametrize(("key", "value", "words"), [
    ("heads", 2.5, "must be an integer"), ("heads", True, "must be an integer"), ("scale", "x", "must be a number"),
    ("sizes", 3, "must be a list"), ("sizes", ["a"], "must be an integer"), ("mode", "prototypes", "must be one of"),
    ("enabled", 1, "true or false"),
])
def test_wrong_types_are_option_errors(key: str, value: object, words: str) -> None:
    with pytest.raises(OptionError, match=words):
        parse_options(DemoOptions, {key: value}, method="demo")


def test_heads_parse_their_options_and_parameter_free_heads_take_none() -> None:
    head = trx.TRXHead(HeadConfig(dim=8, frames=4, num_base_classes=3, options={"out_dim": 6, "cardinalities": [2]}))
    assert head.options == trx.TRXOptions(out_dim=6, cardinalities=(2,)) and head.cardinalities == (2,)
    assert otam.OTAMHead.options_class is NoOptions
    with pytest.raises(OptionError, match="unknown otam option 'out_dim'.*takes no options"):
        otam.OTAMHead(HeadConfig(dim=8, frames=4, num_base_classes=3, options={"out_dim": 6}, method="otam"))


def test_an_unknown_option_in_bench_toml_exits_2_naming_method_and_key(tmp_path, synthetic_cache) -> None:
    config = write_bench_toml(tmp_path, synthetic_cache, "[methods.trx.options]\nout_dims = 64\n")
    result = CliRunner().invoke(app, ["--config", str(config), "run", "trx", "--dataset", "synthetic", "--shots", "1",
                                      "--episodes", "5", "--no-train"])
    assert result.exit_code == 2, result.output
    assert "unknown trx option 'out_dims'" in result.output and "Did you mean 'out_dim'" in result.output
    assert "Traceback" not in result.output
