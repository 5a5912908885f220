"""Heads that use class text (CLIP-FSAR): the backbone's text tower embeds each class prompt once at build time,
the train table reaches the head, every encoded video carries its own class's row, and backbones without a text
tower are refused by name."""

from __future__ import annotations

import pytest
import torch

from fsar_bench.errors import UsageError
from fsar_bench.model.network import FSARModel, class_prompt_name
from fsar_bench.model.registry import discover_methods
from tests.conftest import PROJECT_ROOT

CLASSES = {"train": {"air_drumming": ("t0", "t1"), "archery": ("t2", "t3")},
           "val": {"bowling": ("v0",)}, "test": {"zumba": ("q0", "q1")}}


def _card():
    return discover_methods(PROJECT_ROOT / "methods", entry_points=False).get("clipfsar").card


def test_a_backbone_without_text_tower_is_refused():
    with pytest.raises(UsageError, match="clipfsar builds class prompts through the backbone's text tower; backbone "
                                         "small-cnn has none"):
        FSARModel.build(_card(), "small-cnn", "none", frames=8, size=64, num_base_classes=2, class_videos=CLASSES)


def test_class_texts_reach_the_head_and_every_video():
    pytest.importorskip("open_clip")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = FSARModel.build(_card(), "clip-rn50", "none", frames=4, size=64, num_base_classes=2, class_videos=CLASSES)
    model.eval()
    assert class_prompt_name("air_drumming") == "air drumming"
    with torch.no_grad():
        expected = model.backbone.encode_text(["a photo of air drumming", "a photo of archery", "a photo of bowling",
                                               "a photo of zumba"])
    torch.testing.assert_close(model.class_text_table, expected)
    torch.testing.assert_close(model.head.train_text, expected[:2])
    assert model.head.config.dim == 1024 and "class_prompts_sha256" in model.spec
    assert not any("text" in key for key in model.state_dict())  # tables are recomputed, never checkpointed
    pixels = torch.rand(3, 4, 3, 64, 64)
    with torch.no_grad():
        reps = model.encode(pixels, ["q1", "t2", "v0"])
    torch.testing.assert_close(reps["class_text"], expected[[3, 1, 2]])
    assert reps["frames"].shape == (3, 4, 1024) and reps["query"].shape == (3, 4, 1024)
    with pytest.raises(ValueError, match="video ids"):
        model.encode(pixels)
