"""Protocol and episodes: determinism, seeds, feasibility errors, manifests, frame sampling."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fsar_bench.episodes import Protocol, draw_episodes, load_manifest, save_manifest
from fsar_bench.errors import UsageError
from fsar_bench.data.splits import read_partition
from fsar_bench.data.video import random_segment_indices, segment_centre_indices
from tests.conftest import SHARED_SPLITS_DIR

UCF_TEST = SHARED_SPLITS_DIR / "trx" / "ucf_ARN" / "testlist03.txt"


def _protocol(partition, **changes) -> Protocol:
    values = dict(dataset="ucf101", partition="test", split_sha256=partition.sha256, way=5, shot=5,
                  queries_per_class=1, episodes=300, frames=8, size=224, seed=0)
    values.update(changes)
    return Protocol(**values)


@pytest.fixture(scope="module")
def ucf_test():
    return read_partition(UCF_TEST, "test")


FINGERPRINT_SCRIPT = """
import sys
from pathlib import Path
from fsar_bench.data.splits import read_partition
from fsar_bench.episodes import Protocol, draw_episodes
p = read_partition(Path(sys.argv[1]), "test")
protocol = Protocol("ucf101", "test", p.sha256, 5, 5, 1, 300, 8, 224, 0)
print(draw_episodes(protocol, p).fingerprint)
"""


def test_same_seed_gives_identical_episodes_in_another_process(ucf_test):
    here = draw_episodes(_protocol(ucf_test), ucf_test)
    other = subprocess.run([sys.executable, "-c", FINGERPRINT_SCRIPT, str(UCF_TEST)], capture_output=True,
                           text=True, check=True).stdout.strip()
    assert other == here.fingerprint


def test_episodes_are_independent_of_how_many_are_drawn(ucf_test):
    few = draw_episodes(_protocol(ucf_test, episodes=20), ucf_test)
    many = draw_episodes(_protocol(ucf_test, episodes=300), ucf_test)
    assert np.array_equal(few.support, many.support[:20])
    assert np.array_equal(few.query, many.query[:20])


def test_different_seeds_give_different_episodes(ucf_test):
    a = draw_episodes(_protocol(ucf_test, seed=0), ucf_test)
    b = draw_episodes(_protocol(ucf_test, seed=1), ucf_test)
    assert a.fingerprint != b.fingerprint
    assert (a.support != b.support).mean() > 0.9


def test_episode_structure(ucf_test):
    episodes = draw_episodes(_protocol(ucf_test, shot=3, queries_per_class=2), ucf_test)
    assert episodes.support.shape == (300, 5, 3) and episodes.query.shape == (300, 10)
    class_of_video = {v: c for c in ucf_test.classes for v in ucf_test.videos[c]}
    for e in range(0, 300, 37):
        classes = [ucf_test.classes[c] for c in episodes.classes[e]]
        assert len(set(classes)) == 5
        used = list(episodes.support[e].ravel()) + list(episodes.query[e])
        assert len(set(used)) == len(used), "a video is used twice in one episode"
        for label, class_name in enumerate(classes):
            assert {class_of_video[episodes.video_ids[v]] for v in episodes.support[e, label]} == {class_name}
        for query, label in zip(episodes.query[e], episodes.query_labels[e]):
            assert class_of_video[episodes.video_ids[query]] == classes[label]


def test_sampling_is_roughly_uniform_over_classes(ucf_test):
    episodes = draw_episodes(_protocol(ucf_test, episodes=2000), ucf_test)
    counts = np.bincount(episodes.classes.ravel(), minlength=len(ucf_test.classes))
    expected = 2000 * 5 / len(ucf_test.classes)
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected))


def test_manifest_round_trip_and_fingerprint_check(ucf_test, tmp_path):
    episodes = draw_episodes(_protocol(ucf_test), ucf_test)
    path = save_manifest(episodes, tmp_path)
    loaded = load_manifest(path)
    assert loaded.fingerprint == episodes.fingerprint and np.array_equal(loaded.query, episodes.query)


def test_way_above_number_of_classes_is_refused(ucf_test):
    with pytest.raises(UsageError, match=r"way 30 is above the 21 classes"):
        draw_episodes(_protocol(ucf_test, way=30), ucf_test)


def test_shot_plus_queries_above_smallest_class_names_the_class(ucf_test):
    with pytest.raises(UsageError, match=r"class 'BlowingCandles' has 109 videos, but shot 100 \+ 10 queries"):
        draw_episodes(_protocol(ucf_test, shot=100, queries_per_class=10), ucf_test)


def test_segment_centre_frames():
    assert segment_centre_indices(16, 8) == [1, 3, 5, 7, 9, 11, 13, 15]
    assert segment_centre_indices(8, 8) == list(range(8))
    assert segment_centre_indices(80, 8) == [5, 15, 25, 35, 45, 55, 65, 75]
    assert segment_centre_indices(20, 8) == [1, 3, 6, 8, 11, 13, 16, 18]


def test_random_segment_frames_stay_in_their_segments():
    rng = np.random.default_rng(0)
    for _ in range(50):
        indices = random_segment_indices(37, 8, rng)
        for t, index in enumerate(indices):
            assert t * 37 // 8 <= index < (t + 1) * 37 // 8
