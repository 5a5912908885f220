"""The contract every method plugin implements; plugins import this module and ``fsar_bench.layers`` (a family of
methods may also share a head module of the package, as ``fsar_bench.model.hyrsm_family``).

A method is a *head* on top of a per-frame backbone. Its work is split in two so that
10,000 episodes cost little more than encoding each unique test video once:

* ``encode(features)``: everything that depends on one video alone. Run once per unique
  video; the result (a tensor, or a dict of tensors, each with leading axis V) is cached.
* ``logits(support, query)``: everything that mixes videos, batched over E episodes.
* ``loss(support_features, query_features, episode)``: the training objective, with
  named terms so that logs show each.

Every plugin file has the same shape (docs/methods.md): module docstring with usage; a frozen options
dataclass (loss weights included, via ``loss_weight``); the head class; recipes (``synthetic_recipe``,
``reference_recipe``); the cards at the end. In ``methods/mymethod.py``::

    @dataclass(frozen=True)
    class MyOptions:
        temperature: float = 1.0

    class MyHead(FewShotHead):
        options_class = MyOptions              # self.options: MyOptions, parsed from HeadConfig.options
        def encode(self, features):            # [V, T, d] -> [V, d]
            return features.mean(dim=1)
        def logits(self, support, query):      # [E, N, K, d], [E, Q, d] -> [E, Q, N]
            prototypes = support.mean(dim=2)
            return -torch.cdist(query, prototypes) / self.options.temperature

    CARDS = (MethodCard(name="mymethod", head=MyHead, summary="mean-pool, Euclidean",
                        recipes={"synthetic": synthetic_recipe("the shared budget")},
                        test_options={"temperature": 2.0}),)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsar_bench.model.options import (  # noqa: F401 (re-exported for plugins)
    NoOptions,
    OptionError,
    loss_weight,
    loss_weight_names,
    option_names,
    parse_options,
)
from fsar_bench.model.reference_recipes import (  # noqa: F401 (re-exported for plugins)
    HYRSM_REPO,
    MOLO_REPO,
    PERRETT_LIB,
    TRX_REPO,
    ReleasedConfig,
    adopted,
    molo_family_recipe,
    perrett_family_recipe,
)
from fsar_bench.model.recipes import (  # noqa: F401 (re-exported for plugins)
    MOLO_RESNET50_PREPROCESS,
    PERRETT_RESNET50_PREPROCESS,
    SYNTHETIC_BUDGET,
    Preprocess,
    Recipe,
    reference_recipe,
    synthetic_recipe,
)

Reps = Union[Tensor, dict[str, Tensor]]
"""A per-video representation: a tensor, or a dict of tensors, all with the same leading axes."""


# --------------------------------------------------------------------------- representations
def map_reps(reps: Reps, fn: Callable[[Tensor], Tensor]) -> Reps:
    """Apply ``fn`` to the tensor, or to every tensor of the dict."""
    if isinstance(reps, Tensor):
        return fn(reps)
    return {key: fn(value) for key, value in reps.items()}


def index_reps(reps: Reps, index: Tensor) -> Reps:
    """Gather videos: ``reps`` has leading axis V; ``index`` (long, any shape S) gives ``[*S, ...]``.

    Uses ``index_select`` (the same values as ``tensor[index]``, several times faster on CPU)."""
    flat = index.reshape(-1)
    return map_reps(reps, lambda tensor: tensor.index_select(0, flat).reshape(*index.shape, *tensor.shape[1:]))


def cat_reps(parts: list[Reps]) -> Reps:
    """Concatenate representations along their first axis."""
    if isinstance(parts[0], Tensor):
        return torch.cat(parts)  # type: ignore[arg-type]
    return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}  # type: ignore[index]


def reps_num_videos(reps: Reps) -> int:
    """Length of the leading axis."""
    return _first_tensor(reps).shape[0]


def support_to_episode(reps: Reps, way: int, shot: int) -> Reps:
    """Class-major support ``[N*K, ...]`` -> one episode ``[1, N, K, ...]``."""
    return map_reps(reps, lambda tensor: tensor.reshape(1, way, shot, *tensor.shape[1:]))


def add_episode_axis(reps: Reps) -> Reps:
    """Queries ``[Q, ...]`` -> one episode ``[1, Q, ...]``."""
    return map_reps(reps, lambda tensor: tensor.unsqueeze(0))


# --------------------------------------------------------------------------- values
@dataclass(frozen=True)
class HeadConfig:
    """What a head is built from: backbone feature size, frames, base classes, method options.

    ``feature_size`` is the spatial size ``(h, w)`` of backbone maps for heads that take
    maps (``FewShotHead.feature_maps = True``), and ``(1, 1)`` otherwise. ``dim`` is the backbone's (pooled, or
    conv maps for map heads), never a literal. ``options`` are plain values, parsed by the head into its options
    dataclass; ``method`` (the card's name) labels option errors. ``class_text`` (heads with ``needs_class_text``):
    ``{"train": [num_base_classes, dim]}``, the backbone text tower's embedding of each train class's prompt, in
    base-id order.
    """

    dim: int
    frames: int
    num_base_classes: int
    feature_size: tuple[int, int] = (1, 1)
    options: Mapping[str, Any] = field(default_factory=dict)
    method: str = ""
    class_text: Mapping[str, Tensor] = field(default_factory=dict)


@dataclass
class TrainEpisode:
    """Labels and extras of one training episode (support is class-major: class c = rows c*K..c*K+K-1).

    ``query_labels`` [Q] are episode labels 0..N-1; ``class_base_ids`` [N] gives each episode
    class's base-class id (index into the sorted train classes). ``support_pixels`` and
    ``query_pixels`` are the normalised network input frames ``[V, T, 3, H, W]`` for heads that
    need them (``FewShotHead.needs_pixels``), else None.
    """

    way: int
    shot: int
    query_labels: Tensor
    class_base_ids: Tensor
    support_pixels: Tensor | None = None
    query_pixels: Tensor | None = None

    @property
    def support_labels(self) -> Tensor:
        """[N*K] episode labels of the class-major support."""
        return torch.arange(self.way, device=self.query_labels.device).repeat_interleave(self.shot)

    @property
    def support_base_labels(self) -> Tensor:
        """[N*K] base-class ids of the support videos."""
        return self.class_base_ids[self.support_labels]

    @property
    def query_base_labels(self) -> Tensor:
        """[Q] base-class ids of the queries."""
        return self.class_base_ids[self.query_labels]


@dataclass
class LossOutput:
    """``total`` is what is back-propagated; ``terms`` are logged (detached by the trainer)."""

    total: Tensor
    terms: dict[str, Tensor]
    logits: Tensor  # [Q, N]


@dataclass(frozen=True)
class ReferenceCheckpoint:
    """Where the reference code puts the full model in the checkpoint files it saves.

    fsar-bench reads every wrapper (``{model_state_dict, ...}``, ``{model_state, ...}``, a bare state dict) and
    drops DataParallel/DDP ``module.`` parts; the card says where the two halves live: the backbone's keys
    start with ``backbone_prefix`` (followed by the backbone's reference names, e.g. torchvision's
    ``children()`` indices for ResNet-50), the head's with ``head_prefix`` (followed by the head's
    ``reference_key_map`` names). ``code`` names the repository and file that save it; ``selection`` says how
    the reference picked the weights it saves (the report's note repeats it).

    Usage (on a card)::

        MethodCard(..., reference_checkpoint=ReferenceCheckpoint(
            code="tobyperrett/trx run.py save_checkpoint", backbone_prefix="resnet.", selection="last iteration"))
    """

    code: str
    backbone_prefix: str
    head_prefix: str = ""
    selection: str = ""
    notes: str = ""


MOLO_REPOSITORY_CHECKPOINT = ReferenceCheckpoint(
    code="alibaba-mmai-research/MoLo (and HyRSM) utils/checkpoint.py save_checkpoint: {epoch, model_state, "
    "optimizer_state, cfg}; BaseVideoModel with the ResNet-50 inside the head",
    backbone_prefix="head.backbone.",
    head_prefix="head.",
    selection="chosen by the reference's own run, whose validation runs on the test split",
)
"""MoLo, HyRSM and HyRSM++ (one codebase): ``head.backbone.<i>.*`` (torchvision children) and ``head.<head keys>``."""


@dataclass(frozen=True)
class MethodCard:
    """Everything fsar-bench knows about a method: how to build it and where it comes from.

    ``published`` maps ``(dataset, shot)`` to a published 5-way accuracy (%) confirmed by a second public
    source, measured with ``published_backbone`` (fine-tuned end to end); ``(dataset, shot, backbone)`` keys hold
    numbers published with another backbone; only these are shown beside our results (``published_for`` looks
    them up, for the backbone of the row). ``published_unconfirmed`` holds the cells still to be re-checked
    against the paper, and ``published_source`` says where both come from.
    ``recipes`` maps a dataset name (or "default") to its Recipe. ``options`` are head options
    (e.g. an ablation's switch) merged under the recipe's ``head_options`` and bench.toml's overrides.
    ``test_options`` are small sizes for the contract tests (tests/test_methods_contract.py), which run
    every registered card at a toy size. ``reference_checkpoint`` (None: the reference saves none) lets
    ``fsar-bench evaluate --checkpoint`` read the reference's own files.
    """

    name: str
    head: type[FewShotHead]
    summary: str = ""
    paper: str = ""
    reference_code: str = ""
    published: Mapping[tuple[str, int], float] = field(default_factory=dict)
    published_unconfirmed: Mapping[tuple[str, int], float] = field(default_factory=dict)
    published_source: str = ""
    recipes: Mapping[str, Recipe] = field(default_factory=dict)
    preprocess: Mapping[str, Preprocess] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    test_options: Mapping[str, Any] = field(default_factory=dict)
    notes: str = ""
    reference_checkpoint: ReferenceCheckpoint | None = None
    published_backbone: str = "resnet50"

    def published_for(self, dataset: str, shot: int, backbone: str) -> float | None:
        """The published accuracy for this backbone, or None (none published with that backbone)."""
        return published_value(self.published, dataset, shot, backbone, self.published_backbone)

    def recipe_for(self, dataset: str) -> Recipe:
        """The recipe for ``dataset``, else the "default" one, else ``Recipe()``."""
        return self.recipes.get(dataset) or self.recipes.get("default") or Recipe()

    def preprocess_for(self, backbone: str) -> Preprocess | None:
        """The preprocessing for ``backbone`` ("resnet50", "small-cnn"), or None for the backbone's own."""
        return self.preprocess.get(backbone)


def published_value(published: Mapping[tuple, float], dataset: str, shot: int, backbone: str,
                    published_backbone: str = "resnet50") -> float | None:
    """``published[(dataset, shot, backbone)]``, else ``published[(dataset, shot)]`` when ``backbone`` is the one the
    card's two-part keys were published with, else None."""
    if (dataset, shot, backbone) in published:
        return float(published[(dataset, shot, backbone)])
    if backbone == published_backbone and (dataset, shot) in published:
        return float(published[(dataset, shot)])
    return None


class ReferenceStateError(ValueError):
    """A reference state dict does not fit the head: lists missing, unexpected and mis-shaped keys."""


# --------------------------------------------------------------------------- the head
class FewShotHead(nn.Module):
    """Base class of every method head. Subclasses implement ``encode`` and ``logits``.

    Class attributes:
      ``options_class``: the head's frozen options dataclass (``NoOptions`` for none); ``__init__`` parses
      ``config.options`` into ``self.options`` with ``parse_options`` (unknown keys: OptionError, exit 2).
      ``feature_maps``: True if ``encode`` takes conv5 maps ``[V, T, d, h, w]`` instead of
      pooled features ``[V, T, d]``.
      ``needs_pixels``: True if ``loss`` needs the input frames (``TrainEpisode.*_pixels``).
      ``needs_class_text``: True if the head uses text embeddings of class names (CLIP-FSAR): the backbone's text
      tower embeds ``class_prompt.format(name)`` for every class of the split; the train table arrives in
      ``HeadConfig.class_text["train"]`` and every encoded video's reps get ``"class_text"`` ``[V, d]``, the
      embedding of its own class (its partition's table), added by the harness after ``encode``.
    """

    options_class: ClassVar[type] = NoOptions
    feature_maps: ClassVar[bool] = False
    needs_pixels: ClassVar[bool] = False
    needs_class_text: ClassVar[bool] = False
    class_prompt: ClassVar[str] = "a photo of {}"

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        self.config = config
        self.options: Any = parse_options(self.options_class, config.options, config.method or type(self).__name__)

    # -- per video
    def encode(self, features: Tensor) -> Reps:
        """[V, T, d] (or [V, T, d, h, w]) -> per-video representation with leading axis V."""
        raise NotImplementedError

    # -- per episode, batched
    def logits(self, support: Reps, query: Reps) -> Tensor:
        """support [E, N, K, ...] (class-major), query [E, Q, ...] -> logits [E, Q, N]."""
        raise NotImplementedError

    # -- training
    def loss(self, support_features: Tensor, query_features: Tensor, episode: TrainEpisode) -> LossOutput:
        """Cross-entropy on the episode logits. Override to add method-specific terms.

        support_features [N*K, T, ...] class-major, query_features [Q, T, ...].
        """
        support = support_to_episode(self.encode(support_features), episode.way, episode.shot)
        query = add_episode_axis(self.encode(query_features))
        logits = self.logits(support, query)[0]
        ce = F.cross_entropy(logits, episode.query_labels)
        return LossOutput(total=ce, terms={"ce": ce}, logits=logits)

    # -- reference checkpoints
    def reference_key_map(self) -> dict[str, str]:
        """Our state-dict key -> the reference implementation's key. Identity by default."""
        return {key: key for key in self.state_dict()}

    def ignored_reference_keys(self) -> tuple[str, ...]:
        """Reference keys that exist but carry nothing we use (e.g. TRX's unused ``norm_v``)."""
        return ()

    def optional_reference_keys(self) -> tuple[str, ...]:
        """Reference keys (values of ``reference_key_map``) that real reference checkpoints may lack; the head
        then keeps its own, built values (e.g. a weight the reference never registers, so never saves)."""
        return ()

    def reference_state_problems(self, state_dict: Mapping[str, Tensor]) -> list[str]:
        """Checks beyond key names and shapes (e.g. TRX's stored frame tuples), one line per problem."""
        return []

    def convert_reference_state_dict(self, state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
        """Reference-named weights ('head.'/'module.' stripped) -> (our-named weights, problems).

        ``problems`` lists every missing, unexpected and mis-shaped key (``missing: KEY``, ``unexpected: KEY``,
        ``wrong shape: KEY: reference (..), ours (..)``) plus ``reference_state_problems``; empty when it fits.
        """
        cleaned = {_strip_prefixes(key): value for key, value in state_dict.items()}
        key_map = self.reference_key_map()
        optional = set(self.optional_reference_keys())
        ours = self.state_dict()
        problems = [f"missing: {ref}" for ref in key_map.values() if ref not in cleaned and ref not in optional]
        problems += [f"unexpected: {key}" for key in sorted(set(cleaned) - set(key_map.values())
                                                          - set(self.ignored_reference_keys()))]
        problems += [f"wrong shape: {ref}: reference {tuple(cleaned[ref].shape)}, ours {tuple(ours[our].shape)}"
                     for our, ref in key_map.items()
                     if ref in cleaned and tuple(cleaned[ref].shape) != tuple(ours[our].shape)]
        problems += self.reference_state_problems(cleaned)
        return {our: cleaned[ref] for our, ref in key_map.items() if ref in cleaned}, problems

    def load_reference_state_dict(self, state_dict: Mapping[str, Tensor]) -> None:
        """Load weights saved by the reference code (key names theirs; 'head.'/'module.' stripped).

        Raises ReferenceStateError listing every missing, unexpected or mis-shaped key.
        """
        converted, problems = self.convert_reference_state_dict(state_dict)
        if problems:
            raise ReferenceStateError("\n".join([f"reference state dict does not fit {type(self).__name__}:",
                                                  *(f"  {line}" for line in problems)]))
        self.load_state_dict({**self.state_dict(), **converted})  # optional keys absent: our own values stay


class PairwiseHead(FewShotHead):
    """A head whose logits depend on each (query, support video) pair alone.

    Subclasses implement ``pair_scores`` (one score, or a small score tensor, per pair) and
    ``reduce_pairs`` (a class's logit from its K pair scores); ``logits`` is derived from the two.
    Evaluation then scores each distinct pair once, however many episodes share it
    (``fsar_bench/evaluation/pairs.py``): 10,000 5-shot episodes hold 1.25 million query/support pairs but a
    test set of V videos has at most V² distinct ones.

    ``pair_scores`` must be batch-invariant: row p of its output may depend on row p of its inputs
    only, bit for bit (tests/test_evaluate.py checks it), so that a pair scored in any batch, or in
    any episode, gives the same bits.

    Usage::

        class MyPairHead(PairwiseHead):
            def encode(self, features):                 # [V, T, d] -> [V, d]
                return features.mean(dim=1)
            def pair_scores(self, support, query):      # [P, d], [P, d] -> [P]
                return -(support - query).pow(2).sum(dim=-1)
            def reduce_pairs(self, scores):             # [E, Q, N, K] -> [E, Q, N]
                return scores.mean(dim=-1)
    """

    def pair_scores(self, support: Reps, query: Reps) -> Tensor:
        """support [P, ...], query [P, ...] (row p is one pair) -> scores [P, ...]."""
        raise NotImplementedError

    def reduce_pairs(self, scores: Tensor) -> Tensor:
        """Pair scores [E, Q, N, K, ...] -> logits [E, Q, N]."""
        raise NotImplementedError

    def logits(self, support: Reps, query: Reps) -> Tensor:
        """support [E, N, K, ...], query [E, Q, ...] -> [E, Q, N], via every pair of the episodes."""
        pair_support, pair_query, lead = expand_pairs(support, query)
        scores = self.pair_scores(pair_support, pair_query)
        return self.reduce_pairs(scores.reshape(*lead, *scores.shape[1:]))


def expand_pairs(support: Reps, query: Reps) -> tuple[Reps, Reps, tuple[int, int, int, int]]:
    """Every (query, support video) pair of E episodes as rows: support [E, N, K, ...] and query [E, Q, ...]
    -> (support rows [E*Q*N*K, ...], query rows [E*Q*N*K, ...], (E, Q, N, K)), row order E, Q, N, K."""
    episodes, way, shot = _first_tensor(support).shape[:3]
    queries = _first_tensor(query).shape[1]
    lead = (episodes, queries, way, shot)

    def support_rows(tensor: Tensor) -> Tensor:
        return tensor[:, None].expand(*lead, *tensor.shape[3:]).reshape(-1, *tensor.shape[3:])

    def query_rows(tensor: Tensor) -> Tensor:
        return tensor[:, :, None, None].expand(*lead, *tensor.shape[2:]).reshape(-1, *tensor.shape[2:])

    return map_reps(support, support_rows), map_reps(query, query_rows), lead


def _first_tensor(reps: Reps) -> Tensor:
    return reps if isinstance(reps, Tensor) else next(iter(reps.values()))


def _strip_prefixes(key: str) -> str:
    """Drop DataParallel/DDP ``module.`` parts wherever they occur, then a leading ``head.``."""
    key = ".".join(part for part in key.split(".") if part != "module")
    return key.removeprefix("head.")
