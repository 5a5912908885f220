"""Protocols and their episodes: the same seed gives bit-identical episodes everywhere (DESIGN §2).

Episode ``e`` is drawn from its own generator, ``default_rng(SeedSequence([seed, e]))``, from the
sorted class and video lists of the partition, so it does not depend on the method, on the
number of processes, on sharding or on order. Only the generator's raw 64-bit stream is used
(PCG64's output is fixed by its algorithm), with our own unbiased bounded integers and partial
Fisher-Yates shuffles: numpy's ``Generator.choice`` may change between numpy releases.

Usage::

    protocol = Protocol(dataset="ucf101", partition="test", split_sha256=partition.sha256,
                        way=5, shot=1, queries_per_class=1, episodes=10_000, frames=8, size=224, seed=0)
    episodes = draw_episodes(protocol, partition)
    episodes.support[e]      # [N, K] indices into episodes.video_ids, class-major
    episodes.fingerprint     # sha256 over the protocol, the video ids and every index
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fsar_bench.errors import DataError, ProtocolMismatchError, UsageError
from fsar_bench.files import atomic_write, json_sha256
from fsar_bench.data.splits import Partition

_TWO_64 = 1 << 64


@dataclass(frozen=True)
class Protocol:
    """A frozen evaluation protocol; its ``fingerprint`` names it everywhere."""

    dataset: str
    partition: str
    split_sha256: str
    way: int
    shot: int
    queries_per_class: int
    episodes: int
    frames: int
    size: int
    seed: int
    sampling: str = "segment-centre"
    missing_videos: tuple[str, ...] = ()
    """Test videos left out because they are missing (``--allow-missing``): a different, named protocol."""
    data_version: str = ""
    """Version of a generated dataset's content (``synthetic-v2``); empty for datasets read from disk."""
    frames_from: str = ""
    """"frame-store:<format>" when frames come from a frame store whose pixels differ from the videos' (JPEG);
    empty when read from the videos (or a lossless store)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "missing_videos", tuple(self.missing_videos))

    @property
    def name(self) -> str:
        """The protocol's label: "standard", or "allow-missing (N videos)"."""
        return f"allow-missing ({len(self.missing_videos)} videos)" if self.missing_videos else "standard"

    def to_dict(self) -> dict:
        """Fields as JSON values; ``missing_videos``, ``data_version`` and ``frames_from`` only when non-empty
        (fingerprints of protocols without them are unchanged)."""
        values = asdict(self)
        values["missing_videos"] = list(self.missing_videos)
        return {key: value for key, value in values.items()
                if key not in ("missing_videos", "data_version", "frames_from") or value}

    @property
    def fingerprint(self) -> str:
        return json_sha256(self.to_dict())

    def check_feasible(self, partition: Partition) -> None:
        """Raise UsageError when the partition cannot supply this protocol (naming class and counts)."""
        if self.way > len(partition.classes):
            raise UsageError(
                f"{self.dataset} {partition.name}: way {self.way} is above the {len(partition.classes)} classes "
                f"of the partition; set way = {len(partition.classes)} or less under [protocol] in bench.toml"
            )
        needed = self.shot + self.queries_per_class
        name, count = partition.smallest_class()
        if needed > count:
            raise UsageError(
                f"{self.dataset} {partition.name}: class {name!r} has {count} videos, but shot {self.shot} + "
                f"{self.queries_per_class} queries per class needs {needed}"
            )


@dataclass(frozen=True)
class EpisodeSet:
    """All episodes of a protocol. Indices point into ``video_ids`` (the partition's sorted videos).

    classes [E, N] class indices (into the partition's sorted classes; label c = column c),
    support [E, N, K], query [E, N*q], query_labels [E, N*q] (queries are class-major).
    """

    protocol: Protocol
    video_ids: tuple[str, ...]
    classes: np.ndarray
    support: np.ndarray
    query: np.ndarray
    query_labels: np.ndarray
    fingerprint: str

    def __len__(self) -> int:
        return int(self.classes.shape[0])

    def videos_of(self, episode_ids: np.ndarray) -> np.ndarray:
        """Sorted unique video indices used by the given episodes."""
        return np.unique(np.concatenate([self.support[episode_ids].ravel(), self.query[episode_ids].ravel()]))


def _bounded(bits: np.random.BitGenerator, bound: int) -> int:
    """Uniform integer in [0, bound) from raw 64-bit draws, by rejection (no modulo bias)."""
    limit = _TWO_64 - (_TWO_64 % bound)
    while True:
        value = int(bits.random_raw())
        if value < limit:
            return value % bound


def _sample_without_replacement(bits: np.random.BitGenerator, population: int, count: int) -> list[int]:
    """``count`` distinct values of range(population), in draw order (partial Fisher-Yates)."""
    pool = list(range(population))
    for i in range(count):
        j = i + _bounded(bits, population - i)
        pool[i], pool[j] = pool[j], pool[i]
    return pool[:count]


