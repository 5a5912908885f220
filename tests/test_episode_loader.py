"""Training episodes from DataLoader workers: episode i's clips are bit-identical for 0, 1 and 2 workers, whether
only the sampled frames are read or whole videos are cached, and equal to building them in the trainer's process."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fsar_bench.config import load_config
from fsar_bench.data.benchmarks import DataOptions, open_benchmark
from fsar_bench.data.episode_loader import EpisodePlan, SegmentFrames, episode_batches
from fsar_bench.data.sampling import clip_generator
from fsar_bench.data.video import VideoError, open_reader, random_segment_indices
from tests.conftest import write_bench_toml

EPISODES = [0, 1, 7, 8, 30]


@pytest.fixture(scope="module")
def synthetic(synthetic_cache, tmp_path_factory):
    folder = tmp_path_factory.mktemp("loader")
    config = load_config(write_bench_toml(folder, synthetic_cache, 'frame_store = "off"\n'))
    return open_benchmark("synthetic", config, DataOptions(frame_store=False))


def _load(benchmark, workers, cache_bytes=0):
    plan = EpisodePlan.from_partition(benchmark.partition("train"), train_seed=3, way=5, shot=2, queries=2)
    return list(episode_batches(plan, benchmark.video_path, SegmentFrames(8), EPISODES, workers=workers,
                                prefetch=2, cache_bytes=cache_bytes))


def test_episodes_identical_for_any_worker_count(synthetic):
    benchmark = synthetic
    runs = {workers: _load(benchmark, workers) for workers in (0, 1, 2)}
    runs["cached"] = _load(benchmark, 2, cache_bytes=1 << 30)
    reference = runs[0]
    assert [e.index for e in reference] == EPISODES
    for name, episodes in runs.items():
        assert [e.index for e in episodes] == EPISODES, name
        for ours, theirs in zip(episodes, reference):
            assert ours.classes == theirs.classes and torch.equal(ours.clips, theirs.clips), (name, ours.index)
            assert ours.clips.shape == (20, 8, 64, 64, 3) and ours.clips.dtype == torch.uint8
            assert ours.wait_seconds >= 0 and ours.load_seconds > 0

    # the same clips as drawing them in this process, as the trainer did before the loader
    plan = EpisodePlan.from_partition(benchmark.partition("train"), train_seed=3, way=5, shot=2, queries=2)
    reader = open_reader()
    classes, videos = plan.episode(7)
    for j in (0, 9, 10, 19):
        full = reader.read(benchmark.video_path(videos[j]), lambda n: list(range(n)))
        expected = full[random_segment_indices(len(full), 8, clip_generator(3, 7, j))]
        assert np.array_equal(reference[2].clips[j].numpy(), expected)


def test_unreadable_video_names_the_file(synthetic, tmp_path):
    benchmark = synthetic
    plan = EpisodePlan.from_partition(benchmark.partition("train"), train_seed=3, way=5, shot=1, queries=1)
    missing = lambda video_id: tmp_path / f"{video_id}.mp4"  # noqa: E731
    with pytest.raises(VideoError, match="file not found"):
        list(episode_batches(plan, missing, SegmentFrames(8), [0], workers=0))


def test_augmented_clips_identical_for_any_worker_count_and_equal_to_the_maker(synthetic):
    """The trainer's clips: the recipe's TrainClipMaker (crop, query flip and colour jitter) runs in the workers;
    episode i is bit-identical for 0 and 2 workers and equals ``maker.make`` of the whole video in this process."""
    from fsar_bench.data.transforms import ClipAugment, TrainClipMaker

    support = ClipAugment(resize="squash", resize_to=72, random_crop=True)
    query = ClipAugment(resize="squash", resize_to=72, random_crop=True, flip=True, jitter=(0.4, 0.4, 0.4, 0.1, 0.2))
    maker = TrainClipMaker("molo-segment", 8, 64, support, query)
    plan = EpisodePlan.from_partition(synthetic.partition("train"), train_seed=3, way=5, shot=2, queries=2)
    runs = {workers: list(episode_batches(plan, synthetic.video_path, maker, EPISODES, workers=workers, prefetch=2))
            for workers in (0, 2)}
    for ours, theirs in zip(runs[2], runs[0]):
        assert ours.clips.dtype == torch.float32 and ours.clips.shape == (20, 8, 3, 64, 64)
        assert torch.equal(ours.clips, theirs.clips), ours.index
    reader = open_reader()
    _, videos = plan.episode(7)
    for j in (0, 19):  # a support and a query
        full = reader.read(synthetic.video_path(videos[j]), lambda n: list(range(n)))
        assert torch.equal(runs[2][2].clips[j], maker.make(full, clip_generator(3, 7, j), query=j >= 10))


def test_whole_videos_are_decoded_only_while_the_cache_has_room(synthetic):
    """Once a whole video does not fit the cache, only the sampled frames are read (decoding a whole video to keep 8
    frames of it cost the loader 5x in the full-mode benchmark); the clips are the same either way."""
    from fsar_bench.data.episode_loader import EpisodeDataset

    plan = EpisodePlan.from_partition(synthetic.partition("train"), train_seed=3, way=5, shot=2, queries=2)
    frames_read = []

    class CountingReader:
        name = "counting"

        def __init__(self) -> None:
            self.inner = open_reader()

        def read(self, path, choose):
            def counted(total):
                chosen = choose(total)
                frames_read.append(len(chosen))
                return chosen
            return self.inner.read(path, counted)

    one_video = open_reader().read(synthetic.video_path(plan.episode(0)[1][0]), lambda n: list(range(n))).nbytes
    dataset = EpisodeDataset(plan, synthetic.video_path, SegmentFrames(8), EPISODES, cache_bytes=one_video)
    dataset._reader = CountingReader()
    loaded = [dataset[position] for position in range(len(EPISODES))]
    whole = [count for count in frames_read if count != 8]
    assert len(whole) == 2, frames_read  # the cached video, then the first that did not fit; never again
    reference = _load(synthetic, 0)
    assert all(torch.equal(ours.clips, theirs.clips) for ours, theirs in zip(loaded, reference))
