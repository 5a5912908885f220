"""`fsar-bench report`: CI tables and paired comparisons from ``results/`` (never re-runs anything).

Usage::

    fsar-bench report                                   # rich tables in the terminal
    fsar-bench report --baseline tsn --detailed
    fsar-bench report --format latex > table.tex
    fsar-bench report --include-smoke --protocol 1a2b3c4d
    fsar-bench report --output report-out               # report.{txt,md,csv,tex,json} + plots/*.png|svg

Exit codes: 0 when the report was made, including an empty or missing results folder (a friendly
message on stderr says how to produce results: nothing to report yet is not an error); 2 for a bad
option, a ``--baseline`` naming a method without results, or an unknown ``--protocol``. Corrupt run
folders are named on stderr and skipped; the rest is reported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from fsar_bench.cli.common import config_from, handle_errors, stderr, stdout
from fsar_bench.config import Config
from fsar_bench.errors import UsageError

FORMAT_HELP = "terminal | markdown | csv | latex | json (table = terminal)."


def published_numbers(config: Config) -> dict[str, dict[tuple[str, int], float]]:
    """Published accuracies of every method card; a plugin that fails to load is a warning, never an error."""
    from fsar_bench.model.registry import discover_methods

    try:
        registry = discover_methods(config.path("methods"))
    except Exception as error:  # noqa: BLE001 - the report must not depend on plugins importing
        stderr.print(f"warning: method cards could not be read ({type(error).__name__}: {error}); "
                     "published numbers are left empty", markup=False)
        return {}
    for failure in registry.failures:
        stderr.print(f"warning: {failure.origin}: {failure.message}; its published numbers are left empty",
                     markup=False)
    return {name: {(*key[:2], key[2] if len(key) > 2 else entry.card.published_backbone): value
                   for key, value in entry.card.published.items()}
            for name, entry in registry.methods.items()}


def register(app: typer.Typer) -> None:
    @app.command("report")
    @handle_errors
    def report_command(
        ctx: typer.Context,
        fmt: Annotated[str, typer.Option("--format", help=FORMAT_HELP)] = "terminal",
        output: Annotated[Optional[Path], typer.Option(help="Also write every format and every plot into this folder.")] = None,
        results: Annotated[Optional[Path], typer.Option(help="Results folder (default: bench.toml).")] = None,
        baseline: Annotated[Optional[str], typer.Option(help="Compare every method with this one (default: the best of each table).")] = None,
        detailed: Annotated[bool, typer.Option("--detailed", help="Add correlation, minimum detectable effect and the unpaired CI.")] = False,
        include_smoke: Annotated[bool, typer.Option("--include-smoke", help="Also show smoke runs (fewer episodes than the protocol), labelled.")] = False,
        protocol: Annotated[Optional[list[str]], typer.Option("--protocol", help="Also show runs of this protocol fingerprint (prefix); repeatable.")] = None,
        alpha: Annotated[float, typer.Option(help="Significance level for marks, Holm and the CD diagram.")] = 0.05,
        bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples of whole episodes (seed 0).")] = 10_000,
    ) -> None:
        """Accuracy ± 95% CI per method, dataset and shot, with paired comparisons on the shared episodes.

        Exits 0 when there is nothing to report yet (and says how to produce results); 2 on a bad option or
        a --baseline without results.
        """
        from fsar_bench.report import REPORT_FORMATS, build_report, load_results, print_report, render, write_outputs

        fmt = "terminal" if fmt == "table" else fmt
        if fmt not in REPORT_FORMATS:
            raise UsageError(f"unknown format {fmt!r}: use one of {', '.join(REPORT_FORMATS)}")
        config = config_from(ctx, {"paths.results": str(results.resolve()) if results else None})
        results_dir = config.path("results")
        loaded = load_results(results_dir, config.protocol)
        if loaded.n_folders == 0:
            where = "does not exist" if not results_dir.exists() else "holds no runs yet"
            stderr.print(f"Nothing to report: {results_dir} {where}. Produce results with e.g. "
                         "`fsar-bench run otam --dataset synthetic --shots 1,5`, then run `fsar-bench report` again "
                         "(or point --results at another folder).", markup=False, soft_wrap=True)
            return
        for skipped in loaded.skipped:
            stderr.print(f"warning: skipping run {skipped.run_id}: {skipped.reason}", markup=False, soft_wrap=True)
        report = build_report(loaded, baseline=baseline, published=published_numbers(config),
                              include_smoke=include_smoke, protocols=protocol or (), alpha=alpha,
                              n_bootstrap=bootstrap)
        if not report.tables:
            stderr.print("No finished results to report with these options; see the lines below for what exists.",
                         markup=False, soft_wrap=True)
        if fmt == "terminal":
            print_report(report, stdout, detailed)
        else:
            typer.echo(render(report, fmt, detailed), nl=False)
        if output is not None:
            try:
                written = write_outputs(report, output, detailed)
            except ImportError as error:
                stderr.print(f"warning: no plots ({error}); install matplotlib (pip install matplotlib)", markup=False)
                written = write_outputs(report, output, detailed, plots=False)
            stderr.print(f"wrote {len(written)} files to {output}", markup=False)
