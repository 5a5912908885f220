"""Report renderings: golden files for every format, LaTeX that compiles, plots that are written.

Regenerate the golden files after an intended change with ``FSAR_UPDATE_GOLDEN=1 pytest tests/test_report_formats.py``
and read the diff before committing it.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fsar_bench.report import plots
from fsar_bench.report import build_report, load_results, render_any, write_outputs
from fsar_bench.report.formats import tex_escape
from fsar_bench.report.model import FriedmanSummary
from tests.test_report_support import STANDARD, golden_results, simulate_correct, write_run

GOLDEN_DIR = Path(__file__).parent / "golden" / "report"
PUBLISHED = {"otam": {("ucf101", 1): 79.9, ("ucf101", 5): 88.9}, "trx": {("ucf101", 5): 96.1}}
GOLDEN_FILES = [("terminal", "report.txt", False), ("markdown", "report.md", True), ("csv", "report.csv", False),
                ("latex", "report.tex", True), ("json", "report.json", False)]


@pytest.fixture(scope="module")
def golden_report(tmp_path_factory):
    results = golden_results(tmp_path_factory.mktemp("golden") / "results")
    return build_report(load_results(results, STANDARD), published=PUBLISHED, n_bootstrap=1000)


@pytest.mark.parametrize(("fmt", "name", "detailed"), GOLDEN_FILES, ids=[g[0] for g in GOLDEN_FILES])
def test_golden_files(golden_report, fmt, name, detailed):
    text = render_any(golden_report, fmt, detailed, width=220)
    path = GOLDEN_DIR / name
    if os.environ.get("FSAR_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"{name} changed; FSAR_UPDATE_GOLDEN=1 rewrites it"


def test_golden_report_says_what_it_must(golden_report):
    text = render_any(golden_report, "terminal", width=220)
    for expected in ("tsn (untrained)", "≈best", "W/T/L", "Friedman χ²", "not shown: 1 smoke run(s)",
                     "add --protocol", "incomplete: molo__synthetic__5shot", "skipped: hyrsm__ucf101__1shot",
                     "says nothing about training-seed variance", "61.25 ± 0.35"):
        assert expected in text
    assert "molo" not in render_any(golden_report, "csv"), "an incomplete run is never a result"


def test_a_table_per_backbone_and_track_and_published_numbers_only_beside_their_backbone(golden_report):
    cells = {(t.dataset, t.shot, t.backbone, t.track): t for t in golden_report.tables}
    assert {("ucf101", 5, "resnet50", "finetune"), ("ucf101", 5, "clip-rn50", "finetune"),
            ("synthetic", 5, "small-cnn", "finetune"), ("synthetic", 5, "small-cnn", "frozen")} <= set(cells)
    assert cells[("ucf101", 5, "resnet50", "finetune")].row("otam").published == 88.9
    assert cells[("ucf101", 5, "clip-rn50", "finetune")].row("otam").published is None  # published with ResNet-50
    assert "synthetic 5-shot small-cnn frozen" in render_any(golden_report, "markdown")
    table = pd.read_csv(io.StringIO(render_any(golden_report, "csv")))
    assert {"backbone", "backbone_weights", "track"} <= set(table.columns)
    clip_rows = table[(table["backbone"] == "clip-rn50")]
    assert len(clip_rows) == 3 and clip_rows["published"].isna().all()
    assert set(table[table["track"] == "frozen"]["method"]) == {"tsn", "otam", "trx"}
    payload = json.loads(render_any(golden_report, "json"))
    assert {(t["backbone"], t["track"]) for t in payload["tables"]} >= {("clip-rn50", "finetune"), ("small-cnn", "frozen")}


def test_csv_and_json_are_machine_readable(golden_report):
    table = pd.read_csv(io.StringIO(render_any(golden_report, "csv")))
    assert {"method", "dataset", "shot", "episodes", "accuracy", "ci95", "status", "delta", "p_holm"} <= set(table.columns)
    assert len(table) == sum(len(t.rows) for t in golden_report.tables) and set(table["status"]) == {"complete"}
    first = golden_report.tables[0].rows[1]
    row = table[(table["dataset"] == "synthetic") & (table["shot"] == 1) & (table["label"] == first.label)].iloc[0]
    assert row["delta"] == pytest.approx(first.comparison.delta, rel=1e-5)
    payload = json.loads(render_any(golden_report, "json"))
    assert payload["schema"] == "fsar-bench-report/1" and len(payload["tables"]) == len(golden_report.tables)
    assert payload["tables"][0]["rows"][0]["comparison"] is None
    assert payload["friedman"]["methods"] == list(golden_report.friedman.methods)
    assert payload["incomplete"][0]["recorded"] == 80 and payload["skipped"][0]["run_id"].startswith("hyrsm")


def test_tex_escape():
    assert tex_escape("a_b & 50% ± 1 < 2") == r"a\_b \& 50\% $\pm$ 1 $<$ 2"
    assert tex_escape("Δ ≈ χ² α") == r"$\Delta$ $\approx$ $\chi^2$ $\alpha$"


@pytest.mark.skipif(shutil.which("pdflatex") is None,
                    reason="pdflatex absent (Debian: apt-get install texlive-latex-base texlive-latex-recommended)")
def test_latex_compiles_in_a_minimal_document(golden_report, tmp_path):
    (tmp_path / "report.tex").write_text(render_any(golden_report, "latex", detailed=True), encoding="utf-8")
    (tmp_path / "doc.tex").write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage{graphicx}\n"
                                      "\\begin{document}\n\\input{report.tex}\n\\end{document}\n")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 1000
    log = (tmp_path / "doc.log").read_text(errors="replace")
    assert "Overfull \\hbox" not in log and "Missing character" not in log


# --------------------------------------------------------------------------- plots
@pytest.fixture
def small_report(tmp_path):
    results = tmp_path / "results"
    rng = np.random.default_rng(3)
    for shot in (1, 5):
        for method, correct in simulate_correct(100, {"tsn": 0.0, "otam": 8.0}, rng).items():
            write_run(results, method, "synthetic", shot, correct)
    return build_report(load_results(results, {**STANDARD, "episodes": 100}), n_bootstrap=100)


def test_write_outputs_writes_every_format_and_plot(small_report, tmp_path):
    written = write_outputs(small_report, tmp_path / "out")
    names = {p.relative_to(tmp_path / "out").as_posix() for p in written}
    assert {"report.txt", "report.md", "report.csv", "report.tex", "report.json",
            "plots/accuracy_vs_shots.png", "plots/accuracy_vs_shots.svg"} <= names
    differences = sorted(n for n in names if n.startswith("plots/differences/"))
    fingerprint = small_report.tables[0].protocol_fingerprint[:8]
    assert len(differences) == 4 and f"plots/differences/synthetic-1shot-{fingerprint}-tsn-vs-otam.png" in differences
    for path in written:
        assert path.stat().st_size > 0
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if path.suffix == ".svg":
            assert "<svg" in path.read_text()


def test_difference_distribution_counts_every_episode(small_report):
    table = small_report.tables[0]
    row = table.row("tsn")
    figure = plots.difference_distribution(table, row)
    bars = figure.axes[0].patches
    assert sum(bar.get_height() for bar in bars) == 100  # one count per episode
    with pytest.raises(ValueError, match="no comparison"):
        plots.difference_distribution(table, table.row(table.baseline))


def test_cliques_and_cd_diagram():
    assert plots.cliques([1.0, 1.5, 2.9, 3.2], 1.0) == [(0, 1), (2, 3)]
    assert plots.cliques([1.0, 1.5, 1.9, 3.0], 1.0) == [(0, 2)]  # (1, 2) lies inside (0, 2)
    assert plots.cliques([1.0, 2.5, 4.0], 1.0) == []
    result = FriedmanSummary(("a", "b", "c", "d"), (1.2, 2.0, 3.1, 3.7), 9.0, 0.03, 1.2, 0.05, ("x",) * 5, ())
    figure = plots.cd_diagram(result)
    texts = {text.get_text() for text in figure.axes[0].texts}
    assert {"a (1.20)", "d (3.70)", "CD = 1.20"} <= texts


def test_terminal_tables_split_to_fit_narrow_consoles(golden_report):
    from fsar_bench.report.cells import row_cells, table_columns
    from fsar_bench.report.terminal import column_groups

    table = golden_report.tables[0]
    columns = table_columns(detailed=True)
    rows = [row_cells(table, row, detailed=True) for row in table.rows]
    assert len(column_groups(columns, rows, 400)) == 1
    for width in (80, 120):
        groups = column_groups(columns, rows, width)
        assert len(groups) > 1 and all(("method", "method") in group for group in groups)
        assert sorted(c for g in groups for c in g if c[0] != "method") == sorted(c for c in columns if c[0] != "method")
    text = render_any(golden_report, "terminal", width=80)
    assert max(len(line) for line in text.splitlines()) <= 80
