"""Spatial transforms of training and test clips, as pure functions of the frames and a numpy Generator.

A ``ClipAugment`` says what a training clip goes through, as the recipes' reference code does: resize ("squash"
to a square, "short-side" keeping the aspect, or "none"), a crop of the protocol size at a random (training) or central
(test) position, a horizontal flip with probability 0.5, and a colour jitter (brightness, contrast, saturation
in ``[1-s, 1+s]``, hue shift in ``[-h, h]``, the four in random order, preceded by a grayscale conversion with
probability ``p``). Every draw is made once per clip, so all frames of a clip get the same crop, flip and
colours (the references' ``CONSISTENT`` behaviour). Normalisation (mean/std) is the model's job
(``FSARModel.normalize``), identical at train and test.

``TrainClipMaker`` is "make training clip j of episode i": it chooses the frames to read and transforms the
decoded frames. It holds only plain values (picklable, cheap to build), so DataLoader workers can run it::

    maker = TrainClipMaker.from_recipe(recipe, frames=8, size=224)
    rng = clip_generator(train_seed, episode, clip)        # fsar_bench.data.sampling
    indices = maker.frame_indices(num_frames, rng)         # read these frames ...
    pixels = maker.transform(decoded, rng, query=True)     # uint8 [T, H, W, 3] -> float32 [T, 3, S, S] in [0, 1]

Draw order from the clip's Generator: frame indices, then flip, crop offset (y, x), then the colour jitter
(brightness, contrast, saturation, hue factors, the order of the four, the grayscale draw). Draws that an
augmentation does not use are not made.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fsar_bench.data.sampling import sample_frame_indices

RESIZE_MODES = ("squash", "short-side", "none")
APPLY_TO = ("none", "queries", "all")
GRAYSCALE_WEIGHTS = (0.299, 0.587, 0.114)
"""ITU-R 601 luma, as the MoLo repository's ``rgb_to_grayscale``."""


@dataclass(frozen=True)
class ClipAugment:
    """The spatial pipeline of one kind of clip (support or query) at training time.

    ``jitter`` = (brightness, contrast, saturation, hue, grayscale probability); all zero: no colour jitter.
    """

    resize: str = "none"
    resize_to: int = 0
    antialias: bool = True
    random_crop: bool = False
    flip: bool = False
    jitter: tuple[float, float, float, float, float] = (0.0, 0.0, 0.0, 0.0, 0.0)

    @property
    def jitters(self) -> bool:
        return any(value > 0 for value in self.jitter)


@dataclass(frozen=True)
class ClipDraws:
    """What a clip's Generator decided (for logs and golden tests)."""

    flip: bool
    crop_top: int
    crop_left: int
    jitter_factors: tuple[float, float, float, float] | None  # brightness, contrast, saturation, hue
    jitter_order: tuple[int, ...] | None  # indices into (brightness, contrast, saturation, hue)
    grayscale: bool


@dataclass(frozen=True)
class TrainClipMaker:
    """Training clip = ``sampler`` frames of the video through ``support`` or ``query`` augmentation, cropped to
    ``size``×``size`` (no crop when ``size`` is 0 or the frames already have that size and no resize is asked)."""

    sampler: str
    frames: int
    size: int
    support: ClipAugment
    query: ClipAugment

    @classmethod
    def from_recipe(cls, recipe, preprocess, frames: int, size: int) -> TrainClipMaker:
        """From a Recipe (``frame_sampler``, ``random_crop``, ``flip``, ``color_jitter``, ``jitter``; see
        ``fsar_bench.api.Recipe``) and the model's test-time Preprocess, whose resize training shares."""

        def augment(role: str) -> ClipAugment:
            return ClipAugment(
                resize=preprocess.resize if preprocess.resize_to else "none", resize_to=preprocess.resize_to,
                antialias=preprocess.antialias, random_crop=recipe.random_crop, flip=recipe.flip in ("all", role),
                jitter=tuple(recipe.jitter) if recipe.color_jitter in ("all", role) else (0.0,) * 5,
            )

        return cls(recipe.frame_sampler, frames, size, augment("supports"), augment("queries"))

    def without_augmentation(self) -> TrainClipMaker:
        """The same frames, through the test transform (resize, centre crop): the frozen track's clips, whose
        features were extracted from test-transformed frames."""
        plain = replace(self.support, random_crop=False, flip=False, jitter=(0.0,) * 5)
        return replace(self, support=plain, query=plain)

    def frame_indices(self, num_frames: int, rng: np.random.Generator) -> list[int]:
        """The frames to read from a video of ``num_frames`` frames (first draws of the clip's Generator)."""
        return sample_frame_indices(self.sampler, num_frames, self.frames, rng)

    def transform(self, frames: np.ndarray, rng: np.random.Generator, query: bool) -> Tensor:
        """uint8 ``[T, H, W, 3]`` -> float32 ``[T, 3, S, S]`` in [0, 1] (draws after ``frame_indices``)."""
        pixels, _ = augment_clip(frames, self.query if query else self.support, self.size, rng)
        return pixels

    def make(self, video: np.ndarray, rng: np.random.Generator, query: bool) -> Tensor:
        """Whole decoded video uint8 ``[N, H, W, 3]`` -> the training clip ``[T, 3, S, S]``."""
        return self.transform(video[self.frame_indices(len(video), rng)], rng, query)


