"""fsar_bench.files (atomic, shareable, disk-full safe writes) and model.checkpoints (reproducible, verified)."""

from __future__ import annotations

import errno
import os
import stat

import pytest
import torch

from fsar_bench import files
from fsar_bench.errors import DataError, ProtocolMismatchError
from fsar_bench.files import DiskFullError, append_durable, file_sha256, json_sha256, write_json_atomic
from fsar_bench.model.checkpoints import checkpoint_bytes, read_checkpoint, save_checkpoint


def _disk_full_after(monkeypatch, allowed: int) -> None:
    """Let ``allowed`` bytes through files._write_all, then fail like a full disk."""
    budget = {"left": allowed}
    real = files._write_all

    def write(fd: int, data: bytes) -> None:
        if len(data) > budget["left"]:
            real(fd, data[:budget["left"]])
            budget["left"] = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        budget["left"] -= len(data)
        real(fd, data)

    monkeypatch.setattr(files, "_write_all", write)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_get_the_umask_mode_not_0600(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        write_json_atomic(tmp_path / "a.json", {"x": 1})
        append_durable(tmp_path / "b.jsonl", "{}\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "b.jsonl").stat().st_mode) == mode


def test_disk_full_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "stamps.json"
    write_json_atomic(path, {"old": True})
    _disk_full_after(monkeypatch, 5)
    with pytest.raises(DiskFullError, match=r"stamps\.json.*run the same command again"):
        write_json_atomic(path, {"new": list(range(100))})
    assert path.read_text() == '{\n "old": true\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stamps.json"]


def test_disk_full_during_an_append_leaves_whole_lines_only(tmp_path, monkeypatch):
    path = tmp_path / "records.jsonl"
    append_durable(path, '{"episode":0}\n')
    _disk_full_after(monkeypatch, 7)
    with pytest.raises(DiskFullError, match="records.jsonl"):
        append_durable(path, '{"episode":1}\n{"episode":2}\n')
    assert path.read_text() == '{"episode":0}\n'


def test_digests():
    assert json_sha256({"b": 1, "a": [1, 2]}) == json_sha256({"a": [1, 2], "b": 1})
    assert json_sha256({"a": 1}) != json_sha256({"a": 2})


def _model() -> torch.nn.Module:
    model = torch.nn.Linear(4, 3)
    model.spec = {"method": "toy", "backbone": "none", "frames": 8, "size": 64}
    return model


def test_identical_weights_give_identical_checkpoint_bytes(tmp_path):
    model = _model()
    first = save_checkpoint(model, tmp_path / "a" / "best.pt", {"iteration": 3})
    second = save_checkpoint(model, tmp_path / "b" / "other-name.pt", {"iteration": 3})
    assert first == second == file_sha256(tmp_path / "a" / "best.pt") == file_sha256(tmp_path / "b" / "other-name.pt")
    assert checkpoint_bytes(model.spec, model.state_dict(), {"iteration": 4}) != (tmp_path / "a" / "best.pt").read_bytes()
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_checkpoint_with_flipped_bytes_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "best.pt"
    model = _model()
    with torch.no_grad():
        model.weight.fill_(0.25)
    save_checkpoint(model, path, {})
    data = bytearray(path.read_bytes())
    at = data.find(torch.full((1,), 0.25).numpy().tobytes())  # inside the weight tensor's record
    data[at:at + 4] = bytes(b ^ 0xFF for b in data[at:at + 4])
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"best\.pt is corrupt.*--retrain"):
        read_checkpoint(path)


def test_a_checkpoint_without_integrity_stamp_is_refused(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"format": 1, "spec": {}, "extra": {}, "state_dict": {}}, path)
    with pytest.raises(ProtocolMismatchError, match="--retrain"):
        read_checkpoint(path)
