"""End to end as a user runs it: synth -> short training -> run on a reduced protocol -> report CSV;
and a run killed with SIGKILL resumes with every episode recorded exactly once."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from tests.conftest import write_bench_toml

SHORT_TRAINING = """
[methods.otam]
iterations = 16
val_every = 8
val_episodes = 20
"""


def fsar(config, *args, timeout=600):
    return subprocess.run([sys.executable, "-m", "fsar_bench", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_synth_train_run_report(tmp_path, synthetic_cache):
    config = write_bench_toml(tmp_path, synthetic_cache, SHORT_TRAINING)
    synth = fsar(config, "data", "synth")
    assert synth.returncode == 0, synth.stderr
    run = fsar(config, "run", "otam", "--dataset", "synthetic", "--shots", "1,5", "--episodes", "200")
    assert run.returncode == 0, run.stderr
    assert "otam synthetic 5-shot" in run.stderr
    checkpoints = sorted((tmp_path / "results" / "checkpoints").glob("*/best.pt"))
    assert len(checkpoints) == 2
    training = json.loads((checkpoints[0].parent / "training.json").read_text())
    assert [h["iteration"] for h in training["history"] if "val_acc" in h] == [8, 16]

    report = fsar(config, "report", "--format", "csv", "--include-smoke")
    assert report.returncode == 0, report.stderr
    table = pd.read_csv(io.StringIO(report.stdout))
    assert list(table["shot"]) == [1, 5] and set(table["method"]) == {"otam"}
    assert set(table["episodes"]) == {200} and set(table["status"]) == {"smoke"}
    assert table["accuracy"].between(20, 100).all() and (table["ci95"] > 0).all()

    again = fsar(config, "run", "otam", "--dataset", "synthetic", "--shots", "5", "--episodes", "200")
    assert again.returncode == 0 and "episodes to score" not in again.stderr, "a finished run is not re-scored"

    tsn = fsar(config, "run", "tsn", "--dataset", "synthetic", "--shots", "5", "--episodes", "200", "--no-train")
    assert tsn.returncode == 0, tsn.stderr
    stamps = [json.loads(p.read_text()) for p in (tmp_path / "results" / "runs").glob("*5shot*/stamps.json")]
    assert len({s["episode_fingerprint"] for s in stamps}) == 1, "every method sees the same episodes"


@pytest.mark.slow
def test_kill_minus_nine_then_resume(tmp_path, synthetic_cache):
    config = write_bench_toml(tmp_path, synthetic_cache, "episode_batch = 25\n")  # many small appends
    args = ["run", "otam", "--dataset", "synthetic", "--shots", "5", "--episodes", "10000", "--no-train"]
    process = subprocess.Popen([sys.executable, "-m", "fsar_bench", "--config", str(config), *args],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    runs = tmp_path / "results" / "runs"
    deadline = time.time() + 300
    while time.time() < deadline:
        records = list(runs.glob("*/records.jsonl"))
        if records and records[0].stat().st_size > 20_000:
            break
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    [folder] = list(runs.iterdir())
    assert not (folder / "summary.json").exists(), "the run finished before it could be killed"
    recorded_before = sum(1 for _ in open(folder / "records.jsonl"))
    assert 0 < recorded_before < 10_000

    resumed = fsar(config, *args)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    episodes = [json.loads(line)["episode"] for line in open(folder / "records.jsonl")]
    assert sorted(episodes) == list(range(10_000)), "each episode exactly once"
    assert (folder / "summary.json").exists()
