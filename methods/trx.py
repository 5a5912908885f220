"""TRX: temporal-relational cross-transformers (Perrett et al., CVPR 2021).

Every ordered frame tuple (pairs and triples by default) of a query attends over all tuples of
the K support videos of a class; the attention-weighted support values form a query-specific
prototype, and the logit is minus the mean squared distance between query values and
prototype, averaged over the tuple cardinalities.

Usage::

    from fsar_bench.api import HeadConfig, add_episode_axis, support_to_episode
    from methods.trx import TRXHead

    head = TRXHead(HeadConfig(dim=2048, frames=8, num_base_classes=64, options={"out_dim": 1152}))
    support = support_to_episode(head.encode(support_features), way=5, shot=5)  # [N*K, T, d], class-major
    query = add_episode_axis(head.encode(query_features))                      # [Q, T, d]
    logits = head.logits(support, query)                                       # [1, Q, N]

Options (``TRXOptions``): ``out_dim`` (key/value size, default 1152) and ``cardinalities`` (tuple sizes,
default (2, 3)). ``encode`` returns, for each cardinality k,
``keys{k}`` and ``values{k}`` of shape [V, C(T, k), out_dim].

Loading reference weights: our names differ from the reference's (``reference_key_map``);
``transformers.{i}.norm_v.*`` (never used by the reference) is ignored, and
``transformers.{i}.tuples.{j}`` is ignored after checking it equals our frame combinations.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsar_bench.api import (
    PERRETT_RESNET50_PREPROCESS,
    FewShotHead,
    HeadConfig,
    LossOutput,
    MethodCard,
    OptionError,
    ReferenceCheckpoint,
    Reps,
    TRX_REPO,
    TrainEpisode,
    add_episode_axis,
    adopted,
    perrett_family_recipe,
    support_to_episode,
    synthetic_recipe,
)
from fsar_bench.layers import scaled_sinusoid_table

DEFAULT_OUT_DIM = 1152
DEFAULT_CARDINALITIES = (2, 3)
POSITIONAL_SCALE = 0.1
POSITIONAL_DROPOUT = 0.1
POSITIONAL_LENGTH_FACTOR = 1.5
"""The reference stores ``int(1.5·T)`` positions; only the first T are used."""

_REFERENCE_TUPLE_KEY = re.compile(r"(?:^|\.)transformers\.(\d+)\.tuples\.(\d+)$")


# --------------------------------------------------------------------------- options
@dataclass(frozen=True)
class TRXOptions:
    """TRX's sizes. The loss (summed CE) has no weights."""

    out_dim: int = DEFAULT_OUT_DIM  # key/value size (the reference's trans_linear_out_dim)
    cardinalities: tuple[int, ...] = DEFAULT_CARDINALITIES  # frame tuple sizes (pairs and triples)


# --------------------------------------------------------------------------- head


class _TemporalSetAttention(nn.Module):
    """Tuple encoder of one cardinality: positional encoding, frame tuples, key/value projections."""

    def __init__(self, dim: int, frames: int, cardinality: int, out_dim: int) -> None:
        super().__init__()
        self.cardinality = cardinality
        length = int(POSITIONAL_LENGTH_FACTOR * frames)
        self.register_buffer("positional_table", scaled_sinusoid_table(length, dim, POSITIONAL_SCALE).unsqueeze(0))
        self.positional_dropout = nn.Dropout(POSITIONAL_DROPOUT)
        combos = list(itertools.combinations(range(frames), cardinality))
        self.register_buffer("tuple_frames", torch.tensor(combos, dtype=torch.long), persistent=False)  # [n, k]
        self.key_projection = nn.Linear(cardinality * dim, out_dim)
        self.value_projection = nn.Linear(cardinality * dim, out_dim)
        self.key_norm = nn.LayerNorm(out_dim)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """features [V, T, d] -> (keys, values), each [V, n_tuples, out_dim]; keys layer-normed."""
        videos, frames, _ = features.shape
        encoded = self.positional_dropout(features + self.positional_table[:, :frames])
        tuples = encoded[:, self.tuple_frames].reshape(videos, self.tuple_frames.shape[0], -1)  # [V, n, k*d]
        return self.key_norm(self.key_projection(tuples)), self.value_projection(tuples)


