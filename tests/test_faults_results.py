"""Fault injection, part 2 (issue 15): no wrong number is ever stored. Concurrent commands, broken method
output, damaged checkpoints, edited code and edited result files, each run as real ``fsar-bench`` processes:
the documented exit code, a message naming the file or key, stored results unchanged or exactly resumable,
and never a traceback."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.fault_tools import (assert_error, assert_ok, cli, plugin_dir, project, records, run_folder, snapshot,
                               start)

pytestmark = pytest.mark.slow
EPISODES = "20"
RUN = ("run", "faulty", "-d", "synthetic", "--shots", "1", "--episodes", EPISODES)


def _accuracy_line(stderr: str) -> str:
    return next(line for line in stderr.splitlines() if "over 20 episodes" in line)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, synthetic_cache):
    """A project whose tiny checkpoint is trained and whose run is finished: (folder, stderr of that run)."""
    folder = tmp_path_factory.mktemp("trained")
    config = project(folder, synthetic_cache, plugin_dir(folder))
    result = cli(config, *RUN)
    return folder, assert_ok(result)


def _copy(trained, tmp_path: Path, synthetic_cache: Path) -> tuple[Path, Path]:
    """A copy of the trained project in ``tmp_path`` (its own plugin, results and cache): (config, results)."""
    source, _ = trained
    shutil.copytree(source / "results", tmp_path / "results")
    shutil.copytree(source / "plugins", tmp_path / "plugins")
    config = project(tmp_path, synthetic_cache, tmp_path / "plugins")
    return config, tmp_path / "results"


# ------------------------------------------------------------------ 1. concurrent commands
def test_two_concurrent_trainings_of_one_checkpoint_take_turns(tmp_path, synthetic_cache):
    config = project(tmp_path, synthetic_cache, plugin_dir(tmp_path))
    first, second = start(config, *RUN), start(config, *RUN)
    outputs = [process.communicate(timeout=900) for process in (first, second)]
    for process, (_, stderr) in zip((first, second), outputs):
        assert process.returncode == 0 and "Traceback" not in stderr, stderr[-3000:]
    trainings = [stderr for _, stderr in outputs if "iteration 4/4" in stderr]
    assert len(trainings) == 1, "one process trained; the other waited for it (or came after) and loaded its checkpoint"
    waited = [stderr for _, stderr in outputs if "another process is training this checkpoint: pid" in stderr]
    assert len(waited) <= 1 and all("waiting for it to finish" in stderr for stderr in waited)
    assert _accuracy_line(outputs[0][1]) == _accuracy_line(outputs[1][1]), "both report the one stored result"
    stored = records(tmp_path / "results")
    assert sorted(r["episode"] for r in stored) == list(range(20)), "every episode recorded exactly once"
    assert not list((tmp_path / "results").rglob("training.partial.pt"))


def test_two_concurrent_evaluations_record_each_episode_once(trained, tmp_path, synthetic_cache):
    config, results = _copy(trained, tmp_path, synthetic_cache)
    shutil.rmtree(results / "runs")
    args = (*RUN, "--no-train")  # the trained checkpoint exists: evaluation only
    processes = [start(config, *args), start(config, *args)]
    outputs = [process.communicate(timeout=900) for process in processes]
    assert all(process.returncode == 0 for process in processes), outputs
    assert sum("already complete" in stderr for _, stderr in outputs) == 1
    assert sorted(r["episode"] for r in records(results)) == list(range(20))


def test_a_killed_holder_leaves_no_stale_lock(trained, tmp_path, synthetic_cache):
    """kill -9 while the run's lock is held: the next command resumes at once (the OS released the lock)."""
    config, results = _copy(trained, tmp_path, synthetic_cache)
    shutil.rmtree(results / "runs")
    victim = start(config, *RUN, "--no-train", "--episodes", "400")
    deadline = time.time() + 600
    while not list((results / "locks").glob("*.holder.json")) and time.time() < deadline:
        time.sleep(0.2)
    assert list((results / "locks").glob("*.holder.json")), "the run took its lock"
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    resumed = cli(config, *RUN, "--no-train", "--episodes", "400")
    stderr = assert_ok(resumed)
    assert "another process is" not in stderr
    assert sorted(r["episode"] for r in records(results)) == list(range(400))


