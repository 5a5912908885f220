"""Backbones: ResNet-50 weights offline give an actionable error; shapes of both backbones."""

from __future__ import annotations

import pytest
import torch

from fsar_bench.model.backbones import RESNET50_IMAGENET_FILE, SmallCNN, build_backbone
from fsar_bench.errors import DataError


def test_missing_imagenet_weights_offline_name_the_file_and_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("FSAR_OFFLINE", "1")
    with pytest.raises(DataError) as error:
        build_backbone("resnet50", "imagenet")
    message = str(error.value)
    assert str(tmp_path / "torch-home" / "hub" / "checkpoints" / RESNET50_IMAGENET_FILE) in message
    assert "$TORCH_HOME" in message and "--backbone-weights none" in message


def test_weights_file_in_torch_home_is_used(tmp_path, monkeypatch):
    import torchvision

    reference = torchvision.models.resnet50(weights=None)
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(reference.state_dict(), folder / RESNET50_IMAGENET_FILE)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    trunk = build_backbone("resnet50", "imagenet")
    assert torch.equal(trunk.trunk[0].weight, reference.conv1.weight)


def test_resnet50_random_weights_give_stride_32_maps():
    trunk = build_backbone("resnet50", "none").eval()
    with torch.inference_mode():
        assert trunk(torch.randn(1, 3, 224, 224)).shape == (1, 2048, 7, 7)


def test_small_cnn_keeps_position_through_pooling():
    cnn = SmallCNN(dim=32).eval()
    assert cnn(torch.randn(3, 3, 64, 64)).shape == (3, 32, 2, 2)
    left, right = torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 64, 64)
    left[..., 20:30, 5:15] = 1.0
    right[..., 20:30, 49:59] = 1.0
    with torch.inference_mode():
        pooled = cnn(torch.cat([left, right])).mean(dim=(2, 3))
    assert not torch.allclose(pooled[0], pooled[1])
