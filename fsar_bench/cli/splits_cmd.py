"""`fsar-bench splits fetch` and `fsar-bench splits show`: the official few-shot split files.

Usage::

    fsar-bench splits fetch ucf101                      # download from the pinned source, verify sha256
    fsar-bench splits fetch ucf101 --from ~/trx/splits/ucf_ARN   # copy from a local folder, verified
    fsar-bench splits show ucf101                       # source, files, sha256, counts, local status
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from fsar_bench.cli.common import config_from, handle_errors, stderr, stdout
from fsar_bench.errors import UnknownNameError

app = typer.Typer(help="Official few-shot split files: fetch and verify.", no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(help="Benchmark name (see `fsar-bench datasets`).")]
SplitsDirOpt = Annotated[Optional[Path], typer.Option("--splits-dir", help="Folder for the split files "
                                                      "(default: [datasets.NAME] splits_dir, else [paths] splits/NAME, else the official files shipped in splits/official).")]


def _manifest(name: str):
    from fsar_bench.data.manifests import load_manifest, manifest_names

    if name not in manifest_names():
        raise UnknownNameError("benchmark with split files", name, manifest_names(),
                               "`synthetic` makes its own split files (`fsar-bench data synth`).")
    return load_manifest(name)


@app.command("fetch")
@handle_errors
def fetch(
    ctx: typer.Context,
    name: NameArg,
    splits_dir: SplitsDirOpt = None,
    from_dir: Annotated[Optional[Path], typer.Option("--from", help="Copy from this local folder instead of downloading.")] = None,
) -> None:
    """Download the split files from their pinned public source and verify their sha256."""
    from fsar_bench.data.benchmarks import DataOptions, splits_dir_for
    from fsar_bench.data.manifests import fetch_split_files

    manifest = _manifest(name)
    target = splits_dir_for(name, config_from(ctx), DataOptions(splits_dir=splits_dir), for_writing=True)
    if manifest.source is not None and from_dir is None:
        stderr.print(f"fetching {name} from {manifest.source.describe()}")
    for file, status in fetch_split_files(manifest, target, from_dir).items():
        stderr.print(f"  {file}: {status}")
    stdout.print(str(target))


@app.command("show")
@handle_errors
def show(ctx: typer.Context, name: NameArg, splits_dir: SplitsDirOpt = None) -> None:
    """Print a benchmark's split manifest and the state of the local copies."""
    from rich.table import Table

    from fsar_bench.data.benchmarks import DataOptions, splits_dir_for
    from fsar_bench.files import file_sha256

    manifest = _manifest(name)
    target = splits_dir_for(name, config_from(ctx), DataOptions(splits_dir=splits_dir))
    stdout.print(f"{manifest.title} ({manifest.path})", markup=False)
    stdout.print(f"source: {manifest.source.describe() if manifest.source else 'none (your own files)'}; "
                 f"line format: {manifest.line_format}; local folder: {target}", markup=False, soft_wrap=True)
    table = Table()
    for column in ("partition", "files", "classes", "videos"):
        table.add_column(column)
    for part, spec in manifest.partitions.items():
        table.add_row(part, ", ".join(spec.files), str(spec.classes or "-"), f"{spec.videos:,}" if spec.videos else "-")
    stdout.print(table)
    for file, expected in manifest.files.items():
        local = target / file
        state = "absent" if not local.is_file() else "not pinned" if expected is None else (
            "sha256 OK" if file_sha256(local) == expected else "sha256 MISMATCH")
        stdout.print(f"  {file}: {state}  (expected {expected or '-'})", markup=False, soft_wrap=True)
