"""Training frame samplers, one per reference pipeline, as pure seeded functions.

Each sampler maps a video's frame count to the ``frames`` indices a training clip reads, drawing only from
the numpy Generator it is given (``ClipGenerators.at``: one stream per (train seed, episode, clip), so a clip is
the same whatever the process or worker that builds it). Test frames are not sampled here: the protocol always reads
segment centres (``fsar_bench.data.video.segment_centre_indices``, a documented deviation from MoLo/HyRSM, which
sample test frames randomly).

Samplers (``FRAME_SAMPLERS``; each as the named reference code samples training frames):

* ``segment-random``: one uniformly random frame from each of T equal segments covering the whole video
  (segment t = frames ``t·n//T .. (t+1)·n//T - 1``). fsar-bench's generic sampler (``synthetic``).
* ``molo-segment``: the MoLo repository's sampler for SSv2/UCF101/HMDB51 (``SAMPLING_RATE`` 50 > 40:
  ``base_dataset.py`` ``_interval_based_sampling``): segments of ``n//T`` frames, one random frame from each; the
  last ``n mod T`` frames are never sampled.
* ``molo-kinetics``: the same function with Kinetics' ``SAMPLING_RATE`` 35: T frames on a line from a random start
  in ``[0, n - L + 1)`` to ``start + L - 35`` with ``L = (n//T)·T`` (every Kinetics clip is shorter than
  ``T·35/TARGET_FPS 12`` = 23 s, so the clip spans the whole video), truncated to integers.
* ``evenly-spaced``: ``int(linspace(0, n-1, T))``, no randomness. fsar-lib's sampler for every dataset
  (``video_reader.py`` ``load_and_transform_paths``), and the 8 frames its ``shrink_dataset.py`` keeps of each SSv2
  video (so the TRX family trains SSv2 on fixed frames).
* ``trx-jitter``: the official TRX sampler (``video_reader.py`` l.248–271): ``linspace(start, end, T)`` with
  ``start`` in ``[0, p]`` and ``end`` in ``[n-1-p, n-1]``, ``p = int(min(5, (n-T)/2))``; all frames when ``n = T``.

Usage::

    rng = ClipGenerators(train_seed=0).at(episode=12, clip=3)
    indices = sample_frame_indices("molo-segment", num_frames=97, frames=8, rng=rng)
"""

from __future__ import annotations

import numpy as np

FRAME_SAMPLERS = ("segment-random", "molo-segment", "molo-kinetics", "evenly-spaced", "trx-jitter")
MOLO_KINETICS_SAMPLING_RATE = 35
"""``DATA.SAMPLING_RATE`` of the MoLo-repo Kinetics-100 configs (the frame interval of ``_interval_based_sampling``)."""
TRX_MAX_END_JITTER = 5
"""The official TRX sampler moves each end of the clip by at most this many frames."""
TRAIN_CLIP_STREAM = 2
"""Second entry of the training clips' SeedSequence (entry 1 draws the episodes' classes and videos)."""


class ClipGenerators:
    """The Generators of one training run's clips: counter-based, so positioning one costs ~2 µs, not the ~30 µs of
    building a seeded generator (50 clips per episode: the frozen track's whole input step otherwise).

    Clip ``j`` (position in the episode, supports first) of episode ``i`` draws from Philox4x64 keyed by
    ``SeedSequence([train_seed, 2])``, starting at counter ``(0, j, i, 0)``: every clip has its own stream (a
    clip would need 2^64 blocks to reach the next one), whatever the process, worker or order that builds it.
    Every draw for that clip (frames, crop, flip, colour) comes from it, in that order.

    ``at`` re-positions and returns one shared Generator: it is valid until the next ``at``. Use it clip by clip::

        streams = ClipGenerators(train_seed)
        for j, video in enumerate(videos):
            rng = streams.at(episode, j)
            indices = sample_frame_indices("molo-segment", num_frames=97, frames=8, rng=rng)
    """

    def __init__(self, train_seed: int) -> None:
        self._key = np.random.SeedSequence([train_seed, TRAIN_CLIP_STREAM]).generate_state(2, np.uint64)
        self._bits = np.random.Philox(key=self._key)
        self._generator = np.random.Generator(self._bits)

    def at(self, episode: int, clip: int) -> np.random.Generator:
        """The shared Generator, positioned at the start of clip ``clip`` of episode ``episode``."""
        if episode < 0 or clip < 0:
            raise ValueError(f"episode {episode} and clip {clip} must be non-negative")
        self._bits.state = {
            "bit_generator": "Philox",
            "state": {"counter": np.array([0, clip, episode, 0], dtype=np.uint64), "key": self._key},
            "buffer": np.zeros(4, dtype=np.uint64), "buffer_pos": 4, "has_uint32": 0, "uinteger": 0,
        }
        return self._generator


def clip_generator(train_seed: int, episode: int, clip: int) -> np.random.Generator:
    """A new Generator of training clip ``clip`` of episode ``episode``: the stream ``ClipGenerators.at`` gives
    (building one costs ~40 µs; loops over clips re-position one ``ClipGenerators``)."""
    return ClipGenerators(train_seed).at(episode, clip)


def sample_frame_indices(sampler: str, num_frames: int, frames: int, rng: np.random.Generator) -> list[int]:
    """``frames`` indices into a video of ``num_frames`` frames, as ``sampler`` draws them.

    Raises ValueError for an unknown sampler or a video with fewer than ``frames`` frames.
    """
    if num_frames < frames:
        raise ValueError(f"{num_frames} frames cannot give {frames} training frames")
    if sampler == "segment-random":
        return _one_per_segment([t * num_frames // frames for t in range(frames + 1)], rng)
    if sampler == "molo-segment":
        return _one_per_segment([t * (num_frames // frames) for t in range(frames + 1)], rng)
    if sampler == "molo-kinetics":
        span = num_frames // frames * frames
        start = float(rng.uniform(0.0, num_frames - span + 1))
        end = start + span - MOLO_KINETICS_SAMPLING_RATE
        line = np.linspace(start, end, frames)
        return [int(value) for value in np.clip(line, 0, num_frames - 1)]
    if sampler == "evenly-spaced":
        return [int(value) for value in np.linspace(0, num_frames - 1, frames)]
    if sampler == "trx-jitter":
        return _trx_indices(num_frames, frames, rng)
    raise ValueError(f"unknown frame sampler {sampler!r}: use one of {', '.join(FRAME_SAMPLERS)}")


def _one_per_segment(bounds: list[int], rng: np.random.Generator) -> list[int]:
    """One uniform frame of each segment ``bounds[t] .. bounds[t+1] − 1``: ``lo + ⌊u·(hi − lo)⌋`` for one
    ``rng.random`` draw per segment, in order (one numpy call: a training clip's frames cost ~3 µs)."""
    draws = rng.random(len(bounds) - 1).tolist()
    return [low + int(u * (high - low)) for low, high, u in zip(bounds, bounds[1:], draws)]


def _trx_indices(num_frames: int, frames: int, rng: np.random.Generator) -> list[int]:
    if num_frames == frames:
        return list(range(frames))
    pad = int(min(TRX_MAX_END_JITTER, (num_frames - frames) / 2))
    if pad < 1:
        start, end = 0, num_frames - 1
    else:
        start = int(rng.integers(0, pad + 1))
        end = int(rng.integers(num_frames - 1 - pad, num_frames))
    if end - start < frames:
        start, end = 0, num_frames - 1
    return [int(value) for value in np.linspace(start, end, frames)]
