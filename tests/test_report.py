"""The report's analysis: which runs become results, how they are paired, compared, marked and aggregated."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats

from fsar_bench.report import stats
from fsar_bench.errors import UnknownNameError, UsageError
from fsar_bench.report import build_report, collect_runs, format_table, load_results
from fsar_bench.report.runs import LoadedResults, RunData, classify_protocol
from tests.test_report_support import QUERIES, STANDARD, protocol_for, simulate_correct, standard, write_run


def make_results(tmp_path: Path, offsets: dict[str, float], dataset: str = "synthetic", shot: int = 5,
                 n_episodes: int = 200, seed: int = 0) -> Path:
    results = tmp_path / "results"
    correct = simulate_correct(n_episodes, offsets, np.random.default_rng(seed))
    for method, values in correct.items():
        write_run(results, method, dataset, shot, values)
    return results


def in_memory_run(method: str, correct: np.ndarray, protocol_fingerprint: str = "p" * 64,
                  episode_fingerprint: str = "e" * 64) -> RunData:
    """A finished standard run without touching the disk (for simulations)."""
    protocol = protocol_for("synthetic", 5, len(correct))
    stamps = {"method": method, "dataset": "synthetic", "shot": 5, "way": 5, "protocol": protocol.to_dict(),
              "protocol_fingerprint": protocol_fingerprint, "episode_fingerprint": episode_fingerprint,
              "checkpoint_sha256": f"{method:0<64}", "seeds": {"train": 0}, "model": {"backbone": "small-cnn"}}
    return RunData(f"{method}-run", stamps, np.arange(len(correct)), 100.0 * np.asarray(correct) / QUERIES, "complete")


# --------------------------------------------------------------------------- loading and status
def test_statuses_of_finished_smoke_other_and_half_written_runs(tmp_path):
    results = tmp_path / "results"
    correct = simulate_correct(200, {"otam": 5.0}, np.random.default_rng(0))["otam"]
    write_run(results, "otam", "synthetic", 5, correct)
    write_run(results, "otam", "synthetic", 5, correct[:50], standard_episodes=200)  # smoke: 50 of 200
    write_run(results, "otam", "synthetic", 5, correct, protocol_seed=3)  # other protocol
    write_run(results, "tsn", "synthetic", 5, correct[:70], protocol_episodes=200, finished=False)  # killed
    loaded = load_results(results, STANDARD)
    status = {(run.method, run.stamps["protocol"]["episodes"], run.stamps["protocol"]["seed"]): run for run in loaded.runs}
    assert status[("otam", 200, 0)].status == "complete"
    assert status[("otam", 50, 0)].status == "smoke" and "50 of 200" in status[("otam", 50, 0)].detail
    assert status[("otam", 200, 3)].status == "other-protocol" and "seed 3 instead of 0" in status[("otam", 200, 3)].detail
    half = status[("tsn", 200, 0)]
    assert half.status == "incomplete" and "70 of 200" in half.detail


def test_finished_run_missing_records_is_incomplete_and_folder_without_stamps_too(tmp_path):
    results = tmp_path / "results"
    folder = write_run(results, "otam", "synthetic", 5, np.full(200, 3))
    lines = (folder / "records.jsonl").read_text().splitlines(keepends=True)
    (folder / "records.jsonl").write_text("".join(lines[:150]))
    (results / "runs" / "trx__just_created").mkdir()
    runs = {run.run_id: run for run in load_results(results, STANDARD).runs}
    assert runs[folder.name].status == "incomplete" and "150 of 200" in runs[folder.name].detail
    assert runs["trx__just_created"].status == "incomplete" and "no stamps.json" in runs["trx__just_created"].detail
    report = build_report(load_results(results, STANDARD), n_bootstrap=100)
    assert report.tables == () and {r.run_id for r in report.incomplete} == {folder.name, "trx__just_created"}


def test_corrupt_record_file_is_named_and_skipped_rest_reported(tmp_path):
    results = make_results(tmp_path, {"tsn": 0.0, "otam": 5.0})
    bad = next((results / "runs").glob("tsn__*"))
    lines = (bad / "records.jsonl").read_text().splitlines(keepends=True)
    lines[4] = "not json at all\n"
    (bad / "records.jsonl").write_text("".join(lines))
    loaded = load_results(results, STANDARD)
    assert [s.run_id for s in loaded.skipped] == [bad.name]
    assert "records.jsonl:5" in loaded.skipped[0].reason and str(tmp_path) not in loaded.skipped[0].reason
    report = build_report(loaded, n_bootstrap=100)
    assert [row.label for row in report.tables[0].rows] == ["otam"] and list(report.skipped) == loaded.skipped


def test_corrupt_stamps_are_skipped(tmp_path):
    results = make_results(tmp_path, {"tsn": 0.0, "otam": 5.0})
    bad = next((results / "runs").glob("otam__*"))
    (bad / "stamps.json").write_text('{"method": "otam"')
    loaded = load_results(results, STANDARD)
    assert len(loaded.skipped) == 1 and "stamps.json" in loaded.skipped[0].reason
    assert [run.method for run in loaded.runs] == ["tsn"]


def test_classify_protocol_without_configured_protocol_uses_the_stamped_standard():
    stamps = {"protocol": {"episodes": 100, "seed": 0}, "standard_episodes": 10_000}
    assert classify_protocol(stamps, None)[0] == "smoke"
    assert classify_protocol({**stamps, "standard_episodes": 100}, None) == ("complete", "")
    assert classify_protocol({**stamps, "standard_episodes": 100}, {"episodes": 50})[0] == "other-protocol"
    missing = {"protocol": {"episodes": 100, "seed": 0, "missing_videos": ["a.mp4", "b.mp4"]}, "standard_episodes": 100}
    assert classify_protocol(missing, None) == ("other-protocol", "allow-missing: 2 test videos left out")
    trusted = {**stamps, "standard_episodes": 100, "split_files": [
        {"file": "/s/testlist.txt", "status": "MISMATCH (trusted)"}, {"file": "/s/trainlist.txt", "status": "verified"}]}
    assert classify_protocol(trusted, None) == ("other-protocol", "trust-splits: testlist.txt differs from the published split")
    older = {"dataset": "synthetic", "protocol": {"episodes": 100, "seed": 0}, "standard_episodes": 100}  # generator v1
    assert classify_protocol(older, None) == ("other-protocol", "data unversioned (current: synthetic-v2)")
    current = {**older, "protocol": {**older["protocol"], "data_version": "synthetic-v2"}}
    assert classify_protocol(current, None) == ("complete", "")


def test_collect_runs_keeps_one_row_per_run_for_the_run_command(tmp_path):
    results = make_results(tmp_path, {"tsn": 0.0, "otam": 5.0})
    frame = collect_runs(results)
    assert list(frame["method"]) == ["otam", "tsn"] and set(frame["status"]) == {"complete"}
    assert "otam" in format_table(frame, "table") and format_table(frame, "csv").startswith("method,dataset")


# --------------------------------------------------------------------------- tables and pairing
def test_table_statistics_match_stats_and_scipy(tmp_path):
    results = make_results(tmp_path, {"tsn": 0.0, "otam": 4.0, "trx": 8.0})
    report = build_report(load_results(results, STANDARD), n_bootstrap=500)
    (table,) = report.tables
    assert [row.label for row in table.rows] == ["trx", "otam", "tsn"] and table.baseline == "trx"
    accuracy = {row.label: row.accuracy for row in table.rows}
    for row in table.rows:
        reference = stats.mean_ci(row.accuracy)
        assert (row.cell.mean, row.cell.std, row.cell.n) == pytest.approx((reference.mean, reference.std, 200))
        assert row.cell.ci95 == pytest.approx(1.96 * np.std(row.accuracy, ddof=1) / math.sqrt(200))
    otam = table.row("otam")
    assert otam.comparison.delta == pytest.approx(accuracy["otam"].mean() - accuracy["trx"].mean())
    assert otam.comparison.t_pvalue == pytest.approx(scipy_stats.ttest_rel(accuracy["otam"], accuracy["trx"]).pvalue)
    assert otam.comparison.wilcoxon_pvalue == pytest.approx(
        scipy_stats.wilcoxon(accuracy["otam"], accuracy["trx"], zero_method="pratt").pvalue)
    raw = [table.row(label).comparison.t_pvalue for label in ("otam", "tsn")]
    np.testing.assert_allclose([table.row("otam").p_holm, table.row("tsn").p_holm], stats.holm(raw))
    assert table.best.comparison is None and math.isnan(table.best.p_holm)


def test_planted_effect_is_detected_and_null_is_not(tmp_path):
    results = make_results(tmp_path, {"strong": 12.0, "twin": 12.0, "weak": 0.0}, n_episodes=1000, seed=3)
    (table,) = build_report(load_results(results, standard(1000)), n_bootstrap=500).tables
    best, other = table.rows[0], table.rows[1]
    assert {best.label, other.label} == {"strong", "twin"} and other.marked, "a null difference is not significant"
    weak = table.row("weak")
    assert not weak.marked and weak.p_holm < 1e-6 and weak.comparison.bootstrap_high < 0
    assert weak.comparison.delta == pytest.approx(-12.0, abs=2.5)


def test_null_pairs_are_marked_not_worse_at_rate_near_one_minus_alpha():
    rng = np.random.default_rng(11)
    flagged, n_sims = 0, 200
    for _ in range(n_sims):
        correct = simulate_correct(100, {"a": 0.0, "b": 0.0}, rng)
        loaded = LoadedResults(Path("."), [in_memory_run(m, c) for m, c in correct.items()])
        (table,) = build_report(loaded, n_bootstrap=20).tables
        flagged += not table.rows[1].marked
    assert 0.01 <= flagged / n_sims <= 0.10  # α = 0.05


def test_mixed_fingerprints_are_never_paired(tmp_path):
    results = tmp_path / "results"
    correct = simulate_correct(200, {"tsn": 0.0, "otam": 6.0, "trx": 7.0}, np.random.default_rng(1))
    write_run(results, "tsn", "synthetic", 5, correct["tsn"])
    write_run(results, "otam", "synthetic", 5, correct["otam"])
    write_run(results, "trx", "synthetic", 5, correct["trx"], episode_fingerprint="f" * 64)  # other episodes
    write_run(results, "trx", "synthetic", 5, correct["trx"], protocol_seed=1)  # other protocol
    report = build_report(load_results(results, STANDARD), n_bootstrap=100)
    assert [[row.label for row in t.rows] for t in report.tables] in (
        [["otam", "tsn"], ["trx"]], [["trx"], ["otam", "tsn"]])
    assert len({t.episode_fingerprint for t in report.tables}) == 2
    assert all(row.comparison is None for t in report.tables for row in t.rows if len(t.rows) == 1)
    assert [n.option for n in report.not_shown] == [f"--protocol {n.protocol}" for n in report.not_shown]
    prefix = report.not_shown[0].protocol
    shown = build_report(load_results(results, STANDARD), protocols=[prefix], n_bootstrap=100)
    other = [t for t in shown.tables if t.status == "other-protocol"]
    assert len(shown.tables) == 3 and len(other) == 1 and "[protocol " in other[0].name
    assert [row.label for row in other[0].rows] == ["trx"] and other[0].rows[0].comparison is None


def test_smoke_runs_only_when_asked_and_labelled(tmp_path):
    results = make_results(tmp_path, {"tsn": 0.0, "otam": 6.0})
    write_run(results, "trx", "synthetic", 5, np.full(40, 4), standard_episodes=200)  # 40 of 200: smoke
    default = build_report(load_results(results, STANDARD), n_bootstrap=100)
    assert len(default.tables) == 1 and [n.option for n in default.not_shown] == ["--include-smoke"]
    asked = build_report(load_results(results, STANDARD), include_smoke=True, n_bootstrap=100)
    smoke = [t for t in asked.tables if t.status == "smoke"]
    assert len(smoke) == 1 and smoke[0].name == "synthetic 5-shot small-cnn finetune [smoke]" and asked.not_shown == ()


def test_unpairable_runs_with_the_same_fingerprint_are_refused():
    good = in_memory_run("a", np.full(10, 3))
    shifted = RunData("b-run", {**good.stamps, "method": "b"}, np.arange(1, 11), good.accuracy, "complete")
    with pytest.raises(Exception, match="same episodes"):
        build_report(LoadedResults(Path("."), [good, shifted]), n_bootstrap=10)


def test_unknown_protocol_prefix_and_bad_settings_are_usage_errors(tmp_path):
    loaded = load_results(make_results(tmp_path, {"tsn": 0.0}), STANDARD)
    with pytest.raises(UnknownNameError, match="unknown protocol 'abcdef'"):
        build_report(loaded, protocols=["abcdef"])
    with pytest.raises(UsageError, match="at least 4"):
        build_report(loaded, protocols=["ab"])
    with pytest.raises(UsageError, match="alpha"):
        build_report(loaded, alpha=1.5)


# --------------------------------------------------------------------------- baseline, seeds, published
def test_baseline_option_and_did_you_mean(tmp_path):
    loaded = load_results(make_results(tmp_path, {"tsn": 0.0, "otam": 6.0, "trx": 7.0}), STANDARD)
    (table,) = build_report(loaded, baseline="tsn", n_bootstrap=200).tables
    assert table.baseline == "tsn" and table.row("tsn").comparison is None
    assert table.row("trx").comparison.delta > 0 and table.row("trx").comparison.wins > table.row("trx").comparison.losses
    assert table.best.label in ("trx", "otam") and table.best.is_best and table.best.marked
    # marks are against the best, whatever the baseline
    assert table.row("tsn").marked is False
    with pytest.raises(UnknownNameError, match="Did you mean 'otam'") as error:
        build_report(loaded, baseline="otma")
    assert error.value.exit_code == 2


def test_requested_baseline_absent_from_one_table_falls_back_to_best(tmp_path):
    results = make_results(tmp_path, {"tsn": 0.0, "otam": 6.0})
    correct = simulate_correct(200, {"otam": 6.0, "trx": 7.0}, np.random.default_rng(5))
    for method, values in correct.items():
        write_run(results, method, "synthetic", 1, values)
    report = build_report(load_results(results, STANDARD), baseline="tsn", n_bootstrap=100)
    one_shot = next(t for t in report.tables if t.shot == 1)
    assert one_shot.baseline == one_shot.best.label and "tsn has no result here" in one_shot.baseline_note


def test_training_seeds_aggregate_and_untrained_runs_are_their_own_row(tmp_path):
    results = tmp_path / "results"
    correct = simulate_correct(200, {"s0": 6.0, "s1": 4.0, "s2": 5.0, "tsn": 0.0, "raw": -30.0},
                               np.random.default_rng(2))
    for seed, key in enumerate(("s0", "s1", "s2")):
        write_run(results, "otam", "synthetic", 5, correct[key], train_seed=seed)
    write_run(results, "tsn", "synthetic", 5, correct["tsn"])
    write_run(results, "otam", "synthetic", 5, correct["raw"], untrained=True)
    report = build_report(load_results(results, STANDARD), published={"otam": {("synthetic", 5, "small-cnn"): 80.0, ("synthetic", 5): 70.0}}, n_bootstrap=100)
    (table,) = report.tables
    otam = table.row("otam")
    run_means = [100.0 * correct[k].mean() / QUERIES for k in ("s0", "s1", "s2")]
    assert otam.n_seeds == 3 and otam.train_seeds == (0, 1, 2)
    assert otam.cell.mean == pytest.approx(np.mean(run_means))
    assert otam.seed_std == pytest.approx(np.std(run_means, ddof=1))
    np.testing.assert_allclose(otam.accuracy, np.mean([100.0 * correct[k] / QUERIES for k in ("s0", "s1", "s2")], axis=0))
    assert [run.mean for run in otam.runs] == pytest.approx(run_means)
    assert otam.published == 80.0 and otam.published_delta == pytest.approx(otam.cell.mean - 80.0)
    untrained = table.row("otam (untrained)")
    assert untrained.n_seeds == 1 and untrained.published is None
    assert any(row.n_seeds > 1 for table in report.tables for row in table.rows)
    assert table.row("tsn").published is None and table.row("tsn").published_delta is None
    stamps_path = next((results / "runs").glob("tsn__*")) / "stamps.json"
    stamps_path.write_text(json.dumps({**json.loads(stamps_path.read_text()), "comparable_to_papers": False}))
    ours_only = build_report(load_results(results, STANDARD), published={"tsn": {("synthetic", 5, "small-cnn"): 60.0}}, n_bootstrap=10)
    assert ours_only.tables[0].row("tsn").published is None  # e.g. finegym: defined by us, not comparable


def test_a_rerun_of_the_same_training_seed_supersedes_the_older_run(tmp_path):
    """Retrained after a code change (a new checkpoint, same seed): the newest run is the row, not a 2nd seed."""
    import shutil

    from fsar_bench.report.cells import status_lines

    results = tmp_path / "results"
    correct = simulate_correct(200, {"old": 5.0, "new": 0.0}, np.random.default_rng(4))
    old = write_run(results, "otam", "synthetic", 5, correct["old"])
    new = old.parent / (old.name[:-4] + "beef")
    shutil.copytree(old, new)
    stamps = json.loads((new / "stamps.json").read_text())
    stamps.update(checkpoint_sha256="beef" * 16, started_at="2026-02-01T00:00:00+00:00")
    (new / "stamps.json").write_text(json.dumps(stamps))
    (new / "records.jsonl").write_text("".join(json.dumps({"episode": e, "correct": int(c), "queries": QUERIES,
                                                           "predictions": [0] * QUERIES}) + "\n"
                                               for e, c in enumerate(correct["new"])))
    report = build_report(load_results(results, STANDARD), n_bootstrap=10)
    otam = report.tables[0].row("otam")
    assert otam.n_seeds == 1 and otam.runs[0].run_id == new.name
    assert otam.cell.mean == pytest.approx(100.0 * correct["new"].mean() / QUERIES)
    assert any(old.name in line and "older run" in line for line in status_lines(report))


def test_each_backbone_and_track_gets_its_own_table(tmp_path):
    """Two backbones (or tracks) of one method on the same episodes: separate tables, never rows of one table."""
    results = tmp_path / "results"
    correct = simulate_correct(200, {"a": 0.0, "b": 3.0, "c": 1.0}, np.random.default_rng(4))
    write_run(results, "otam", "synthetic", 5, correct["a"], backbone="small-cnn")
    write_run(results, "otam", "synthetic", 5, correct["b"], backbone="resnet50")
    write_run(results, "otam", "synthetic", 5, correct["c"], backbone="small-cnn", track="frozen")
    tables = build_report(load_results(results, STANDARD), n_bootstrap=100).tables
    assert sorted((t.backbone, t.track, tuple(r.label for r in t.rows)) for t in tables) == [
        ("resnet50", "finetune", ("otam",)), ("small-cnn", "finetune", ("otam",)), ("small-cnn", "frozen", ("otam",))]
    assert len({t.name for t in tables}) == 3 and all(t.rows[0].n_seeds == 1 for t in tables)


# --------------------------------------------------------------------------- across cells
def test_friedman_needs_three_methods_in_three_cells(tmp_path):
    results = tmp_path / "results"
    rng = np.random.default_rng(9)
    for dataset, shot in (("synthetic", 1), ("synthetic", 5), ("ucf101", 1)):
        for method, values in simulate_correct(100, {"tsn": 0.0, "otam": 5.0, "trx": 10.0}, rng).items():
            write_run(results, method, dataset, shot, values)
    report = build_report(load_results(results, standard(100)), n_bootstrap=50)
    assert report.friedman is not None and report.friedman.methods == ("otam", "trx", "tsn")
    scores = np.array([[t.row(m).cell.mean for m in ("otam", "trx", "tsn")] for t in report.tables])
    assert report.friedman.p_value == pytest.approx(scipy_stats.friedmanchisquare(*scores.T).pvalue)
    assert report.friedman.critical_difference == pytest.approx(stats.nemenyi_critical_difference(3, 3))
    for folder in (results / "runs").glob("*ucf101*"):
        (folder / "summary.json").unlink()  # now only two finished cells
    fewer = build_report(load_results(results, standard(100)), n_bootstrap=50)
    assert fewer.friedman is None and ">= 3 cells" in fewer.friedman_note
