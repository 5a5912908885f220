"""`fsar-bench report`: a pure function of ``results/`` (DESIGN §5); it never re-runs anything.

Modules: ``runs`` reads run folders (and keeps the one-row-per-run ``collect_runs``/``format_table``
that `fsar-bench run` prints); ``analysis`` builds the ``Report`` (tables per episode set, paired
comparisons, seeds, published numbers, Friedman); ``cells`` words every cell; ``formats`` renders
Markdown, LaTeX, CSV and JSON; ``terminal`` renders rich tables. Figures are in ``fsar_bench.report.plots``.

Usage::

    loaded = load_results(Path("results"), expected_protocol=config.protocol)
    report = build_report(loaded, baseline=None, published={"otam": {("ucf101", 5): 88.9}})
    print(render(report, "markdown"))
    write_outputs(report, Path("report-out"))      # report.{txt,md,csv,tex,json} + plots/*.png|svg
"""

from __future__ import annotations

from pathlib import Path

from fsar_bench.files import write_text_atomic
from fsar_bench.report.analysis import Published, build_report, select_runs
from fsar_bench.report.formats import TEXT_FORMATS, render
from fsar_bench.report.model import CellTable, Report, Row
from fsar_bench.report.runs import (
    COLUMNS, FORMATS, LoadedResults, RunData, collect_runs, format_table, load_results,
)
from fsar_bench.report.terminal import print_report, terminal_text

REPORT_FORMATS = ("terminal", *TEXT_FORMATS)
"""What ``fsar-bench report --format`` accepts (``table`` is kept as an alias of ``terminal``)."""
FILE_NAMES = {"terminal": "report.txt", "markdown": "report.md", "csv": "report.csv", "latex": "report.tex",
              "json": "report.json"}


def render_any(report: Report, fmt: str, detailed: bool = False, width: int = 160) -> str:
    """``report`` as text in any of REPORT_FORMATS (the terminal one without colours, ``width`` wide)."""
    if fmt in ("terminal", "table"):
        return terminal_text(report, width=width, detailed=detailed)
    return render(report, fmt, detailed)


def write_outputs(report: Report, folder: Path, detailed: bool = False, plots: bool = True) -> list[Path]:
    """Write every format (FILE_NAMES) and, when ``plots``, every figure under ``folder/plots``."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt, name in FILE_NAMES.items():
        path = folder / name
        write_text_atomic(path, render_any(report, fmt, detailed))
        written.append(path)
    if plots:
        from fsar_bench.report.plots import write_plots

        written += write_plots(report, folder / "plots")
    return written


__all__ = [
    "COLUMNS", "FILE_NAMES", "FORMATS", "REPORT_FORMATS", "CellTable", "LoadedResults", "Published", "Report", "Row",
    "RunData", "build_report", "collect_runs", "format_table", "load_results", "print_report", "render", "render_any",
    "select_runs", "terminal_text", "write_outputs",
]
