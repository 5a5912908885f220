"""Shared pieces of the command line: config loading, error reporting, option parsing.

Diagnostics go to stderr so that stdout stays parseable (e.g. ``report --format csv``).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from fsar_bench.config import Config, load_config
from fsar_bench.errors import FsarError, UsageError
from fsar_bench.data.video import VideoError

stderr = Console(stderr=True, highlight=False)
stdout = Console(highlight=False)
F = TypeVar("F", bound=Callable[..., Any])


INTERRUPTED_EXIT_CODE = 130
"""128 + SIGINT, what shells report for a command stopped by Ctrl-C."""


def handle_errors(command: F) -> F:
    """Turn fsar-bench errors into a one-paragraph message on stderr and the documented exit code; Ctrl-C into
    "interrupted" and exit code 130 (runs resume where they stopped), without a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except FsarError as error:
            stderr.print(f"[bold red]error:[/] {escape(str(error))}", markup=True, soft_wrap=True)
            raise typer.Exit(error.exit_code) from None
        except VideoError as error:
            stderr.print(f"[bold red]error:[/] video {escape(str(error))}. {escape(video_remedy(error))}",
                         markup=True, soft_wrap=True)
            raise typer.Exit(3) from None
        except KeyboardInterrupt:
            stderr.print("\ninterrupted — run the same command to resume", markup=False)
            raise typer.Exit(INTERRUPTED_EXIT_CODE) from None

    return wrapper  # type: ignore[return-value]


def video_remedy(error: VideoError) -> str:
    """What to do about a bad video: regenerate a synthetic one; else the `data check` that lists every such file."""
    if any(part.startswith("synthetic-") for part in error.path.parts):
        return "The generated synthetic videos are damaged: regenerate them with `fsar-bench data synth --force`."
    if error.kind == "missing":
        return "Run `fsar-bench data check DATASET` to list every missing file."
    return ("Run `fsar-bench data check DATASET --decode` to list every unreadable file (without --decode it "
            "only checks that files exist).")


def config_from(ctx: typer.Context, cli: dict[str, Any] | None = None) -> Config:
    """The resolved config: ``--config`` (or bench.toml found upward from cwd) < ``cli``."""
    path: Path | None = (ctx.obj or {}).get("config_path") if ctx is not None else None
    return load_config(path, cli)


def parse_shots(text: str) -> list[int]:
    """"1,5" -> [1, 5]; anything else is a UsageError saying what is expected."""
    shots = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise UsageError(f"--shots expects positive integers separated by commas (e.g. 1,5), got {text!r}")
        shots.append(int(part))
    return sorted(set(shots))

