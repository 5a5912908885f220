"""What each report cell says, in words and numbers, shared by every text format.

``table_columns``/``row_cells`` give the columns of a per-cell table and a row's strings;
``summary_grid`` gives the methods × cells overview; ``notes`` says what every column means.
Strings use Unicode (±, Δ, ≈, ·, √); the LaTeX renderer maps them to math.

Usage::

    columns = table_columns(table, detailed=False)          # [(key, header)]
    for row in table.rows:
        cells = row_cells(table, row, detailed=False)        # {key: text}
"""

from __future__ import annotations

import math

from fsar_bench.report.model import CellTable, Report, Row
from fsar_bench.store import WEIGHTS_REFERENCE


def fmt_num(value: float | None, digits: int = 2, signed: bool = False) -> str:
    """``94.46``, ``+1.20``; empty for None or nan."""
    if value is None or not math.isfinite(value):
        return ""
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def fmt_p(p: float | None) -> str:
    """p-values: 4 decimals down to 1e-4, then ``3.2e-07``; ``<1e-300`` when it underflowed; empty for nan."""
    if p is None or not math.isfinite(p):
        return ""
    if p == 0.0:
        return "<1e-300"
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"


def mark(row: Row) -> str:
    """``best``, ``≈best`` (not significantly worse than the best) or empty."""
    return "best" if row.is_best else ("≈best" if row.marked else "")


def table_title(table: CellTable) -> str:
    title = (f"{table.name} · {table.way}-way · {table.n_episodes} episodes · protocol {table.protocol_fingerprint[:8]}"
             f" · episodes {table.episode_fingerprint[:8]} · weights {table.backbone_weights}")
    return title + (f" · {table.detail}" if table.detail else "")


def baseline_line(table: CellTable) -> str:
    best = " (the best)" if table.baseline == table.best.label else ""
    line = f"Δ = method − {table.baseline}{best}, paired on the same episodes"
    return line + (f" ({table.baseline_note})" if table.baseline_note else "")


def table_columns(detailed: bool = False) -> list[tuple[str, str]]:
    """(key, header) of a per-cell table."""
    columns = [("mark", ""), ("method", "method"), ("accuracy", "accuracy ± CI"), ("std", "std"), ("n", "N"),
               ("seeds", "seeds"), ("across_seeds", "across seeds"), ("published", "published"),
               ("published_delta", "Δ pub"), ("delta", "Δ ± CI"), ("bootstrap", "bootstrap CI"),
               ("p_t", "p (t)"), ("p_wilcoxon", "p (W)"), ("p_holm", "p Holm"), ("wtl", "W/T/L")]
    if detailed:
        columns += [("correlation", "r"), ("mde", "MDE"), ("unpaired", "unpaired ±")]
    return columns


def row_cells(table: CellTable, row: Row, detailed: bool = False) -> dict[str, str]:
    """The strings of one row, keyed like ``table_columns``."""
    cells = {
        "mark": mark(row), "method": row.label,
        "accuracy": f"{fmt_num(row.cell.mean)} ± {fmt_num(row.cell.ci95)}" if math.isfinite(row.cell.ci95)
        else fmt_num(row.cell.mean),
        "std": fmt_num(row.cell.std), "n": str(row.cell.n), "seeds": str(row.n_seeds),
        "across_seeds": f"{fmt_num(row.cell.mean)} ± {fmt_num(row.seed_std)}" if row.n_seeds > 1 else "",
        "published": fmt_num(row.published, 1), "published_delta": fmt_num(row.published_delta, signed=True),
        "delta": "", "bootstrap": "", "p_t": "", "p_wilcoxon": "", "p_holm": "", "wtl": "",
    }
    comparison = row.comparison
    if row.label == table.baseline:
        cells["delta"] = "baseline"
    elif comparison is not None:
        cells.update({
            "delta": f"{fmt_num(comparison.delta, signed=True)} ± {fmt_num(comparison.delta_ci95)}",
            "bootstrap": f"[{fmt_num(comparison.bootstrap_low, signed=True)}, {fmt_num(comparison.bootstrap_high, signed=True)}]",
            "p_t": fmt_p(comparison.t_pvalue), "p_wilcoxon": fmt_p(comparison.wilcoxon_pvalue),
            "p_holm": fmt_p(row.p_holm), "wtl": f"{comparison.wins}/{comparison.ties}/{comparison.losses}",
        })
    if detailed:
        cells.update({"correlation": "", "mde": "", "unpaired": ""})
        if comparison is not None:
            cells.update({"correlation": fmt_num(comparison.correlation), "mde": fmt_num(comparison.min_detectable_effect),
                          "unpaired": f"± {fmt_num(comparison.unpaired_ci95)}"})
    return cells


