"""CLIP-FSAR parity with the reference fixtures (every ``clipfsar_*.pt`` in the parity folder).

Built from each fixture's meta, so fixtures with other seeds and shapes (``FSAR_PARITY_DIR``) run unchanged. The
fixtures supply the text tables directly (the reference's text tower replaced by ``inputs.text_features_*``).
Semantics: ``tests/data/parity/README.md`` (CLIP-FSAR).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fsar_bench.api import HeadConfig, ReferenceStateError, TrainEpisode
from methods.clipfsar import ClipFsarHead
from tests.conftest import first_parity_fixture, parity_fixtures

TOLERANCE = {"atol": 1e-5, "rtol": 1e-5}
FIXTURES = parity_fixtures("clipfsar")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def _build(fixture: dict) -> ClipFsarHead:
    meta, inputs = fixture["meta"], fixture["inputs"]
    assert meta["heads"] == 8 and meta["mlp_dim"] == 2 * meta["d"]
    head = ClipFsarHead(HeadConfig(dim=meta["d"], frames=meta["T"], num_base_classes=meta["num_class"],
                                   options={"text_weight": meta["cfg"]["TRAIN"]["USE_CLASSIFICATION_VALUE"]},
                                   class_text={"train": inputs["text_features_train"]}))
    head.load_reference_state_dict(fixture["state_dict"])
    return head


def _class_major(fixture: dict) -> torch.Tensor:
    """[N*K] indices into the shuffled input support order, sorted by episode label (stable)."""
    return torch.sort(fixture["inputs"]["support_labels"].long(), stable=True).indices


def _support(fixture: dict, text_table: torch.Tensor, real_labels: torch.Tensor) -> dict:
    meta, inputs = fixture["meta"], fixture["inputs"]
    order = _class_major(fixture)
    frames = inputs["support_features"][order]
    texts = text_table[real_labels.long()[order]]
    return {"frames": frames.reshape(1, meta["way"], meta["shot"], *frames.shape[1:]),
            "class_text": texts.reshape(1, meta["way"], meta["shot"], -1)}


@pytest.mark.parametrize("path", FIXTURES)
def test_eval_logits_and_intermediates(path: Path) -> None:
    fixture = _load(path)
    head = _build(fixture).eval()
    inputs, meta = fixture["inputs"], fixture["meta"]
    reference, intermediates = fixture["outputs"]["eval"], fixture["outputs"]["intermediates"]
    with torch.no_grad():
        support = _support(fixture, inputs["text_features_test"], inputs["real_support_labels_test"])
        query = {"query": head.encode(inputs["query_features"])["query"].unsqueeze(0)}
        logits = head.logits(support, query)[0]
        torch.testing.assert_close(query["query"][0], intermediates["context_query"], **TOLERANCE)
        prototypes, refined = head.prototypes(support["frames"], support["class_text"])
        labels = inputs["support_labels"].long()
        expected_support = intermediates["context_support"]
        if not meta["cfg"]["TRAIN"].get("MERGE_BEFORE"):  # rows per support video in input order (released: K = 1)
            assert meta["shot"] == 1, "without MERGE_BEFORE only one-shot fixtures compare per class"
            expected_support = expected_support[torch.argsort(labels, stable=True)]
        torch.testing.assert_close(refined[0], expected_support, **TOLERANCE)
        distances = head.frame_distances(prototypes, query["query"])[0]
        torch.testing.assert_close(distances, intermediates["frame_dists"], **TOLERANCE)
        q2s, s2q = head.alignment_costs(distances)
        torch.testing.assert_close(q2s, intermediates["cum_dist_q2s"], **TOLERANCE)
        torch.testing.assert_close(s2q, intermediates["cum_dist_s2q"], **TOLERANCE)
        torch.testing.assert_close(logits, reference["logits"], **TOLERANCE)
        rows = torch.cat([inputs["support_features"], inputs["query_features"]])
        torch.testing.assert_close(head.class_logits(rows), reference["class_logits"], **TOLERANCE)


@pytest.mark.parametrize("path", FIXTURES)
def test_train_logits_and_losses(path: Path) -> None:
    """The train pass (dropout p = 0): train-table text tokens, the episode CE and the video-text CE."""
    fixture = _load(path)
    head = _build(fixture).eval()  # eval() = dropout off, as the fixtures' train pass
    inputs, meta = fixture["inputs"], fixture["meta"]
    reference, losses = fixture["outputs"]["train"], fixture["outputs"]["loss"]
    order = _class_major(fixture)
    episode = TrainEpisode(way=meta["way"], shot=meta["shot"], query_labels=inputs["query_labels"].long(),
                           class_base_ids=inputs["batch_class_list"].long())
    assert torch.equal(episode.support_base_labels, inputs["real_support_labels"].long()[order])
    output = head.loss(inputs["support_features"][order], inputs["query_features"], episode)
    torch.testing.assert_close(output.logits, reference["logits"], **TOLERANCE)
    torch.testing.assert_close(output.terms["ce"], losses["ce_episode"], **TOLERANCE)
    torch.testing.assert_close(output.terms["ce_text"], losses["ce_text_class"], **TOLERANCE)
    # documented mapping (card notes): the reference's per-episode loss is total / BATCH_SIZE
    batch_size = meta["cfg"]["TRAIN"]["BATCH_SIZE"]
    torch.testing.assert_close(output.total.detach() / batch_size, losses["train_net_few_shot_total"], **TOLERANCE)
    output.total.backward()
    assert head.scale.grad is not None and head.transformer.to_q.weight.grad is not None


def test_batched_episodes_equal_one_at_a_time() -> None:
    fixture = _load(first_parity_fixture("clipfsar"))
    head = _build(fixture).eval()
    inputs = fixture["inputs"]
    with torch.no_grad():
        support = _support(fixture, inputs["text_features_test"], inputs["real_support_labels_test"])
        query = {"query": head.encode(inputs["query_features"])["query"].unsqueeze(0)}
        doubled = head.logits({k: torch.cat([v, v.flip(2)]) for k, v in support.items()},
                              {k: torch.cat([v, v]) for k, v in query.items()})
        torch.testing.assert_close(doubled[0], head.logits(support, query)[0], atol=1e-6, rtol=1e-6)


def test_a_wrong_reference_state_dict_is_refused_by_name() -> None:
    fixture = _load(first_parity_fixture("clipfsar"))
    state = dict(fixture["state_dict"])
    state.pop("scale")
    with pytest.raises(ReferenceStateError, match="missing: scale"):
        _build({**fixture, "state_dict": state})