class TRXHead(FewShotHead):
    """TRX over pooled frame features; one ``_TemporalSetAttention`` per cardinality."""

    options_class = TRXOptions
    loss_term_names: ClassVar[tuple[str, ...]] = ("ce_sum", "ce")

    def __init__(self, config: HeadConfig) -> None:
        super().__init__(config)
        self.out_dim = self.options.out_dim
        self.cardinalities = self.options.cardinalities
        valid = all(1 <= k <= config.frames for k in self.cardinalities)
        if not self.cardinalities or not valid or len(set(self.cardinalities)) != len(self.cardinalities):
            raise OptionError(
                f"TRX option cardinalities={self.cardinalities}: give distinct tuple sizes in 1..frames={config.frames}"
            )
        self.temporal_sets = nn.ModuleList(
            _TemporalSetAttention(config.dim, config.frames, k, self.out_dim) for k in self.cardinalities
        )

    # -- per video
    def encode(self, features: Tensor) -> Reps:
        """features [V, T, d] -> {"keys{k}", "values{k}": [V, C(T, k), out_dim] for each cardinality k}."""
        reps: dict[str, Tensor] = {}
        for k, temporal_set in zip(self.cardinalities, self.temporal_sets):
            reps[f"keys{k}"], reps[f"values{k}"] = temporal_set(features)
        return reps

    # -- per episode, batched
    def cardinality_logits(self, support: Reps, query: Reps) -> Tensor:
        """support [E, N, K, n, o] per key, query [E, Q, n, o] -> logits per cardinality [C, E, Q, N]."""
        return torch.stack([
            _tuple_attention_logits(support[f"keys{k}"], support[f"values{k}"], query[f"keys{k}"], query[f"values{k}"])
            for k in self.cardinalities
        ])

    def logits(self, support: Reps, query: Reps) -> Tensor:
        """support [E, N, K, ...], query [E, Q, ...] -> [E, Q, N] (mean over cardinalities)."""
        return self.cardinality_logits(support, query).mean(dim=0)

    # -- training
    def loss(self, support_features: Tensor, query_features: Tensor, episode: TrainEpisode) -> LossOutput:
        """Cross-entropy SUMMED over the episode's queries (official TRX ``utils.loss``).

        The trainer divides ``total`` by ``episodes_per_step`` (16 in the TRX recipe), which gives
        the official per-step objective, sum-CE / tasks_per_batch. ``terms``: ``ce_sum`` (= total)
        and ``ce`` (mean over queries, comparable with other methods).
        """
        support = support_to_episode(self.encode(support_features), episode.way, episode.shot)
        query = add_episode_axis(self.encode(query_features))
        logits = self.logits(support, query)[0]
        per_query = F.cross_entropy(logits, episode.query_labels, reduction="none")
        total = per_query.sum()
        return LossOutput(total=total, terms={"ce_sum": total, "ce": per_query.mean()}, logits=logits)

    # -- reference checkpoints
    def reference_key_map(self) -> dict[str, str]:
        """Our key -> reference key (``transformers.{i}.{pe.pe,k_linear,v_linear,norm_k}.*``)."""
        renames = {
            "positional_table": "pe.pe",
            "key_projection.": "k_linear.",
            "value_projection.": "v_linear.",
            "key_norm.": "norm_k.",
        }
        key_map = {}
        for key in self.state_dict():
            index, local = key.removeprefix("temporal_sets.").split(".", 1)
            for ours, theirs in renames.items():
                if local.startswith(ours):
                    local = theirs + local[len(ours):]
                    break
            key_map[key] = f"transformers.{index}.{local}"
        return key_map

    def ignored_reference_keys(self) -> tuple[str, ...]:
        """``norm_v`` (unused by the reference) and the ``tuples.{j}`` index buffers."""
        ignored: list[str] = []
        for index, temporal_set in enumerate(self.temporal_sets):
            ignored += [f"transformers.{index}.norm_v.weight", f"transformers.{index}.norm_v.bias"]
            ignored += [f"transformers.{index}.tuples.{j}" for j in range(temporal_set.tuple_frames.shape[0])]
        return tuple(ignored)

    def reference_state_problems(self, state_dict: Mapping[str, Tensor]) -> list[str]:
        """Any reference ``tuples.{j}`` must equal our frame combinations (real checkpoints of the official TRX
        have none: there they are a plain list)."""
        problems = []
        for key, value in state_dict.items():
            match = _REFERENCE_TUPLE_KEY.search(key)
            if match is None:
                continue
            index, position = int(match.group(1)), int(match.group(2))
            if index >= len(self.temporal_sets) or position >= self.temporal_sets[index].tuple_frames.shape[0]:
                continue  # reported as unexpected
            expected = self.temporal_sets[index].tuple_frames[position].cpu()
            if value.shape != expected.shape or not torch.equal(value.cpu().long(), expected):
                problems.append(f"wrong tuple: {key} = {value.tolist()}, ours {expected.tolist()}")
        return problems


