"""STRM against the reference fixtures (every ``strm_*.pt`` in the parity folder), plus batching and training.

Every size comes from each fixture's meta (d, T, H×W, TRX out dim, cardinalities, way, shot), so fixtures with
other seeds and shapes run unchanged. Semantics: ``tests/data/parity/README.md`` (STRM).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import pytest
import torch
from torch import nn

from fsar_bench.api import HeadConfig, OptionError, ReferenceStateError, TrainEpisode, add_episode_axis, support_to_episode
from methods import strm
from tests.conftest import assert_batched_logits_match_single, first_parity_fixture, parity_fixtures

TOLERANCE = {"atol": 1e-5, "rtol": 1e-5}
FIXTURES = parity_fixtures("strm")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@functools.cache
def fixture(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def build_from_fixture(data: dict) -> strm.StrmHead:
    meta = data["meta"]
    options = {"out_dim": meta["trx_out_dim"], "cardinalities": tuple(meta["temp_set"])}
    config = HeadConfig(dim=meta["d"], frames=meta["T"], num_base_classes=64, feature_size=(meta["H"], meta["W"]),
                        options=options)
    head = strm.StrmHead(config)
    head.load_reference_state_dict(data["state_dict"])
    return head


def episode_inputs(data: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, TrainEpisode]:
    """(class-major order, support maps [N*K, T, d, H, W] in input order, query maps [Q, T, d, H, W], episode)."""
    inputs, meta = data["inputs"], data["meta"]
    shape = (meta["T"], meta["d"], meta["H"], meta["W"])
    order = torch.sort(inputs["support_labels"].long(), stable=True).indices
    episode = TrainEpisode(way=meta["way"], shot=meta["shot"], query_labels=inputs["query_labels"].long(),
                           class_base_ids=inputs["batch_class_list"].long())
    support = inputs["support_features"].reshape(-1, *shape)
    query = inputs["query_features"].reshape(-1, *shape)
    return order, support, query, episode


def no_dropout(head: nn.Module) -> nn.Module:
    for module in head.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    head.options = dataclasses.replace(head.options, post_pattern_dropout=0.0)
    return head


@pytest.mark.parametrize("path", FIXTURES)
def test_eval_outputs_and_intermediates_match_reference(path: Path) -> None:
    data = fixture(path)
    outputs, reference = data["outputs"]["eval"], data["outputs"]["intermediates"]
    head = build_from_fixture(data).eval()
    order, support_maps, query_maps, episode = episode_inputs(data)
    with torch.no_grad():
        branches = head.branch_logits(support_to_episode(head.encode(support_maps[order]), episode.way, episode.shot),
                                      add_episode_axis(head.encode(query_maps)))
        patch_support, patch_query = head.patch_enriched(support_maps), head.patch_enriched(query_maps)
        frame_support, frame_query = head.frame_enrichment(patch_support), head.frame_enrichment(patch_query)
    torch.testing.assert_close(branches["trx"][0], outputs["logits"], **TOLERANCE)
    torch.testing.assert_close(branches["post_pattern"][0], outputs["logits_post_pat"], **TOLERANCE)
    torch.testing.assert_close(branches["logits"][0], outputs["test_logits"], **TOLERANCE)
    torch.testing.assert_close(patch_support, reference["patch_enriched_support"], **TOLERANCE)
    torch.testing.assert_close(patch_query, reference["patch_enriched_query"], **TOLERANCE)
    torch.testing.assert_close(frame_support, reference["frame_enriched_support"], **TOLERANCE)
    torch.testing.assert_close(frame_query, reference["frame_enriched_query"], **TOLERANCE)
    if len(head.cardinalities) == 1:
        torch.testing.assert_close(branches["trx"][0], reference["trx_logits_card0"], **TOLERANCE)
        torch.testing.assert_close(branches["post_pattern"][0], reference["post_pat_logits_card0"], **TOLERANCE)


@pytest.mark.parametrize("path", FIXTURES)
def test_train_logits_and_losses_match_reference(path: Path) -> None:
    data = fixture(path)
    outputs, losses, meta = data["outputs"]["train"], data["outputs"]["loss"], data["meta"]
    head = no_dropout(build_from_fixture(data).train())
    order, support_maps, query_maps, episode = episode_inputs(data)
    result = head.loss(support_maps[order], query_maps, episode)
    result.total.backward()
    with torch.no_grad():
        branches = head.branch_logits(support_to_episode(head.encode(support_maps[order]), episode.way, episode.shot),
                                      add_episode_axis(head.encode(query_maps)))
    torch.testing.assert_close(branches["trx"][0], outputs["logits"], **TOLERANCE)
    torch.testing.assert_close(branches["post_pattern"][0], outputs["logits_post_pat"], **TOLERANCE)
    torch.testing.assert_close(result.terms["ce_episode"].detach(), losses["ce_episode"], **TOLERANCE)
    torch.testing.assert_close(result.terms["ce_post_pattern"].detach(), losses["ce_post_pat"], **TOLERANCE)
    # card notes: the trainer divides total by episodes_per_step (run.py's tasks_per_batch)
    tasks_per_batch = meta["cfg"]["args"]["tasks_per_batch"]
    torch.testing.assert_close(result.total.detach() / tasks_per_batch, losses["strm_official_task_loss"], **TOLERANCE)
    trainable = [name for name, parameter in head.named_parameters() if parameter.requires_grad]
    assert all(head.get_parameter(name).grad is not None for name in trainable)
    assert not any(name.startswith("post_pattern.") for name in trainable)  # clsW frozen, as in the reference


def test_reference_checkpoint_layout_loads_without_projection() -> None:
    """Real checkpoints: DataParallel-wrapped enrichment modules, no clsW (kept at its seeded draw), no tuples."""
    data = fixture(first_parity_fixture("strm"))
    head = build_from_fixture(data)
    drawn = {key: value.clone() for key, value in head.state_dict().items() if key.startswith("post_pattern.")}
    real = {}
    for key, value in data["state_dict"].items():
        if key.startswith("new_dist_loss_post_pat."):
            continue
        for wrapped in ("attn_pat.", "fr_enrich."):
            if key.startswith(wrapped):
                key = wrapped + "module." + key[len(wrapped):]
        real[key] = value + 1
    head.load_reference_state_dict(real)
    state = head.state_dict()
    for key, value in drawn.items():
        assert torch.equal(state[key], value)
    torch.testing.assert_close(state["patch_attention.gamma"], data["state_dict"]["attn_pat.gamma"] + 1)

    broken = dict(data["state_dict"])
    del broken["attn_pat.query_proj.weight"]
    broken["fr_enrich.Tok_MLP.inp_fc.weight"] = broken["fr_enrich.Tok_MLP.inp_fc.weight"][:1]
    broken["transformers.0.extra"] = torch.zeros(1)
    with pytest.raises(ReferenceStateError) as error:
        head.load_reference_state_dict(broken)
    message = str(error.value)
    assert "missing: attn_pat.query_proj.weight" in message
    assert "wrong shape: fr_enrich.Tok_MLP.inp_fc.weight" in message
    assert "unexpected: transformers.0.extra" in message


def small_head(**options: object) -> strm.StrmHead:
    torch.manual_seed(0)
    config = HeadConfig(dim=16, frames=5, num_base_classes=10, feature_size=(3, 2),
                        options={"out_dim": 8, **options}, method="strm")
    head = strm.StrmHead(config).eval()
    with torch.no_grad():
        head.patch_attention.gamma.fill_(0.7)
    return head


@pytest.mark.parametrize(("shot", "cardinalities"), [(1, (2,)), (3, (2,)), (2, (2, 3))])
def test_batched_episodes_equal_single(shot: int, cardinalities: tuple[int, ...]) -> None:
    head = small_head(cardinalities=cardinalities)
    episodes, way, num_query = 3, 4, 5
    generator = torch.Generator().manual_seed(1)
    support_maps = torch.rand(episodes, way * shot, 5, 16, 3, 2, generator=generator)
    query_maps = torch.rand(episodes, num_query, 5, 16, 3, 2, generator=generator)
    assert_batched_logits_match_single(head, support_maps, query_maps, shot)


def test_test_time_dropout_is_off_unless_reference_behaviour_is_asked() -> None:
    maps = torch.rand(2, 5, 16, 3, 2, generator=torch.Generator().manual_seed(4))
    head = small_head()
    with torch.no_grad():
        assert torch.equal(head.encode(maps)["embed2"], head.encode(maps)["embed2"])
    head.options = dataclasses.replace(head.options, post_pattern_test_dropout=True, post_pattern_dropout=0.5)
    with torch.no_grad():
        assert not torch.equal(head.encode(maps)["embed2"], head.encode(maps)["embed2"])


def test_options_and_card() -> None:
    with pytest.raises(OptionError, match="unknown strm option 'tuple_sizes'"):
        small_head(tuple_sizes=(2,))
    with pytest.raises(OptionError, match="cardinalities"):
        small_head(cardinalities=(2, 2))
    (card,) = strm.CARDS
    assert card.name == "strm" and card.head is strm.StrmHead
    assert {"ssv2-full", "ssv2-small", "kinetics100", "ucf101", "hmdb51", "synthetic"} <= set(card.recipes)
    trained = small_head(train_post_pattern_projection=True)  # the paper's intent: clsW trained
    assert all(parameter.requires_grad for parameter in trained.post_pattern.parameters())
    kinetics = card.recipes["kinetics100"]
    assert (kinetics.optimizer, kinetics.lr, kinetics.momentum, kinetics.episodes_per_step) == ("sgd", 1e-4, 0.0, 16)
    assert kinetics.train_queries_per_class == 5 and card.recipes["ssv2-full"].iterations == 75_010
