"""The frozen-feature track: the backbone is frozen, every frame's features are extracted once into a feature store,
and heads train and evaluate on the stored features (``--track frozen``; ``finetune`` is the default).

What is stored: the features of **every frame** of every train/val/test video (fp16), the kind the head needs
(pooled ``[n, d]``, or conv maps ``[n, d, h, w]`` for MoLo, STRM, TEAM). Training then draws exactly the clips the
fine-tune track draws (the recipe's frame sampler, from the same seeds; no spatial augmentation, since the
features are of test-transformed frames), and evaluation takes the segment-centre
frames; nothing is approximated by a fixed set of samplings. One file per video, written atomically, carrying
the sha256 of its tensor (checked on every read: a corrupt file is an error naming it); an interrupted extraction
resumes at the first missing video; under torchrun each rank extracts its share. Storage per benchmark and
backbone: docs/speed.md.

Usage::

    store = FeatureStore.for_model(cache_root, model, benchmark)
    store.extract(model, benchmark, video_ids)               # skips videos already stored
    clip = store.clip("video-id", rng, maker.frame_indices)   # [T, ...] float32, training
    clips = store.episode_clips(videos, generators, maker.frame_indices)  # [V, T, ...], one episode
    reps = encode_from_store(model, store, video_ids, 8)      # per-video head encodings, evaluation
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fsar_bench.api import Reps, cat_reps, map_reps
from fsar_bench.distributed import SINGLE, Distributed
from fsar_bench.errors import DataError
from fsar_bench.files import write_bytes_atomic
from fsar_bench.model.network import FSARModel

STORE_FORMAT = 1
MEMORY_BYTES = 2 << 30  # stored features kept in RAM after their first (verified) read
FROZEN = "frozen"
FINETUNE = "finetune"
TRACKS = (FINETUNE, FROZEN)


def freeze_backbone(model: FSARModel) -> None:
    """No gradient reaches the backbone and its BatchNorm statistics stay fixed; ``spec["track"] = "frozen"``."""
    model.backbone.requires_grad_(False)
    model.backbone.eval()
    model.spec["track"] = FROZEN


class FeatureStore:
    """Per-frame backbone features of one (benchmark, data version, backbone, weights, preprocessing, kind)."""

    def __init__(self, folder: Path, key: dict, memory_bytes: int = MEMORY_BYTES) -> None:
        self.folder = folder
        self.key = key
        self.memory_bytes = memory_bytes
        self._memory: dict[str, Tensor] = {}  # verified fp16 features kept in RAM while they fit
        self._memory_used = 0

    @classmethod
    def for_model(cls, root: Path, model: FSARModel, dataset: str, data_version: str = "") -> FeatureStore:
        kind = "maps" if model.head.feature_maps else "pooled"
        spec = model.spec
        key = {"format": STORE_FORMAT, "dataset": dataset, "data_version": data_version, "backbone": spec["backbone"],
               "backbone_weights": spec["backbone_weights"], "backbone_state": _backbone_digest(model),
               "preprocess": asdict(model.preprocess), "size": spec["size"], "kind": kind, "dtype": "float16"}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]
        return cls(root / "features" / f"{dataset}__{spec['backbone']}__{kind}__{digest}", key)

    def path(self, video_id: str) -> Path:
        name = hashlib.sha256(video_id.encode()).hexdigest()
        return self.folder / "videos" / name[:2] / f"{name}.pt"

    def has(self, video_id: str) -> bool:
        return self.path(video_id).is_file()

    def load(self, video_id: str) -> Tensor:
        """All frames' features of a video, float32 ``[n, ...]``; DataError naming the file when it is corrupt.
        A file is read and verified once; its features stay in memory while ``memory_bytes`` allows."""
        return self._stored(video_id).float()

    def _stored(self, video_id: str) -> Tensor:
        """The stored fp16 features ``[n, ...]``, verified (``load``)."""
        kept = self._memory.get(video_id)
        if kept is not None:
            return kept
        path = self.path(video_id)
        if not path.is_file():
            raise DataError(f"feature store {self.folder}: no features for video {video_id!r} ({path}); "
                            "run the frozen track again to extract them")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            features = payload["features"]
            intact = payload["video"] == video_id and payload["sha256"] == _tensor_sha256(features)
        except Exception:  # noqa: BLE001 - any unreadable file is corrupt
            intact = False
        if not intact:
            raise DataError(f"feature store file {path} (video {video_id!r}) is corrupt: its checksum does not match; "
                            "delete it and run again to re-extract it")
        size = features.numel() * features.element_size()
        if self._memory_used + size <= self.memory_bytes:
            self._memory[video_id] = features
            self._memory_used += size
        return features

    def clip(self, video_id: str, rng: np.random.Generator,
             choose: Callable[[int, np.random.Generator], list[int]]) -> Tensor:
        """One training clip: the stored features of the frames ``choose(num_frames, rng)`` picks (the recipe's
        ``TrainClipMaker.frame_indices``), exactly the frames the fine-tune track decodes for that clip."""
        return self.episode_clips([video_id], [rng], choose)[0]

    def episode_clips(self, video_ids: Sequence[str], generators: Iterable[np.random.Generator],
                      choose: Callable[[int, np.random.Generator], list[int]]) -> Tensor:
        """An episode's training clips ``[V, T, ...]`` float32: ``clip`` of each video with its own generator, the
        chosen frames gathered in fp16 and converted once (the per-episode input step of frozen training).
        ``generators`` is consumed one at a time, each used before the next is taken, so a lazy
        ``(streams.at(i, j) for j in ...)`` over one ``ClipGenerators`` is right (a list of them would not be)."""
        chosen = []
        for video_id, rng in zip(video_ids, generators, strict=True):
            features = self._stored(video_id).numpy()  # a view: numpy's gather costs a third of torch's per call
            try:
                chosen.append(features[choose(len(features), rng)])
            except ValueError as error:  # fewer frames than sampled
                raise DataError(f"video {video_id!r}: {error}") from None
        return torch.from_numpy(np.stack(chosen)).float()

    @torch.inference_mode()
    def extract(self, model: FSARModel, video_path: Callable[[str], Path], video_ids: Sequence[str], *,
                dist: Distributed = SINGLE, progress: Callable[[int], None] | None = None, frame_batch: int = 64) -> int:
        """Store every frame's features of ``video_ids`` not stored yet (this rank's share under torchrun); returns
        the number extracted here. The caller's barrier makes every rank see every file."""
        from fsar_bench.data.video import open_reader

        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "store.json").write_text(json.dumps(self.key, indent=1, sort_keys=True, default=str))
        todo = [video for video in sorted(set(video_ids)) if not self.has(video)]
        mine = list(dist.shard(todo))
        reader = open_reader()
        was_training = model.training
        model.eval()
        try:
            for video in mine:
                clip = torch.from_numpy(reader.read(video_path(video), lambda n: list(range(n))))
                parts = []
                for start in range(0, len(clip), frame_batch):
                    pixels = model.prepare(clip[start:start + frame_batch].unsqueeze(0))
                    parts.append(model.features(pixels)[0].to(torch.float16).cpu())
                features = torch.cat(parts)
                buffer = io.BytesIO()
                torch.save({"video": video, "features": features, "sha256": _tensor_sha256(features)}, buffer)
                path = self.path(video)
                path.parent.mkdir(parents=True, exist_ok=True)
                write_bytes_atomic(path, buffer.getvalue())
                if progress:
                    progress(1)
        finally:
            model.train(was_training)
        dist.barrier()
        return len(mine)

    def size_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.folder.glob("videos/*/*.pt"))


