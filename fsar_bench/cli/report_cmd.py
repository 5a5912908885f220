"""`fsar-bench report`: tables from ``results/`` (never re-runs anything).

Usage::

    fsar-bench report
    fsar-bench report --format latex --output table.tex
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from fsar_bench.cli.common import config_from, handle_errors, stderr, stdout
from fsar_bench.errors import UsageError


def register(app: typer.Typer) -> None:
    @app.command("report")
    @handle_errors
    def report_command(
        ctx: typer.Context,
        fmt: Annotated[str, typer.Option("--format", help="table | markdown | csv | latex")] = "table",
        output: Annotated[Optional[Path], typer.Option(help="Write to this file instead of stdout.")] = None,
        results: Annotated[Optional[Path], typer.Option(help="Results folder (default: bench.toml).")] = None,
    ) -> None:
        """Accuracy ± 95% CI (1.96·s/√N over episodes, s with ddof=1) per method, dataset and shot."""
        from fsar_bench.report import FORMATS, collect_runs, format_table

        if fmt not in FORMATS:
            raise UsageError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
        config = config_from(ctx, {"paths.results": str(results.resolve()) if results else None})
        table = collect_runs(config.path("results"))
        if table.empty:
            stderr.print(f"No results in {config.path('results')}. Produce some with e.g. "
                         "`fsar-bench run otam --dataset synthetic --shots 1,5`.")
            return
        text = format_table(table, fmt)
        if output is not None:
            output.write_text(text, encoding="utf-8")
            stderr.print(f"wrote {output}")
        elif fmt == "table":
            rich_table = Table(title="fsar-bench results (accuracy %, ci95 = 1.96·s/√N, ddof=1)")
            columns = ["method", "dataset", "shot", "way", "episodes", "accuracy ± ci95", "std", "protocol", "status"]
            for column in columns:
                rich_table.add_column(column, justify="right" if column in ("shot", "way", "episodes", "std") else "left")
            for row in table.itertuples(index=False):
                rich_table.add_row(row.method, row.dataset, str(row.shot), str(row.way), str(row.episodes),
                                   f"{row.accuracy:.2f} ± {row.ci95:.2f}", f"{row.std:.2f}", row.protocol, row.status)
            stdout.print(rich_table)
        else:
            stdout.print(text, end="", markup=False, highlight=False, soft_wrap=True)
