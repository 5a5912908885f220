"""TEAM against the reference fixtures (every ``team_*.pt`` in the parity folder), plus batching and training.

Every size comes from each fixture's meta (d, T, H×W, A, way, shot), so fixtures with other seeds and shapes
run unchanged. Semantics: ``tests/data/parity/README.md`` (TEAM).
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from torch import nn

from fsar_bench.api import HeadConfig, OptionError, ReferenceStateError, TrainEpisode, add_episode_axis, support_to_episode
from methods import team
from tests.conftest import assert_batched_logits_match_single, first_parity_fixture, parity_fixtures

TOLERANCE = {"atol": 1e-5, "rtol": 1e-5}
FIXTURES = parity_fixtures("team")
LOGITS = ("logits", "logits_pos", "logits_neg")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@functools.cache
def fixture(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def build_from_fixture(data: dict) -> team.TeamHead:
    meta = data["meta"]
    config = HeadConfig(dim=meta["d"], frames=meta["T"], num_base_classes=64, feature_size=(meta["H"], meta["W"]),
                        options={"pattern_tokens": meta["agg_num"]})
    head = team.TeamHead(config)
    head.load_reference_state_dict(data["state_dict"])
    return head


def episode_inputs(data: dict) -> tuple[torch.Tensor, torch.Tensor, TrainEpisode]:
    """(class-major support maps [N*K, T, d, H, W], query maps [Q, T, d, H, W], episode)."""
    inputs, meta = data["inputs"], data["meta"]
    shape = (meta["T"], meta["d"], meta["H"], meta["W"])
    order = torch.sort(inputs["support_labels"].long(), stable=True).indices
    episode = TrainEpisode(way=meta["way"], shot=meta["shot"], query_labels=inputs["query_labels"].long(),
                           class_base_ids=inputs["batch_class_list"].long())
    return inputs["support_features"].reshape(-1, *shape)[order], inputs["query_features"].reshape(-1, *shape), episode


@pytest.mark.parametrize("path", FIXTURES)
def test_eval_outputs_and_intermediates_match_reference(path: Path) -> None:
    data = fixture(path)
    outputs, reference = data["outputs"]["eval"], data["outputs"]["intermediates"]
    head = build_from_fixture(data).eval()
    support_maps, query_maps, episode = episode_inputs(data)
    with torch.no_grad():
        query = head.encode(query_maps)
        result = head.episode_outputs(support_to_episode(head.encode(support_maps), episode.way, episode.shot),
                                      add_episode_axis(query))
    for name in LOGITS:
        torch.testing.assert_close(result[name][0], outputs[name], **TOLERANCE)
    torch.testing.assert_close(query["pos"], reference["query_patterns_pos"], **TOLERANCE)
    torch.testing.assert_close(query["neg"], reference["query_patterns_neg"], **TOLERANCE)
    for ours, theirs in (("support_pos", "support_patterns_pos"), ("support_neg", "support_patterns_neg"),
                         ("sim_pos", "support_sim_pos"), ("sim_neg", "support_sim_neg"),
                         ("disc_pos", "support_disc_pos"), ("disc_neg", "support_disc_neg")):
        torch.testing.assert_close(result[ours][0], reference[theirs], **TOLERANCE)


@pytest.mark.parametrize("path", FIXTURES)
def test_train_logits_and_losses_match_reference(path: Path) -> None:
    data = fixture(path)
    outputs, losses, meta = data["outputs"]["train"], data["outputs"]["loss"], data["meta"]
    head = build_from_fixture(data).train()
    for module in head.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    support_maps, query_maps, episode = episode_inputs(data)
    result = head.loss(support_maps, query_maps, episode)
    result.total.backward()
    torch.testing.assert_close(result.logits.detach(), outputs["logits"], **TOLERANCE)
    torch.testing.assert_close(result.terms["ce_pos"].detach(), losses["ce_pos"], **TOLERANCE)
    torch.testing.assert_close(result.terms["ce_neg"].detach(), losses["ce_neg"], **TOLERANCE)
    # card notes: run_train.py divides by tasks_per_batch, the trainer by episodes_per_step
    tasks_per_batch = meta["cfg"]["args"]["tasks_per_batch"]
    torch.testing.assert_close(result.total.detach() / tasks_per_batch, losses["team_task_loss"], **TOLERANCE)
    assert all(parameter.grad is not None for parameter in head.parameters())


def test_reference_state_dict_errors_list_keys() -> None:
    data = fixture(first_parity_fixture("team"))
    head = build_from_fixture(data)
    head.load_reference_state_dict({f"module.{key}": value for key, value in data["state_dict"].items()})
    broken = dict(data["state_dict"])
    del broken["DPM.ln.weight"]
    broken["DPM.AP"] = broken["DPM.AP"][:, :3]
    broken["DPM.extra"] = torch.zeros(1)
    with pytest.raises(ReferenceStateError) as error:
        head.load_reference_state_dict(broken)
    message = str(error.value)
    assert "missing: DPM.ln.weight" in message
    assert "wrong shape: DPM.AP" in message
    assert "unexpected: DPM.extra" in message


def small_head(**options: object) -> team.TeamHead:
    torch.manual_seed(0)
    config = HeadConfig(dim=16, frames=5, num_base_classes=10, feature_size=(2, 2),
                        options={"pattern_tokens": 6, **options}, method="team")
    return team.TeamHead(config).eval()


@pytest.mark.parametrize("shot", [1, 3])
def test_batched_episodes_equal_single(shot: int) -> None:
    head = small_head()
    episodes, way, num_query = 3, 4, 5
    generator = torch.Generator().manual_seed(1)
    support_maps = torch.rand(episodes, way * shot, 5, 16, 2, 2, generator=generator)
    query_maps = torch.rand(episodes, num_query, 5, 16, 2, 2, generator=generator)
    assert_batched_logits_match_single(head, support_maps, query_maps, shot)


def test_negative_distance_never_uses_the_own_class() -> None:
    distances = torch.tensor([[[1.0, 5.0, 3.0, 2.0]]])
    assert team._max_over_other_classes(distances).tolist() == [[[5.0, 3.0, 5.0, 5.0]]]


def test_options_and_card() -> None:
    with pytest.raises(OptionError, match="unknown team option 'agg_num'"):
        small_head(agg_num=4)
    (card,) = team.CARDS
    assert card.name == "team" and card.head is team.TeamHead
    assert {"ssv2-full", "ssv2-small", "kinetics100", "ucf101", "hmdb51", "synthetic"} <= set(card.recipes)
    ucf = card.recipes["ucf101"]
    assert (ucf.optimizer, ucf.lr, ucf.momentum, ucf.weight_decay, ucf.episodes_per_step) == ("sgd", 1e-3, 0.9, 5e-4, 16)
    assert ucf.lr_steps == (3000, 5000, 7000) and abs(ucf.lr_multiplier(9999) - 0.01) < 1e-12 and ucf.warmup == 0
