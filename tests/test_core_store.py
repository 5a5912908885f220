"""Results store: partial writes are repaired, nothing is counted twice, runs are not mixed."""

from __future__ import annotations

import math
import os
import stat

import pytest

from fsar_bench.errors import ProtocolMismatchError
from fsar_bench.report import collect_runs
from fsar_bench.store import RECORDS_FILE, EpisodeRecord, RunStore, StoreError, check_writable
from fsar_bench.data.synthetic import benchmark_data_version


def _stamps(**changes):
    stamps = {"method": "otam", "dataset": "synthetic", "shot": 1, "way": 5,
              "protocol": {"episodes": 4, "data_version": benchmark_data_version("synthetic")},
              "protocol_fingerprint": "p" * 64, "episode_fingerprint": "e" * 64,
              "standard_episodes": 4, "checkpoint_sha256": "c" * 64, "seeds": {"train": 0}, "started_at": "now"}
    stamps.update(changes)
    return stamps


def test_partial_last_line_is_cut_and_the_episode_rescored(tmp_path):
    run = RunStore.open(tmp_path, "r", _stamps())
    run.append([EpisodeRecord(0, 5, 5, [0, 1, 2, 3, 4]), EpisodeRecord(1, 4, 5, [0, 1, 2, 3, 3])])
    with open(run.folder / RECORDS_FILE, "a") as stream:
        stream.write('{"episode":2,"correct":3,"quer')   # killed mid-write
    reopened = RunStore.open(tmp_path, "r", _stamps())
    assert reopened.done == {0, 1}
    reopened.append([EpisodeRecord(2, 3, 5, [0, 0, 2, 3, 0])])
    assert [r.episode for r in reopened.records()] == [0, 1, 2]


def test_recorded_episodes_cannot_be_appended_again(tmp_path):
    run = RunStore.open(tmp_path, "r", _stamps())
    run.append([EpisodeRecord(0, 5, 5, [0, 1, 2, 3, 4])])
    with pytest.raises(StoreError, match="already recorded"):
        run.append([EpisodeRecord(0, 5, 5, [0, 1, 2, 3, 4])])


def test_reopening_with_another_fingerprint_is_refused(tmp_path):
    RunStore.open(tmp_path, "r", _stamps())
    with pytest.raises(ProtocolMismatchError, match="episode_fingerprint"):
        RunStore.open(tmp_path, "r", _stamps(episode_fingerprint="x" * 64))


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_results_folder_is_a_clear_error(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    with pytest.raises(StoreError, match="not writable"):
        check_writable(folder)


def test_results_path_that_is_a_file_is_a_clear_error(tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="is not writable"):
        check_writable(blocker)


def test_ci_matches_a_hand_computation(tmp_path):
    # per-episode accuracies 100, 80, 60, 100 (5 queries each)
    run = RunStore.open(tmp_path, "r", _stamps())
    run.append([EpisodeRecord(e, c, 5, [0] * 5) for e, c in enumerate([5, 4, 3, 5])])
    run.finish({})
    [row] = collect_runs(tmp_path).to_dict("records")
    mean = (100 + 80 + 60 + 100) / 4                                   # 85
    sample_var = ((15**2) + (5**2) + (25**2) + (15**2)) / 3             # 1100 / 3, ddof = 1
    assert row["accuracy"] == pytest.approx(mean)
    assert row["std"] == pytest.approx(math.sqrt(sample_var))
    assert row["ci95"] == pytest.approx(1.96 * math.sqrt(sample_var) / 2)
    assert row["status"] == "complete" and row["episodes"] == 4


def test_unfinished_and_smoke_runs_are_labelled(tmp_path):
    unfinished = RunStore.open(tmp_path, "a", _stamps())
    unfinished.append([EpisodeRecord(0, 5, 5, [0] * 5)])
    smoke = RunStore.open(tmp_path, "b", _stamps(protocol={"episodes": 2, "data_version": benchmark_data_version("synthetic")}, protocol_fingerprint="q" * 64, standard_episodes=10_000))
    smoke.append([EpisodeRecord(0, 5, 5, [0] * 5), EpisodeRecord(1, 5, 5, [0] * 5)])
    smoke.finish({})
    statuses = dict(zip(collect_runs(tmp_path)["run"], collect_runs(tmp_path)["status"]))
    assert statuses == {"a": "incomplete", "b": "smoke"}


def test_record_lines_are_the_json_of_the_record() -> None:
    import json
    from dataclasses import asdict

    from fsar_bench.store import record_line

    for record in (EpisodeRecord(0, 5, 5, [0, 1, 2, 3, 4]), EpisodeRecord(9999, 0, 3, [4, 4, 1]), EpisodeRecord(3, 0, 0, [])):
        assert record_line(record) == json.dumps(asdict(record), separators=(",", ":")) + "\n"
        assert EpisodeRecord(**json.loads(record_line(record))) == record
