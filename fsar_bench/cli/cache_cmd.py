"""`fsar-bench cache info` and `fsar-bench cache clear`: the on-disk encoding cache.

The cache lives in ``<[paths] cache>/encodings/v<format>/`` (one checksummed file per encoded video,
see ``fsar_bench.evaluation.cache``) and is kept under ``[run] cache_max_gb`` by dropping the least recently
used entries. Clearing it is always safe: a run that needs an entry encodes the video again.

Usage::

    fsar-bench cache info            # folder, entries, size, limit
    fsar-bench cache clear           # delete every entry (all formats)
"""

from __future__ import annotations

import typer

from fsar_bench.cli.common import config_from, handle_errors, stderr, stdout

app = typer.Typer(help="Inspect or clear the encoding cache.", no_args_is_help=True)


def _size(num_bytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if num_bytes < 1024 or unit == "GiB":
            return f"{num_bytes:.1f} {unit}" if unit != "B" else f"{int(num_bytes)} B"
        num_bytes /= 1024
    return f"{num_bytes:.1f} GiB"


@app.command("info")
@handle_errors
def info(ctx: typer.Context) -> None:
    """Print the cache folder, its entries and size (stdout), and the size limit."""
    from fsar_bench.evaluation.cache import cache_folder, cache_info

    config = config_from(ctx)
    details = cache_info(cache_folder(config.path("cache")))
    limit = config.run["cache_max_gb"]
    stdout.print(f"folder:   {details['folder']}", markup=False, highlight=False)
    stdout.print(f"format:   v{details['format']}")
    stdout.print(f"entries:  {details['entries']:,} encoded videos")
    stdout.print(f"size:     {_size(details['bytes'])} (limit {limit} GiB, [run] cache_max_gb"
                 + (": disk cache off)" if limit <= 0 else ")"), markup=False)
    if details["temp_files"]:
        stdout.print(f"partial:  {details['temp_files']} temp files (left by killed runs; `cache clear` removes them)")
    if details["other_formats"]:
        stdout.print(f"other:    {', '.join(details['other_formats'])} (older formats, never read; `cache clear` removes them)")


@app.command("clear")
@handle_errors
def clear(ctx: typer.Context) -> None:
    """Delete every cached encoding (every format). Safe while runs are going: they re-encode."""
    from fsar_bench.evaluation.cache import cache_folder, clear_cache

    config = config_from(ctx)
    files, size = clear_cache(cache_folder(config.path("cache")))
    stderr.print(f"removed {files:,} files ({_size(size)}) from {cache_folder(config.path('cache')).parent}")
