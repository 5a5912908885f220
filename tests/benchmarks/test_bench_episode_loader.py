"""Training-episode loading on fake realistic videos (Kinetics-like H.264, SSv2-like VP9; every video id of the
train classes points at one of the two files, so the decoding cost is real and the setup cheap):

- loader throughput with 0, 1 and 2 workers, from the videos (full mode: >= 1.7x episodes/s from 1 to 2
  workers on 2 cores);
- the data-wait fraction of training steps (small CNN at 112 px, OTAM loss, forward + backward + Adam) with 2
  workers reading the frame store and building MoLo-style training clips in the workers (squash, random crop,
  query flip and colour jitter: ``TrainClipMaker``, as the trainer does) (full mode: <= 10%).

Episodes are MoLo-sized: 5-way 1-shot with 6 queries per class = 35 clips of 8 frames (quick mode: 1 query per
class, 3 episodes, a 90-frame Kinetics-like video; sanity only).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from fsar_bench.data.episode_loader import EpisodePlan, SegmentFrames, episode_batches
from fsar_bench.data.frame_store import StoreFormat, pack_video
from fsar_bench.files import write_bytes_atomic
from fsar_bench.data.video import open_reader
from tests.benchmarks._common import FULL, PROJECT_ROOT, report
from tests.fake_videos import KINETICS_LIKE, SSV2_LIKE, write_fake_video

pytestmark = pytest.mark.benchmark_quick

EPISODES = 24 if FULL else 3
WAY, SHOT, QUERIES = 5, 1, (6 if FULL else 1)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """{"videos": video_path, "store": video_path} over 8 classes x 8 ids, alternating the two fake files."""
    folder = tmp_path_factory.mktemp("loader-videos")
    files = [write_fake_video(folder / f"k{KINETICS_LIKE.suffix}", KINETICS_LIKE, 0, None if FULL else 90),
             write_fake_video(folder / f"s{SSV2_LIKE.suffix}", SSV2_LIKE, 1)]
    reader = open_reader()
    stored = []
    for path in files:
        stored.append(path.with_suffix(".frames"))
        write_bytes_atomic(stored[-1], pack_video(reader.read(path, lambda n: list(range(n))), StoreFormat()))
    classes = tuple(tuple(f"c{c}/v{v}" for v in range(8)) for c in range(8))

    def pick(choices: list[Path]):
        return lambda video_id: choices[(int(video_id[1]) + int(video_id.split("v")[-1])) % 2]

    return EpisodePlan(0, WAY, SHOT, QUERIES, classes), {"videos": pick(files), "store": pick(stored)}


def _episodes_per_second(plan, video_path, workers: int) -> float:
    loader = episode_batches(plan, video_path, SegmentFrames(8), range(EPISODES + 2 * workers), workers=workers,
                             prefetch=2, cache_bytes=0)
    for _ in range(max(1, 2 * workers)):  # workers started, first episodes in
        next(loader)
    start = time.perf_counter()
    count = sum(1 for _ in loader)
    return count / (time.perf_counter() - start)


def test_loader_throughput_scales_with_workers(sources, capsys):
    plan, paths = sources
    rates = {workers: _episodes_per_second(plan, paths["videos"], workers) for workers in (0, 1, 2)}
    store = _episodes_per_second(plan, paths["store"], 2)
    report(capsys, "episode loader from videos (35 clips)", workers0=rates[0], workers1=rates[1], workers2=rates[2],
           scaling_1_to_2=rates[2] / rates[1], store_workers2=store, store_over_videos=store / rates[2])
    assert min(rates.values()) > 0 and (not FULL or rates[2] >= 1.7 * rates[1])


def test_data_wait_fraction_small_cnn_from_store(sources, capsys):
    from fsar_bench.api import TrainEpisode
    from fsar_bench.data.transforms import ClipAugment, TrainClipMaker
    from fsar_bench.model.network import FSARModel
    from fsar_bench.model.registry import discover_methods
    from fsar_bench.train import prepare_clips

    plan, paths = sources
    card = discover_methods(PROJECT_ROOT / "methods").get("otam").card
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = FSARModel.build(card, "small-cnn", "none", 8, 112, 64)
    support = ClipAugment(resize="squash", resize_to=128, antialias=False, random_crop=True)
    maker = TrainClipMaker("molo-segment", 8, 112, support,  # the fake videos (340x256, 426x240) squashed to 128²
                           ClipAugment("squash", 128, False, True, True, (0.5, 0.5, 0.5, 0.25, 0.3)))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    episode = TrainEpisode(way=WAY, shot=SHOT, query_labels=torch.arange(WAY).repeat_interleave(QUERIES),
                           class_base_ids=torch.arange(WAY))
    waited = total = built = 0.0
    steps = 0
    loader = episode_batches(plan, paths["store"], maker, range(EPISODES + 2), workers=2, prefetch=2)
    for loaded in loader:
        start = time.perf_counter()
        pixels = prepare_clips(model, loaded.clips)  # float clips from the workers: normalised only
        output = model.head.loss(model.features(pixels[:WAY * SHOT]), model.features(pixels[WAY * SHOT:]), episode)
        output.total.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if steps >= 2:  # after the workers' start
            waited += loaded.wait_seconds
            built += loaded.load_seconds
            total += loaded.wait_seconds + time.perf_counter() - start
        steps += 1
    fraction = waited / total
    report(capsys, "data wait, small CNN 112 px + OTAM, 2 workers from the store, MoLo-style clips", episodes=steps - 2,
           step_s=(total - waited) / max(1, steps - 2), worker_episode_s=built / max(1, steps - 2),
           data_wait_fraction=fraction)
    assert 0.0 <= fraction <= (0.10 if FULL else 1.0)
