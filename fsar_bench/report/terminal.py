"""The terminal rendering of a ``Report`` (rich tables), and the same as plain text for files and tests.

Usage::

    print_report(report, Console())                       # colours when a terminal
    text = terminal_text(report, width=200)               # no colours: report.txt, golden files
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from fsar_bench.report.cells import (
    baseline_line, friedman_lines, notes, row_cells, status_lines, summary_grid, table_columns, table_title,
)
from fsar_bench.report.model import Report

_LEFT = {"mark", "method"}


def column_groups(columns: list[tuple[str, str]], rows: list[dict[str, str]], width: int) -> list[list[tuple[str, str]]]:
    """Split a table's columns into as few, evenly filled groups as fit ``width`` characters; each group
    repeats the method column (and the first keeps the mark)."""
    need = {key: max([len(header), *(len(row[key]) for row in rows)]) + 3 for key, header in columns}
    rest = [column for column in columns if column[0] != "method"]

    def pack(limit: int) -> list[list[tuple[str, str]]]:
        groups: list[list[tuple[str, str]]] = [[]]
        used = need["method"] + 1
        for column in rest:
            if groups[-1] and used + need[column[0]] > limit:
                groups.append([])
                used = need["method"] + 1
            groups[-1].append(column)
            used += need[column[0]]
        return groups

    groups = pack(width)
    if len(groups) > 1:  # the same number of groups, filled evenly
        even = need["method"] + 1 + -(-sum(need[c[0]] for c in rest) // len(groups)) + max(need[c[0]] for c in rest) // 2
        balanced = pack(min(width, even))
        groups = balanced if len(balanced) == len(groups) else groups
    method = ("method", "method")
    return [[c for c in group if c[0] == "mark"] + [method] + [c for c in group if c[0] != "mark"] for group in groups]


def print_report(report: Report, console: Console, detailed: bool = False) -> None:
    """Print every table, the summary, the Friedman paragraph, status lines and notes to ``console``.

    A table wider than the console is printed in several parts, each repeating the method column.
    """
    columns = table_columns(detailed)
    for table in report.tables:
        rows = [row_cells(table, row, detailed) for row in table.rows]
        groups = column_groups(columns, rows, console.width)
        for part, group in enumerate(groups):
            rich_table = Table(title=Text(table_title(table)) if part == 0 else None,
                               caption=Text(baseline_line(table)) if part == len(groups) - 1 else None,
                               title_justify="left", caption_justify="left")
            for key, header in group:
                rich_table.add_column(Text(header), justify="left" if key in _LEFT else "right", no_wrap=True)
            for row, cells in zip(table.rows, rows):
                style = "bold" if row.is_best else ("green" if row.marked else None)
                rich_table.add_row(*[Text(cells[key]) for key, _ in group], style=style)
            console.print(rich_table)
        console.print()
    if report.tables:
        names, grid = summary_grid(report)
        summary = Table(title=Text("Summary: accuracy % ± 95% CI"), caption=Text("* best or not significantly worse"),
                        title_justify="left", caption_justify="left")
        summary.add_column("method")
        for name in names:
            summary.add_column(Text(name), justify="right", no_wrap=True)
        for label, cells in grid:
            summary.add_row(Text(label), *[Text(f"{text} *" if marked and text else text) for text, marked in cells])
        console.print(summary)
        console.print()
    for line in friedman_lines(report):
        console.print(line, markup=False, highlight=False)
    for line in status_lines(report):
        console.print(line, style="yellow", markup=False, highlight=False)
    console.print()
    for line in notes(report, detailed):
        console.print(line, style="dim", markup=False, highlight=False)


def terminal_text(report: Report, width: int = 200, detailed: bool = False) -> str:
    """The terminal rendering as plain text (no colours) at a fixed ``width``."""
    console = Console(width=width, record=True, color_system=None, force_terminal=False, file=_Null(),
                      highlight=False, emoji=False)
    print_report(report, console, detailed)
    return "\n".join(line.rstrip() for line in console.export_text(styles=False).splitlines()) + "\n"


class _Null:
    """A write-only sink so that recording does not also print."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass
