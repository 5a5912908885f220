"""TRX parity with the reference fixtures (every ``trx_*.pt`` in the parity folder).

Everything is built from each fixture's meta (d, T, out dim, way, shot), so hidden fixtures
with other seeds and shapes run unchanged. Semantics: ``tests/data/parity/README.md`` (TRX).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from fsar_bench.api import HeadConfig, ReferenceStateError, TrainEpisode
from methods.trx import TRXHead
from tests.conftest import first_parity_fixture, parity_fixtures

TOLERANCE = {"atol": 1e-5, "rtol": 1e-5}
FIXTURES = parity_fixtures("trx")


def _load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def _config(meta: dict) -> HeadConfig:
    return HeadConfig(dim=meta["d"], frames=meta["T"], num_base_classes=64, options={"out_dim": meta["trx_out_dim"]})


def _build(fixture: dict) -> TRXHead:
    head = TRXHead(_config(fixture["meta"]))
    head.load_reference_state_dict(fixture["state_dict"])
    return head


def _class_major_order(fixture: dict) -> torch.Tensor:
    """Stable sort of the shuffled support labels: [N*K] indices into the input support order."""
    return torch.sort(fixture["inputs"]["support_labels"].long(), stable=True).indices


def _episode_reps(head: TRXHead, fixture: dict) -> tuple[dict, dict]:
    """Support reps [1, N, K, ...] (class-major) and query reps [1, Q, ...]."""
    meta, inputs = fixture["meta"], fixture["inputs"]
    support = head.encode(inputs["support_features"][_class_major_order(fixture)])
    query = head.encode(inputs["query_features"])
    support = {key: value.reshape(1, meta["way"], meta["shot"], *value.shape[1:]) for key, value in support.items()}
    return support, {key: value.unsqueeze(0) for key, value in query.items()}


@pytest.mark.parametrize("path", FIXTURES)
def test_weights_load_under_our_names(path: Path) -> None:
    fixture = _load(path)
    head = _build(fixture)
    reference = fixture["state_dict"]
    for ours, theirs in head.reference_key_map().items():
        assert torch.equal(head.state_dict()[ours], reference[theirs]), ours


@pytest.mark.parametrize("path", FIXTURES)
def test_eval_logits_and_cardinality_logits(path: Path) -> None:
    fixture = _load(path)
    head = _build(fixture).eval()
    intermediates = fixture["outputs"]["intermediates"]
    with torch.no_grad():
        support, query = _episode_reps(head, fixture)
        logits = head.logits(support, query)[0]
        per_cardinality = head.cardinality_logits(support, query)[:, 0]
    torch.testing.assert_close(logits, fixture["outputs"]["eval"]["logits"], **TOLERANCE)
    for index in range(per_cardinality.shape[0]):
        torch.testing.assert_close(per_cardinality[index], intermediates[f"trx_logits_card{index}"], **TOLERANCE)


@pytest.mark.parametrize("path", FIXTURES)
def test_train_logits_and_losses(path: Path) -> None:
    fixture = _load(path)
    meta, inputs, losses = fixture["meta"], fixture["inputs"], fixture["outputs"]["loss"]
    head = _build(fixture).train()
    for module in head.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0  # as the fixtures' train pass
    episode = TrainEpisode(
        way=meta["way"],
        shot=meta["shot"],
        query_labels=inputs["query_labels"].long(),
        class_base_ids=inputs["batch_class_list"].long(),
    )
    output = head.loss(inputs["support_features"][_class_major_order(fixture)], inputs["query_features"], episode)
    mean_ce = output.terms["ce"].detach()
    torch.testing.assert_close(output.logits.detach(), fixture["outputs"]["train"]["logits"], **TOLERANCE)
    torch.testing.assert_close(mean_ce, losses["ce_episode"], **TOLERANCE)
    # The trainer back-propagates total / episodes_per_step; the TRX recipe steps every 16 episodes.
    torch.testing.assert_close(output.total.detach() / 16, losses["trx_official_task_loss"], **TOLERANCE)
    torch.testing.assert_close(mean_ce / 16, losses["perrett_fsar_task_loss"], **TOLERANCE)
    torch.testing.assert_close(mean_ce / 4, losses["train_net_few_shot_total"], **TOLERANCE)
    assert set(output.terms) == set(TRXHead.loss_term_names)
    output.total.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters())


def _fixture_state() -> tuple[HeadConfig, dict]:
    fixture = _load(first_parity_fixture("trx"))
    return _config(fixture["meta"]), dict(fixture["state_dict"])


def test_state_dict_problems_are_all_listed() -> None:
    config, state = _fixture_state()
    del state["transformers.0.k_linear.weight"]
    state["transformers.1.extra.weight"] = torch.zeros(1)
    state["transformers.1.v_linear.bias"] = torch.zeros(3)
    with pytest.raises(ReferenceStateError) as error:
        TRXHead(config).load_reference_state_dict(state)
    message = str(error.value)
    assert "missing: transformers.0.k_linear.weight" in message
    assert "unexpected: transformers.1.extra.weight" in message
    assert "wrong shape: transformers.1.v_linear.bias" in message


def test_other_out_dim_is_mis_shaped() -> None:
    config, state = _fixture_state()
    other = HeadConfig(dim=config.dim, frames=config.frames, num_base_classes=64,
                       options={"out_dim": config.options["out_dim"] + 1})
    with pytest.raises(ReferenceStateError, match="wrong shape: transformers.0.k_linear.weight"):
        TRXHead(other).load_reference_state_dict(state)


def test_wrong_tuples_raise() -> None:
    config, state = _fixture_state()
    state["transformers.0.tuples.0"] = torch.tensor([1, 0])
    with pytest.raises(ReferenceStateError, match="wrong tuple: transformers.0.tuples.0"):
        TRXHead(config).load_reference_state_dict(state)


def test_official_checkpoint_layout_loads() -> None:
    """tobyperrett/trx checkpoints have no tuples keys; DataParallel/BaseVideoModel add prefixes."""
    config, state = _fixture_state()
    official = {f"module.{key}": value for key, value in state.items() if ".tuples." not in key}
    TRXHead(config).load_reference_state_dict(official)
    TRXHead(config).load_reference_state_dict({f"head.{key}": value for key, value in state.items()})
