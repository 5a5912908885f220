"""torchrun on CPU (gloo, 2 processes): the same per-episode records as one process; a rank that dies fails
the run clearly and the run resumes; DDP training (2 episodes per step shared by 2 ranks) gives the weights of
one process taking the same 2 episodes per step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import PROJECT_ROOT, write_bench_toml

pytestmark = pytest.mark.slow

FAULTY_PLUGIN = """
import importlib.util
import os

from fsar_bench.api import MethodCard, Recipe

_spec = importlib.util.spec_from_file_location("fsar_test_otam", OTAM_FILE)
otam = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(otam)


class FaultyOTAM(otam.OTAMHead):
    \"\"\"OTAM; on rank 1 it raises at the FSAR_TEST_FAIL_AT-th ``reduce_pairs`` call (one per episode batch:
    OTAM is pairwise, so evaluation scores distinct pairs, then reduces each batch's pair scores).\"\"\"

    calls = 0

    def reduce_pairs(self, scores):
        FaultyOTAM.calls += 1
        fail_at = int(os.environ.get("FSAR_TEST_FAIL_AT", "0"))
        if fail_at and os.environ.get("RANK") == "1" and FaultyOTAM.calls >= fail_at:
            raise RuntimeError("injected failure on rank 1")
        return super().reduce_pairs(scores)


CARDS = (MethodCard(name="faulty-otam", head=FaultyOTAM, summary="test plugin",
                    recipes={"default": Recipe(optimizer="sgd", lr=0.05, momentum=0.0, iterations=4, episodes_per_step=2,
                                               train_queries_per_class=1, val_every=4, val_episodes=4)}),)
""".replace("OTAM_FILE", repr(str(PROJECT_ROOT / "methods" / "otam.py")))


def _config(folder: Path, synthetic_cache: Path, methods: Path = PROJECT_ROOT / "methods", extra: str = "") -> Path:
    """bench.toml in ``folder`` with its own encoding cache over the session's synthetic videos."""
    folder.mkdir(parents=True, exist_ok=True)
    cache = folder / "cache"
    cache.mkdir(exist_ok=True)
    if not (cache / "datasets").exists():
        (cache / "datasets").symlink_to(synthetic_cache / "datasets")
    path = write_bench_toml(folder, cache, extra)
    path.write_text(path.read_text().replace(f'methods = "{PROJECT_ROOT / "methods"}"', f'methods = "{methods}"'))
    return path


def _torchrun(config: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "fsar_bench", "--config", str(config), *args]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=environment, cwd=config.parent)


def _records(results: Path) -> list[dict]:
    [folder] = list((results / "runs").iterdir())
    return [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines()]


def _run_in_process(config: Path, method: str, shot: int, episodes: int) -> dict:
    from fsar_bench.config import load_config
    from fsar_bench.runner import RunRequest, run_method

    settings = load_config(config, {"protocol.episodes": episodes})
    return run_method(settings, RunRequest(method, "synthetic", shot, no_train=True), log=lambda message: None)


def _plugins(tmp_path: Path) -> Path:
    methods = tmp_path / "plugins"
    methods.mkdir(exist_ok=True)
    (methods / "faulty_otam.py").write_text(FAULTY_PLUGIN)
    return methods


def test_two_processes_match_one_and_a_dying_rank_resumes(tmp_path, synthetic_cache):
    """OTAM under torchrun (2 ranks, each its share of the encoding and of every round of episodes): rank 1
    dies mid-way; the run fails clearly, resumes, and its records equal a one-process run's."""
    methods = _plugins(tmp_path)
    config = _config(tmp_path / "two", synthetic_cache, methods, extra="episode_batch = 3\n")  # several rounds
    args = ["run", "faulty-otam", "-d", "synthetic", "--shots", "1", "--episodes", "18", "--no-train"]
    failed = _torchrun(config, *args, env={"FSAR_TEST_FAIL_AT": "3"})
    assert failed.returncode != 0
    assert "injected failure on rank 1" in failed.stderr
    results = tmp_path / "two" / "results"
    [folder] = list((results / "runs").iterdir())
    assert not (folder / "summary.json").exists()
    recorded = len(_records(results))
    assert 0 < recorded < 18, recorded

    resumed = _torchrun(config, *args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stderr.count("episodes to score") == 1, "rank 0 alone logs"
    assert resumed.stderr.count("over 18 episodes") == 1, "rank 0 alone prints the result line"
    assert f"resuming: {recorded} already recorded" in resumed.stderr
    records = _records(results)
    assert sorted(r["episode"] for r in records) == list(range(18)), "every episode exactly once"

    single = _run_in_process(_config(tmp_path / "one", synthetic_cache, methods), "faulty-otam", 1, 18)
    assert sorted(records, key=lambda r: r["episode"]) == _records(tmp_path / "one" / "results")
    stamps = json.loads((folder / "stamps.json").read_text())
    assert stamps["processes"] == 2 and single["videos_encoded"] > 0
    assert json.loads((folder / "summary.json").read_text())["accuracy"] == single["accuracy"]


def test_ddp_training_matches_one_process(tmp_path, synthetic_cache):
    from fsar_bench.config import load_config
    from fsar_bench.data.benchmarks import open_benchmark
    from fsar_bench.runner import build_model, default_checkpoint_path, get_method, train_checkpoint

    methods = _plugins(tmp_path)
    two = _config(tmp_path / "two", synthetic_cache, methods)
    result = _torchrun(two, "train", "faulty-otam", "-d", "synthetic", "--shot", "1")
    assert result.returncode == 0, result.stderr[-3000:]

    one = _config(tmp_path / "one", synthetic_cache, methods)
    config = load_config(one)
    entry = get_method(config, "faulty-otam")
    benchmark = open_benchmark("synthetic", config)
    model = build_model(config, entry, benchmark, torch.device("cpu"), 1)
    path = default_checkpoint_path(config, model, "synthetic", 1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun rank (OMP_NUM_THREADS=1): then the arithmetic is the same
    try:
        train_checkpoint(config, entry, benchmark, model, 1, path)
    finally:
        torch.set_num_threads(threads)

    trained = {name: json.loads((root / "results" / "checkpoints").glob("*/training.json").__next__().read_text())
               for name, root in (("one", tmp_path / "one"), ("two", tmp_path / "two"))}
    assert [h["iteration"] for h in trained["two"]["history"]] == [1, 2, 3, 4], "every episode of every step ran"
    assert [h["loss"] for h in trained["one"]["history"]] == [h["loss"] for h in trained["two"]["history"]]
    single = torch.load(path, weights_only=True)["state_dict"]
    double = torch.load(next((tmp_path / "two" / "results" / "checkpoints").glob("*/best.pt")), weights_only=True)["state_dict"]
    for name, _ in model.named_parameters():  # BatchNorm running statistics are rank 0's own, by design
        assert torch.equal(double[name], single[name]), name