# ------------------------------------------------------------------ 2. method output checked
@pytest.mark.parametrize("fault, problem", [("drop-class", "returned shape [20, 5, 4]"), ("nan", "returned NaN values"),
                                            ("inf", "returned -inf values, first in episode 19"),
                                            ("two-dims", "returned shape [20, 5]")])
def test_bad_logits_stop_the_run_and_store_nothing(tmp_path, synthetic_cache, fault, problem):
    config = project(tmp_path, synthetic_cache, plugin_dir(tmp_path), extra="episode_batch = 20\n")
    result = cli(config, *RUN, "--no-train", FSAR_FAULT=fault)
    assert_error(result, 1, "method faulty: FaultyTSN.logits (", "faulty.py)", problem, "expected [E, Q, N] = [20, 5, 5]"
                 if "shape" in problem else "nothing was stored")
    folder = run_folder(tmp_path / "results")
    assert not (folder / "summary.json").exists()
    assert not (folder / "records.jsonl").exists() or not (folder / "records.jsonl").read_text()


def test_a_nan_training_loss_stops_training_and_keeps_no_checkpoint(tmp_path, synthetic_cache):
    config = project(tmp_path, synthetic_cache, plugin_dir(tmp_path))
    result = cli(config, "train", "faulty", "-d", "synthetic", "--shot", "1", FSAR_FAULT="nan-loss")
    assert_error(result, 1, "training diverged at iteration 3: loss = nan (ce = nan)", "faulty.py",
                 "no checkpoint from this point was kept")
    assert not list((tmp_path / "results").rglob("*.pt"))


# ------------------------------------------------------------------ 3-4. checkpoint integrity and bytes
def test_a_checkpoint_with_flipped_bytes_is_refused(trained, tmp_path, synthetic_cache):
    config, results = _copy(trained, tmp_path, synthetic_cache)
    [checkpoint] = list(results.rglob("best.pt"))
    data = bytearray(checkpoint.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0x5A for b in data[middle:middle + 64])
    checkpoint.write_bytes(bytes(data))
    before = snapshot(results)
    assert_error(cli(config, *RUN), 3, str(checkpoint), "--retrain")
    assert snapshot(results) == before


def test_identical_trainings_give_identical_checkpoint_bytes(trained, tmp_path, synthetic_cache):
    config = project(tmp_path, synthetic_cache, plugin_dir(tmp_path))
    assert_ok(cli(config, "train", "faulty", "-d", "synthetic", "--shot", "1"))
    [mine] = list((tmp_path / "results").rglob("best.pt"))
    [theirs] = list((trained[0] / "results").rglob("best.pt"))
    assert hashlib.sha256(mine.read_bytes()).hexdigest() == hashlib.sha256(theirs.read_bytes()).hexdigest()


# ------------------------------------------------------------------ 5. edited code
def test_edited_method_code_is_refused_until_retrained_or_accepted(trained, tmp_path, synthetic_cache):
    config, results = _copy(trained, tmp_path, synthetic_cache)
    plugin_dir(tmp_path, scale="0.0")  # the method's logits multiplied by 0
    before = snapshot(results)
    stderr = assert_error(cli(config, *RUN), 4, "trained by other code", "faulty.py", "--retrain", "--accept-code-change")
    assert snapshot(results) == before
    old_line = _accuracy_line(trained[1])
    accepted = cli(config, *RUN, "--accept-code-change")
    assert _accuracy_line(assert_ok(accepted)) == old_line
    reads = [json.loads(line) for line in (run_folder(results) / "reads.jsonl").read_text().splitlines()]
    assert any("faulty.py" in module for module in reads[-1]["code_change_accepted"])
    retrained = assert_ok(cli(config, *RUN, "--retrain"))
    assert "20.00 ± 0.00 over 20 episodes" in retrained, "ties everywhere: chance level, computed by the new code"
    del stderr


