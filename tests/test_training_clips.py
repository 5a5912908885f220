"""Training clips: frame samplers and augmentation are pure functions of (train seed, episode, clip).

Golden values pin what a fixed seed gives (frame indices, flip, crop, colour draws), so that a change of draw
order or formula cannot pass unnoticed; the properties say what the references do (one draw per clip, a
sampler's range, no flip on ``synthetic``).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from fsar_bench.api import Preprocess, Recipe
from fsar_bench.data.sampling import FRAME_SAMPLERS, ClipGenerators, clip_generator, sample_frame_indices
from fsar_bench.data.transforms import (
    ClipAugment,
    TrainClipMaker,
    apply_color_jitter,
    augment_clip,
    resize_frames,
    shift_hue,
)
from fsar_bench.data.video import random_segment_indices
from fsar_bench.model.registry import discover_methods

GOLDEN_INDICES = {  # sampler -> (indices of a 97-frame video, of a 250-frame video), clip_generator(0, 12, 3)
    "segment-random": ([7, 15, 30, 45, 50, 61, 77, 90], [19, 40, 78, 119, 132, 159, 201, 233]),
    "molo-segment": ([7, 15, 30, 45, 50, 61, 77, 89], [19, 40, 78, 118, 131, 158, 200, 231]),
    "molo-kinetics": ([1, 9, 18, 27, 36, 44, 53, 62], [1, 32, 62, 93, 123, 154, 184, 214]),
    "evenly-spaced": ([0, 13, 27, 41, 54, 68, 82, 96], [0, 35, 71, 106, 142, 177, 213, 249]),
    "trx-jitter": ([4, 16, 29, 42, 55, 68, 81, 94], [4, 38, 73, 108, 142, 177, 212, 247]),
}
MOLO_QUERY = ClipAugment(resize="squash", resize_to=256, antialias=False, random_crop=True, flip=True,
                         jitter=(0.5, 0.5, 0.5, 0.25, 0.3))


@pytest.mark.parametrize("sampler", FRAME_SAMPLERS)
def test_sampler_golden_indices(sampler):
    assert sampler in GOLDEN_INDICES, "a new sampler needs golden values here"
    short, long = GOLDEN_INDICES[sampler]
    assert sample_frame_indices(sampler, 97, 8, clip_generator(0, 12, 3)) == short
    assert sample_frame_indices(sampler, 250, 8, clip_generator(0, 12, 3)) == long


def test_clip_streams_do_not_depend_on_order_or_reuse():
    """``ClipGenerators.at`` gives each clip its own stream, the same in any order, after any earlier draws, and the
    same as a new ``clip_generator``."""
    streams = ClipGenerators(4)
    positions = [(0, 0), (0, 1), (1, 0), (7, 49), (123456, 3)]
    first = {}
    for episode, clip in positions:
        first[episode, clip] = streams.at(episode, clip).random(9).tolist()  # 9: a partly used Philox block
    for episode, clip in reversed(positions):
        assert streams.at(episode, clip).random(9).tolist() == first[episode, clip]
        assert clip_generator(4, episode, clip).random(9).tolist() == first[episode, clip]
    assert len({tuple(draws) for draws in first.values()}) == len(positions)
    assert clip_generator(5, 0, 0).random(9).tolist() != first[0, 0]
    with pytest.raises(ValueError):
        streams.at(-1, 0)


def test_segment_random_keeps_the_old_draws():
    """``synthetic`` recipes keep the sampler (and draws) they were trained with before augmentation landed."""
    for n in (8, 9, 37, 300):
        assert sample_frame_indices("segment-random", n, 8, clip_generator(3, 7, 2)) == random_segment_indices(
            n, 8, clip_generator(3, 7, 2))


@pytest.mark.parametrize("n", [8, 9, 15, 16, 63, 250])
def test_sampler_ranges(n):
    for seed in range(20):
        rng = clip_generator(seed, 0, 0)
        molo = sample_frame_indices("molo-segment", n, 8, rng)
        interval = n // 8
        assert all(t * interval <= index < (t + 1) * interval for t, index in enumerate(molo))  # last n mod 8 unused
        trx = sample_frame_indices("trx-jitter", n, 8, clip_generator(seed, 0, 0))
        pad = int(min(5, (n - 8) / 2))
        assert trx == sorted(trx) and trx[0] <= max(pad, 0) and trx[-1] >= n - 1 - max(pad, 0)
        kinetics = sample_frame_indices("molo-kinetics", n, 8, clip_generator(seed, 0, 0))
        assert all(0 <= index < n for index in kinetics)
    assert sample_frame_indices("trx-jitter", 8, 8, clip_generator(0, 0, 0)) == list(range(8))


def test_sampler_errors():
    with pytest.raises(ValueError, match="unknown frame sampler 'nope'"):
        sample_frame_indices("nope", 20, 8, clip_generator(0, 0, 0))
    with pytest.raises(ValueError, match="7 frames cannot give 8"):
        sample_frame_indices("molo-segment", 7, 8, clip_generator(0, 0, 0))


def _video(height=120, width=160, frames=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(frames, height, width, 3), dtype=np.uint8)


def test_augment_golden_draws():
    """clip_generator(0, 6, clip), MoLo query pipeline: the documented crop, flip and colour draws."""
    expected = [
        (True, 10, 10, (1.17490, 1.04532, 1.25584, -0.12734), (3, 2, 0, 1), False),
        (False, 14, 22, (0.87774, 0.65373, 0.79810, -0.17208), (0, 1, 3, 2), True),
        (True, 26, 28, (1.13807, 1.18001, 0.77783, 0.01881), (0, 3, 1, 2), False),
    ]
    for clip, (flip, top, left, factors, order, gray) in enumerate(expected):
        pixels, draws = augment_clip(_video(), MOLO_QUERY, 224, clip_generator(0, 6, clip))
        assert pixels.shape == (8, 3, 224, 224) and pixels.dtype == torch.float32
        assert (draws.flip, draws.crop_top, draws.crop_left, draws.jitter_order, draws.grayscale) == (flip, top, left, order, gray)
        assert np.allclose(draws.jitter_factors, factors, atol=1e-5)


def test_one_draw_per_clip():
    """Every frame of a clip gets the same crop, flip and colours: identical input frames stay identical."""
    frame = _video(frames=1)
    video = np.repeat(frame, 8, axis=0)
    for clip in range(6):
        pixels, _ = augment_clip(video, MOLO_QUERY, 224, clip_generator(1, 2, clip))
        assert torch.equal(pixels, pixels[:1].expand_as(pixels))


def test_crop_and_flip_are_what_the_draws_say():
    video = _video(height=100, width=130)
    augment = ClipAugment(random_crop=True, flip=True)
    for clip in range(8):
        pixels, draws = augment_clip(video, augment, 64, clip_generator(0, 1, clip))
        expected = torch.from_numpy(video).permute(0, 3, 1, 2).float() / 255
        expected = expected[..., draws.crop_top:draws.crop_top + 64, draws.crop_left:draws.crop_left + 64]
        if draws.flip:
            expected = expected.flip(-1)
        assert torch.equal(pixels, expected)


def test_squash_versus_short_side():
    x = torch.rand(2, 3, 240, 427)
    assert resize_frames(x, "squash", 256).shape[-2:] == (256, 256)
    assert resize_frames(x, "short-side", 256).shape[-2:] == (256, 455)
    assert resize_frames(x, "none", 256) is x


def test_hue_shift_matches_torchvision():
    torchvision = pytest.importorskip("torchvision")
    x = torch.rand(4, 3, 16, 16)
    for shift in (-0.25, -0.1, 0.0, 0.2):
        ours = shift_hue(x, shift)
        theirs = torchvision.transforms.functional.adjust_hue(x, shift)
        assert torch.allclose(ours, theirs, atol=1e-5)


def test_color_jitter_ops():
    x = torch.rand(2, 3, 8, 8)
    identity = apply_color_jitter(x, (1.0, 1.0, 1.0, 0.0), (0, 1, 2, 3), False)
    assert torch.allclose(identity, x, atol=1e-5)
    gray = apply_color_jitter(x, (1.0, 1.0, 1.0, 0.0), (), True)
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 1], gray[:, 2])
    dark = apply_color_jitter(x, (0.5, 1.0, 1.0, 0.0), (0,), False)
    assert torch.allclose(dark, x * 0.5)


def test_maker_is_picklable_and_deterministic():
    recipe = Recipe(frame_sampler="molo-segment", random_crop=True, flip="queries", color_jitter="queries")
    maker = TrainClipMaker.from_recipe(recipe, Preprocess(resize="squash", resize_to=72, crop=64, antialias=False), 8, 64)
    assert maker.query.flip and not maker.support.flip and maker.query.jitters and not maker.support.jitters
    copy = pickle.loads(pickle.dumps(maker))
    video = _video(height=90, width=120, frames=40)
    first = maker.make(video, clip_generator(0, 3, 9), query=True)
    assert torch.equal(first, copy.make(video, clip_generator(0, 3, 9), query=True))
    assert not torch.equal(first, maker.make(video, clip_generator(0, 3, 10), query=True))


def test_synthetic_is_never_flipped():
    """Its test classes are left/right reversals of each other: a flip would change the label."""
    registry = discover_methods(Path(__file__).resolve().parents[1] / "methods")
    for entry in registry.methods.values():
        recipe = entry.card.recipe_for("synthetic")
        assert recipe.flip == "none", f"{entry.name}: the synthetic recipe flips clips"
