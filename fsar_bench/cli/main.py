"""The ``fsar-bench`` command line (Typer; one module per command group).

Usage::

    fsar-bench run otam --dataset synthetic --shots 1,5
    fsar-bench report --format markdown
    fsar-bench methods
    fsar-bench recipe molo --dataset ssv2-full
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from fsar_bench.cli import cache_cmd, catalog, config_cmd, data, doctor_cmd, recipe_cmd, report_cmd, run, splits_cmd

app = typer.Typer(
    name="fsar-bench",
    help="Few-shot action recognition on one seeded 10,000-episode protocol, with CI tables.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main_options(
    ctx: typer.Context,
    config: Annotated[Optional[Path], typer.Option("--config", help="bench.toml to use (default: nearest upward).")] = None,
) -> None:
    """Global options."""
    ctx.obj = {"config_path": config}


run.register(app)
report_cmd.register(app)
catalog.register(app)
recipe_cmd.register(app)
doctor_cmd.register(app)
app.add_typer(config_cmd.app, name="config")
app.add_typer(data.app, name="data")
app.add_typer(splits_cmd.app, name="splits")
app.add_typer(cache_cmd.app, name="cache")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
