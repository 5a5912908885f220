"""HyRSM++ against the reference fixtures (every ``hyrsmpp_*.pt`` in the parity folder), plus batching and training.

Every size comes from each fixture's meta and config, so fixtures with other seeds and shapes run unchanged.
Semantics: ``tests/data/parity/README.md`` (HyRSM, HyRSM++).
"""

from __future__ import annotations

import math

from pathlib import Path

import pytest

from fsar_bench.schedule import decay_points
import torch
from torch import nn

from fsar_bench.api import (
    OptionError,
    HeadConfig,
    ReferenceStateError,
    TrainEpisode,
    add_episode_axis,
    support_to_episode,
)
from methods import hyrsmpp
from tests.conftest import assert_batched_logits_match_single, first_parity_fixture, parity_fixtures

TOLERANCE = {"atol": 1e-5, "rtol": 1e-5}
FIXTURES = parity_fixtures("hyrsmpp")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def build_from_fixture(fixture: dict) -> nn.Module:
    meta, train_cfg = fixture["meta"], fixture["meta"]["cfg"]["TRAIN"]
    options = {
        "heads": meta["heads"],
        "classification_weight": train_cfg.get("USE_CLASSIFICATION_VALUE", 0.0),
        "position_a": float(train_cfg.get("POSITION_A", 10)),
        "position_b": float(train_cfg.get("POSITION_B", 1)),
        "temporal_loss_weight": train_cfg["TEMPORAL_LOSS_WEIGHT"],
        "window_size": train_cfg["WINDOW_SIZE"],
        "temporal_balance": train_cfg["TEMPORAL_BALANCE"],
        "balance_coefficient": train_cfg.get("BALANCE_COEFFICIENT") or 0.0,
    }
    config = HeadConfig(dim=meta["d"], frames=meta["T"], num_base_classes=meta["num_class"], options=options)
    head = hyrsmpp.HyrsmppHead(config)
    head.load_reference_state_dict(fixture["state_dict"])
    return head


def class_major(fixture: dict) -> tuple[torch.Tensor, TrainEpisode]:
    """Permutation putting the shuffled supports class-major, and the training episode."""
    inputs, meta = fixture["inputs"], fixture["meta"]
    order = torch.sort(inputs["support_labels"].long(), stable=True).indices
    episode = TrainEpisode(
        way=meta["way"],
        shot=meta["shot"],
        query_labels=inputs["query_labels"].long(),
        class_base_ids=inputs["batch_class_list"].long(),
    )
    assert torch.equal(episode.support_base_labels, inputs["real_support_labels"][order].long())
    assert torch.equal(episode.query_base_labels, inputs["real_query_labels"].long())
    return order, episode


def base_class_logits(head: hyrsmpp.HyrsmppHead, features: torch.Tensor) -> torch.Tensor:
    """[V, T, d] -> the base classifier on every frame after the intra-relation and ReLU [V*T, classes]."""
    return head.base_classifier(torch.relu(head.intra_relation(features))).flatten(0, 1)


def frame_rows(order: torch.Tensor, frames: int) -> torch.Tensor:
    """Rows of per-frame outputs for videos in ``order``: [len(order) * frames]."""
    return (order[:, None] * frames + torch.arange(frames)).flatten()


@pytest.mark.parametrize("path", FIXTURES)
def test_eval_outputs_match_reference(path: Path) -> None:
    fixture = torch.load(path, weights_only=True)
    inputs, outputs, meta = fixture["inputs"], fixture["outputs"], fixture["meta"]
    head = build_from_fixture(fixture).eval()
    order, episode = class_major(fixture)
    support_features = inputs["support_features"][order]
    with torch.no_grad():
        support = support_to_episode(head.encode(support_features), episode.way, episode.shot)
        query = add_episode_axis(head.encode(inputs["query_features"]))
        relation = head.relation_outputs(support, query)
        intra_support = head.intra_relation(support_features)
        intra_query = head.intra_relation(inputs["query_features"])
        class_logits = base_class_logits(head, torch.cat([support_features, inputs["query_features"]]))

    reference = outputs["intermediates"]
    num_support = order.numel()
    query_rows = num_support * meta["T"] + torch.arange(meta["n_query"] * meta["T"])
    rows = torch.cat([frame_rows(order, meta["T"]), query_rows])
    # the 1-shot class keeps support videos as set items in input order; the prototype class is already class-major
    item_order = order if meta["shot"] == 1 else torch.arange(meta["way"])
    set_order = torch.cat([item_order, torch.tensor([item_order.numel()])])
    torch.testing.assert_close(relation["logits"][0], outputs["eval"]["logits"], **TOLERANCE)
    torch.testing.assert_close(class_logits, outputs["eval"]["class_logits"][rows], **TOLERANCE)
    torch.testing.assert_close(intra_support, reference["intra_support"][order], **TOLERANCE)
    torch.testing.assert_close(intra_query, reference["intra_query"], **TOLERANCE)
    torch.testing.assert_close(relation["inter_set"][0], reference["inter_set"][:, set_order], **TOLERANCE)
    torch.testing.assert_close(relation["final_support"][0], reference["final_support"][:, item_order], **TOLERANCE)
    torch.testing.assert_close(relation["final_query"][0], reference["final_query"], **TOLERANCE)
    torch.testing.assert_close(head.coherence_target, reference["temproal_regular"], **TOLERANCE)
    torch.testing.assert_close(head.coherence_window, reference["temproal_regular_label"], **TOLERANCE)
    coherence = head.temporal_coherence_loss(relation["final_support"], relation["final_query"])
    torch.testing.assert_close(coherence, outputs["eval"]["loss_temporal_regular"], **TOLERANCE)


