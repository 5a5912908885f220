"""`fsar-bench data synth`, `data check` and `data prepare`.

Usage::

    fsar-bench data synth                               # generates into the cache folder (also done on first use)
    fsar-bench data synth --force                       # regenerate
    fsar-bench data check ucf101                        # every video of every partition exists
    fsar-bench data check ucf101 --partition test --decode --jobs 2   # ... and decodes with >= T frames
    fsar-bench data prepare ucf101                      # frame store: every video decoded once (resumable)
    torchrun --nproc_per_node 8 -m fsar_bench data prepare ssv2-full   # ... sharded over 8 processes
    fsar-bench data prepare ucf101 --verify             # re-check every file's sha256
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
    options = DataOptions(root=root, layout=layout, splits_dir=splits_dir, trust_splits=trust_splits, frame_store=False)
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


@app.command("prepare")
@handle_errors
def prepare(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help="Benchmark name (see `fsar-bench datasets`).")],
    codec: Annotated[str, typer.Option("--codec", help="jpeg (compact; its format joins the protocol) | raw (lossless, ~10x larger).")] = "jpeg",
    quality: Annotated[int, typer.Option("--quality", min=1, max=100, help="JPEG quality.")] = 90,
    max_short_side: Annotated[int, typer.Option("--max-short-side", min=16, help="Frames with a larger short side are resized to it.")] = 256,
    force: Annotated[bool, typer.Option("--force", help="Delete the store and prepare it again.")] = False,
    verify: Annotated[bool, typer.Option("--verify", help="Only re-check every file of the complete store against its sha256.")] = False,
    root: RootOpt = None,
    layout: LayoutOpt = None,
    splits_dir: SplitsDirOpt = None,
    trust_splits: TrustOpt = False,
    allow_missing: Annotated[bool, typer.Option("--allow-missing", help="Prepare the videos present (missing ones are left out).")] = False,
) -> None:
    """Decode every video of a benchmark once into its frame store (training and evaluation then read it)."""
    from fsar_bench.data.benchmarks import DataOptions, open_benchmark
    from fsar_bench.data.frame_store import FrameStore, StoreFormat, store_root
    from fsar_bench.data.prepare import prepare_frame_store, verify_frame_store
    from fsar_bench.distributed import from_environment

    config = config_from(ctx)
    if verify:
        store = FrameStore.open(store_root(config.path("cache"), dataset))
        if store is None:
            raise DataError(f"no complete frame store for {dataset} under {store_root(config.path('cache'), dataset)}: "
                            f"run `fsar-bench data prepare {dataset}`")
        problems = verify_frame_store(store, progress=stderr.is_terminal)
        for problem in problems:
            stdout.print(problem, soft_wrap=True, markup=False)
        if problems:
            raise DataError(f"{len(problems)} files of the {dataset} frame store are damaged: run "
                            f"`fsar-bench data prepare {dataset} --force`")
        stderr.print(f"{dataset}: all {store.videos:,} frame-store files match their sha256")
        return
    try:
        fmt = StoreFormat(codec=codec, quality=quality, max_short_side=max_short_side)
    except ValueError as error:
        raise UsageError(str(error)) from None
    dist, _ = from_environment("cpu")
    options = DataOptions(root=root, layout=layout, splits_dir=splits_dir, trust_splits=trust_splits,
                          allow_missing=allow_missing, frame_store=False)
    benchmark = open_benchmark(dataset, config, options)
    store = prepare_frame_store(benchmark, config.path("cache"), fmt, dist=dist, force=force,
                                log=lambda message: stderr.print(message, soft_wrap=True, markup=False) if dist.is_main else None,
                                progress=stderr.is_terminal)
    if dist.is_main:
        stdout.print(str(store.root))
