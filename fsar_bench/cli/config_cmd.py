"""`fsar-bench config show`: the resolved settings (defaults < bench.toml < command line).

Usage::

    fsar-bench config show
"""

from __future__ import annotations

import typer

from fsar_bench.cli.common import config_from, handle_errors, stderr, stdout

app = typer.Typer(help="Inspect the resolved configuration.", no_args_is_help=True)


@app.command("show")
@handle_errors
def show(ctx: typer.Context) -> None:
    """Print the resolved configuration as JSON (stdout) and its source (stderr)."""
    config = config_from(ctx)
    stderr.print(f"config file: {config.source or '(none: defaults)'}")
    stdout.print(config.to_json(), markup=False, highlight=False)