def encode_from_store(model: FSARModel, store: FeatureStore, video_ids: Sequence[str], frames: int,
                      batch_videos: int = 64) -> Reps:
    """Per-video head encodings from stored features at the segment-centre frames (the test sampling)."""
    from fsar_bench.data.video import segment_centre_indices

    parts: list[Reps] = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(video_ids), batch_videos):
                ids = list(video_ids[start:start + batch_videos])
                clips = []
                for video in ids:
                    features = store._stored(video)
                    if len(features) < frames:
                        raise DataError(f"video {video!r} has {len(features)} frames, fewer than the {frames} sampled")
                    clips.append(features[segment_centre_indices(len(features), frames)].float())
                stacked = torch.stack(clips).to(model.device)
                reps = model.attach_class_text(model.head.encode(stacked), ids)
                parts.append(map_reps(reps, lambda t: t.float().cpu()))
    finally:
        model.train(was_training)
    return cat_reps(parts)


SYNTHETIC_PRETRAIN_STEPS = 400
SYNTHETIC_PRETRAIN_VIDEOS = 16  # per step, 8 frames each


def pretrained_small_cnn(weights_dir: Path, benchmark, seed: int = 0) -> Path:
    """The small CNN worth freezing on ``synthetic``: trained once, deterministically, to classify single frames
    of the **train** classes (never val or test), then cached as ``<weights_dir>/small-cnn/synthetic-train__...``.

    400 Adam steps (lr 1e-3) of 16 train videos x 8 frames (one random frame per segment), a linear classifier on
    the pooled features (discarded); every draw from ``SeedSequence([seed, 3, step])``.
    """
    from fsar_bench.backbones.small_cnn import SmallCNN
    from fsar_bench.data.video import open_reader, random_segment_indices

    path = weights_dir / "small-cnn" / f"synthetic-train__{benchmark.data_version or 'v'}__seed{seed}.pt"
    if path.is_file():
        return path
    train = benchmark.partition("train")
    reader = open_reader()
    decoded: dict[str, np.ndarray] = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        cnn = SmallCNN()
        classifier = torch.nn.Linear(cnn.out_dim, len(train.classes))
        optimizer = torch.optim.Adam([*cnn.parameters(), *classifier.parameters()], lr=1e-3)
        mean, std = 0.45, 0.225  # the small CNN's preprocessing
        for step in range(SYNTHETIC_PRETRAIN_STEPS):
            rng = np.random.default_rng(np.random.SeedSequence([seed, 3, step]))
            labels = rng.integers(0, len(train.classes), SYNTHETIC_PRETRAIN_VIDEOS)
            frames, targets = [], []
            for label in labels:
                videos = train.videos[train.classes[label]]
                video = videos[int(rng.integers(0, len(videos)))]
                if video not in decoded:
                    decoded[video] = reader.read(benchmark.video_path(video), lambda n: list(range(n)))
                full = decoded[video]
                frames.append(full[random_segment_indices(len(full), 8, rng)])
                targets += [int(label)] * 8
            pixels = (torch.from_numpy(np.concatenate(frames)).permute(0, 3, 1, 2).float() / 255.0 - mean) / std
            loss = torch.nn.functional.cross_entropy(classifier(cnn.pooled(pixels)), torch.tensor(targets))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    buffer = io.BytesIO()
    torch.save({key: value.detach() for key, value in cnn.state_dict().items()}, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, buffer.getvalue())
    return path


def _tensor_sha256(tensor: Tensor) -> str:
    return hashlib.sha256(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()


def _backbone_digest(model: FSARModel) -> str:
    """sha256 over the backbone's weights: features of other weights never mix."""
    digest = hashlib.sha256()
    for name, value in sorted(model.backbone.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
