"""Figures of a report (matplotlib, no pyplot state): accuracy vs shots, per-episode differences, CD diagram.

Each function returns a ``matplotlib.figure.Figure``; ``write_plots`` saves them all as PNG and SVG.
Only ``matplotlib.figure.Figure`` is used (no ``pyplot``), so nothing global is touched and no
display is needed.

Usage::

    from fsar_bench.report import plots
    figure = plots.accuracy_vs_shots(report)                   # one panel per dataset, CI bars
    figure = plots.difference_distribution(table, table.row("tsn"))
    figure = plots.cd_diagram(report.friedman)
    paths = plots.write_plots(report, Path("out/plots"))       # [*.png, *.svg]
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from fsar_bench.files import atomic_write
from fsar_bench.report.cells import fmt_num, fmt_p
from fsar_bench.report.model import CellTable, FriedmanSummary, Report, Row

def accuracy_vs_shots(report: Report) -> Figure | None:
    """Mean accuracy ± 95% CI against shots, one panel per dataset, one line per method (None: no tables)."""
    datasets = sorted({table.dataset for table in report.tables})
    if not datasets:
        return None
    columns = min(3, len(datasets))
    rows = math.ceil(len(datasets) / columns)
    figure = Figure(figsize=(4.6 * columns, 3.6 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, dataset in zip(axes, datasets):
        tables = [t for t in report.tables if t.dataset == dataset]
        shots = sorted({t.shot for t in tables})
        lines: dict[str, list[tuple[int, float, float]]] = {}
        for table in tables:
            for row in table.rows:
                tag = f" (protocol {table.protocol_fingerprint[:8]})" if table.status == "other-protocol" else (
                    " (smoke)" if table.status == "smoke" else "")
                lines.setdefault(row.label + tag, []).append(
                    (shots.index(table.shot), row.cell.mean, row.cell.ci95))
        width = 0.3 / max(1, len(lines) - 1)
        for i, (label, points) in enumerate(sorted(lines.items())):
            points.sort()
            x = np.array([p[0] for p in points]) + (i - (len(lines) - 1) / 2) * width
            ci = np.nan_to_num(np.array([p[2] for p in points]))
            ax.errorbar(x, [p[1] for p in points], yerr=ci, marker="o", markersize=4, capsize=3, linewidth=1.2,
                        label=label)
        ax.set_xticks(range(len(shots)), [str(s) for s in shots])
        ax.set_xlim(-0.5, len(shots) - 0.5)
        ax.set_xlabel("shots per class")
        ax.set_ylabel("accuracy (%), 95% CI")
        ax.set_title(f"{dataset} ({tables[0].way}-way)")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize="small")
    for ax in axes[len(datasets):]:
        ax.set_visible(False)
    return figure


def difference_distribution(table: CellTable, row: Row) -> Figure:
    """Histogram of the per-episode difference ``row - baseline`` (percentage points) over the table's episodes."""
    baseline = table.row(table.baseline)
    if row.comparison is None or row is baseline:
        raise ValueError(f"{row.label} has no comparison with the baseline {table.baseline} in {table.name}")
    diff = row.accuracy - baseline.accuracy
    figure = Figure(figsize=(8.4, 3.8), layout="constrained")
    ax = figure.add_subplot()
    values, counts = np.unique(np.round(diff, 6), return_counts=True)
    if len(values) <= 41:  # the coarse grid of per-episode accuracies (100/queries steps)
        step = float(np.min(np.diff(values))) if len(values) > 1 else 1.0
        colours = ["#c0504d" if v < 0 else ("#9e9e9e" if v == 0 else "#4f81bd") for v in values]
        ax.bar(values, counts, width=0.8 * step, color=colours)
    else:
        ax.hist(diff, bins=41, color="#4f81bd")
    cmp = row.comparison
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.axvline(cmp.delta, color="black", linestyle="--", linewidth=1.2)
    ax.set_xlabel(f"per-episode accuracy difference, {row.label} − {baseline.label} (points)")
    ax.set_ylabel("episodes")
    ax.set_title(f"{table.name}: {row.label} vs {baseline.label}", fontsize="medium")
    text = (f"mean Δ (dashed) = {cmp.delta:+.2f}\n± {cmp.delta_ci95:.2f} (paired 95% CI)\n"
            f"bootstrap [{cmp.bootstrap_low:+.2f}, {cmp.bootstrap_high:+.2f}]\n"
            f"W/T/L = {cmp.wins}/{cmp.ties}/{cmp.losses}\nof {cmp.n} episodes\n"
            f"p (t) = {fmt_p(cmp.t_pvalue)}\np (W) = {fmt_p(cmp.wilcoxon_pvalue)}\n\n"
            "red: baseline better\nblue: method better\ngrey: tie")
    ax.text(1.02, 1.0, text, transform=ax.transAxes, va="top", ha="left", fontsize="small")
    return figure