@pytest.mark.parametrize("path", FIXTURES)
def test_train_losses_match_reference(path: Path) -> None:
    fixture = torch.load(path, weights_only=True)
    inputs, outputs, meta = fixture["inputs"], fixture["outputs"], fixture["meta"]
    head = build_from_fixture(fixture).train()
    for module in head.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    order, episode = class_major(fixture)
    result = head.loss(inputs["support_features"][order], inputs["query_features"], episode)
    result.total.backward()
    with torch.no_grad():
        class_logits = base_class_logits(head, torch.cat([inputs["support_features"][order], inputs["query_features"]]))
    query_rows = order.numel() * meta["T"] + torch.arange(meta["n_query"] * meta["T"])
    rows = torch.cat([frame_rows(order, meta["T"]), query_rows])
    torch.testing.assert_close(class_logits, outputs["train"]["class_logits"][rows], **TOLERANCE)

    reference = outputs["loss"]
    batch_size = meta["cfg"]["TRAIN"]["BATCH_SIZE"]
    torch.testing.assert_close(result.logits.detach(), outputs["train"]["logits"], **TOLERANCE)
    for name in ("ce_episode", "ce_base_class_per_frame", "loss_temporal_regular"):
        torch.testing.assert_close(result.terms[name].detach(), reference[name], **TOLERANCE)
    # documented mapping (card notes): the reference's per-episode loss is total / BATCH_SIZE
    torch.testing.assert_close(result.total.detach() / batch_size, reference["train_net_few_shot_total"], **TOLERANCE)
    assert all(parameter.grad is not None for parameter in head.parameters())


def test_reference_state_dict_errors_list_keys() -> None:
    fixture = torch.load(first_parity_fixture("hyrsmpp"), weights_only=True)
    head = build_from_fixture(fixture)
    state = dict(fixture["state_dict"])
    head.load_reference_state_dict({f"module.head.{key}": value for key, value in state.items()})

    broken = dict(state)
    del broken["temporal_atte.w_qs.weight"]
    broken["temporal_atte.extra.weight"] = torch.zeros(1)
    broken["layer2.0.weight"] = broken["layer2.0.weight"][:, :, 0]
    with pytest.raises(ReferenceStateError) as error:
        head.load_reference_state_dict(broken)
    message = str(error.value)
    assert "missing: temporal_atte.w_qs.weight" in message
    assert "unexpected: temporal_atte.extra.weight" in message
    assert "wrong shape: layer2.0.weight" in message


def small_head(**options: object) -> nn.Module:
    torch.manual_seed(0)
    config = HeadConfig(dim=32, frames=6, num_base_classes=10, options={"heads": 4, **options}, method="hyrsmpp")
    return hyrsmpp.HyrsmppHead(config).eval()


@pytest.mark.parametrize(("shot", "set_items"), [(1, "auto"), (3, "auto"), (2, "videos")])
def test_batched_episodes_equal_single(shot: int, set_items: str) -> None:
    head = small_head(set_items=set_items)
    episodes, way, num_query, frames = 3, 4, 5, 6
    generator = torch.Generator().manual_seed(1)
    support_features = torch.rand(episodes, way * shot, frames, 32, generator=generator)
    query_features = torch.rand(episodes, num_query, frames, 32, generator=generator)
    assert_batched_logits_match_single(head, support_features, query_features, shot)


def test_coherence_targets_follow_the_window() -> None:
    regular, label = hyrsmpp.temporal_coherence_targets(frames=6, window=1, balance=4.0)
    assert label[2].tolist() == [0.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    assert regular[2, 2].item() == 1.0 and regular[2, 3].item() == 0.5
    assert abs(regular[2, 5].item() - (1 - math.exp(-4 / 4.0))) < 1e-7
    head = small_head()
    same = torch.ones(1, 2, 6, 32)  # identical frames: distances 0, so only the push term counts
    expected = 10.0 * ((1 - head.coherence_window) * head.coherence_target).mean()
    torch.testing.assert_close(head.temporal_coherence_loss(same, same[:, 0]), 2 * expected)


def test_options_and_card() -> None:
    with pytest.raises(OptionError, match="unknown hyrsmpp option 'window'"):
        small_head(window=2)
    (card,) = hyrsmpp.CARDS
    assert card.name == "hyrsmpp" and card.head is hyrsmpp.HyrsmppHead
    assert {"ssv2-full", "ssv2-small", "kinetics100", "kinetics100-molo", "ucf101", "hmdb51", "synthetic"} <= set(card.recipes)
    full = card.recipes["ssv2-full"]  # as run: warm-up over STEPS_ITER 3000, decays at 9000 and 15000 reference iterations
    assert (full.steps_iter, full.steps, full.lrs, full.iterations, full.episodes_per_step) == (3000, (0, 6, 9), (1, 0.1, 0.01), 160_000, 16)
    assert decay_points(full) == [(9000, 0.1), (15000, 0.01)] and full.weight_decay == 1e-3
    hmdb = card.recipes["hmdb51"]
    assert hmdb.head_options["position_a"] == 50.0 and hmdb.head_options["temporal_loss_weight"] == 0.2
    assert decay_points(hmdb) == [(300, 0.5), (600, 0.1), (1200, 0.01)]  # the first decay fires as warm-up ends
    assert [hmdb.train_queries(shot) for shot in range(1, 6)] == [7, 6, 5, 4, 3]
