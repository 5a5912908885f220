"""The method contract, checked on every card ``discover_methods()`` finds: a dropped-in plugin is tested as is.

Each card runs at the small sizes of its ``test_options``: logit shapes, batched episodes equal to single
ones, encode rows independent of each other, one training step, the reference-key converter, and the card's
own fields (recipes and options that parse, published numbers in range).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fsar_bench.api import (
    FewShotHead,
    HeadConfig,
    MethodCard,
    Recipe,
    ReferenceStateError,
    TrainEpisode,
    add_episode_axis,
    index_reps,
    map_reps,
    parse_options,
    support_to_episode,
)
from fsar_bench.model.registry import discover_methods
from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REGISTRY = discover_methods(PROJECT_ROOT / "methods", entry_points=False)
CARDS = [REGISTRY.get(name).card for name in REGISTRY.names()]
DIM, FRAMES, MAP_SIZE, PIXELS = 16, 6, 2, 64  # pixels = 32 × the conv5 map size (MoLo's decoder)
DATASETS = {"ssv2-full", "ssv2-small", "kinetics100", "kinetics100-molo", "ucf101", "hmdb51", "finegym", "synthetic"}
ids = pytest.mark.parametrize("card", CARDS, ids=lambda card: card.name)


def small_head(card: MethodCard, seed: int = 0, **options: object) -> FewShotHead:
    """The card's head at toy size: card options < test_options < ``options``; eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        class_text = {"train": torch.rand(10, DIM)} if card.head.needs_class_text else {}
        config = HeadConfig(dim=DIM, frames=FRAMES, num_base_classes=10, feature_size=(MAP_SIZE, MAP_SIZE),
                            options={**card.options, **card.test_options, **options}, method=card.name,
                            class_text=class_text)
        return card.head(config).eval()


def with_class_text(head: FewShotHead, reps, base_ids: torch.Tensor):
    """What the harness adds after ``encode`` for heads with ``needs_class_text``: each video's class-text row."""
    if not head.needs_class_text:
        return reps
    return {**reps, "class_text": head.config.class_text["train"][base_ids]}


def features(head: FewShotHead, videos: int, seed: int) -> torch.Tensor:
    """Non-negative backbone outputs (like post-ReLU): [V, T, d], or maps [V, T, d, h, w] for map heads."""
    generator = torch.Generator().manual_seed(seed)
    shape = (videos, FRAMES, DIM, MAP_SIZE, MAP_SIZE) if head.feature_maps else (videos, FRAMES, DIM)
    return torch.rand(*shape, generator=generator)


def batched_episodes(head: FewShotHead, episodes: int, way: int, shot: int, queries: int, seed: int):
    """Encode a pool of videos once and gather E episodes: support [E, N, K, ...], query [E, Q, ...]."""
    pool = with_class_text(head, head.encode(features(head, 40, seed)), torch.arange(40) % 10)
    generator = torch.Generator().manual_seed(seed + 1)
    picks = torch.stack([torch.randperm(40, generator=generator)[: way * shot + queries] for _ in range(episodes)])
    return index_reps(pool, picks[:, : way * shot].reshape(episodes, way, shot)), index_reps(pool, picks[:, way * shot:])


def test_every_plugin_file_loads() -> None:
    """A plugin that fails to import would silently drop out of the tests below: none may."""
    assert not REGISTRY.failures and not REGISTRY.duplicates and CARDS


# --------------------------------------------------------------------------- per video, per episode
@ids
@pytest.mark.parametrize(("way", "shot", "queries"), [(5, 1, 5), (3, 2, 7)])
def test_logit_shape(card: MethodCard, way: int, shot: int, queries: int) -> None:
    head = small_head(card)
    with torch.no_grad():
        logits = head.logits(*batched_episodes(head, 3, way, shot, queries, seed=1))
    assert logits.shape == (3, queries, way) and torch.isfinite(logits).all()


@ids
@pytest.mark.parametrize("shot", [1, 2])
def test_batched_logits_equal_per_episode_logits(card: MethodCard, shot: int) -> None:
    """Scoring E episodes at once gives each episode's logits as scoring it alone (evaluation batches freely)."""
    head = small_head(card)
    with torch.no_grad():
        support, query = batched_episodes(head, 6, 5, shot, 4, seed=2)
        batched = head.logits(support, query)
        for episode in range(6):
            alone = head.logits(map_reps(support, lambda t: t[episode:episode + 1]),
                                map_reps(query, lambda t: t[episode:episode + 1]))
            torch.testing.assert_close(batched[episode:episode + 1], alone, atol=1e-6, rtol=1e-6)


@ids
def test_encode_rows_are_independent(card: MethodCard) -> None:
    """encode depends on one video alone: encoding a subset gives the same rows (so it can be cached)."""
    head = small_head(card)
    inputs = features(head, 7, seed=3)
    with torch.no_grad():
        full, part = head.encode(inputs), head.encode(inputs[2:5])
    for key in (full if isinstance(full, dict) else [None]):
        whole = full if key is None else full[key]
        subset = part if key is None else part[key]
        torch.testing.assert_close(whole[2:5], subset, atol=1e-6, rtol=1e-6)