def draw_episode(entropy: list[int], class_sizes: list[int], way: int, shot: int, queries: int) -> tuple[list[int], list[list[int]]]:
    """(classes [N], per class the chosen positions [N][K+q]) for one episode.

    Its generator is ``default_rng(SeedSequence(entropy))``: ``[seed, e]`` for test episodes.
    """
    bits = np.random.default_rng(np.random.SeedSequence(entropy)).bit_generator
    classes = _sample_without_replacement(bits, len(class_sizes), way)
    picks = [_sample_without_replacement(bits, class_sizes[c], shot + queries) for c in classes]
    return classes, picks


def _fingerprint(protocol: Protocol, video_ids: tuple[str, ...], arrays: list[np.ndarray]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps(protocol.to_dict(), sort_keys=True).encode())
    digest.update("\n".join(video_ids).encode())
    for array in arrays:
        digest.update(np.ascontiguousarray(array, dtype="<i4").tobytes())
    return digest.hexdigest()


def draw_episodes(protocol: Protocol, partition: Partition) -> EpisodeSet:
    """Draw every episode of ``protocol`` from ``partition`` (checked feasible first)."""
    if partition.sha256 != protocol.split_sha256:
        raise ProtocolMismatchError(f"partition {partition.name!r} has sha256 {partition.sha256[:12]}, the protocol expects {protocol.split_sha256[:12]}")
    protocol.check_feasible(partition)
    video_ids = partition.all_video_ids()
    offsets, position = [], 0
    for name in partition.classes:
        offsets.append(position)
        position += len(partition.videos[name])
    sizes = [len(partition.videos[name]) for name in partition.classes]
    way, shot, queries, count = protocol.way, protocol.shot, protocol.queries_per_class, protocol.episodes
    classes = np.empty((count, way), np.int32)
    support = np.empty((count, way, shot), np.int32)
    query = np.empty((count, way * queries), np.int32)
    for e in range(count):
        drawn, picks = draw_episode([protocol.seed, e], sizes, way, shot, queries)
        classes[e] = drawn
        for label, (c, chosen) in enumerate(zip(drawn, picks)):
            support[e, label] = [offsets[c] + p for p in chosen[:shot]]
            query[e, label * queries:(label + 1) * queries] = [offsets[c] + p for p in chosen[shot:]]
    query_labels = np.repeat(np.arange(way, dtype=np.int32), queries)[None].repeat(count, axis=0)
    fingerprint = _fingerprint(protocol, video_ids, [classes, support, query, query_labels])
    return EpisodeSet(protocol, video_ids, classes, support, query, query_labels, fingerprint)


def save_manifest(episodes: EpisodeSet, folder: Path, warn: Callable[[str], None] | None = None) -> Path:
    """Store the episode set once as ``<folder>/<fingerprint[:16]>.npz`` (atomic). A file already there is
    kept when it reads back with this fingerprint, else (truncated, edited) rewritten, saying so via ``warn``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{episodes.fingerprint[:16]}.npz"
    if path.exists():
        try:
            if load_manifest(path).fingerprint == episodes.fingerprint:
                return path
            problem = "holds another episode set"
        except Exception as error:  # any unreadable file (bad zip, missing array, bad JSON) is rewritten
            problem = f"is corrupt ({type(error).__name__}: {str(error)[:80]})"
        if warn is not None:
            warn(f"episode manifest {path} {problem}; rewritten from the protocol")
    atomic_write(path, lambda stream: np.savez_compressed(
            stream,
            protocol=np.array(json.dumps(episodes.protocol.to_dict(), sort_keys=True)),
            video_ids=np.array(episodes.video_ids),
            classes=episodes.classes,
            support=episodes.support,
            query=episodes.query,
            query_labels=episodes.query_labels,
            fingerprint=np.array(episodes.fingerprint),
    ))
    return path


def load_manifest(path: Path) -> EpisodeSet:
    """Read a stored episode set back, verifying its fingerprint."""
    try:
        with np.load(path, allow_pickle=False) as data:
            protocol = Protocol(**json.loads(str(data["protocol"])))
            video_ids = tuple(str(v) for v in data["video_ids"])
            arrays = [data[k] for k in ("classes", "support", "query", "query_labels")]
            stored = str(data["fingerprint"])
    except Exception as error:  # a truncated or edited archive fails in many ways (zip, npy, JSON, keys)
        raise DataError(f"episode manifest {path} cannot be read ({type(error).__name__}: {str(error)[:80]}): it is "
                        "corrupt; delete it (the next run rewrites it)") from None
    if _fingerprint(protocol, video_ids, arrays) != stored:
        raise ProtocolMismatchError(f"episode manifest {path} does not match its fingerprint: it is corrupt; delete it")
    return EpisodeSet(protocol, video_ids, *arrays, fingerprint=stored)
