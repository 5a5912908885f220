"""`fsar-bench report` as a user meets it: bad input, options, published numbers from cards, --output."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fsar_bench.cli.main import app
from tests.test_report_support import simulate_correct, write_run

runner = CliRunner()

CARD_PLUGIN = '''
from fsar_bench.api import FewShotHead, MethodCard


class Head(FewShotHead):
    pass


CARDS = (MethodCard(name="otam", head=Head, published={("synthetic", 5): 70.5}, published_backbone="small-cnn"),
         MethodCard(name="tsn", head=Head))
'''


@pytest.fixture
def project(tmp_path):
    """A bench.toml (200-episode protocol), a methods/ folder with one card plugin and one broken plugin."""
    (tmp_path / "methods").mkdir()
    (tmp_path / "methods" / "cards.py").write_text(CARD_PLUGIN)
    (tmp_path / "methods" / "broken.py").write_text("raise RuntimeError('boom')\n")
    config = tmp_path / "bench.toml"
    config.write_text('[protocol]\nepisodes = 200\n[paths]\nresults = "results"\nmethods = "methods"\n')
    return config


def invoke(config, *args):
    return runner.invoke(app, ["--config", str(config), "report", *args])


def add_runs(config, offsets=None, shot=5):
    correct = simulate_correct(200, offsets or {"tsn": 0.0, "otam": 8.0}, np.random.default_rng(shot))
    for method, values in correct.items():
        write_run(config.parent / "results", method, "synthetic", shot, values)


@pytest.mark.parametrize("make", [False, True], ids=["missing", "empty"])
def test_empty_or_missing_results_is_friendly_and_exits_0(project, make):
    if make:
        (project.parent / "results" / "runs").mkdir(parents=True)
    result = invoke(project)
    assert result.exit_code == 0
    assert "Nothing to report" in result.stderr and "fsar-bench run" in result.stderr and result.stdout == ""


def test_terminal_report_with_published_numbers_despite_a_broken_plugin(project):
    add_runs(project)
    result = invoke(project, "--bootstrap", "200")
    assert result.exit_code == 0, result.output
    assert "broken.py" in result.stderr and "boom" in result.stderr
    for expected in ("otam", "tsn", "W/T/L", "70.5", "best", "baseline"):
        assert expected in result.stdout


def test_baseline_without_results_suggests_and_exits_2(project):
    add_runs(project)
    result = invoke(project, "--baseline", "otma")
    assert result.exit_code == 2
    assert "Did you mean 'otam'" in result.stderr


def test_baseline_and_detailed_in_csv(project):
    add_runs(project)
    result = invoke(project, "--baseline", "tsn", "--detailed", "--format", "csv", "--bootstrap", "100")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(io.StringIO(result.stdout))
    otam = table[table["method"] == "otam"].iloc[0]
    assert set(table["baseline"]) == {"tsn"} and otam["delta"] > 0 and otam["published"] == 70.5
    assert otam["published_delta"] == pytest.approx(otam["accuracy"] - 70.5, abs=1e-3)


def test_corrupt_run_is_named_on_stderr_and_the_rest_reported(project):
    add_runs(project)
    folder = next((project.parent / "results" / "runs").glob("tsn__*"))
    (folder / "records.jsonl").write_text('{"episode": 0, "correct": 1, "queries": 5, "predictions": [0]}\n{oops\n'
                                          '{"episode": 2, "correct": 1, "queries": 5, "predictions": [0]}\n')
    result = invoke(project, "--format", "json", "--bootstrap", "100")
    assert result.exit_code == 0, result.output
    assert f"skipping run {folder.name}" in result.stderr and "records.jsonl:2" in result.stderr
    payload = json.loads(result.stdout)
    assert [row["label"] for row in payload["tables"][0]["rows"]] == ["otam"]


def test_half_written_run_is_listed_as_incomplete(project):
    add_runs(project)
    write_run(project.parent / "results", "trx", "synthetic", 5, np.full(30, 5), protocol_episodes=200, finished=False)
    result = invoke(project, "--format", "markdown", "--bootstrap", "100")
    assert result.exit_code == 0
    assert "incomplete: trx__synthetic__5shot" in result.stdout and "30 of 200" in result.stdout
    assert "| trx |" not in result.stdout


def test_smoke_and_protocol_options(project):
    add_runs(project)
    results = project.parent / "results"
    write_run(results, "trx", "synthetic", 5, np.full(20, 4), standard_episodes=200)
    hidden = invoke(project, "--format", "csv", "--bootstrap", "50")
    assert "trx" not in hidden.stdout and "--include-smoke" in invoke(project, "--bootstrap", "50").stdout
    shown = pd.read_csv(io.StringIO(invoke(project, "--format", "csv", "--include-smoke", "--bootstrap", "50").stdout))
    assert shown[shown["method"] == "trx"]["status"].tolist() == ["smoke"]
    unknown = invoke(project, "--protocol", "zzzzzz")
    assert unknown.exit_code == 2 and "unknown protocol" in unknown.stderr
    assert invoke(project, "--format", "html").exit_code == 2


def test_output_folder_gets_every_format_and_plot(project, tmp_path):
    add_runs(project)
    out = tmp_path / "out"
    result = invoke(project, "--output", str(out), "--format", "markdown", "--bootstrap", "100")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("# fsar-bench report")
    for name in ("report.txt", "report.md", "report.csv", "report.tex", "report.json", "plots/accuracy_vs_shots.png",
                 "plots/accuracy_vs_shots.svg"):
        assert (out / name).is_file(), name
    assert len(list((out / "plots" / "differences").glob("*tsn-vs-otam.*"))) == 2
