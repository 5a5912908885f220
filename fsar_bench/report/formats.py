"""Markdown, LaTeX (booktabs), CSV and JSON renderings of a ``Report``.

- Markdown: one table per cell, a methods × cells summary, the Friedman paragraph, status and notes.
- LaTeX: the same as ``table`` floats with booktabs rules, ready to ``\\input`` (needs
  ``\\usepackage{booktabs,graphicx}``); marked results in bold.
- CSV: one line per (table, method) with every number at full precision; incomplete runs are not
  results and are not in it.
- JSON: everything, including per-run means, incomplete runs and skipped folders.

Usage::

    text = render(report, "latex", detailed=True)
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
from typing import Any

import pandas as pd

from fsar_bench.report.cells import (
    baseline_line, friedman_lines, notes, row_cells, status_lines, summary_grid, table_columns, table_title,
)
from fsar_bench.report.model import Report

TEXT_FORMATS = ("markdown", "latex", "csv", "json")


def render(report: Report, fmt: str, detailed: bool = False) -> str:
    """``report`` as text in one of TEXT_FORMATS (the terminal format is in ``fsar_bench.report.terminal``)."""
    renderers = {"markdown": to_markdown, "latex": to_latex, "csv": to_csv, "json": to_json}
    if fmt not in renderers:
        raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(renderers)}")
    return renderers[fmt](report, detailed)


# --------------------------------------------------------------------------- Markdown
def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _md_table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    align = ["---:" if i in right else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(_md_escape(h) for h in header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows]
    return lines


def to_markdown(report: Report, detailed: bool = False) -> str:
    columns = table_columns(detailed)
    out = ["# fsar-bench report", ""]
    for table in report.tables:
        out += [f"## {table_title(table)}", "", baseline_line(table) + ".", ""]
        rows = []
        for row in table.rows:
            cells = row_cells(table, row, detailed)
            if row.marked:
                cells["accuracy"] = f"**{cells['accuracy']}**"
            rows.append([cells[key] for key, _ in columns])
        out += _md_table([h for _, h in columns], rows, set(range(2, len(columns)))) + [""]
    if report.tables:
        names, grid = summary_grid(report)
        out += ["## Summary (accuracy % ± 95% CI; bold: best or not significantly worse)", ""]
        out += _md_table(["method", *names], [[label, *[f"**{t}**" if m and t else t for t, m in cells]]
                                               for label, cells in grid], set(range(1, len(names) + 1))) + [""]
    if across := friedman_lines(report):
        out += ["## Across datasets", "", *across, ""]
    if status := status_lines(report):
        out += ["## Runs not in the tables", "", *[f"- {line}" for line in status], ""]
    out += ["## Notes", "", *[f"- {line}" for line in notes(report, detailed)], ""]
    return "\n".join(out)


# --------------------------------------------------------------------------- LaTeX
_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_TEX_SYMBOLS = [("√N", r"$\sqrt{N}$"), ("±", r"$\pm$"), ("Δ", r"$\Delta$"), ("≈", r"$\approx$"), ("·", r"$\cdot$"),
                ("−", "$-$"), ("χ²", r"$\chi^2$"), ("α", r"$\alpha$"), ("≥", r"$\geq$"), ("<", "$<$"), (">", "$>$")]


def tex_escape(text: str) -> str:
    """Escape LaTeX specials, then turn the report's Unicode symbols into math (pdflatex-safe)."""
    escaped = "".join(_TEX_SPECIAL.get(char, char) for char in text)
    for symbol, tex in _TEX_SYMBOLS:
        escaped = escaped.replace(symbol, tex)
    return escaped.encode("ascii", "replace").decode("ascii")


def _tex_table(caption: str, label: str, header: list[str], rows: list[list[str]], align: str, wide: bool) -> list[str]:
    body = [r"\toprule", " & ".join(header) + r" \\", r"\midrule", *[" & ".join(row) + r" \\" for row in rows],
            r"\bottomrule"]
    tabular = [rf"\begin{{tabular}}{{{align}}}", *body, r"\end{tabular}"]
    if wide:
        tabular = [r"\resizebox{\linewidth}{!}{%", *tabular, "}"]
    return [r"\begin{table}[t]", r"\centering", r"\small", rf"\caption{{{caption}}}", rf"\label{{{label}}}",
            *tabular, r"\end{table}", ""]


