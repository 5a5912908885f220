"""Shape, batching, order and training behaviour of the TSN, OTAM and TRX heads; every card's converter."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from fsar_bench.api import FewShotHead, HeadConfig, MethodCard, ReferenceStateError, TrainEpisode, index_reps, map_reps
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


def _batched_episodes(head: FewShotHead, episodes: int, way: int, shot: int, queries: int, seed: int):
    """Encode a pool of videos once and gather E episodes: support [E, N, K, ...], query [E, Q, ...]."""
    pool = head.encode(_features(40, seed))
    generator = torch.Generator().manual_seed(seed + 1)
    picks = torch.stack([torch.randperm(40, generator=generator)[: way * shot + queries] for _ in range(episodes)])
    support = index_reps(pool, picks[:, : way * shot].reshape(episodes, way, shot))
    query = index_reps(pool, picks[:, way * shot:])
    return support, query


@pytest.mark.parametrize("name", HEADS)
@pytest.mark.parametrize(("way", "shot", "queries"), [(5, 1, 5), (3, 2, 7)])
def test_logit_shape(name: str, way: int, shot: int, queries: int) -> None:
    head = _head(name)
    with torch.no_grad():
        support, query = _batched_episodes(head, 3, way, shot, queries, seed=1)
        logits = head.logits(support, query)
    assert logits.shape == (3, queries, way)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", HEADS)
def test_batched_equals_single(name: str) -> None:
    head = _head(name)
    with torch.no_grad():
        support, query = _batched_episodes(head, 6, 5, 2, 4, seed=2)
        batched = head.logits(support, query)
        for episode in range(6):
            alone = head.logits(map_reps(support, lambda t: t[episode:episode + 1]),
                                map_reps(query, lambda t: t[episode:episode + 1]))
            torch.testing.assert_close(batched[episode:episode + 1], alone, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", HEADS)
def test_encode_rows_are_independent(name: str) -> None:
    """encode depends on one video alone: encoding a subset gives the same rows."""
    head = _head(name)
    features = _features(7, seed=3)
    with torch.no_grad():
        full, part = head.encode(features), head.encode(features[2:5])
    for key in (full if isinstance(full, dict) else [None]):
        whole = full if key is None else full[key]
        subset = part if key is None else part[key]
        torch.testing.assert_close(whole[2:5], subset, atol=1e-6, rtol=1e-6)


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


def test_tsn_is_negative_squared_distance_to_prototypes() -> None:
    head = _head("tsn")
    support, query = torch.randn(2, 3, 4, DIM), torch.randn(2, 5, DIM)
    expected = -((query[:, :, None] - support.mean(dim=2)[:, None]) ** 2).sum(-1)
    torch.testing.assert_close(head.logits(support, query), expected, atol=1e-4, rtol=1e-5)


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


def _eval_loss(head: FewShotHead, adapter: nn.Module, support, query, episode) -> float:
    head.eval()
    with torch.no_grad():
        return float(head.loss(adapter(support), adapter(query), episode).terms["ce"])


@pytest.mark.parametrize("name", HEADS)
def test_training_steps_reduce_loss(name: str) -> None:
    """A few Adam steps on the head (TRX) or on a linear stand-in backbone (all) lower the loss."""
    head = _head(name)
    torch.manual_seed(10)
    adapter = nn.Linear(DIM, DIM)
    support, query, episode = _toy_episode()
    optimizer = torch.optim.Adam([*head.parameters(), *adapter.parameters()], lr=1e-2)
    before = _eval_loss(head, adapter, support, query, episode)
    for _ in range(5):
        head.train()
        optimizer.zero_grad()
        head.loss(adapter(support), adapter(query), episode).total.backward()
        optimizer.step()
    assert _eval_loss(head, adapter, support, query, episode) < before


def test_trx_loss_is_summed_cross_entropy() -> None:
    head = _head("trx")
    support, query, episode = _toy_episode()
    output = head.loss(support, query, episode)
    per_query = nn.functional.cross_entropy(output.logits, episode.query_labels, reduction="none")
    torch.testing.assert_close(output.total, per_query.sum())
    torch.testing.assert_close(output.terms["ce"], per_query.mean())
    assert tuple(output.terms) == trx.TRXHead.loss_term_names


@pytest.mark.parametrize("module", [tsn, otam, trx], ids=lambda module: module.__name__)
def test_cards(module) -> None:
    (card,) = module.CARDS
    assert isinstance(card, MethodCard) and card.name == module.__name__.rsplit(".", 1)[-1]
    assert card.summary and card.paper and card.reference_code and card.notes
    assert {dataset for dataset, _ in card.published} <= DATASETS
    assert all(shot in (1, 5) and 0 < value < 100 for (_, shot), value in card.published.items())
    synthetic = card.recipe_for("synthetic")
    assert (synthetic.optimizer, synthetic.lr, synthetic.episodes_per_step) == ("adam", 1e-3, 1)
    assert (synthetic.train_queries_per_class, synthetic.val_every, synthetic.val_episodes) == (5, 100, 200)
    resnet = card.preprocess_for("resnet50")
    assert (resnet.resize, resnet.resize_to, resnet.crop, resnet.mean, resnet.std) == ("short-side", 256, 224, None, None)
    for dataset in DATASETS:
        recipe = card.recipe_for(dataset)
        assert (recipe.optimizer, recipe.lr, recipe.train_queries_per_class) == ("sgd", 1e-3, 5)
        assert recipe.episodes_per_step == (16 if card.name == "trx" else 1)


@pytest.mark.parametrize("cardinalities", [(), (2, 2), (FRAMES + 1,)])
def test_trx_rejects_bad_cardinalities(cardinalities: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="cardinalities"):
        _head("trx", cardinalities=cardinalities)


# --------------------------------------------------------------------------- reference converters, every card
def _all_cards() -> list[MethodCard]:
    from methods import hyrsm, molo

    return [card for module in (tsn, otam, trx, hyrsm, molo) for card in module.CARDS]


def _small_head_of(card: MethodCard) -> FewShotHead:
    torch.manual_seed(0)
    sizes = {"trx": {"out_dim": 8}, "hyrsm": {"heads": 4}, "molo": {"heads": 4}}
    options = {**card.options, **sizes.get(card.name.split("-")[0], {})}
    config = HeadConfig(dim=DIM, frames=FRAMES, num_base_classes=10, feature_size=(2, 2), options=options)
    return card.head(config).eval()


@pytest.mark.parametrize("card", _all_cards(), ids=lambda card: card.name)
def test_reference_converter_round_trips_and_lists_every_problem(card: MethodCard) -> None:
    """Our weights under reference names load back; a broken state dict names every bad key, nothing loads."""
    head = _small_head_of(card)
    ours = head.state_dict()
    reference = {ref: ours[our].clone() + 1 for our, ref in head.reference_key_map().items()}
    head.load_reference_state_dict({f"module.head.{key}": value for key, value in reference.items()})
    for our, ref in head.reference_key_map().items():
        torch.testing.assert_close(head.state_dict()[our], reference[ref])

    broken = dict(reference)
    broken["head.not_a_reference_key.weight"] = torch.zeros(3)
    expected = ["unexpected: not_a_reference_key.weight"]
    if reference:  # parameter-free heads (TSN, OTAM) can only get unexpected keys
        missing, mis_shaped = sorted(reference)[0], sorted(reference)[-1]
        del broken[missing]
        broken[mis_shaped] = torch.zeros(*reference[mis_shaped].shape, 2)
        expected += [f"missing: {missing}", f"wrong shape: {mis_shaped}: reference "]
    before = {key: value.clone() for key, value in head.state_dict().items()}
    with pytest.raises(ReferenceStateError) as error:
        head.load_reference_state_dict(broken)
    for fragment in expected:
        assert fragment in str(error.value)
    for key, value in head.state_dict().items():  # all-or-nothing: the failed load changed no weight
        assert torch.equal(value, before[key])
