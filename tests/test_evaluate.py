"""Batched scoring: every method's logits are bit-identical to scoring one episode at a time, whatever the
batch size and the number of scoring threads; batch sizes follow the memory budget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fsar_bench.api import FewShotHead, HeadConfig, PairwiseHead, index_reps
from fsar_bench.episodes import EpisodeSet, Protocol
from fsar_bench.evaluation.evaluate import choose_episode_batch, episode_bytes, score_episodes, score_sharded
from fsar_bench.evaluation.pairs import PairScoreTable
from fsar_bench.evaluation.peak_memory import PeakMemory
from fsar_bench.model.registry import discover_methods

PROJECT_ROOT = Path(__file__).resolve().parents[1]
REGISTRY = discover_methods(PROJECT_ROOT / "methods")
METHODS = REGISTRY.names()
DIM, FRAMES, VIDEOS, WAY = 32, 8, 40, 5


def _head(name: str) -> FewShotHead:
    card = REGISTRY.get(name).card
    options = {**card.options, **({"out_dim": 16} if "out_dim" in card.options else {})}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        head = card.head(HeadConfig(dim=DIM, frames=FRAMES, num_base_classes=7, feature_size=(2, 2), options=options))
    return head.eval()


def _encoded(head: FewShotHead):
    generator = torch.Generator().manual_seed(1)
    shape = (VIDEOS, FRAMES, DIM, 2, 2) if head.feature_maps else (VIDEOS, FRAMES, DIM)
    with torch.inference_mode():
        reps = head.encode(torch.rand(shape, generator=generator))
    if head.needs_class_text:  # the harness adds each video's class-text embedding after encode
        reps = {**reps, "class_text": torch.rand(VIDEOS, DIM, generator=generator)}
    return reps


def _episodes(count: int, shot: int, seed: int = 2) -> EpisodeSet:
    """Random episodes over VIDEOS videos (distinct videos within an episode)."""
    rng = np.random.default_rng(seed)
    picks = np.stack([rng.permutation(VIDEOS)[: WAY * (shot + 1)] for _ in range(count)]).astype(np.int32)
    protocol = Protocol("toy", "test", "0" * 64, WAY, shot, 1, count, FRAMES, 64, 0)
    support = picks[:, : WAY * shot].reshape(count, WAY, shot)
    query = picks[:, WAY * shot:]
    labels = np.tile(np.arange(WAY, dtype=np.int32), (count, 1))
    classes = np.tile(np.arange(WAY, dtype=np.int32), (count, 1))
    return EpisodeSet(protocol, tuple(f"v{i}" for i in range(VIDEOS)), classes, support, query, labels, "toy")


@pytest.mark.parametrize("shot", [1, 5])
@pytest.mark.parametrize("name", METHODS)
def test_batched_logits_are_bit_identical_to_one_at_a_time(name: str, shot: int) -> None:
    head = _head(name)
    reps = _encoded(head)
    episodes = _episodes(9, shot)
    support = torch.from_numpy(episodes.support).long()
    query = torch.from_numpy(episodes.query).long()
    with torch.inference_mode():
        batched = head.logits(index_reps(reps, support), index_reps(reps, query))
        alone = torch.cat([head.logits(index_reps(reps, support[e:e + 1]), index_reps(reps, query[e:e + 1]))
                           for e in range(len(episodes))])
    assert batched.shape == (9, WAY, WAY)
    assert torch.equal(batched, alone), f"{name} {shot}-shot: max diff {(batched - alone).abs().max()}"


@pytest.mark.parametrize("name", ["tsn", "otam", "trx", "hyrsm", "molo"])
def test_threaded_batches_give_the_same_predictions(name: str) -> None:
    head = _head(name)
    reps = _encoded(head)
    episodes = _episodes(23, 2)
    row_of = np.arange(VIDEOS)
    ids = np.arange(len(episodes))
    reference = np.concatenate([p for _, p in score_episodes(head, reps, row_of, episodes, ids, batch=1, workers=1)])
    order, threaded = zip(*score_episodes(head, reps, row_of, episodes, ids, batch=4, workers=3))
    assert np.array_equal(np.concatenate(order), ids), "batches come back in episode order"
    assert np.array_equal(np.concatenate(threaded), reference)
    single = np.concatenate([p for _, p in score_sharded(head, reps, row_of, episodes, ids, batch=5, workers=2)])
    assert np.array_equal(single, reference)
    assert head.training is False and torch.get_num_threads() >= 1


def test_batch_size_follows_the_memory_budget() -> None:
    head = _head("trx")
    reps = _encoded(head)
    episodes = _episodes(8, 5)
    row_of, ids = np.arange(VIDEOS), np.arange(8)
    fixed, per_episode = episode_bytes(head, reps, row_of, episodes, ids, torch.device("cpu"))
    gathered = sum(t[0].numel() * t.element_size() for t in reps.values()) * WAY * 6  # N*K + Q rows
    assert per_episode >= gathered, "at least the gathered encodings of one episode"
    budget = fixed + 10 * per_episode
    assert choose_episode_batch(head, reps, row_of, episodes, ids, torch.device("cpu"), budget=budget) == 10
    assert choose_episode_batch(head, reps, row_of, episodes, ids, torch.device("cpu"), budget=2 * fixed + 10 * per_episode,
                                workers=2) == 5
    assert choose_episode_batch(head, reps, row_of, episodes, ids, torch.device("cpu"), budget=1) == 1


def test_peak_memory_tracks_live_tensors() -> None:
    base = torch.ones(1000)
    with torch.inference_mode(), PeakMemory() as tracker:
        for _ in range(5):
            a = base * 2  # 4 kB, freed at the next iteration
            b = a + 1
            del a, b
        kept = base * 3
    assert 8000 <= tracker.peak <= 12000 and tracker.current >= 4000
    del kept


PAIRWISE = [name for name in METHODS if issubclass(REGISTRY.get(name).card.head, PairwiseHead)]


@pytest.mark.parametrize("name", PAIRWISE)
@pytest.mark.parametrize(("workers", "budget"), [(1, None), (3, None), (2, 4096)])
def test_distinct_pairs_give_the_logits_bits(name: str, workers: int, budget: int | None) -> None:
    """Each distinct pair scored once (memo, or per-batch de-duplication under a tiny budget), in threads:
    logits bit-identical to ``head.logits`` one episode at a time, and no pair scored twice."""
    head = _head(name)
    reps = _encoded(head)
    episodes = _episodes(30, 3)
    support, query = torch.from_numpy(episodes.support).long(), torch.from_numpy(episodes.query).long()
    with torch.inference_mode():
        alone = torch.cat([head.logits(index_reps(reps, support[e:e + 1]), index_reps(reps, query[e:e + 1]))
                           for e in range(len(episodes))])
    pairs = PairScoreTable(head, reps, torch.device("cpu"), workers=workers, budget=budget)
    batched = torch.cat([pairs.logits(episodes.query[e:e + 7], episodes.support[e:e + 7]) for e in range(0, 30, 7)])
    assert torch.equal(batched, alone), f"max diff {(batched - alone).abs().max()}"
    flat = episodes.query[:, :, None, None].astype(np.int64) * VIDEOS + episodes.support[:, None]
    if budget is None:
        assert pairs.use_memo and pairs.computed == len(np.unique(flat))
        again = pairs.logits(episodes.query, episodes.support)  # everything memoised: nothing scored
        assert torch.equal(again, alone) and pairs.computed == len(np.unique(flat))
    else:
        assert not pairs.use_memo and pairs.chunk < 30


def test_otam_is_scored_pairwise_with_fewer_pairs_than_episodes_hold() -> None:
    head = _head("otam")
    reps = _encoded(head)
    episodes = _episodes(200, 5)
    pairs = PairScoreTable(head, reps, torch.device("cpu"))
    pairs.logits(episodes.query, episodes.support)
    assert isinstance(head, PairwiseHead)
    assert pairs.computed <= VIDEOS * VIDEOS < episodes.query.size * WAY * 5