def _tuple_attention_logits(
    support_keys: Tensor, support_values: Tensor, query_keys: Tensor, query_values: Tensor
) -> Tensor:
    """TRX logits of one cardinality, batched over episodes, queries and classes.

    support_keys/values [E, N, K, n, o], query_keys/values [E, Q, n, o] -> [E, Q, N].

    For query tuple i and class c, attention ``a_i = softmax_j(q_k[i]·s_k[j] / sqrt(o))`` runs
    jointly over the K·n support tuples j of c; the prototype is ``p_i = Σ_j a_ij s_v[j]`` and the
    distance ``Σ_i ||q_v[i] - p_i||² / n``.

    Cost: two GEMMs per episode, scores [Q·n, o]x[o, N·K·n] and prototypes (E·N batched
    [Q·n, K·n]x[K·n, o]), plus one fused subtract-and-norm pass over the prototypes
    [E, N, Q·n, o] (as large as the support values themselves when Q = K). The expansion
    ||q||² - 2q·p + ||p||² avoids that tensor but needs the per-class Gram matrix, one more
    GEMM of the same size; it measured slower on CPU (about 0.57 vs 0.83 of bare-GEMM speed at
    d=2048, T=8, o=1152, 5-way 5-shot) and loses precision to cancellation.
    """
    episodes, way, shot, tuples, out_dim = support_keys.shape
    num_queries = query_keys.shape[1]
    class_tuples = shot * tuples
    query_rows = num_queries * tuples

    scores = torch.bmm(
        query_keys.reshape(episodes, query_rows, out_dim),
        support_keys.reshape(episodes, way * class_tuples, out_dim).transpose(1, 2),
    ) / math.sqrt(out_dim)  # [E, Q*n, N*K*n]
    attention = scores.view(episodes, query_rows, way, class_tuples).softmax(dim=-1)
    attention = attention.transpose(1, 2)  # [E, N, Q*n, K*n]

    prototypes = torch.matmul(attention, support_values.reshape(episodes, way, class_tuples, out_dim))
    # In place is safe for autograd: matmul saves its inputs, not its output.
    differences = prototypes.sub_(query_values.reshape(episodes, 1, query_rows, out_dim))  # [E, N, Q*n, o]
    # At least float32 for the squared distances (fp16 under autocast would overflow at large out_dim).
    norm_dtype = torch.promote_types(differences.dtype, torch.float32)
    tuple_distances = torch.linalg.vector_norm(differences, dim=-1, dtype=norm_dtype).square()  # [E, N, Q*n]
    distances = tuple_distances.view(episodes, way, num_queries, tuples).sum(dim=-1) / tuples
    return -distances.transpose(1, 2)


# --------------------------------------------------------------------------- recipes
_TRX_NOTES = (
    "Official tobyperrett/trx run.py: plain SGD (no momentum), lr 1e-3, MultiStepLR milestone 1e6 (never fires), "
    "5 train queries/class, 16 tasks per optimizer step, 100,020 iterations (run.py default). SSv2: 75,000, the "
    "iteration its README tests (the published checkpoint), on frames pre-shrunk to 8 per video (so train frames = "
    "test frames, no jitter). Other datasets: 8 evenly spaced frames with both ends jittered by up to 5 frames. "
    "Clips: resize 256, random flip, random 224 crop; no normalisation."
)
_SSV2 = perrett_family_recipe(
    TRX_REPO, resize="squash", notes=_TRX_NOTES,
    iterations=(75_000, f"{TRX_REPO} README.md:40 --test_iters 75000 (the tested checkpoint; run.py:84 trains 100020)"),
    frame_sampler=("evenly-spaced", f"{TRX_REPO} run.py:131 somethingsomethingv2_256x256q5_7l8.zip: 8 frames per video "
                   "(tobyperrett/few-shot-action-recognition@3687f3a scripts/shrink_dataset.py: int(linspace(0, n-1, 8)))"),
)
_OTHERS = perrett_family_recipe(TRX_REPO, resize="short-side", notes=_TRX_NOTES)
TRX_RECIPES = {
    "ssv2-full": _SSV2,
    "ssv2-small": _SSV2,
    "kinetics100": _OTHERS,
    "kinetics100-molo": adopted(_OTHERS, "TRX trained on the CMN Kinetics list; the same recipe on the MoLo/HyRSM list"),
    "ucf101": _OTHERS,
    "hmdb51": _OTHERS,
    "finegym": adopted(_OTHERS, "fsar-bench's choice for finegym (no reference trained on FineGym; its clips are not "
                       "pre-shrunk like TRX's SSv2): the recipe of TRX's other datasets"),
}