def cliques(ranks: list[float], critical_difference: float) -> list[tuple[int, int]]:
    """Maximal runs (i, j) of ``ranks`` (sorted ascending) spanning less than the CD: not significantly different."""
    found: list[tuple[int, int]] = []
    for i in range(len(ranks)):
        j = i
        while j + 1 < len(ranks) and ranks[j + 1] - ranks[i] < critical_difference:
            j += 1
        if j > i and (not found or j > found[-1][1]):
            found.append((i, j))
    return found


def cd_diagram(result: FriedmanSummary) -> Figure:
    """Demšar's critical-difference diagram: average ranks (1 = best, left), bars join methods within CD."""
    order = sorted(range(len(result.methods)), key=lambda i: result.average_ranks[i])
    names = [result.methods[i] for i in order]
    ranks = [result.average_ranks[i] for i in order]
    k = len(names)
    groups = cliques(ranks, result.critical_difference)
    half = math.ceil(k / 2)
    label_top = 1.35 + 0.18 * len(groups)
    height = label_top + 0.32 * half + 0.3
    figure = Figure(figsize=(7.0, 0.55 * height + 0.4))
    ax = figure.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(height, 0.0)
    ax.set_axis_off()
    left, right = 0.27, 0.73

    def x_of(rank: float) -> float:
        return left + (right - left) * (rank - 1.0) / max(1, k - 1)

    axis_y = 0.95
    ax.plot([left, right], [axis_y, axis_y], color="black", linewidth=1)
    for tick in range(1, k + 1):
        ax.plot([x_of(tick)] * 2, [axis_y - 0.07, axis_y], color="black", linewidth=1)
        ax.text(x_of(tick), axis_y - 0.1, str(tick), ha="center", va="bottom", fontsize="small")
    cd_end = min(k, 1.0 + result.critical_difference)
    ax.plot([x_of(1.0), x_of(cd_end)], [0.3, 0.3], color="#c0504d", linewidth=2)
    ax.text((x_of(1.0) + x_of(cd_end)) / 2, 0.25, f"CD = {result.critical_difference:.2f}", ha="center",
            va="bottom", fontsize="small", color="#c0504d")
    ax.text(0.98, 0.3, f"Friedman p = {fmt_p(result.p_value)}\n{len(result.cells)} cells, α = {result.alpha:g}",
            ha="right", va="center", fontsize="x-small")
    for g, (i, j) in enumerate(groups):
        y = axis_y + 0.22 + 0.18 * g
        ax.plot([x_of(ranks[i]) - 0.01, x_of(ranks[j]) + 0.01], [y, y], color="black", linewidth=3.5,
                solid_capstyle="round")
    for position, (name, rank) in enumerate(zip(names, ranks)):
        on_left = position < half
        y = label_top + 0.32 * (position if on_left else k - 1 - position)
        end = left - 0.03 if on_left else right + 0.03
        ax.plot([x_of(rank), x_of(rank), end], [axis_y, y, y], color="#333333", linewidth=1)
        ax.text(end + (-0.01 if on_left else 0.01), y, f"{name} ({fmt_num(rank)})", ha="right" if on_left else "left",
                va="center", fontsize="small")
    return figure


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower()


def save_figure(figure: Figure, stem: Path) -> list[Path]:
    """Save ``figure`` as ``stem.png`` (150 dpi) and ``stem.svg``; returns both paths."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    atomic_write(paths[0], lambda stream: figure.savefig(stream, format="png", dpi=150))
    atomic_write(paths[1], lambda stream: figure.savefig(stream, format="svg", metadata={"Date": None}))
    return paths


def write_plots(report: Report, folder: Path) -> list[Path]:
    """Every figure of ``report`` into ``folder``: accuracy_vs_shots, differences/*, cd_diagram (PNG + SVG)."""
    written: list[Path] = []
    if (figure := accuracy_vs_shots(report)) is not None:
        written += save_figure(figure, folder / "accuracy_vs_shots")
    for table in report.tables:
        for row in table.rows:
            if row.comparison is None:
                continue
            stem = _slug(f"{table.dataset}_{table.shot}shot_{table.protocol_fingerprint[:8]}_{row.label}_vs_{table.baseline}")
            written += save_figure(difference_distribution(table, row), folder / "differences" / stem)
    if report.friedman is not None:
        written += save_figure(cd_diagram(report.friedman), folder / "cd_diagram")
    return written