def _tex_label(text: str) -> str:
    return "tab:fsar-" + "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def to_latex(report: Report, detailed: bool = False) -> str:
    columns = table_columns(detailed)
    out = ["% fsar-bench report. Needs \\usepackage{booktabs} and \\usepackage{graphicx}.",
           "% Bold: the best result and those not significantly worse than it.", ""]
    if report.tables:
        names, grid = summary_grid(report)
        rows = [[tex_escape(label), *[(rf"\textbf{{{tex_escape(t)}}}" if m and t else tex_escape(t)) for t, m in cells]]
                for label, cells in grid]
        caption = tex_escape("5-way accuracy (%) ± 95% CI over the same episodes for every method. "
                             "Bold: best, or not significantly worse (Holm-corrected paired t-test).")
        out += _tex_table(caption, "tab:fsar-summary", ["Method", *[tex_escape(n) for n in names]], rows,
                          "l" + "r" * len(names), wide=len(names) >= 4)
    for table in report.tables:
        rows = []
        for row in table.rows:
            cells = {key: tex_escape(value) for key, value in row_cells(table, row, detailed).items()}
            if row.marked:
                cells["accuracy"] = rf"\textbf{{{cells['accuracy']}}}"
            rows.append([cells[key] for key, _ in columns])
        caption = tex_escape(f"{table_title(table)}. {baseline_line(table)}.")
        out += _tex_table(caption, _tex_label(table.name), [tex_escape(h) for _, h in columns], rows,
                          "ll" + "r" * (len(columns) - 2), wide=True)
    out += ["% " + line for line in [*friedman_lines(report), *status_lines(report), *notes(report, detailed)]]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- CSV and JSON
def _round(value: Any) -> Any:
    """Floats to 6 significant digits (stable text; far below any CI), nan/inf to None."""
    if isinstance(value, float):
        return None if not math.isfinite(value) else float(f"{value:.6g}")
    return value


def table_records(report: Report) -> list[dict[str, Any]]:
    """One flat dict per (table, row): what the CSV holds."""
    records = []
    for table in report.tables:
        for row in table.rows:
            c = row.comparison
            record = {
                "dataset": table.dataset, "shot": table.shot, "way": table.way, "backbone": table.backbone,
                "backbone_weights": table.backbone_weights, "track": table.track, "method": row.method,
                "label": row.label, "weights": row.weights, "episodes": row.cell.n, "accuracy": row.cell.mean, "ci95": row.cell.ci95,
                "std": row.cell.std, "protocol": table.protocol_fingerprint[:8], "status": table.status,
                "episode_fingerprint": table.episode_fingerprint[:16], "seeds": row.n_seeds,
                "train_seeds": " ".join(str(s) for s in row.train_seeds), "seed_std": row.seed_std,
                "published": row.published, "published_delta": row.published_delta, "baseline": table.baseline,
                "delta": c and c.delta, "delta_ci95": c and c.delta_ci95,
                "bootstrap_low": c and c.bootstrap_low, "bootstrap_high": c and c.bootstrap_high,
                "t_pvalue": c and c.t_pvalue, "wilcoxon_pvalue": c and c.wilcoxon_pvalue, "p_holm": row.p_holm,
                "wins": c and c.wins, "ties": c and c.ties, "losses": c and c.losses,
                "correlation": c and c.correlation, "min_detectable_effect": c and c.min_detectable_effect,
                "unpaired_ci95": c and c.unpaired_ci95, "is_best": row.is_best, "marked": row.marked,
                "runs": " ".join(run.run_id for run in row.runs),
            }
            records.append({key: _round(value) for key, value in record.items()})
    return records


def to_csv(report: Report, detailed: bool = False) -> str:
    records = table_records(report)
    frame = pd.DataFrame(records, columns=list(records[0]) if records else ["dataset", "shot", "method", "accuracy"])
    for column in ("wins", "ties", "losses"):
        if column in frame:
            frame[column] = frame[column].astype("Int64")  # integers with empty cells for the baseline
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, lineterminator="\n")
    return buffer.getvalue()


def _plain(value: Any) -> Any:
    """Dataclasses to dicts (without ``repr=False`` fields such as per-episode arrays), floats rounded."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        data = {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.repr}
        for extra in ("name", "n_seeds", "train_seeds", "published_delta", "low", "high"):
            if hasattr(type(value), extra) and isinstance(getattr(type(value), extra), property):
                data[extra] = _plain(getattr(value, extra))
        return data
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return _round(value)


def to_json(report: Report, detailed: bool = False) -> str:
    payload = {"schema": "fsar-bench-report/1", **_plain(report), "notes": notes(report, detailed=True)}
    return json.dumps(payload, indent=1, ensure_ascii=False) + "\n"
