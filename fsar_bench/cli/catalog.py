"""`fsar-bench methods`, `fsar-bench backbones` and `fsar-bench datasets`: what can be run.

Usage::

    fsar-bench methods
    fsar-bench backbones
    fsar-bench datasets
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from fsar_bench.cli.common import config_from, handle_errors, stderr, stdout


def register(app: typer.Typer) -> None:
    @app.command("methods")
    @handle_errors
    def methods_command(ctx: typer.Context) -> None:
        """List every method with its origin file; plugins that failed to load are shown by file and line."""
        from fsar_bench.model.registry import discover_methods

        config = config_from(ctx)
        folder = config.path("methods")
        registry = discover_methods(folder)
        table = Table(caption=f"files in {folder}", caption_justify="left")
        table.add_column("name", no_wrap=True)
        table.add_column("summary", ratio=1)
        table.add_column("origin", no_wrap=True)
        for name in registry.names():
            entry = registry.methods[name]
            table.add_row(name, entry.card.summary, _short_origin(entry.origin, folder))
        stdout.print(table)
        for name, origins in registry.duplicates.items():
            stderr.print(f"[red]duplicate method name {name!r}[/]: defined in {' and '.join(origins)}")
        for failure in registry.failures:
            stderr.print(f"[red]plugin failed to load[/]: {failure.origin}: {failure.message}")

    @app.command("backbones")
    @handle_errors
    def backbones_command() -> None:
        """List every backbone: its outputs and their d, pinned weights, pip extra and origin."""
        from fsar_bench.backbones import discover_backbones

        registry = discover_backbones()
        table = Table(title="backbones")
        for column in ("name", "outputs (d)", "weights (first = pretrained)", "extra", "summary", "origin"):
            table.add_column(column)
        for name in registry.names():
            entry = registry.backbones[name]
            card = entry.card
            outputs = ", ".join(f"{kind} {dim}" for kind, dim in card.outputs.items())
            weights = ", ".join(f"{spec.tag} = {spec.pin}" for spec in card.weights)
            table.add_row(name, outputs, weights, card.extra or "-", card.summary, entry.origin)
        stdout.print(table)
        for name, origins in registry.duplicates.items():
            stderr.print(f"[red]duplicate backbone name {name!r}[/]: defined in {' and '.join(origins)}")
        for failure in registry.failures:
            stderr.print(f"[red]backbone plugin failed to load[/]: {failure.origin}: {failure.message}")

    @app.command("datasets")
    @handle_errors
    def datasets_command(ctx: typer.Context) -> None:
        """List the benchmarks and where their data is expected."""
        from fsar_bench.data.benchmarks import BENCHMARK_DESCRIPTIONS, benchmark_names

        config = config_from(ctx)
        table = Table(title="datasets")
        for column in ("name", "description", "root (bench.toml \\[datasets.NAME] root)"):
            table.add_column(column)
        for name in benchmark_names():
            root = config.dataset_settings(name).get("root", "generated in the cache" if name == "synthetic" else "(not set)")
            table.add_row(name, BENCHMARK_DESCRIPTIONS.get(name, ""), root)
        stdout.print(table)


def _short_origin(origin: str, folder: Path) -> str:
    """A plugin file in the methods folder by its name alone (the folder is the caption); others in full."""
    path = Path(origin)
    return path.name if path.parent == folder else origin
