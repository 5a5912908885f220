"""The built-in synthetic benchmark: real mp4 files, official split format, reversal pairs, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fsar_bench.data.splits import check_disjoint, read_partition
from fsar_bench.data.synthetic import MOTION_PAIRS, SyntheticSpec, render_video, synthetic_classes, write_mp4
from fsar_bench.data.video import PyAVReader, open_reader, read_clip


def _root(cache: Path) -> Path:
    [root] = (cache / "datasets").iterdir()
    return root


def test_partitions_are_disjoint_and_large_enough(synthetic_cache):
    root = _root(synthetic_cache)
    partitions = {p: read_partition(root / "splits" / f"{p}.txt", p) for p in ("train", "val", "test")}
    check_disjoint(partitions)
    assert sum(len(p.classes) for p in partitions.values()) >= 40
    assert all(p.smallest_class()[1] >= 20 for p in partitions.values())
    assert len(partitions["test"].classes) >= 10


def test_test_classes_come_in_time_reversed_pairs(synthetic_cache):
    test = read_partition(_root(synthetic_cache) / "splits" / "test.txt", "test")
    for forward, backward in MOTION_PAIRS:
        appearances_f = {c[len(forward) + 1:] for c in test.classes if c.startswith(forward + "-")}
        appearances_b = {c[len(backward) + 1:] for c in test.classes if c.startswith(backward + "-")}
        assert appearances_f and appearances_f == appearances_b, (forward, backward)


def test_reversed_class_is_the_forward_video_played_backwards():
    classes = {c.name: c for c in synthetic_classes()}
    spec = SyntheticSpec()
    forward = render_video(classes["left-to-right-red-square"], spec, 3)
    assert forward.shape[1:] == (64, 64, 3) and 16 <= len(forward) <= 32
    # same frame set, opposite order: the means over time agree, the sequences do not
    backward_twin = forward[::-1]
    assert np.allclose(forward.mean(0), backward_twin.mean(0))
    assert not np.array_equal(forward, backward_twin)


def test_generation_is_deterministic():
    cls = synthetic_classes()[7]
    assert np.array_equal(render_video(cls, SyntheticSpec(seed=0), 2), render_video(cls, SyntheticSpec(seed=0), 2))
    assert not np.array_equal(render_video(cls, SyntheticSpec(seed=1), 2)[:16], render_video(cls, SyntheticSpec(seed=0), 2)[:16])


def test_videos_decode_through_decord_and_pyav_alike(synthetic_cache):
    root = _root(synthetic_cache)
    video_id = (root / "splits" / "test.txt").read_text().split()[5]
    path = root / "videos" / f"{video_id}.mp4"
    decoded = read_clip(open_reader(), path, 8)
    assert decoded.shape == (8, 64, 64, 3) and decoded.dtype == np.uint8
    via_pyav = read_clip(PyAVReader(), path, 8)
    assert np.abs(decoded.astype(int) - via_pyav.astype(int)).mean() < 2.0


def test_encoding_is_byte_identical_whatever_was_encoded_before(tmp_path):
    """x264's mb-tree rate control made a file depend on the process's earlier encodes (generator v1): two
    generations then differed in a third of their videos. A video's bytes must not depend on history."""
    classes = synthetic_classes()
    first, other = render_video(classes[0], SyntheticSpec(), 3), render_video(classes[9], SyntheticSpec(), 5)
    write_mp4(tmp_path / "fresh.mp4", first, 12)
    write_mp4(tmp_path / "other.mp4", other, 12)
    write_mp4(tmp_path / "after.mp4", first, 12)
    assert (tmp_path / "fresh.mp4").read_bytes() == (tmp_path / "after.mp4").read_bytes()
