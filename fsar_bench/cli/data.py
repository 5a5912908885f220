"""`fsar-bench data synth`: make the built-in synthetic benchmark.

Usage::

    fsar-bench data synth            # generates into the cache folder (also done on first use)
    fsar-bench data synth --force    # regenerate
"""

from __future__ import annotations

import time
from typing import Annotated

import typer

from fsar_bench.cli.common import config_from, handle_errors, stderr, stdout

app = typer.Typer(help="Prepare and check datasets.", no_args_is_help=True)


@app.command("synth")
@handle_errors
def synth(
    ctx: typer.Context,
    force: Annotated[bool, typer.Option("--force", help="Regenerate even if present.")] = False,
) -> None:
    """Write the synthetic benchmark's mp4 videos and split files (deterministic from its seed)."""
    from fsar_bench.synthetic import SyntheticSpec, ensure_synthetic

    config = config_from(ctx)
    started = time.time()
    root = ensure_synthetic(config.path("cache") / "datasets", SyntheticSpec(), force=force)
    stderr.print(f"synthetic benchmark ready in {time.time() - started:.1f} s")
    stdout.print(str(root))
