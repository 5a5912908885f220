"""What HyRSM (``methods/hyrsm.py``) and HyRSM++ (``methods/hyrsmpp.py``) share, written once: the HyRSM head
(its modules, weights, ``encode``, ``logits``, the classification part of the loss and the reference keys), the
options both take, and the helper that turns one of their released configs into a Recipe.

The head (Wang et al., CVPR 2022). Per video (``encode``, cached): positional encoding, pre-norm self-attention
over the T frames (intra-relation) and ReLU, then the frame half of the 1×1 fusion conv. Per episode
(``logits``): multi-head attention over the set {N support items, the query} of time-means (inter-relation), the
token half of the fusion conv, and Bi-MHM matching. Semantics: ``tests/data/parity/README.md`` (HyRSM, HyRSM++).

This is a package module, not a plugin file, so that both plugins import it the ordinary way however the
registry loads them. Its source is part of both methods' code digests: ``fsar_bench.code_digest`` hashes the
module of every head class a method's head derives from (tests/test_code_digest.py).

Usage (in a plugin file)::

    from fsar_bench.model.hyrsm_family import HyrsmFamilyHead, HyrsmFamilyOptions, hyrsm_released_recipe

    @dataclass(frozen=True)
    class MyOptions(HyrsmFamilyOptions):
        classification_weight: float = loss_weight(0.6)  # λ_cls, read by HyrsmFamilyHead.loss

    class MyHead(HyrsmFamilyHead):
        options_class = MyOptions
        method_name = "mymethod"

    head = MyHead(HeadConfig(dim=2048, frames=8, num_base_classes=64))
    support = support_to_episode(head.encode(support_features), way=5, shot=1)  # [N*K, T, d] class-major
    logits = head.logits(support, add_episode_axis(head.encode(query_features)))  # [1, Q, N]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsar_bench.api import (
    FewShotHead,
    HeadConfig,
    LossOutput,
    OptionError,
    Recipe,
    ReleasedConfig,
    Reps,
    TrainEpisode,
    add_episode_axis,
    molo_family_recipe,
    support_to_episode,
)
from fsar_bench.layers import (
    HyrsmPositionalEncoding,
    PreNormSelfAttention,
    SetAttention,
    bi_mhm_distance,
    nest_rules,
    rename_keys,
)

HYRSM_TRAIN_QUERIES_BY_SHOT = {1: 7, 2: 6, 3: 5, 4: 4, 5: 3}
"""Training queries per class by shot in the released HyRSM and HyRSM++ configs (Recipe holds the 1-shot value)."""


# --------------------------------------------------------------------------- options
@dataclass(frozen=True)
class HyrsmFamilyOptions:
    """The HyRSM head's sizes and constants (the reference's defaults; recipes change some per dataset). A method's
    options subclass this and add its loss weights (at least ``classification_weight``, λ_cls)."""

    heads: int = 8  # head_dim = dim // heads, as the reference derives it
    position_a: float = 10.0  # x·sqrt(d/A) + B·pe
    position_b: float = 1.0
    position_table_length: int = 20
    position_dropout: float = 0.1
    intra_dropout: float = 0.2  # self-attention output projection
    inter_dropout: float = 0.05  # set-attention output projection
    inter_attention_dropout: float = 0.1  # set-attention probabilities
    set_items: Literal["auto", "videos", "prototypes"] = "auto"  # "auto": videos if K == 1 else prototypes


# --------------------------------------------------------------------------- head
class HyrsmFamilyHead(FewShotHead):
    """The HyRSM head over pooled frame features ``[V, T, d]``; subclasses set ``options_class`` (a
    ``HyrsmFamilyOptions`` with ``classification_weight``) and ``method_name`` (named in option errors).

    Cached per video: ``{"frames": W_f·relu(intra) + b  [V, T, d], "mean": time-mean of relu(intra)  [V, d],
    "set_qkv": the set attention's q/k/v projections of the mean  [V, 3, d]}``, where ``W = [W_f | W_z]`` is
    the fusion conv over ``[frame; video token]``.
    """

    options_class: ClassVar[type] = HyrsmFamilyOptions
    method_name: ClassVar[str] = "hyrsm"

    def __init__(self, config: HeadConfig) -> None:
        super().__init__(config)
        options: HyrsmFamilyOptions = self.options
        dim, heads = config.dim, options.heads
        if config.frames > options.position_table_length:
            raise OptionError(f"{self.method_name}: {config.frames} frames exceed position_table_length")
        self.positional_encoding = HyrsmPositionalEncoding(
            dim, options.position_table_length, options.position_a, options.position_b, options.position_dropout
        )
        self.intra_attention = PreNormSelfAttention(dim, heads, options.intra_dropout)
        self.inter_attention = SetAttention(dim, heads, options.inter_dropout, options.inter_attention_dropout)
        self.fusion = nn.Conv1d(2 * dim, dim, kernel_size=1)  # over [frame; video token], split in two below
        self.base_classifier = nn.Linear(dim, config.num_base_classes)

    # -- per video
    def intra_relation(self, features: Tensor) -> Tensor:
        """[V, T, d] -> intra-relation features before ReLU (attention + residual) [V, T, d]."""
        return self.intra_attention(self.positional_encoding(features))

    def encode(self, features: Tensor) -> Reps:
        """[V, T, d] -> {"frames": [V, T, d], "mean": [V, d], "set_qkv": [V, 3, d]}."""
        return self._encode_intra(torch.relu(self.intra_relation(features)))

    def _encode_intra(self, intra: Tensor) -> dict[str, Tensor]:
        frame_weight = self.fusion.weight[:, : self.config.dim, 0]
        mean = intra.mean(dim=-2)
        return {"frames": F.linear(intra, frame_weight, self.fusion.bias), "mean": mean,
                "set_qkv": self.inter_attention.project_qkv(mean)}

    # -- per episode
    def relation_outputs(self, support: Reps, query: Reps) -> dict[str, Tensor]:
        """support {"frames": [E, N, K, T, d], "mean": [E, N, K, d]}, query {"frames": [E, Q, T, d], "mean": [E, Q, d]}.

        Returns ``logits`` [E, Q, N], ``inter_set`` [E, Q, n+1, d] (before ReLU), ``final_support``
        [E, Q, n, T, d] and ``final_query`` [E, Q, T, d]; n = N (prototypes) or N·K (videos).
        """
        assert isinstance(support, dict) and isinstance(query, dict)
        episodes, way, shot = support["mean"].shape[:3]
        num_query = query["mean"].shape[1]
        use_videos = self.options.set_items == "videos" or (self.options.set_items == "auto" and shot == 1)
        has_qkv = "set_qkv" in support and "set_qkv" in query
        if use_videos:  # every support video is a set item (the reference's 1-shot class)
            item_frames = support["frames"].flatten(1, 2)
            item_means = support["mean"].flatten(1, 2)
            item_qkv = support["set_qkv"].flatten(1, 2) if has_qkv else None
        else:  # class prototypes: per-frame mean over shots (fusion is linear, so the mean commutes with W_f)
            item_frames = support["frames"].mean(dim=2)
            item_means = support["mean"].mean(dim=2)
            item_qkv = support["set_qkv"].mean(dim=2) if has_qkv else None  # q/k/v are linear too
        num_items = item_means.shape[1]
        inter_set = self.inter_attention.forward_sets(item_means, query["mean"], item_qkv,
                                                      query["set_qkv"] if has_qkv else None)  # [E, Q, n+1, d]
        token_part = F.linear(torch.relu(inter_set), self.fusion.weight[:, self.config.dim :, 0])
        final_support = item_frames[:, None] + token_part[:, :, :num_items, None, :]
        final_query = query["frames"] + token_part[:, :, num_items, None, :]
        distances = bi_mhm_distance(final_query[:, :, None], final_support)  # [E, Q, n]
        if use_videos:
            distances = distances.reshape(episodes, num_query, way, shot).mean(dim=-1)
        return {
            "logits": -distances, "inter_set": inter_set, "final_support": final_support, "final_query": final_query
        }

    def logits(self, support: Reps, query: Reps) -> Tensor:
        """support [E, N, K, ...] class-major, query [E, Q, ...] -> [E, Q, N]."""
        return self.relation_outputs(support, query)["logits"]

    # -- training
    def classification_losses(self, support_features: Tensor, query_features: Tensor,
                              episode: TrainEpisode) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """(``relation_outputs`` of the episode, ``{"ce_episode": CE(episode logits), "ce_base_class_per_frame":
        CE(base classifier on every intra frame)}``); the intra relation runs once for both."""
        num_support = support_features.shape[0]
        intra = torch.relu(self.intra_relation(torch.cat([support_features, query_features])))
        class_logits = self.base_classifier(intra).flatten(0, 1)  # [(N*K+Q)*T, classes]
        base_labels = torch.cat([episode.support_base_labels, episode.query_base_labels])
        base_labels = base_labels.repeat_interleave(intra.shape[1])
        encoded = self._encode_intra(intra)
        support = support_to_episode({key: value[:num_support] for key, value in encoded.items()},
                                     episode.way, episode.shot)
        query = add_episode_axis({key: value[num_support:] for key, value in encoded.items()})
        relation = self.relation_outputs(support, query)
        ce_episode = F.cross_entropy(relation["logits"][0], episode.query_labels)
        ce_base = F.cross_entropy(class_logits, base_labels)
        return relation, {"ce_episode": ce_episode, "ce_base_class_per_frame": ce_base}

    def loss(self, support_features: Tensor, query_features: Tensor, episode: TrainEpisode) -> LossOutput:
        """CE(episode logits) + λ_cls·CE(base classifier on every intra frame).

        ``total`` is the reference's per-episode loss × BATCH_SIZE (4): the reference divides by 4 and
        accumulates 4 episodes per GPU over 4 GPUs, so ``total / episodes_per_step`` (16) gives its gradient.
        """
        relation, terms = self.classification_losses(support_features, query_features, episode)
        total = terms["ce_episode"] + self.options.classification_weight * terms["ce_base_class_per_frame"]
        return LossOutput(total=total, terms=terms, logits=relation["logits"][0])

    # -- reference checkpoints
    def reference_key_map(self) -> dict[str, str]:
        """Our key -> the reference's (HyRSM's names; HyRSM++ keeps them)."""
        rules = [
            ("positional_encoding.table", "pe.pe"),
            ("fusion.", "layer2.0."),
            ("base_classifier.", "classification_layer."),
            *nest_rules("intra_attention.", "temporal_atte_before.", PreNormSelfAttention.REFERENCE_RULES),
            *nest_rules("inter_attention.", "temporal_atte.", SetAttention.REFERENCE_RULES),
        ]
        return rename_keys(self.state_dict(), rules)


# --------------------------------------------------------------------------- recipes
def hyrsm_released_recipe(repo: str, path: str, lines: Mapping[str, int], head_options: Mapping[str, tuple[Any, str]],
                          *, lr: float, warmup_from: float, steps_iter: int, steps: tuple[int, ...],
                          lrs: tuple[float, ...], tasks: int, val_fre_iter: int, batch_size_per_task: int,
                          sampler: str, queries_note: str = "") -> Recipe:
    """One released 1-shot config of the HyRSM family (``path`` in ``repo``, ending ``_1shot_v1.yaml``; values and
    their ``lines``) on the MoLo-repository trainer as it runs (``molo_family_recipe``), with the family's training
    queries per class by shot, sourced to the 1..5-shot files (``queries_note`` appended to that source)."""
    every_shot = path.replace("_1shot_", "_{1..5}shot_")
    return molo_family_recipe(
        ReleasedConfig(repo, path, lines), lr=lr, warmup_start_lr=warmup_from, steps_iter=steps_iter,
        steps=steps, lrs=lrs, num_train_tasks=tasks, batch_size_per_task=batch_size_per_task,
        val_fre_iter=val_fre_iter, query_per_class=HYRSM_TRAIN_QUERIES_BY_SHOT[1], frame_sampler=sampler,
        head_options=head_options, train_queries_by_shot=HYRSM_TRAIN_QUERIES_BY_SHOT,
        queries_by_shot_source=f"{repo} {every_shot} QUERY_PER_CLASS{queries_note}",
    )
