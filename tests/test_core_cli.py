"""The command line as a user meets it: bad input gets a clear error and the documented exit code."""

from __future__ import annotations

import shutil

import pytest
from typer.testing import CliRunner

from fsar_bench.cli.main import app
from tests.conftest import write_bench_toml

runner = CliRunner()


def invoke(config, *args):
    return runner.invoke(app, ["--config", str(config), *args])


@pytest.fixture
def config(tmp_path, synthetic_cache):
    return write_bench_toml(tmp_path, synthetic_cache, "[methods.tsn]\niterations = 2\nval_every = 2\nval_episodes = 5\n")


def test_unknown_method_suggests_and_exits_2(config):
    result = invoke(config, "run", "otma", "--dataset", "synthetic")
    assert result.exit_code == 2
    assert "unknown method 'otma'" in result.output and "Did you mean 'otam'" in result.output


def test_unknown_dataset_suggests_and_exits_2(config):
    result = invoke(config, "run", "otam", "--dataset", "synthetc")
    assert result.exit_code == 2 and "Did you mean 'synthetic'" in result.output


@pytest.mark.parametrize("shots", ["0", "a", "1,,5", "-1"])
def test_bad_shots_exit_2(config, shots):
    result = invoke(config, "run", "otam", "--dataset", "synthetic", "--shots", shots)
    assert result.exit_code == 2 and "--shots expects positive integers" in result.output


def test_bad_config_file_exits_2_naming_key_and_file(tmp_path):
    path = tmp_path / "bench.toml"
    path.write_text("[protocol]\nsed = 3\n")
    result = invoke(path, "config", "show")
    assert result.exit_code == 2 and "unknown key 'sed'" in result.output and str(path) in result.output


def test_config_show_prints_resolved_values(config):
    result = invoke(config, "config", "show")
    assert result.exit_code == 0 and '"episodes": 10000' in result.output


def test_methods_lists_origin_file_names_at_80_columns(config):
    result = runner.invoke(app, ["--config", str(config), "methods"], env={"COLUMNS": "80"})
    assert result.exit_code == 0
    rows = {line.split("│")[1].strip(): line.split("│")[3].strip() for line in result.output.splitlines()
            if line.startswith("│") and line.split("│")[1].strip()}
    assert {name: rows.get(name) for name in ("otam", "tsn", "trx", "hyrsm", "molo-no-motion")} == {
        "otam": "otam.py", "tsn": "tsn.py", "trx": "trx.py", "hyrsm": "hyrsm.py", "molo-no-motion": "molo.py"}
    assert all(len(line) <= 80 for line in result.output.splitlines()) and "…" not in result.output
    assert "files in " in result.output and "methods" in result.output


def test_run_at_80_columns_ends_with_its_results_folder(config, tmp_path):
    result = runner.invoke(app, ["--config", str(config), "run", "tsn", "-d", "synthetic", "--shots", "1",
                                 "--episodes", "6", "--no-train"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    [summary] = [line for line in lines if line.startswith("tsn synthetic 1-shot: ") and " ± " in line]
    assert summary.endswith(" over 6 episodes") and len(summary) <= 80  # one line, never cut by a wrap
    assert lines[lines.index(summary) + 1].startswith("  protocol ")  # the fingerprints on their own line
    [folder] = list((tmp_path / "results" / "runs").iterdir())
    assert lines[-1] == f"results: {folder}"


def test_ctrl_c_prints_how_to_resume_and_exits_130(config, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("fsar_bench.runner.run_method", interrupted)
    result = invoke(config, "run", "tsn", "-d", "synthetic", "--shots", "1", "--episodes", "6", "--no-train")
    assert result.exit_code == 130
    assert "interrupted — run the same command to resume" in result.output and "Traceback" not in result.output


def _copy_cache_with(tmp_path, synthetic_cache, damage):
    cache = tmp_path / "cache"
    shutil.copytree(synthetic_cache, cache)
    [root] = (cache / "datasets").iterdir()
    test_ids = (root / "splits" / "test.txt").read_text().split()
    damage(root / "videos" / f"{test_ids[0]}.mp4")
    return cache, test_ids[0]


def test_corrupt_video_is_named_and_exits_3(tmp_path, synthetic_cache):
    cache, video = _copy_cache_with(tmp_path, synthetic_cache, lambda p: p.write_bytes(b"\x00garbage" * 50))
    config = write_bench_toml(tmp_path, cache)
    result = invoke(config, "run", "tsn", "-d", "synthetic", "--shots", "1", "--episodes", "20", "--no-train")
    assert result.exit_code == 3, result.output
    assert video.split("/")[-1] in result.output and "corrupt" in result.output


def test_truncated_video_is_named_and_exits_3(tmp_path, synthetic_cache):
    def truncate(path):
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    cache, video = _copy_cache_with(tmp_path, synthetic_cache, truncate)
    config = write_bench_toml(tmp_path, cache)
    result = invoke(config, "run", "tsn", "-d", "synthetic", "--shots", "1", "--episodes", "20", "--no-train")
    assert result.exit_code == 3, result.output
    assert video.split("/")[-1] in result.output


def test_video_shorter_than_the_frame_count_exits_3(tmp_path, synthetic_cache):
    config = write_bench_toml(tmp_path, synthetic_cache, "[protocol]\nframes = 40\n")
    result = invoke(config, "run", "tsn", "-d", "synthetic", "--shots", "1", "--episodes", "5", "--no-train")
    assert result.exit_code == 3, result.output
    assert "fewer than the 40 the protocol samples" in result.output


def test_results_folder_that_cannot_be_written_is_a_clear_error(tmp_path, synthetic_cache):
    config = write_bench_toml(tmp_path, synthetic_cache)
    (tmp_path / "results").write_text("a file where the results folder should be")
    result = invoke(config, "run", "tsn", "-d", "synthetic", "--shots", "1", "--episodes", "5", "--no-train")
    assert result.exit_code == 1 and "not writable" in result.output


def test_report_on_empty_results_is_friendly(config):
    result = invoke(config, "report")
    assert result.exit_code == 0 and "fsar-bench run" in result.output
