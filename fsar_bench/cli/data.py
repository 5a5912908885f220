"""`fsar-bench data synth` and `fsar-bench data check`.

Usage::

    fsar-bench data synth                               # generates into the cache folder (also done on first use)
    fsar-bench data synth --force                       # regenerate
    fsar-bench data check ucf101                        # every video of every partition exists
    fsar-bench data check ucf101 --partition test --decode --jobs 2   # ... and decodes with >= T frames
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from fsar_bench.cli.common import config_from, handle_errors, stderr, stdout
from fsar_bench.errors import DataError, UsageError
from fsar_bench.progress import ProgressBar

app = typer.Typer(help="Prepare and check datasets.", no_args_is_help=True)

PROBLEM_REMEDIES = {
    "missing": "restore the files, or fix root / layout under [datasets.DATASET] in bench.toml",
    "empty": "copy or extract these files again (they have no bytes or no frames)",
    "unreadable": "copy, download or convert these files again (they cannot be opened)",
    "corrupt": "copy, download or convert these files again (they fail to decode: truncated or damaged)",
    "too-short": "extract these videos with more frames, or lower [protocol] frames in bench.toml (another protocol)",
}

RootOpt = Annotated[Optional[Path], typer.Option("--root", help="Video folder (default: bench.toml [datasets.NAME] root).")]
LayoutOpt = Annotated[Optional[str], typer.Option("--layout", help="Video layout (default: bench.toml, else the benchmark's).")]
SplitsDirOpt = Annotated[Optional[Path], typer.Option("--splits-dir", help="Folder holding the split files.")]
TrustOpt = Annotated[bool, typer.Option("--trust-splits", help="Accept split files whose sha256 differs from the manifest.")]


@app.command("synth")
@handle_errors
def synth(
    ctx: typer.Context,
    force: Annotated[bool, typer.Option("--force", help="Regenerate even if present.")] = False,
) -> None:
    """Write the synthetic benchmark's mp4 videos and split files (deterministic from its seed)."""
    from fsar_bench.data.synthetic import SyntheticSpec, ensure_synthetic

    config = config_from(ctx)
    started = time.time()
    root = ensure_synthetic(config.path("cache") / "datasets", SyntheticSpec(), force=force)
    stderr.print(f"synthetic benchmark ready in {time.time() - started:.1f} s")
    stdout.print(str(root))


@app.command("check")
@handle_errors
def check(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help="Benchmark name (see `fsar-bench datasets`).")],
    partition: Annotated[Optional[str], typer.Option("--partition", "-p", help="train | val | test (default: all).")] = None,
    decode: Annotated[bool, typer.Option("--decode", help="Also open each video and decode every frame (at least T).")] = False,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Parallel checks (processes when decoding).")] = 1,
    frames: Annotated[Optional[int], typer.Option("--frames", min=1, help="T, the frames a video needs (default: bench.toml).")] = None,
    report: Annotated[Optional[Path], typer.Option("--report", help="JSON report path (default: <results>/data-check/DATASET.json).")] = None,
    root: RootOpt = None,
    layout: LayoutOpt = None,
    splits_dir: SplitsDirOpt = None,
    trust_splits: TrustOpt = False,
) -> None:
    """Check every video of a benchmark: counts per partition, every bad file, a JSON report; exit 3 on any problem."""
    from rich.table import Table

    from fsar_bench.data.check import check_benchmark
    from fsar_bench.data.benchmarks import PARTITIONS, DataOptions, open_benchmark
    from fsar_bench.store import check_writable

    if partition is not None and partition not in PARTITIONS:
        raise UsageError(f"--partition must be one of {', '.join(PARTITIONS)}, got {partition!r}")
    config = config_from(ctx, {"protocol.frames": frames})
    report_path = report or config.path("results") / "data-check" / f"{dataset}.json"
    check_writable(report_path.parent)  # before checking: the report must be writable
    options = DataOptions(root=root, layout=layout, splits_dir=splits_dir, trust_splits=trust_splits)
    benchmark = open_benchmark(dataset, config, options)
    parts = [partition] if partition else list(PARTITIONS)
    with ProgressBar(f"data check {dataset}" + (" (decoding)" if decode else "")) as bar:
        result = check_benchmark(benchmark, parts, config.protocol["frames"], decode=decode, jobs=jobs,
                                 progress=bar.advance, on_total=bar.set_total)
    stdout.print(f"{dataset}: {result.root} (layout {result.layout}{', every frame decoded' if decode else ''})",
                 soft_wrap=True, markup=False)
    table = Table()
    for column in ("partition", "classes", "videos", "ok", "problems"):
        table.add_column(column, justify="left" if column == "partition" else "right")
    for name, counts in result.partitions.items():
        table.add_row(name, *(f"{counts[k]:,}" for k in ("classes", "videos", "ok", "problems")))
    stdout.print(table)
    all_missing = {name for name, counts in result.partitions.items() if counts["videos"] and counts["missing"] == counts["videos"]}
    for name in sorted(all_missing):
        stdout.print(f"missing    every one of the {result.partitions[name]['videos']:,} {name} videos (listed in the JSON report)")
    for problem in result.problems:
        if problem.partition in all_missing:
            continue
        stdout.print(f"{problem.kind:<10} {problem.path}  ({problem.partition}, {problem.video_id}): {problem.detail}",
                     soft_wrap=True, markup=False)
    for kind in sorted({p.kind for p in result.problems}):
        stdout.print(f"what to do ({kind}): {PROBLEM_REMEDIES.get(kind, '')}".replace("DATASET", dataset),
                     soft_wrap=True, markup=False)
    for message in result.layout_errors:
        stderr.print(f"[bold red]layout:[/] {escape(message)}", soft_wrap=True)
    path = result.write(report_path)
    stderr.print(f"report: {path} ({result.seconds:.1f} s)")
    if not result.ok:
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(result.counts_by_kind().items()))
        raise DataError(f"{dataset}: {len(result.problems)} bad videos ({kinds or 'wrong layout'}), each listed above and in {path}")
    stderr.print(f"{dataset}: all {sum(c['videos'] for c in result.partitions.values()):,} videos OK")