def test_retrain_sets_aside_a_run_scored_by_other_code(tmp_path):
    """Same checkpoint, other scoring code (e.g. an edited pairs.py): --retrain moves the old run to
    results/replaced/ (never deleted) and scores afresh; without it, exit 4."""
    from fsar_bench.errors import ProtocolMismatchError
    from fsar_bench.store import EpisodeRecord, RunStore

    stamps = {"method": "m", "protocol_fingerprint": "p", "episode_fingerprint": "e", "checkpoint_sha256": "c",
              "protocol": {"episodes": 1}, "code": {"fsar_bench.evaluation.pairs": "old"}}
    run = RunStore.open(tmp_path, "run1", stamps)
    run.append([EpisodeRecord(0, 1, 1, [0])])
    run.finish({"accuracy": 100.0})
    edited = {**stamps, "code": {"fsar_bench.evaluation.pairs": "new"}}
    with pytest.raises(ProtocolMismatchError, match="fsar_bench.evaluation.pairs"):
        RunStore.open(tmp_path, "run1", edited)
    fresh = RunStore.open(tmp_path, "run1", edited, set_aside_other_code=True, warn=lambda message: None)
    assert not fresh.done and not fresh.finished
    [aside] = list((tmp_path / "replaced").iterdir())
    assert (aside / "summary.json").is_file() and aside.name.startswith("run1__")


# ------------------------------------------------------------------ 6. a finished run is never rewritten
def test_reinvoking_a_finished_run_keeps_its_stamps(trained, tmp_path, synthetic_cache):
    config, results = _copy(trained, tmp_path, synthetic_cache)
    config.write_text(config.read_text().replace("workers = 0", "workers = 1"))  # another configuration
    before = snapshot(results)
    stderr = assert_ok(cli(config, *RUN))
    assert "already complete" in stderr and _accuracy_line(stderr) == _accuracy_line(trained[1])
    after = snapshot(results)
    reads = [key for key in after if key.endswith("reads.jsonl")]
    assert len(reads) == 1 and json.loads(after[reads[0]])["config"]["run"]["workers"] == 1
    assert {k: v for k, v in after.items() if k not in reads} == before


# ------------------------------------------------------------------ damaged result files
@pytest.mark.parametrize("content, problem", [("{not json", "not valid JSON"), ("[]", "a JSON list, not an object")])
def test_corrupt_stamps_are_a_data_error_naming_the_file(trained, tmp_path, synthetic_cache, content, problem):
    config, results = _copy(trained, tmp_path, synthetic_cache)
    stamps = run_folder(results) / "stamps.json"
    stamps.write_text(content)
    before = snapshot(results)
    assert_error(cli(config, *RUN), 3, str(stamps), problem, "move the folder")
    assert snapshot(results) == before


def test_bad_record_lines_are_dropped_and_only_their_episodes_scored_again(trained, tmp_path, synthetic_cache):
    config, results = _copy(trained, tmp_path, synthetic_cache)
    path = run_folder(results) / "records.jsonl"
    original = path.read_text()
    lines = original.splitlines(keepends=True)
    lines[4] = "garbage\n"
    edited = json.loads(lines[7])
    edited["correct"] = (edited["correct"] + 1) % (edited["queries"] + 1)
    lines[7] = json.dumps(edited, separators=(",", ":")) + "\n"
    path.write_text("".join(lines))
    stderr = assert_ok(cli(config, *RUN))
    assert f"{path}: dropped corrupt lines 5 (not a record" in " ".join(stderr.split())
    assert "8 (correct" in stderr and "disagrees with its predictions" in stderr
    assert "2 episodes to score" in stderr
    assert sorted(path.read_text().splitlines(), key=lambda l: json.loads(l)["episode"]) == original.splitlines()
    assert _accuracy_line(stderr) == _accuracy_line(trained[1])


def test_a_truncated_episode_manifest_is_detected_and_rewritten(trained, tmp_path, synthetic_cache):
    config, results = _copy(trained, tmp_path, synthetic_cache)
    [manifest] = list((results / "episodes").glob("*.npz"))
    intact = manifest.read_bytes()
    manifest.write_bytes(intact[: len(intact) // 2])
    stderr = assert_ok(cli(config, *RUN))
    assert f"episode manifest {manifest} is corrupt" in " ".join(stderr.split())
    assert manifest.read_bytes() == intact
