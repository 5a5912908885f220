"""`fsar-bench recipe`: the effective training recipe of a method on a dataset, every value with its source.

Usage::

    fsar-bench recipe molo --dataset ssv2-full --shots 5     # one table (bench.toml applied)
    fsar-bench recipe --markdown > docs/recipes.md           # every method x benchmark, from the cards alone
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fsar_bench.cli.common import config_from, handle_errors, stdout
from fsar_bench.errors import UsageError


def register(app: typer.Typer) -> None:
    @app.command("recipe")
    @handle_errors
    def recipe_command(
        ctx: typer.Context,
        method: Annotated[Optional[str], typer.Argument(help="Method name (see `fsar-bench methods`).")] = None,
        dataset: Annotated[Optional[str], typer.Option("--dataset", help="Benchmark (see `fsar-bench datasets`).")] = None,
        shots: Annotated[int, typer.Option("--shots", help="Shot K (training queries per class depend on it).")] = 5,
        markdown: Annotated[bool, typer.Option("--markdown", help="Every method x benchmark as Markdown "
                                                 "(docs/recipes.md), from the cards alone.")] = False,
    ) -> None:
        """Print every value of the training recipe, where it comes from, and the transforms it implies."""
        from fsar_bench.data.benchmarks import benchmark_names
        from fsar_bench.errors import UnknownNameError
        from fsar_bench.model.backbones import default_backbone
        from fsar_bench.model.effective_recipe import resolve_recipe
        from fsar_bench.model.recipe_report import recipe_rows, recipes_markdown
        from fsar_bench.model.registry import discover_methods

        config = config_from(ctx)
        registry = discover_methods(config.path("methods"))
        if markdown:
            if method or dataset:
                raise UsageError("--markdown prints every method and benchmark; leave out METHOD and --dataset")
            stdout.print(recipes_markdown([registry.methods[name].card for name in registry.names()]),
                         markup=False, highlight=False, soft_wrap=True, end="")
            return
        if not method or not dataset:
            raise UsageError("give a method and --dataset (e.g. `fsar-bench recipe molo --dataset ssv2-full`), "
                             "or --markdown for every method and benchmark")
        if shots < 1:
            raise UsageError(f"--shots must be at least 1, got {shots}")
        if dataset not in benchmark_names():
            raise UnknownNameError("dataset", dataset, benchmark_names(), "See `fsar-bench datasets`.")
        entry = registry.get(method)
        overrides = config.method_overrides(entry.name)
        effective = resolve_recipe(entry.card, dataset, overrides)
        backbone = overrides.get("backbone") or (config.run["backbone"] if config.run["backbone"] != "auto"
                                                 else default_backbone(dataset, entry.card))
        table = Table(title=f"{entry.name} on {dataset}, {shots}-shot ({backbone}; config {config.source or 'none'})")
        for column in ("item", "value", "source"):
            table.add_column(column, overflow="fold")
        for item, value, source in recipe_rows(entry.card, effective, shots, backbone):
            table.add_row(escape(item), escape(value), escape(source))
        Console(highlight=False, width=None if stdout.is_terminal else 240).print(table)  # piped: not wrapped at 80
        if effective.recipe.notes:
            stdout.print(effective.recipe.notes, markup=False, highlight=False)