def summary_grid(report: Report) -> tuple[list[str], list[tuple[str, list[tuple[str, bool]]]]]:
    """Methods × cells overview: (cell names, [(method label, [(\"mean ± CI\" or \"\", marked)])])."""
    names = [table.name for table in report.tables]
    labels = sorted({row.label for table in report.tables for row in table.rows})
    grid = []
    for label in labels:
        cells = []
        for table in report.tables:
            row = next((r for r in table.rows if r.label == label), None)
            cells.append(("", False) if row is None else (row_cells(table, row)["accuracy"], row.marked))
        grid.append((label, cells))
    return names, grid


def friedman_lines(report: Report) -> list[str]:
    """The across-cells paragraph: Friedman statistic, p, CD and average ranks (or why there are none)."""
    result = report.friedman
    if result is None:
        return [report.friedman_note] if report.friedman_note else []
    ranks = ", ".join(f"{m} {r:.2f}" for m, r in sorted(zip(result.methods, result.average_ranks), key=lambda x: x[1]))
    return [report.friedman_note,
            f"Friedman χ² = {result.statistic:.3f}, p = {fmt_p(result.p_value)}; Nemenyi critical difference "
            f"CD = {result.critical_difference:.3f} (α = {result.alpha:g}) over {len(result.cells)} cells.",
            f"Average ranks (1 = best): {ranks}. Methods whose average ranks differ by less than CD are not "
            "significantly different."]


def status_lines(report: Report) -> list[str]:
    """Incomplete runs, runs not shown and skipped folders, one line each."""
    lines = []
    for run in report.incomplete:
        what = " ".join(str(x) for x in (run.method, run.dataset, f"{run.shot}-shot" if run.shot else None) if x)
        lines.append(f"incomplete: {run.run_id} ({what or 'unknown run'}): {run.detail}; not a result")
    for hidden in report.not_shown:
        if hidden.status == "superseded":
            lines.append(f"not shown: {hidden.detail} (move it out of results/runs/ to drop this line)")
            continue
        lines.append(f"not shown: {hidden.runs} {hidden.status} run(s) of protocol {hidden.protocol} ({hidden.detail}); "
                     f"add {hidden.option}")
    for skipped in report.skipped:
        lines.append(f"skipped: {skipped.run_id}: {skipped.reason}")
    return lines


def notes(report: Report, detailed: bool = False) -> list[str]:
    """What the columns mean (the same in every format)."""
    settings = report.settings
    lines = [
        "accuracy: mean % over N episodes ± 95% CI (1.96·s/√N, s = std over episodes, ddof=1).",
        "Δ: method − baseline on the same episodes ± its paired 95% CI; bootstrap: percentile 95% CI of Δ from "
        f"{settings.n_bootstrap} resamples of whole episodes (seed {settings.bootstrap_seed}); p (t): paired t-test; "
        "p (W): Wilcoxon signed-rank (Pratt); p Holm: p (t) Holm-corrected across the table; W/T/L: episodes the "
        "method wins/ties/loses against the baseline.",
        f"best: highest mean; ≈best: not significantly worse than the best (paired t-test vs the best, Holm-corrected, "
        f"α = {settings.alpha:g}).",
        "seeds: training seeds (runs) per row. The ± CI is over episodes and says nothing about training-seed "
        "variance; across seeds: mean ± std (ddof=1) of the run means; a row with several seeds uses the per-episode "
        "mean over its seeds.",
        "published: the method card's number (the paper's own protocol and episodes), shown only beside fine-tuned rows of the backbone it was published with; Δ pub = ours − published; "
        "empty where the card has none, for untrained rows and for datasets not comparable to papers.",
    ]
    if any(row.weights == WEIGHTS_REFERENCE for table in report.tables for row in table.rows):
        lines.append(
            "(reference checkpoint): weights trained, selected and saved by the method's own reference code (the "
            "file's sha256 is in the run's stamps), scored here on the same episodes as every other row. Its "
            "training data, recipe and checkpoint selection are the reference's (the references select on the "
            "test split), not this benchmark's val selection, so it is a row of its own, never pooled with runs "
            "trained here.")
    if detailed:
        lines.append("r: correlation of per-episode accuracy with the baseline; MDE: minimum detectable effect at "
                     "this N (α = 0.05 two-sided, power 0.8); unpaired ±: the 95% CI of Δ had the pairing been ignored.")
    return lines
