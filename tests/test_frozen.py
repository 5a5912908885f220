"""The frozen-feature track: the feature store (every frame, checksummed, resumable), training clips identical to
the fine-tune track's frames, a frozen backbone that never changes, and the track stamped apart from fine-tuning."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from fsar_bench.data.video import random_segment_indices
from fsar_bench.errors import DataError
from fsar_bench.frozen import FeatureStore, encode_from_store, freeze_backbone
from fsar_bench.model.network import FSARModel
from fsar_bench.model.registry import discover_methods
from tests.conftest import PROJECT_ROOT, write_bench_toml

VIDEOS = {f"v{index}": torch.randint(0, 256, (12 + index, 64, 64, 3), dtype=torch.uint8,
                                     generator=torch.Generator().manual_seed(index)).numpy() for index in range(3)}


class _MemoryReader:
    name = "memory"

    def __init__(self) -> None:
        self.reads = 0

    def read(self, path, choose):
        self.reads += 1
        frames = VIDEOS[str(path)]
        return frames[choose(len(frames))]


@pytest.fixture
def reader(monkeypatch):
    import fsar_bench.data.video as video_module

    memory = _MemoryReader()
    monkeypatch.setattr(video_module, "open_reader", lambda *args, **kwargs: memory)
    return memory


def _model(method: str = "tsn") -> FSARModel:
    card = discover_methods(PROJECT_ROOT / "methods", entry_points=False).get(method).card
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = FSARModel.build(card, "small-cnn", "none", frames=8, size=64, num_base_classes=4)
    freeze_backbone(model)
    return model


def test_every_frame_is_stored_once_checksummed_and_extraction_resumes(tmp_path, reader):
    model = _model()
    store = FeatureStore.for_model(tmp_path, model, "synthetic", "synthetic-v2")
    assert store.extract(model, lambda video: video, ["v0", "v1"]) == 2 and reader.reads == 2
    assert store.extract(model, lambda video: video, ["v0", "v1", "v2"]) == 1 and reader.reads == 3  # resumes
    stored = store.load("v1")
    assert stored.shape == (13, 128)
    model.eval()  # extraction runs the backbone in eval mode
    with torch.inference_mode():
        pixels = model.prepare(torch.from_numpy(VIDEOS["v1"]).unsqueeze(0))
        expected = model.features(pixels)[0]
    torch.testing.assert_close(stored, expected.half().float())
    rng_a, rng_b = (np.random.default_rng(np.random.SeedSequence([0, 2, 7, 1])) for _ in range(2))
    segments = lambda n, rng: random_segment_indices(n, 8, rng)  # noqa: E731 (a recipe's frame sampler)
    torch.testing.assert_close(store.clip("v1", rng_a, segments), stored[random_segment_indices(13, 8, rng_b)])
    path = store.path("v2")
    store = FeatureStore(store.folder, store.key)  # a fresh reader: nothing in memory yet
    payload = torch.load(path, weights_only=True)
    payload["features"][0, 0] += 1
    torch.save(payload, path)
    with pytest.raises(DataError, match=f"{path}.*corrupt.*delete it"):
        store.load("v2")
    with pytest.raises(DataError, match="no features for video 'v9'"):
        store.load("v9")


def test_stores_are_keyed_by_backbone_weights_and_kind(tmp_path):
    tsn, molo = _model("tsn"), _model("molo")
    assert FeatureStore.for_model(tmp_path, tsn, "synthetic").folder != FeatureStore.for_model(tmp_path, molo, "synthetic").folder
    other = _model("tsn")
    with torch.no_grad():
        other.backbone.stages[0].weight.add_(1.0)
    assert FeatureStore.for_model(tmp_path, tsn, "synthetic").folder != FeatureStore.for_model(tmp_path, other, "synthetic").folder


def test_frozen_models_train_only_their_head_and_are_stamped(tmp_path, reader):
    model = _model("molo")
    assert model.spec["track"] == "frozen"
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert any(p.requires_grad for p in model.head.parameters())
    store = FeatureStore.for_model(tmp_path, model, "synthetic")
    store.extract(model, lambda video: video, list(VIDEOS))
    reps = encode_from_store(model, store, list(VIDEOS), 8)
    assert reps["rgb"].shape == (3, 8, 128)


@pytest.mark.slow
def _synthetic(synthetic_cache, tmp_path):
    from fsar_bench.config import load_config
    from fsar_bench.data.benchmarks import open_benchmark

    return open_benchmark("synthetic", load_config(write_bench_toml(tmp_path, synthetic_cache)))


def test_the_small_cnn_is_pretrained_deterministically_on_train_videos_only(tmp_path, synthetic_cache, monkeypatch):
    import fsar_bench.data.video as video_module
    import fsar_bench.frozen as frozen

    benchmark = _synthetic(synthetic_cache, tmp_path)
    read: list[str] = []
    original = video_module.open_reader

    class _Recording:
        def __init__(self) -> None:
            self.inner = original()

        def read(self, path, choose):
            read.append(str(path))
            return self.inner.read(path, choose)

    monkeypatch.setattr(video_module, "open_reader", lambda *args, **kwargs: _Recording())
    monkeypatch.setattr(frozen, "SYNTHETIC_PRETRAIN_STEPS", 3)  # the mechanics, not the 400 steps
    first = frozen.pretrained_small_cnn(tmp_path / "a", benchmark)
    second = frozen.pretrained_small_cnn(tmp_path / "b", benchmark)
    assert first.read_bytes() == second.read_bytes()  # deterministic from the seed
    train = {str(benchmark.video_path(video)) for video in benchmark.partition("train").all_video_ids()}
    assert read and set(read) <= train  # never a val or test video
    assert frozen.pretrained_small_cnn(tmp_path / "a", benchmark) == first  # cached: trained once


def test_frozen_run_end_to_end(tmp_path, synthetic_cache, monkeypatch):
    import fsar_bench.frozen as frozen

    # the weights the run would pretrain (400 steps, minutes on CPU), made in 3 steps where the run looks for them
    monkeypatch.setattr(frozen, "SYNTHETIC_PRETRAIN_STEPS", 3)
    (tmp_path / "setup").mkdir()
    frozen.pretrained_small_cnn(synthetic_cache / "weights", _synthetic(synthetic_cache, tmp_path / "setup"))
    config = write_bench_toml(tmp_path, synthetic_cache, "[methods.tsn]\niterations = 4\nval_every = 2\nval_episodes = 10\n")
    command = [sys.executable, "-m", "fsar_bench", "--config", str(config), "run", "tsn", "--dataset", "synthetic",
               "--shots", "5", "--episodes", "20", "--track", "frozen"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    assert "frozen track: extracting the features" in result.stderr
    (stamps_path,) = (tmp_path / "results" / "runs").glob("tsn__*/stamps.json")
    stamps = json.loads(stamps_path.read_text())
    assert stamps["track"] == "frozen" and stamps["model"]["track"] == "frozen"
    assert stamps["backbone_weights"].startswith("file:")  # the small CNN pretrained on the train classes
    (checkpoint,) = (tmp_path / "results" / "checkpoints").glob("tsn__*/best.pt")
    assert torch.load(checkpoint, weights_only=True)["spec"]["track"] == "frozen"
    again = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and "extracting" not in again.stderr  # features are stored once
