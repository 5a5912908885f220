"""MoLo against the reference fixtures in tests/data/parity (semantics: its README), ablations, batching, training."""

from __future__ import annotations

import functools
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
from methods import molo
from tests.conftest import assert_batched_logits_match_single, first_parity_fixture, parity_fixtures

TOLERANCE = {"atol": 1e-5, "rtol": 1e-5}
FIXTURES = parity_fixtures("molo")
CONTRASTIVE = ("logits_s2q", "logits_q2s", "logits_s2q_motion", "logits_q2s_motion")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@functools.cache
def fixture(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def build_from_fixture(data: dict) -> nn.Module:
    meta, train_cfg = data["meta"], data["meta"]["cfg"]["TRAIN"]
    options = {
        "heads": meta["heads"],
        "classification_weight": train_cfg["USE_CLASSIFICATION_VALUE"],
        "contrastive_weight": train_cfg["USE_CONTRASTIVE_COFF"],
        "reconstruction_weight": train_cfg["RECONS_COFF"],
        "reference_batch_size": train_cfg["BATCH_SIZE"],
        "position_a": float(train_cfg.get("POSITION_A", 10)),
        "position_b": float(train_cfg.get("POSITION_B", 1)),
    }
    config = HeadConfig(
        dim=meta["d"], frames=meta["T"], num_base_classes=meta["num_class"],
        feature_size=(meta["H"], meta["W"]), options=options,
    )
    head = molo.MoloHead(config)
    head.load_reference_state_dict(data["state_dict"])  # before each mode: train-mode BN updates running stats
    return head


def episode_inputs(data: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, TrainEpisode]:
    """(support order, class-major support maps [N*K, T, d, H, W], query maps [Q, T, d, H, W], episode with pixels)."""
    inputs, meta = data["inputs"], data["meta"]
    frames, dim, height, width = meta["T"], meta["d"], meta["H"], meta["W"]
    order = torch.sort(inputs["support_labels"].long(), stable=True).indices
    factor = int(inputs["pixel_upsample_factor"])

    def pixels(lowres: torch.Tensor) -> torch.Tensor:
        full = lowres.repeat_interleave(factor, -2).repeat_interleave(factor, -1)
        return full.reshape(-1, frames, *full.shape[1:])

    episode = TrainEpisode(
        way=meta["way"],
        shot=meta["shot"],
        query_labels=inputs["query_labels"].long(),
        class_base_ids=inputs["batch_class_list"].long(),
        support_pixels=pixels(inputs["support_pixels_lowres"])[order],
        query_pixels=pixels(inputs["query_pixels_lowres"]),
    )
    assert torch.equal(episode.support_base_labels, inputs["real_support_labels"][order].long())
    support_maps = inputs["support_features"].reshape(-1, frames, dim, height, width)[order]
    query_maps = inputs["query_features"].reshape(-1, frames, dim, height, width)
    return order, support_maps, query_maps, episode


@pytest.mark.parametrize("path", FIXTURES)
def test_eval_outputs_match_reference(path: Path) -> None:
    data = fixture(path)
    outputs, reference, meta = data["outputs"]["eval"], data["outputs"]["intermediates"], data["meta"]
    head = build_from_fixture(data).eval()
    order, support_maps, query_maps, episode = episode_inputs(data)
    with torch.no_grad():
        result = head.episode_outputs(support_maps, query_maps, episode.way, episode.shot)
        cached = head.logits(
            support_to_episode(head.encode(support_maps), episode.way, episode.shot),
            add_episode_axis(head.encode(query_maps)),
        )[0]
    num_support, frames = order.numel(), meta["T"]
    video_rows = torch.cat([order, num_support + torch.arange(query_maps.shape[0])])
    tokens = result["tokens"]
    torch.testing.assert_close(result["logits"], outputs["logits"], **TOLERANCE)
    torch.testing.assert_close(cached, outputs["logits"], **TOLERANCE)
    torch.testing.assert_close(result["class_logits"], outputs["class_logits"][video_rows], **TOLERANCE)
    for name in CONTRASTIVE:
        torch.testing.assert_close(result[name], outputs[name], **TOLERANCE)
    for kind, count in (("rgb", frames + 1), ("motion", frames)):
        torch.testing.assert_close(tokens[kind][:num_support], reference[f"{kind}_tokens_support"][order], **TOLERANCE)
        torch.testing.assert_close(tokens[kind][num_support:], reference[f"{kind}_tokens_query"], **TOLERANCE)
        assert tokens[kind].shape[1] == count
    differences = tokens["motion_diff"]  # [V, T-1, c, H, W]; the reference's rows are video-major
    reference_support = reference["motion_diff_support"].reshape(num_support, frames - 1, *differences.shape[2:])
    torch.testing.assert_close(differences[:num_support], reference_support[order], **TOLERANCE)
    torch.testing.assert_close(differences[num_support:].flatten(0, 1), reference["motion_diff_query"], **TOLERANCE)


@pytest.mark.parametrize("path", FIXTURES)
def test_train_losses_and_reconstruction_match_reference(path: Path) -> None:
    data = fixture(path)
    outputs, losses, meta = data["outputs"]["train"], data["outputs"]["loss"], data["meta"]
    head = build_from_fixture(data).train()
    for module in head.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    order, support_maps, query_maps, episode = episode_inputs(data)
    with torch.no_grad():  # one decoder pass: head.loss(...) == head.loss_terms(head.episode_outputs(...))
        result = head.episode_outputs(
            support_maps, query_maps, episode.way, episode.shot, episode.support_pixels, episode.query_pixels
        )
        loss = head.loss_terms(result, episode)

    video_rows = torch.cat([order, order.numel() + torch.arange(query_maps.shape[0])])
    torch.testing.assert_close(loss.logits, outputs["logits"], **TOLERANCE)
    torch.testing.assert_close(result["class_logits"], outputs["class_logits"][video_rows], **TOLERANCE)
    for name in CONTRASTIVE:
        torch.testing.assert_close(result[name], outputs[name], **TOLERANCE)
    for name in ("ce_episode", "ce_base_class", "loss_recons", *(f"ce_{name}" for name in CONTRASTIVE)):
        torch.testing.assert_close(loss.terms[name], losses[name], **TOLERANCE)
    torch.testing.assert_close(loss.terms["loss_recons"], outputs["loss_recons"], **TOLERANCE)
    # documented mapping (card notes): the reference's per-episode loss is total / BATCH_SIZE
    batch_size = meta["cfg"]["TRAIN"]["BATCH_SIZE"]
    torch.testing.assert_close(loss.total / batch_size, losses["train_net_few_shot_total"], **TOLERANCE)

    reconstruction = result["reconstruction"]  # rows: support videos (class-major here), then queries; T-1 each
    steps = meta["T"] - 1
    support_rows = (order[:, None] * steps + torch.arange(steps)).flatten()
    rows = torch.cat([support_rows, order.numel() * steps + torch.arange(query_maps.shape[0] * steps)])
    torch.testing.assert_close(reconstruction.mean(dim=(-2, -1)), outputs["recons_mean_hw"][rows], **TOLERANCE)
    torch.testing.assert_close(reconstruction.pow(2).mean(dim=(-2, -1)), outputs["recons_sqmean_hw"][rows], **TOLERANCE)
    first_row = int((support_rows == 0).nonzero())
    torch.testing.assert_close(reconstruction[[first_row, -1]], outputs["recons_slice"], **TOLERANCE)


def test_reference_state_dict_errors_list_keys() -> None:
    data = fixture(first_parity_fixture("molo"))
    head = build_from_fixture(data)
    broken = dict(data["state_dict"])
    del broken["up2.conv.double_conv.1.running_var"]
    broken["temporal_atte_before.layers.0.2.norm.weight"] = torch.zeros(1)
    broken["class_token"] = broken["class_token"][0]
    with pytest.raises(ReferenceStateError) as error:
        head.load_reference_state_dict(broken)
    message = str(error.value)
    assert "missing: up2.conv.double_conv.1.running_var" in message
    assert "unexpected: temporal_atte_before.layers.0.2.norm.weight" in message
    assert "wrong shape: class_token" in message
    no_motion = molo.MoloHead(HeadConfig(64, 8, 64, (3, 3), {"use_motion": False}))
    with pytest.raises(ReferenceStateError, match="unexpected: motion_reduce.weight"):
        no_motion.load_reference_state_dict(data["state_dict"])


def small_head(card_name: str = "molo", **options: object) -> nn.Module:
    card = {card.name: card for card in molo.CARDS}[card_name]
    torch.manual_seed(0)
    config = HeadConfig(dim=32, frames=5, num_base_classes=10, feature_size=(2, 2),
                        options={**card.options, "heads": 4, **options})
    return card.head(config).eval()


def toy_episode(way: int, shot: int, queries: int, size: int = 64) -> tuple[torch.Tensor, torch.Tensor, TrainEpisode]:
    generator = torch.Generator().manual_seed(3)
    prototypes = torch.rand(way, 1, 32, 2, 2, generator=generator)

    def maps(count: int) -> torch.Tensor:
        noise = 0.3 * torch.randn(way * count, 5, 32, 2, 2, generator=generator)
        return torch.relu(prototypes.repeat_interleave(count, 0) + noise)

    episode = TrainEpisode(
        way, shot, torch.arange(way).repeat_interleave(queries), torch.tensor([4, 7, 1][:way]),
        support_pixels=torch.randn(way * shot, 5, 3, size, size, generator=generator),
        query_pixels=torch.randn(way * queries, 5, 3, size, size, generator=generator),
    )
    return maps(shot), maps(queries), episode


@pytest.mark.parametrize("card_name", ["molo", "molo-no-motion", "molo-no-contrastive", "molo-no-recons"])
def test_ablations_build_and_score(card_name: str) -> None:
    head = small_head(card_name).train()
    support, query, episode = toy_episode(3, 2, 2)
    with torch.no_grad():
        logits = head.logits(support_to_episode(head.encode(support), 3, 2), add_episode_axis(head.encode(query)))
    assert logits.shape == (1, 6, 3)
    terms = set(head.loss(support, query, episode).terms)
    assert ("ce_logits_s2q" in terms) == (card_name != "molo-no-contrastive")
    assert ("ce_logits_s2q_motion" in terms) == (card_name in ("molo", "molo-no-recons"))
    assert ("loss_recons" in terms) == (card_name in ("molo", "molo-no-contrastive"))


@pytest.mark.parametrize("shot", [1, 3])
def test_batched_episodes_equal_single(shot: int) -> None:
    head = small_head()
    episodes, way, num_query = 3, 4, 5
    generator = torch.Generator().manual_seed(1)
    support_maps = torch.rand(episodes, way * shot, 5, 32, 2, 2, generator=generator)
    query_maps = torch.rand(episodes, num_query, 5, 32, 2, 2, generator=generator)
    assert_batched_logits_match_single(head, support_maps, query_maps, shot)


def test_few_adam_steps_reduce_loss_and_resized_target_warns() -> None:
    head = small_head().train()
    support, query, episode = toy_episode(3, 2, 2)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        result = head.loss(support, query, episode)
        result.total.backward()
        optimizer.step()
        losses.append(result.total.item())
        assert all(parameter.grad is not None for parameter in head.parameters())
    assert losses[-1] < losses[0]
    support, query, episode = toy_episode(3, 1, 1, size=48)
    with pytest.warns(UserWarning, match="resizing the reconstruction target"):
        head.loss(support, query, episode)
    episode.query_pixels = None
    with pytest.raises(ValueError, match="query_pixels"):
        head.loss(support, query, episode)


def test_cards() -> None:
    cards = {card.name: card for card in molo.CARDS}
    assert set(cards) == {"molo", "molo-no-motion", "molo-no-contrastive", "molo-no-recons"}
    for card in cards.values():  # every recipe's options parse: tests/test_methods_contract.py
        assert {"ssv2-full", "ssv2-small", "kinetics100", "ucf101", "hmdb51", "synthetic"} <= set(card.recipes)
    assert cards["molo"].published[("kinetics100-molo", 1)] == 74.0  # measured on MoLo's own Kinetics list


def test_recipes_put_positional_constants_in_head_options() -> None:
    recipes = molo.MOLO_RECIPES
    weights = {"classification_weight", "reconstruction_weight", "contrastive_weight"}
    assert set(loss_weight_names(molo.MoloOptions)) == weights
    assert recipes["kinetics100"].head_options == {"position_a": 2048.0, "position_b": 0.02, "classification_weight": 0.1,
                                                   "reconstruction_weight": 0.1, "contrastive_weight": 0.05}
    for recipe in recipes.values():
        assert weights <= set(recipe.head_options)
    assert recipes["ssv2-full"].lrs == (1, 0.1, 0.01) and recipes["ssv2-full"].train_queries(5) == 6
    assert recipes["ssv2-full"].steps_iter == 6000 and recipes["kinetics100-molo"].frame_sampler == "molo-kinetics"