# --------------------------------------------------------------------------- training
def toy_episode(head: FewShotHead, way: int = 3, shot: int = 2, queries_per_class: int = 2):
    support, query = features(head, way * shot, seed=8), features(head, way * queries_per_class, seed=9)
    episode = TrainEpisode(way=way, shot=shot, query_labels=torch.arange(way).repeat_interleave(queries_per_class),
                           class_base_ids=torch.arange(way) + 2)
    if head.needs_pixels:
        generator = torch.Generator().manual_seed(10)
        episode.support_pixels = torch.rand(way * shot, FRAMES, 3, PIXELS, PIXELS, generator=generator)
        episode.query_pixels = torch.rand(way * queries_per_class, FRAMES, 3, PIXELS, PIXELS, generator=generator)
    return support, query, episode


@ids
def test_one_training_step(card: MethodCard) -> None:
    """loss gives finite named terms and [Q, N] logits; its gradient reaches the backbone features and, after
    one optimizer step, changes the head's weights (if it has any)."""
    head = small_head(card).train()
    support, query, episode = toy_episode(head)
    support.requires_grad_(True)
    output = head.loss(support, query, episode)
    assert output.logits.shape == (episode.query_labels.shape[0], episode.way)
    assert output.terms and all(torch.isfinite(value).all() for value in output.terms.values())
    assert output.total.dim() == 0 and torch.isfinite(output.total)
    before = {name: value.detach().clone() for name, value in head.named_parameters()}
    optimizer = torch.optim.SGD(head.parameters(), lr=0.1) if before else None
    output.total.backward()
    assert support.grad is not None and support.grad.abs().sum() > 0
    if optimizer is not None:
        optimizer.step()
        assert any(not torch.equal(value, before[name]) for name, value in head.named_parameters())


@ids
def test_few_training_steps_reduce_the_loss(card: MethodCard) -> None:
    """Five Adam steps on the head and a per-channel stand-in backbone lower the (eval-mode) loss."""
    head = small_head(card)
    support, query, episode = toy_episode(head)
    shape = (DIM, 1, 1) if head.feature_maps else (DIM,)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        gain, shift = torch.nn.Parameter(1 + 0.1 * torch.randn(shape)), torch.nn.Parameter(torch.zeros(shape))

    def total() -> torch.Tensor:
        return head.loss(support * gain + shift, query * gain + shift, episode).total

    optimizer = torch.optim.Adam([*head.parameters(), gain, shift], lr=1e-2)
    with torch.no_grad():
        before = float(total())
    for _ in range(5):
        optimizer.zero_grad()
        total().backward()
        optimizer.step()
    with torch.no_grad():
        assert float(total()) < before


@ids
def test_default_loss_is_cross_entropy_of_the_logits_or_named_terms(card: MethodCard) -> None:
    """In eval mode (no dropout) the loss's logits are ``logits`` of the same episode."""
    head = small_head(card)
    support, query, episode = toy_episode(head)
    with torch.no_grad():
        output = head.loss(support, query, episode)
        support_reps = with_class_text(head, head.encode(support), episode.support_base_labels)
        query_reps = with_class_text(head, head.encode(query), episode.query_base_labels)
        expected = head.logits(support_to_episode(support_reps, episode.way, episode.shot),
                               add_episode_axis(query_reps))[0]
    torch.testing.assert_close(output.logits, expected, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- cards
@ids
def test_card_fields(card: MethodCard) -> None:
    assert card.name and card.summary and issubclass(card.head, FewShotHead)
    assert dataclasses.is_dataclass(card.head.options_class)
    for table in (card.published, card.published_unconfirmed):
        assert {dataset for dataset, _ in table} <= DATASETS
        assert all(shot >= 1 and 0 < value < 100 for (_, shot), value in table.items())
    assert not set(card.published) & set(card.published_unconfirmed), "a cell is either confirmed or not"
    if card.published or card.published_unconfirmed:
        assert card.paper and card.reference_code and card.published_source
    assert all(isinstance(recipe, Recipe) for recipe in card.recipes.values())


@ids
def test_every_recipe_and_option_set_of_the_card_parses(card: MethodCard) -> None:
    """Card options, test options and each recipe's head options (loss weights included) are the head's own."""
    for given in (card.options, card.test_options, *(recipe.head_options for recipe in card.recipes.values())):
        parse_options(card.head.options_class, {**card.options, **given}, card.name)


@ids
def test_reference_converter_round_trips_and_lists_every_problem(card: MethodCard) -> None:
    """Our weights under reference names load back; a broken state dict names every bad key, nothing loads."""
    head = small_head(card)
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


def test_a_dropped_in_plugin_is_found_and_passes_the_contract(tmp_path) -> None:
    """The example of docs/methods.md, written to a methods folder, registers and runs the contract checks."""
    import re

    text = (PROJECT_ROOT / "docs" / "methods.md").read_text(encoding="utf-8")
    example = [block for block in re.findall(r"```python\n(.*?)```", text, re.S) if "CARDS = (" in block][-1]
    (tmp_path / "cosine.py").write_text(example, encoding="utf-8")
    registry = discover_methods(tmp_path, entry_points=False)
    assert not registry.failures and registry.names() == ["cosine"]
    card = registry.get("cosine").card
    test_logit_shape(card, 5, 1, 5)
    test_batched_logits_equal_per_episode_logits(card, 2)
    test_one_training_step(card)
    test_card_fields(card)
    test_every_recipe_and_option_set_of_the_card_parses(card)