def to_float_frames(frames: np.ndarray | Tensor) -> Tensor:
    """uint8 ``[T, H, W, 3]`` -> float32 ``[T, 3, H, W]`` in [0, 1]."""
    tensor = torch.as_tensor(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    return tensor.permute(0, 3, 1, 2).float().div_(255.0)


def resize_frames(x: Tensor, mode: str, size: int, antialias: bool = True) -> Tensor:
    """``[B, 3, H, W]``: "squash" to ``size``×``size``, "short-side" to a short side of ``size`` (aspect kept),
    "none" (or ``size`` 0): unchanged. Bilinear, half-pixel centres; ``antialias`` as PIL (fsar-lib/trx resize
    through PIL) or not (the MoLo repository's ``F.interpolate``)."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {mode!r}: use one of {', '.join(RESIZE_MODES)}")
    if mode == "none" or not size:
        return x
    height, width = x.shape[-2:]
    if mode == "squash":
        target = (size, size)
    else:
        scale = size / min(height, width)
        target = (max(size, round(height * scale)), max(size, round(width * scale)))
    if target == (height, width):
        return x
    return F.interpolate(x, size=target, mode="bilinear", align_corners=False, antialias=antialias)


def centre_crop(x: Tensor, size: int) -> Tensor:
    """``[..., H, W]`` -> ``[..., size, size]`` around the centre (``(H - size)//2`` from the top)."""
    if not size:
        return x
    height, width = x.shape[-2:]
    top, left = (height - size) // 2, (width - size) // 2
    return x[..., top:top + size, left:left + size]


def augment_clip(frames: np.ndarray, augment: ClipAugment, size: int, rng: np.random.Generator) -> tuple[Tensor, ClipDraws]:
    """One training clip through ``augment``: uint8 ``[T, H, W, 3]`` -> (float32 ``[T, 3, S, S]``, the draws)."""
    x = resize_frames(to_float_frames(frames), augment.resize, augment.resize_to, augment.antialias)
    flip = bool(rng.random() < 0.5) if augment.flip else False
    height, width = x.shape[-2:]
    crop = size or min(height, width)
    if crop > height or crop > width:
        raise ValueError(f"frames of {height}x{width} after resizing cannot give a {crop}x{crop} crop")
    if augment.random_crop:
        top, left = int(rng.integers(0, height - crop + 1)), int(rng.integers(0, width - crop + 1))
    else:
        top, left = (height - crop) // 2, (width - crop) // 2
    x = x[..., top:top + crop, left:left + crop]
    if flip:
        x = x.flip(-1)
    factors = order = None
    gray = False
    if augment.jitters:
        factors, order, gray = _jitter_draws(augment.jitter, rng)
        x = apply_color_jitter(x, factors, order, gray)
    return x.contiguous(), ClipDraws(flip, top, left, factors, order, gray)


def _jitter_draws(jitter: tuple[float, ...], rng: np.random.Generator) -> tuple[tuple[float, float, float, float], tuple[int, ...], bool]:
    brightness, contrast, saturation, hue, grayscale = jitter
    factors = (
        float(rng.uniform(max(0.0, 1 - brightness), 1 + brightness)),
        float(rng.uniform(max(0.0, 1 - contrast), 1 + contrast)),
        float(rng.uniform(max(0.0, 1 - saturation), 1 + saturation)),
        float(rng.uniform(-hue, hue)),
    )
    active = [index for index, amount in enumerate((brightness, contrast, saturation, hue)) if amount > 0]
    order = tuple(int(active[i]) for i in rng.permutation(len(active)))
    gray = bool(rng.random() < grayscale) if grayscale > 0 else False
    return factors, order, gray


def apply_color_jitter(x: Tensor, factors: tuple[float, float, float, float], order: tuple[int, ...], gray: bool) -> Tensor:
    """``[T, 3, H, W]`` in [0, 1]: grayscale first (when drawn), then the ops of ``order`` (0 brightness,
    1 contrast, 2 saturation, 3 hue) with ``factors``; results clamped to [0, 1] as the references' blends."""
    if gray:
        x = grayscale(x).expand_as(x)
    for op in order:
        factor = factors[op]
        if op == 0:
            x = (x * factor).clamp(0, 1)
        elif op == 1:
            mean = grayscale(x).mean(dim=(-3, -2, -1), keepdim=True)  # per frame
            x = (factor * x + (1 - factor) * mean).clamp(0, 1)
        elif op == 2:
            x = (factor * x + (1 - factor) * grayscale(x)).clamp(0, 1)
        else:
            x = shift_hue(x, factor)
    return x


def grayscale(x: Tensor) -> Tensor:
    """``[..., 3, H, W]`` -> luma ``[..., 1, H, W]``."""
    weights = torch.tensor(GRAYSCALE_WEIGHTS, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x * weights).sum(dim=-3, keepdim=True)


def shift_hue(x: Tensor, shift: float) -> Tensor:
    """Rotate the hue of ``[..., 3, H, W]`` (in [0, 1]) by ``shift`` turns: an HSV round trip (as torchvision's
    ``adjust_hue``) in closed form. With V = max, C = max − min and h6 the hue in [0, 6), channel n of
    (R, G, B) = (5, 3, 1) is ``V − C·clamp(min(k, 4 − k), 0, 1)`` for ``k = (n + h6 + 6·shift) mod 6``; grey
    pixels (C = 0) keep their value."""
    red, green, blue = x.unbind(-3)
    value = x.amax(dim=-3)
    chroma = value - x.amin(dim=-3)
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    hue6 = torch.where(value == red, (green - blue) / safe,
                       torch.where(value == green, (blue - red) / safe + 2.0, (red - green) / safe + 4.0))
    offsets = torch.tensor((5.0, 3.0, 1.0), dtype=x.dtype, device=x.device).view(3, 1, 1)
    k = torch.remainder(offsets + (hue6 + 6.0 * shift).unsqueeze(-3), 6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return value.unsqueeze(-3) - chroma.unsqueeze(-3) * ramp
