"""What is particular to the TSN, OTAM and TRX heads: frame order, distances, TRX sizes and loss, recipe values.

Shapes, batching, training and the converter of every card: tests/test_methods_contract.py."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from fsar_bench.api import FewShotHead, HeadConfig, TrainEpisode, map_reps
from methods import otam, trx, tsn

DIM, FRAMES = 16, 6
SMALL_OPTIONS = {"out_dim": 8}
HEADS = {"tsn": tsn.TSNHead, "otam": otam.OTAMHead, "trx": trx.TRXHead}
DATASETS = {"ssv2-full", "ssv2-small", "kinetics100", "ucf101", "hmdb51"}


def _head(name: str, seed: int = 0, **options: object) -> FewShotHead:
    torch.manual_seed(seed)
    small = SMALL_OPTIONS if name == "trx" else {}
    config = HeadConfig(dim=DIM, frames=FRAMES, num_base_classes=10, options={**small, **options})
    return HEADS[name](config).eval()


def _features(videos: int, seed: int) -> torch.Tensor:
    """Non-negative features [V, T, d], like post-ReLU backbone outputs."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(videos, FRAMES, DIM, generator=generator)


def _logits_after_frame_shuffle(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    head = _head(name)
    support_features, query_features = _features(10, seed=4), _features(5, seed=5)
    permutation = torch.randperm(FRAMES, generator=torch.Generator().manual_seed(6))

    def score(support_frames: torch.Tensor, query_frames: torch.Tensor) -> torch.Tensor:
        support = map_reps(head.encode(support_frames), lambda t: t.reshape(1, 5, 2, *t.shape[1:]))
        return head.logits(support, map_reps(head.encode(query_frames), lambda t: t.unsqueeze(0)))

    with torch.no_grad():
        return score(support_features, query_features), score(support_features, query_features[:, permutation])


def test_tsn_ignores_frame_order() -> None:
    ordered, shuffled = _logits_after_frame_shuffle("tsn")
    torch.testing.assert_close(ordered, shuffled, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["otam", "trx"])
def test_temporal_heads_see_frame_order(name: str) -> None:
    ordered, shuffled = _logits_after_frame_shuffle(name)
    assert not torch.allclose(ordered, shuffled, atol=1e-4)


def test_tsn_euclidean_is_negative_squared_distance_to_prototypes() -> None:
    head = _head("tsn", distance="euclidean")
    support, query = torch.randn(2, 3, 4, DIM), torch.randn(2, 5, DIM)
    expected = -((query[:, :, None] - support.mean(dim=2)[:, None]) ** 2).sum(-1)
    torch.testing.assert_close(head.logits(support, query), expected, atol=1e-4, rtol=1e-5)


def test_tsn_is_mean_cosine_to_each_support_as_fsar_lib() -> None:
    """fsar-lib CNN_TSN: cos_sim(query, supports) with 0.01 added to the norm product, mean over the class's K."""
    head = _head("tsn")
    support, query = torch.randn(2, 3, 4, DIM), torch.randn(2, 5, DIM)
    dots = torch.einsum("eqd,enkd->eqnk", query, support)
    norms = query.norm(dim=-1)[:, :, None, None] * support.norm(dim=-1)[:, None]
    expected = (dots / (norms + 0.01)).mean(dim=-1)
    torch.testing.assert_close(head.logits(support, query), expected, atol=1e-5, rtol=1e-5)


def test_otam_stays_finite_where_naive_softmin_overflows() -> None:
    """Anti-correlated frames give D ≈ 2 per cell: the naive exp(-c/0.1) underflows after ~5 cells."""
    head = _head("otam")
    frames = torch.rand(1, 16, DIM) + 0.5
    support = head.encode(-frames.repeat(2, 1, 1))
    query = head.encode(frames)
    logits = head.logits(map_reps(support, lambda t: t.reshape(1, 2, 1, *t.shape[1:])),
                         map_reps(query, lambda t: t.unsqueeze(0)))
    assert torch.isfinite(logits).all() and logits.max() < -20


@pytest.mark.parametrize("cardinalities", [(2, 3), (1, 4), (3,)])
def test_trx_sizes_come_from_config(cardinalities: tuple[int, ...]) -> None:
    head = _head("trx", cardinalities=cardinalities, out_dim=12)
    reps = head.encode(_features(3, seed=7))
    assert set(reps) == {f"{kind}{k}" for k in cardinalities for kind in ("keys", "values")}
    for k in cardinalities:
        assert reps[f"keys{k}"].shape == (3, math.comb(FRAMES, k), 12)
        expected = torch.tensor(list(itertools.combinations(range(FRAMES), k)))
        assert torch.equal(head.temporal_sets[cardinalities.index(k)].tuple_frames, expected)


def _toy_episode(way: int = 3, shot: int = 2, queries_per_class: int = 2):
    support, query = _features(way * shot, seed=8), _features(way * queries_per_class, seed=9)
    labels = torch.arange(way).repeat_interleave(queries_per_class)
    return support, query, TrainEpisode(way=way, shot=shot, query_labels=labels, class_base_ids=torch.arange(way))


def test_trx_loss_is_summed_cross_entropy() -> None:
    head = _head("trx")
    support, query, episode = _toy_episode()
    output = head.loss(support, query, episode)
    per_query = nn.functional.cross_entropy(output.logits, episode.query_labels, reduction="none")
    torch.testing.assert_close(output.total, per_query.sum())
    torch.testing.assert_close(output.terms["ce"], per_query.mean())
    assert tuple(output.terms) == trx.TRXHead.loss_term_names


@pytest.mark.parametrize("module", [tsn, otam, trx], ids=lambda module: module.__name__)
def test_recipes_and_preprocessing_of_the_perrett_family(module) -> None:
    """The fields every card has are checked for every card in test_methods_contract.py; these are the values."""
    card = module.CARDS[0]
    assert card.name == module.__name__.rsplit(".", 1)[-1] and card.notes
    synthetic = card.recipe_for("synthetic")
    assert (synthetic.optimizer, synthetic.lr, synthetic.episodes_per_step) == ("adam", 1e-3, 1)
    assert (synthetic.train_queries_per_class, synthetic.val_every, synthetic.val_episodes) == (5, 100, 200)
    resnet = card.preprocess_for("resnet50")
    assert (resnet.resize, resnet.resize_to, resnet.crop, resnet.mean, resnet.std) == ("short-side", 256, 224, None, None)
    for dataset in DATASETS:
        recipe = card.recipe_for(dataset)
        assert (recipe.optimizer, recipe.lr, recipe.train_queries_per_class) == ("sgd", 1e-3, 5)
        assert recipe.episodes_per_step == (1 if card.name == "otam" else 16)  # fsar-lib issue 3: OTAM steps per task


@pytest.mark.parametrize("cardinalities", [(), (2, 2), (FRAMES + 1,)])
def test_trx_rejects_bad_cardinalities(cardinalities: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="cardinalities"):
        _head("trx", cardinalities=cardinalities)
