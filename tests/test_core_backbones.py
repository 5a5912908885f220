"""Backbones as plugins: discovery, weights resolution and offline errors, shapes and d of every built-in backbone."""

from __future__ import annotations

import pytest
import torch

from fsar_bench.backbones import BackboneCard, discover_backbones, get_backbone_card
from fsar_bench.errors import DataError, UnknownNameError, UsageError
from fsar_bench.model.backbones import RESNET50_IMAGENET_FILE, SmallCNN, build_backbone

BUILT_IN = ("clip-rn50", "clip-vit-b16", "dinov2-vit-b14", "resnet50", "small-cnn")


def test_every_built_in_backbone_is_discovered_without_failures():
    registry = discover_backbones(entry_points=False)
    assert set(BUILT_IN) <= set(registry.names())
    assert registry.failures == []
    assert all(card.dim > 0 for card in (registry.get(name) for name in BUILT_IN))


def test_unknown_backbone_gets_did_you_mean():
    with pytest.raises(UnknownNameError, match="clip-rn50"):
        get_backbone_card("clip-rn5")


def test_a_dropped_in_file_registers_and_a_broken_one_is_reported(tmp_path):
    (tmp_path / "good.py").write_text(
        "from fsar_bench.api import Preprocess\n"
        "from fsar_bench.backbones import BackboneCard, WeightsTag\n"
        "from fsar_bench.backbones.small_cnn import SmallCNN\n"
        "CARDS = (BackboneCard(name='tiny', build=SmallCNN, outputs={'pooled': 128, 'maps': 128}, stride=32,\n"
        "                      preprocess=Preprocess(), weights=(WeightsTag('random', 'random-init'),)),)\n")
    (tmp_path / "bad.py").write_text("x = 1\nraise RuntimeError('boom')\n")
    registry = discover_backbones(tmp_path, entry_points=False)
    assert registry.names() == ["tiny"]
    assert registry.failures[0].origin.endswith("bad.py:2") and "boom" in registry.failures[0].message


def test_weights_resolution_names_the_tags():
    card = get_backbone_card("clip-rn50")
    assert card.resolve_weights("pretrained").stamp == "open_clip:RN50/openai"
    assert card.resolve_weights("openai").stamp == "open_clip:RN50/openai"
    assert card.resolve_weights("none").stamp == "none"
    with pytest.raises(UsageError, match="pretrained, openai, none"):
        card.resolve_weights("imagenet")


def test_missing_imagenet_weights_offline_name_the_file_and_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("FSAR_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("FSAR_OFFLINE", "1")
    with pytest.raises(DataError) as error:
        build_backbone("resnet50", "imagenet")
    message = str(error.value)
    assert str(tmp_path / "torch-home" / "hub" / "checkpoints" / RESNET50_IMAGENET_FILE) in message
    assert str(tmp_path / "weights" / "resnet50" / RESNET50_IMAGENET_FILE) in message
    assert "$TORCH_HOME" in message and "--backbone-weights none" in message


@pytest.mark.parametrize("name, file", [("clip-rn50", "open_clip_pytorch_model.bin"),
                                        ("dinov2-vit-b14", "model.safetensors")])
def test_missing_pretrained_weights_offline_name_the_file_and_where_to_put_it(tmp_path, monkeypatch, name, file):
    monkeypatch.setenv("FSAR_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("FSAR_OFFLINE", "1")
    with pytest.raises(DataError) as error:
        build_backbone(name, "pretrained")
    message = str(error.value)
    assert str(tmp_path / name / file) in message and "huggingface.co" in message and "--backbone-weights none" in message


def test_weights_file_in_torch_home_is_used(tmp_path, monkeypatch):
    import torchvision

    reference = torchvision.models.resnet50(weights=None)
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(reference.state_dict(), folder / RESNET50_IMAGENET_FILE)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    _, trunk, weights = build_backbone("resnet50", "imagenet")
    assert torch.equal(trunk.trunk[0].weight, reference.conv1.weight)
    assert weights.stamp == "torchvision:ResNet50_Weights.IMAGENET1K_V1"


def test_resnet50_random_weights_give_stride_32_maps():
    _, trunk, _ = build_backbone("resnet50", "none")
    with torch.inference_mode():
        assert trunk.eval().maps(torch.randn(1, 3, 224, 224)).shape == (1, 2048, 7, 7)


@pytest.mark.parametrize("name", ["clip-rn50", "clip-vit-b16", "dinov2-vit-b14"])
def test_optional_backbones_give_their_declared_d_at_synthetic_size(name):
    pytest.importorskip("open_clip" if name.startswith("clip") else "timm")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        card, trunk, _ = build_backbone(name, "none", image_size=64)
    frames = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        trunk.eval()
        assert trunk.pooled(frames).shape == (2, card.dim)
        if "maps" in card.outputs:
            assert trunk.maps(frames).shape == (2, card.outputs["maps"], 2, 2)
        if "tokens" in card.outputs:
            assert trunk.tokens(frames).shape[::2] == (2, card.outputs["tokens"])
        if card.text_tower:
            assert trunk.encode_text(["a photo of x", "a photo of y"]).shape == (2, card.dim)
    assert not any(key.startswith("_text_model") for key in trunk.state_dict())


def test_small_cnn_keeps_position_through_pooling():
    cnn = SmallCNN(dim=32).eval()
    assert cnn.maps(torch.randn(3, 3, 64, 64)).shape == (3, 32, 2, 2)
    left, right = torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 64, 64)
    left[..., 20:30, 5:15] = 1.0
    right[..., 20:30, 49:59] = 1.0
    with torch.inference_mode():
        pooled = cnn.pooled(torch.cat([left, right]))
    assert not torch.allclose(pooled[0], pooled[1])


def test_card_requires_pooled_output():
    with pytest.raises(ValueError, match="pooled"):
        BackboneCard(name="x", build=SmallCNN, outputs={"maps": 8}, stride=32, preprocess=None, weights=("w",))  # type: ignore[arg-type]


def _card(name: str):
    from fsar_bench.model.registry import discover_methods
    from tests.conftest import PROJECT_ROOT

    return discover_methods(PROJECT_ROOT / "methods", entry_points=False).get(name).card


def test_heads_receive_d_from_the_backbone_and_the_weight_tag_is_stamped():
    from fsar_bench.model.network import FSARModel

    model = FSARModel.build(_card("tsn"), "small-cnn", "none", frames=8, size=64, num_base_classes=4)
    assert model.head.config.dim == 128 and model.spec["backbone_weights"] == "none"
    maps_model = FSARModel.build(_card("molo"), "resnet50", "none", frames=8, size=224, num_base_classes=4)
    assert maps_model.head.config.dim == 2048 and maps_model.head.config.feature_size == (7, 7)


def test_a_map_head_refuses_a_backbone_without_maps():
    pytest.importorskip("open_clip")
    from fsar_bench.model.network import FSARModel

    with pytest.raises(UsageError, match="molo needs conv maps.*clip-vit-b16 gives pooled and tokens"):
        FSARModel.build(_card("molo"), "clip-vit-b16", "none", frames=8, size=64, num_base_classes=4)
