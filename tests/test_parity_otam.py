"""OTAM parity with the reference fixtures (every ``otam_*.pt`` in the parity folder).

Everything is built from each fixture's meta, so hidden fixtures with other seeds and shapes
run unchanged. Semantics: ``tests/data/parity/README.md`` (OTAM).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fsar_bench.api import HeadConfig, ReferenceStateError, TrainEpisode, expand_pairs
from methods.otam import OTAMHead
from tests.conftest import first_parity_fixture, parity_fixtures

TOLERANCE = {"atol": 1e-5, "rtol": 1e-5}
FIXTURES = parity_fixtures("otam")


def _load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def _build(fixture: dict) -> OTAMHead:
    meta = fixture["meta"]
    head = OTAMHead(HeadConfig(dim=meta["d"], frames=meta["T"], num_base_classes=64))
    head.load_reference_state_dict(fixture["state_dict"])
    return head


def _class_major_order(fixture: dict) -> torch.Tensor:
    """Stable sort of the shuffled support labels: [N*K] indices into the input support order."""
    return torch.sort(fixture["inputs"]["support_labels"].long(), stable=True).indices


def _episode_reps(head: OTAMHead, fixture: dict) -> tuple[dict, dict]:
    """Support reps [1, N, K, ...] (class-major) and query reps [1, Q, ...]."""
    meta, inputs = fixture["meta"], fixture["inputs"]
    support = head.encode(inputs["support_features"][_class_major_order(fixture)])
    query = head.encode(inputs["query_features"])
    support = {key: value.reshape(1, meta["way"], meta["shot"], *value.shape[1:]) for key, value in support.items()}
    return support, {key: value.unsqueeze(0) for key, value in query.items()}


def _per_support(reference: torch.Tensor, fixture: dict) -> torch.Tensor:
    """Reference [Q, N*K, ...] in input support order -> [Q, N, K, ...] class-major."""
    meta = fixture["meta"]
    reordered = reference[:, _class_major_order(fixture)]
    return reordered.reshape(reordered.shape[0], meta["way"], meta["shot"], *reordered.shape[2:])


def _frame_distances(head: OTAMHead, support: dict, query: dict) -> torch.Tensor:
    """support [E, N, K, T, d], query [E, Q, T, d] -> D [E, Q, N, K, T, T] (the head's pair distances per episode)."""
    pair_support, pair_query, lead = expand_pairs(support, query)
    distances = head.pair_distances(pair_support, pair_query)
    return distances.reshape(*lead, *distances.shape[1:])


def _alignment_costs(head: OTAMHead, support: dict, query: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(query->support, support->query) costs of every episode pair, each [E, Q, N, K]."""
    pair_support, pair_query, lead = expand_pairs(support, query)
    query_to_support, support_to_query = head.pair_costs(pair_support, pair_query)
    return query_to_support.reshape(lead), support_to_query.reshape(lead)


@pytest.mark.parametrize("path", FIXTURES)
def test_eval_logits_and_intermediates(path: Path) -> None:
    fixture = _load(path)
    head = _build(fixture).eval()
    intermediates = fixture["outputs"]["intermediates"]
    with torch.no_grad():
        support, query = _episode_reps(head, fixture)
        logits = head.logits(support, query)[0]
        distances = _frame_distances(head, support, query)[0]
        query_to_support, support_to_query = _alignment_costs(head, support, query)
    torch.testing.assert_close(logits, fixture["outputs"]["eval"]["logits"], **TOLERANCE)
    torch.testing.assert_close(distances, _per_support(intermediates["frame_dists"], fixture), **TOLERANCE)
    torch.testing.assert_close(query_to_support[0], _per_support(intermediates["cum_dist_q2s"], fixture), **TOLERANCE)
    torch.testing.assert_close(support_to_query[0], _per_support(intermediates["cum_dist_s2q"], fixture), **TOLERANCE)


@pytest.mark.parametrize("path", FIXTURES)
def test_train_logits_and_losses(path: Path) -> None:
    fixture = _load(path)
    meta, inputs, losses = fixture["meta"], fixture["inputs"], fixture["outputs"]["loss"]
    head = _build(fixture).train()
    support_features = inputs["support_features"][_class_major_order(fixture)].clone().requires_grad_(True)
    episode = TrainEpisode(
        way=meta["way"],
        shot=meta["shot"],
        query_labels=inputs["query_labels"].long(),
        class_base_ids=inputs["batch_class_list"].long(),
    )
    output = head.loss(support_features, inputs["query_features"], episode)
    torch.testing.assert_close(output.logits.detach(), fixture["outputs"]["train"]["logits"], **TOLERANCE)
    torch.testing.assert_close(output.total.detach(), losses["ce_episode"], **TOLERANCE)
    torch.testing.assert_close(output.total.detach() / 16, losses["perrett_fsar_task_loss"], **TOLERANCE)
    torch.testing.assert_close(output.total.detach() / 4, losses["train_net_few_shot_total"], **TOLERANCE)
    output.total.backward()
    assert support_features.grad is not None and torch.isfinite(support_features.grad).all()


def test_state_dict_is_empty_and_unexpected_keys_raise() -> None:
    head = OTAMHead(HeadConfig(dim=8, frames=4, num_base_classes=4))
    assert head.state_dict() == {}
    head.load_reference_state_dict({})
    with pytest.raises(ReferenceStateError, match="unexpected: k_linear.weight"):
        head.load_reference_state_dict({"head.k_linear.weight": torch.zeros(2, 2)})