_SYNTHETIC_RECIPE = synthetic_recipe(
    head_options={"out_dim": 128},
    notes=(
        "Synthetic (small CNN, d=128, CPU): Adam lr 1e-3, 600 iterations of one episode each, 5 train queries per "
        "class, key/value size out_dim=128 (= d; the paper's 1152 is about d/2 for ResNet-50, and 1152 at d=128 "
        "costs 3x the training time per iteration), val (200 episodes) every 100 iterations. With one episode per "
        "step the loss is the summed CE of the episode (Adam is insensitive to that scale)."
    ),
)

# --------------------------------------------------------------------------- cards
CARDS = (
    MethodCard(
        name="trx",
        head=TRXHead,
        summary=(
            "TRX: ordered frame pairs and triples (0.1-scaled sinusoidal PE) cross-attend over each class's "
            "support tuples (LayerNorm keys, softmax over all K·n tuples, /sqrt(out_dim)); query-specific "
            "prototypes; logits = -mean squared tuple distance, averaged over cardinalities."
        ),
        paper=(
            "Perrett, Masullo, Burghardt, Mirmehdi, Damen. Temporal-Relational CrossTransformers for Few-Shot "
            "Action Recognition. CVPR 2021. arXiv:2101.06184"
        ),
        reference_code=(
            "tobyperrett/trx@390c20aa8ed7e309ae4949464fdcf015c4009329 model.py CNN_TRX, utils.py loss; parity "
            "reference alibaba-mmai-research/MoLo@f7f73b6dd8cba446b414b1c47652ab26033bc88e models/base/few_shot.py "
            "CNN_TRX (bit-identical logits)"
        ),
        published={("ssv2-full", 5): 64.6, ("kinetics100", 5): 85.9, ("ucf101", 5): 96.1, ("hmdb51", 5): 75.6},
        published_unconfirmed={
            ("ssv2-full", 1): 42.0, ("kinetics100", 1): 63.6,
            ("ssv2-small", 1): 36.0, ("ssv2-small", 5): 56.7,
            ("ucf101", 1): 78.2, ("hmdb51", 1): 53.1,
        },
        published_source=(
            "MoLo paper tables (arXiv 2304.00946); the TRX paper reports 5-shot only, 1-shot figures come from later "
            "re-implementations; confirmed cells checked against a second public source"
        ),
        recipes={**TRX_RECIPES, "synthetic": _SYNTHETIC_RECIPE},
        preprocess={"resnet50": PERRETT_RESNET50_PREPROCESS},
        # The defaults, spelled out: checkpoint digests hash the merged options, so removing them would retrain.
        options={"out_dim": DEFAULT_OUT_DIM, "cardinalities": DEFAULT_CARDINALITIES},
        reference_checkpoint=ReferenceCheckpoint(
            code="tobyperrett/trx run.py: checkpoint.pt {iteration, model_state_dict, optimizer_state_dict, "
            "scheduler}, fully_trained.pt a bare state dict; resnet.<i>.* (resnet.module.<i>.* on several GPUs), "
            "transformers.{0,1}.* without tuples",
            backbone_prefix="resnet.",
            selection="the reference's last or a fixed iteration (it has no validation split)",
        ),
        test_options={"out_dim": 8},
        notes=(
            "Loss: LossOutput.total is the cross-entropy SUMMED over the episode's queries (official utils.loss); "
            "the trainer divides by episodes_per_step=16, which reproduces the official sum-CE/16 per task and "
            "its gradient. Terms: ce_sum (= total) and ce (mean). Reference norm_v is unused and ignored on load; "
            "tuples.{j} are checked against our combinations and ignored. Cached encoding per video: for each "
            "cardinality k, keys and values [C(T, k), out_dim], 2·C(T, k)·out_dim floats (T=8, out_dim 1152: "
            "2·(28 + 56)·1152 = 193,536 floats, 756 KiB)."
        ),
    ),
)
