"""`fsar-bench doctor` (and scripts/gpu_check.py) runs on CPU and prints every check."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import PROJECT_ROOT, write_bench_toml


@pytest.mark.slow
def test_doctor_on_cpu(tmp_path, synthetic_cache):
    config = write_bench_toml(tmp_path, synthetic_cache)
    result = subprocess.run([sys.executable, str(PROJECT_ROOT / "scripts" / "gpu_check.py"), "--config", str(config),
                             "--episodes", "2", "--workers", "0,1", "--queries", "2", "--device", "cpu"],
                            capture_output=True, text=True, timeout=600, cwd=PROJECT_ROOT)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for check in ("precision auto", "loader 0 workers", "loader 1 workers", "step fp32", "step bf16",
                  "bf16 vs fp32 otam_5w1s_q1"):
        assert check in out, check
    assert "episodes/s" in out and "ms with data" in out and "argmax agreement" in out


def test_doctor_refuses_bad_worker_list(tmp_path):
    result = subprocess.run([sys.executable, "-m", "fsar_bench", "doctor", "--workers", "a,b"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2 and "--workers" in result.stderr
