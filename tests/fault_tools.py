"""Helpers of the fault-injection tests (tests/test_faults_*.py): real CLI processes, a plugin with switchable
faults, and the assertion every fault test makes (documented exit code, a message naming the file or key,
never a Python traceback).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from tests.conftest import PROJECT_ROOT, write_bench_toml

FAULT_PLUGIN = '''
"""A TSN whose logits and loss go wrong on request (FSAR_FAULT), for the fault-injection tests."""
import importlib.util
import os
import sys

from fsar_bench.api import LossOutput, MethodCard, Recipe

_spec = importlib.util.spec_from_file_location("faulty_tsn_base", TSN_FILE)
_tsn = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _tsn  # dataclasses resolve their module through sys.modules
_spec.loader.exec_module(_tsn)
SCALE = 1.0


class FaultyTSN(_tsn.TSNHead):
    def logits(self, support, query):
        out = super().logits(support, query) * SCALE
        mode = os.environ.get("FSAR_FAULT", "")
        if mode == "drop-class":
            return out[..., :-1]
        if mode == "nan":
            return out * float("nan")
        if mode == "inf":
            out = out.clone()
            out[-1, 0, 0] = float("-inf")
            return out
        if mode == "two-dims":
            return out[:, 0, :]
        return out

    def loss(self, support_features, query_features, episode):
        output = super().loss(support_features, query_features, episode)
        if os.environ.get("FSAR_FAULT") == "nan-loss":
            self.calls = getattr(self, "calls", 0) + 1
            if self.calls >= 3:
                bad = output.total * float("nan")
                return LossOutput(total=bad, terms={"ce": bad}, logits=output.logits)
        return output


CARDS = (MethodCard(name="faulty", head=FaultyTSN, summary="test plugin with injectable faults",
                    recipes={"default": Recipe(optimizer="adam", lr=1e-3, iterations=4, train_queries_per_class=1,
                                               val_every=2, val_episodes=4)}),)
'''.replace("TSN_FILE", repr(str(PROJECT_ROOT / "methods" / "tsn.py")))

TRACEBACK = "Traceback (most recent call last)"


def plugin_dir(folder: Path, scale: str = "1.0") -> Path:
    """A methods folder holding only the fault plugin (``SCALE`` multiplies its logits)."""
    methods = folder / "plugins"
    methods.mkdir(parents=True, exist_ok=True)
    (methods / "faulty.py").write_text(FAULT_PLUGIN.replace("SCALE = 1.0", f"SCALE = {scale}"))
    return methods


def project(folder: Path, synthetic_cache: Path, methods: Path | None = None, extra: str = "") -> Path:
    """bench.toml in ``folder``: its own results and encoding cache, the session's synthetic videos."""
    folder.mkdir(parents=True, exist_ok=True)
    cache = folder / "cache"
    cache.mkdir(exist_ok=True)
    if not (cache / "datasets").exists():
        (cache / "datasets").symlink_to(synthetic_cache / "datasets")
    path = write_bench_toml(folder, cache, extra)
    if methods is not None:
        path.write_text(path.read_text().replace(f'methods = "{PROJECT_ROOT / "methods"}"', f'methods = "{methods}"'))
    return path


def environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "400", "PYTHONPATH": str(PROJECT_ROOT), **extra}


def command(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "fsar_bench", "--config", str(config), *args]


def cli(config: Path, *args: str, timeout: float = 900, **env: str) -> subprocess.CompletedProcess:
    """Run ``fsar-bench --config CONFIG ARGS`` in a real process."""
    return subprocess.run(command(config, *args), capture_output=True, text=True, timeout=timeout,
                          env=environment(**env), cwd=config.parent)


def start(config: Path, *args: str, **env: str) -> subprocess.Popen:
    """Start ``fsar-bench --config CONFIG ARGS`` without waiting (for concurrency and kill tests)."""
    return subprocess.Popen(command(config, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=environment(**env), cwd=config.parent)


def in_process(config: Path, *args: str):
    """Run the CLI in this process (for faults injected with monkeypatch); returns typer's Result."""
    from fsar_bench.cli.main import app

    return CliRunner().invoke(app, ["--config", str(config), *args], env={"COLUMNS": "400"})


def flat(text: str) -> str:
    return " ".join(text.split())


def assert_error(result, code: int, *needles: str) -> str:
    """The documented exit code, every needle in stderr (whitespace-insensitive), and no Python traceback."""
    stderr, stdout = result.stderr or "", result.stdout or ""
    returncode = result.returncode if isinstance(result, subprocess.CompletedProcess) else result.exit_code
    assert TRACEBACK not in stderr and TRACEBACK not in stdout, stderr[-3000:]
    if not isinstance(result, subprocess.CompletedProcess):
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert returncode == code, f"exit {returncode}, expected {code}:\n{stderr[-3000:]}"
    for needle in needles:
        assert flat(needle) in flat(stderr), f"{needle!r} not in:\n{stderr[-3000:]}"
    return stderr


def assert_ok(result) -> str:
    return assert_error(result, 0)


def run_folder(results: Path) -> Path:
    [folder] = [p for p in (results / "runs").iterdir() if p.is_dir()]
    return folder


def records(results: Path) -> list[dict]:
    return [json.loads(line) for line in (run_folder(results) / "records.jsonl").read_text().splitlines() if line]


def snapshot(results: Path) -> dict[str, bytes]:
    """Every file under ``results/runs`` and ``results/checkpoints`` with its bytes (locks excluded)."""
    return {str(p.relative_to(results)): p.read_bytes() for sub in ("runs", "checkpoints") if (results / sub).is_dir()
            for p in sorted((results / sub).rglob("*")) if p.is_file() and not p.name.endswith((".lock", ".holder.json"))}
