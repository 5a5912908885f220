"""HyRSM against the reference fixtures in tests/data/parity (semantics: its README), plus batching and training."""

from __future__ import annotations

import math

from pathlib import Path

import pytest
import torch
from torch import nn

from fsar_bench.api import (
    HeadConfig,
    ReferenceStateError,
    TrainEpisode,
    add_episode_axis,
    loss_weight_names,
    support_to_episode,
)
from fsar_bench.schedule import decay_points, learning_rate
from methods import hyrsm
from tests.conftest import assert_batched_logits_match_single, first_parity_fixture, parity_fixtures

TOLERANCE = {"atol": 1e-5, "rtol": 1e-5}
FIXTURES = parity_fixtures("hyrsm")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def build_from_fixture(fixture: dict) -> nn.Module:
    meta, train_cfg = fixture["meta"], fixture["meta"]["cfg"]["TRAIN"]
    options = {
        "heads": meta["heads"],
        "classification_weight": train_cfg.get("USE_CLASSIFICATION_VALUE", 0.0),
        "position_a": float(train_cfg.get("POSITION_A", 10)),
        "position_b": float(train_cfg.get("POSITION_B", 1)),
    }
    config = HeadConfig(dim=meta["d"], frames=meta["T"], num_base_classes=meta["num_class"], options=options)
    head = hyrsm.HyrsmHead(config)
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


def frame_rows(order: torch.Tensor, frames: int) -> torch.Tensor:
    """Rows of per-frame outputs for videos in ``order``: [len(order) * frames]."""
    return (order[:, None] * frames + torch.arange(frames)).flatten()


def base_class_logits(head: hyrsm.HyrsmHead, features: torch.Tensor) -> torch.Tensor:
    """[V, T, d] -> base-class logits of every frame after the intra-relation and ReLU [V*T, classes]."""
    return head.base_classifier(torch.relu(head.intra_relation(features))).flatten(0, 1)


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
    for name in ("ce_episode", "ce_base_class_per_frame"):
        torch.testing.assert_close(result.terms[name].detach(), reference[name], **TOLERANCE)
    # documented mapping (card notes): the reference's per-episode loss is total / BATCH_SIZE
    torch.testing.assert_close(result.total.detach() / batch_size, reference["train_net_few_shot_total"], **TOLERANCE)
    assert all(parameter.grad is not None for parameter in head.parameters())


def test_reference_state_dict_errors_list_keys() -> None:
    fixture = torch.load(first_parity_fixture("hyrsm"), weights_only=True)
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
    config = HeadConfig(dim=32, frames=6, num_base_classes=10, options={"heads": 4, **options})
    return hyrsm.HyrsmHead(config).eval()


@pytest.mark.parametrize(("shot", "set_items"), [(1, "auto"), (3, "auto"), (2, "videos")])
def test_batched_episodes_equal_single(shot: int, set_items: str) -> None:
    head = small_head(set_items=set_items)
    episodes, way, num_query, frames = 3, 4, 5, 6
    generator = torch.Generator().manual_seed(1)
    support_features = torch.rand(episodes, way * shot, frames, 32, generator=generator)
    query_features = torch.rand(episodes, num_query, frames, 32, generator=generator)
    assert_batched_logits_match_single(head, support_features, query_features, shot)


def test_unknown_option_and_card() -> None:
    with pytest.raises(ValueError, match="unknown HyrsmHead option 'head_count'. Did you mean 'heads'"):
        small_head(head_count=4)
    (card,) = hyrsm.CARDS
    assert card.name == "hyrsm" and card.head is hyrsm.HyrsmHead
    assert {"ssv2-full", "ssv2-small", "kinetics100", "ucf101", "hmdb51", "synthetic"} <= set(card.recipes)
    assert card.published[("ssv2-full", 1)] == 54.3


def test_recipes_follow_the_released_configs() -> None:
    """The released SOLVER blocks kept as released, per-shot queries, PE constants and λ_cls as head options."""
    recipes = hyrsm.HYRSM_RECIPES
    kinetics = recipes["kinetics100-molo"]
    assert kinetics.head_options == {"classification_weight": 0.4, "position_a": 2048.0, "position_b": 0.01}
    assert recipes["kinetics100"].head_options == kinetics.head_options  # the same config on the CMN list
    assert loss_weight_names(hyrsm.HyrsmOptions) == ("classification_weight",)
    weights = {name: recipes[name].head_options["classification_weight"] for name in recipes}
    assert weights == {"ssv2-full": 0.6, "ssv2-small": 0.15, "kinetics100": 0.4, "kinetics100-molo": 0.4,
                       "ucf101": 0.15, "hmdb51": 0.15, "finegym": 0.6, "synthetic": 0.6}
    assert (kinetics.steps_iter, kinetics.steps, kinetics.lrs) == (100, (0, 4, 6, 9), (1, 0.5, 0.1, 0.05))
    assert decay_points(kinetics) == [(200, 0.5), (300, 0.1), (500, 0.05)]  # as run
    assert decay_points(recipes["ucf101"]) == [(1400, 0.5), (2100, 0.1)] and recipes["hmdb51"].episodes_per_step == 8
    for name in recipes:
        assert [recipes[name].train_queries(shot) for shot in range(1, 6)] == [7, 6, 5, 4, 3]
    for name in ("ssv2-full", "ssv2-small", "kinetics100", "ucf101", "hmdb51"):  # the optimiser's, not SOLVER's
        assert recipes[name].weight_decay == 1e-3 and recipes[name].no_decay[:2] == ("bn", "norm")
    starts = {name: recipes[name].warmup_start_lr for name in ("ssv2-full", "ssv2-small", "kinetics100", "ucf101", "hmdb51")}
    assert starts == {"ssv2-full": 2e-5, "ssv2-small": 2e-5, "kinetics100": 5e-6, "ucf101": 1e-5, "hmdb51": 1e-5}


def test_warm_up_ramps_linearly_over_all_of_steps_iter() -> None:
    ucf = hyrsm.HYRSM_RECIPES["ucf101"]  # warm-up over reference iterations [0, 700) from 1e-5 to 5e-5
    assert math.isclose(learning_rate(ucf, 0), 1e-5 + 4e-5 * 3 / 700)  # step 0 applies at iteration 3
    assert math.isclose(learning_rate(ucf, 87), 1e-5 + 4e-5 * (87 * 4 + 3) / 700)
    assert learning_rate(ucf, 175) == 5e-5  # iteration 703
    synthetic = hyrsm.HYRSM_RECIPES["synthetic"]
    assert synthetic.warmup == 0 and synthetic.steps_iter == 0 and learning_rate(synthetic, 0) == synthetic.lr
