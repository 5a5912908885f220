"""CLIP-FSAR: CLIP-guided prototype modulating (Wang et al., IJCV 2023), RN50 branch as released.

Per video (``encode``, cached): the raw frame features ``[V, T, d]`` (CLIP image embeddings) and the query-side
temporal transformer output; the harness adds ``class_text`` ``[V, d]``, the text embedding of the video's class
(``"a photo of {class name}"`` through the backbone's text tower). Per episode (``logits``): each class's support
frames and text embeddings are averaged over shots, the text embedding is appended as an extra token, the shared
temporal transformer refines the frames (the text output is dropped), and OTAM (λ = 0.5) matches queries to
these prototypes. Training adds a video-text classification CE over the train classes' texts (weight λ_text).
Semantics: ``tests/data/parity/README.md`` (CLIP-FSAR section).

Usage::

    from fsar_bench.api import HeadConfig, add_episode_axis, support_to_episode
    from methods.clipfsar import ClipFsarHead

    head = ClipFsarHead(HeadConfig(dim=1024, frames=8, num_base_classes=64, class_text={"train": train_texts},
                                   options={"text_weight": 1.5}))          # λ_text of the Kinetics/UCF101 configs
    support = support_to_episode({**head.encode(support_features), "class_text": support_texts}, way=5, shot=1)
    logits = head.logits(support, add_episode_axis(head.encode(query_features)))       # [1, Q, N]
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsar_bench.api import (
    MOLO_REPO,
    FewShotHead,
    HeadConfig,
    LossOutput,
    MethodCard,
    Preprocess,
    Recipe,
    ReleasedConfig,
    Reps,
    TrainEpisode,
    adopted,
    loss_weight,
    molo_family_recipe,
    synthetic_recipe,
)
from fsar_bench.layers import merge_heads, otam_alignment_cost, split_heads

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIPFSAR_PREPROCESS = Preprocess(resize="squash", resize_to=256, crop=224, mean=CLIP_MEAN, std=CLIP_STD)
"""The MoLo-repository test transform with CLIP's mean and std (the CLIP-FSAR configs' DATA.MEAN/STD)."""

TRAIN_QUERIES_PER_CLASS = 5
"""QUERY_PER_CLASS of every released CLIP-FSAR config, 1-shot and 5-shot alike (so no per-shot table)."""


# --------------------------------------------------------------------------- options
@dataclass(frozen=True)
class ClipFsarOptions:
    """CLIP-FSAR's sizes, constants and loss weight (the reference's values; recipes set λ_text per dataset)."""

    heads: int = 8  # a literal 8 in the reference; head dim = d // 8
    mlp_ratio: int = 2  # Transformer_v1's default mlp_dim 2048 = 2·d at d = 1024 (RN50)
    attention_dropout: float = 0.2
    feed_forward_dropout: float = 0.05
    softmin_lambda: float = 0.5  # OTAM_cum_dist_v2's default
    cosine_eps: float = 0.01
    text_weight: float = loss_weight(3.0)  # λ_text (USE_CLASSIFICATION_VALUE); 3.0 in the SSv2 configs


# --------------------------------------------------------------------------- head
class TemporalTransformer(nn.Module):
    """CLIP-FSAR's ``Transformer_v1`` (depth 1): ``x1 = x + Attn(LN(x))``, ``x2 = x1 + FFN(x1)`` (no LN before the FFN).

    Attention: separate bias-free q/k/v projections d -> heads·(d//heads), softmax(q·kᵀ/√dh)·v, then
    Linear(heads·dh -> d) and dropout; FFN: Linear d -> r·d, exact GELU, dropout, Linear r·d -> d, dropout.
    """

    def __init__(self, dim: int, heads: int, mlp_dim: int, attention_dropout: float, feed_forward_dropout: float) -> None:
        super().__init__()
        head_dim = dim // heads
        self.heads = heads
        self.scale = head_dim ** -0.5
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, heads * head_dim, bias=False)
        self.to_k = nn.Linear(dim, heads * head_dim, bias=False)
        self.to_v = nn.Linear(dim, heads * head_dim, bias=False)
        self.to_out = nn.Linear(heads * head_dim, dim)
        self.attention_dropout = nn.Dropout(attention_dropout)
        self.ffn_in = nn.Linear(dim, mlp_dim)
        self.ffn_out = nn.Linear(mlp_dim, dim)
        self.ffn_dropout = nn.Dropout(feed_forward_dropout)

    def forward(self, tokens: Tensor) -> Tensor:
        """[B, L, d] -> [B, L, d]."""
        normed = self.norm(tokens)
        q, k, v = (split_heads(projection(normed), self.heads) for projection in (self.to_q, self.to_k, self.to_v))
        attention = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * self.scale, dim=-1)
        attended = self.attention_dropout(self.to_out(merge_heads(torch.matmul(attention, v))))
        hidden = tokens + attended
        feed = self.ffn_dropout(self.ffn_out(self.ffn_dropout(F.gelu(self.ffn_in(hidden)))))
        return hidden + feed


class ClipFsarHead(FewShotHead):
    """CLIP-FSAR over pooled CLIP frame embeddings ``[V, T, d]``.

    Reps: ``{"frames": [V, T, d], "query": [V, T, d]}`` from ``encode``, plus ``"class_text"`` ``[V, d]`` added by
    the harness (``needs_class_text``). ``config.class_text["train"]`` ``[num_base_classes, d]`` holds the train
    classes' text embeddings (a buffer outside the state dict, recomputed from the class names at build time).
    """

    options_class = ClipFsarOptions
    needs_class_text = True
    class_prompt = "a photo of {}"

    def __init__(self, config: HeadConfig) -> None:
        super().__init__(config)
        options: ClipFsarOptions = self.options
        dim = config.dim
        self.scale = nn.Parameter(torch.ones(1))
        self.transformer = TemporalTransformer(dim, options.heads, options.mlp_ratio * dim, options.attention_dropout,
                                               options.feed_forward_dropout)
        train_text = config.class_text.get("train")
        if train_text is None:
            train_text = torch.zeros(config.num_base_classes, dim)
        if tuple(train_text.shape) != (config.num_base_classes, dim):
            raise ValueError(f"clipfsar: train text table is {tuple(train_text.shape)}, expected "
                             f"({config.num_base_classes}, {dim})")
        self.register_buffer("train_text", train_text.detach().float().clone(), persistent=False)

    # -- per video
    def encode(self, features: Tensor) -> Reps:
        """[V, T, d] -> {"frames": raw [V, T, d], "query": transformer output [V, T, d]}."""
        return {"frames": features, "query": self.transformer(features)}

    # -- per episode
    def prototypes(self, frames: Tensor, class_text: Tensor) -> tuple[Tensor, Tensor]:
        """support frames [E, N, K, T, d] and texts [E, N, K, d] -> (prototypes [E, N, T, d], full transformer
        output [E, N, T+1, d]): shot means, the text appended as the last token, the text output dropped."""
        merged = torch.cat([frames.mean(dim=2), class_text.mean(dim=2).unsqueeze(2)], dim=2)  # [E, N, T+1, d]
        refined = self.transformer(merged.flatten(0, 1)).reshape(merged.shape)
        return refined[:, :, :-1], refined

    def frame_distances(self, prototypes: Tensor, query: Tensor) -> Tensor:
        """prototypes [E, N, T, d], query [E, Q, T, d] -> D [E, Q, N, T, T] = 1 - cos_eps (query frame = row)."""
        eps = self.options.cosine_eps
        dots = torch.einsum("eqid,enjd->eqnij", query, prototypes)
        norms = query.norm(dim=-1)[:, :, None, :, None] * prototypes.norm(dim=-1)[:, None, :, None, :]
        return 1 - dots / (norms + eps)

    def alignment_costs(self, distances: Tensor) -> tuple[Tensor, Tensor]:
        """D [..., T, T] -> (cum(D), cum(Dᵀ)), each [...]."""
        both = otam_alignment_cost(torch.stack((distances, distances.transpose(-1, -2))), self.options.softmin_lambda)
        return both[0], both[1]

    def logits(self, support: Reps, query: Reps) -> Tensor:
        """support {"frames": [E, N, K, T, d], "class_text": [E, N, K, d]}, query {"query": [E, Q, T, d]} -> [E, Q, N]."""
        assert isinstance(support, dict) and isinstance(query, dict)
        prototypes, _ = self.prototypes(support["frames"], support["class_text"])
        query_to_support, support_to_query = self.alignment_costs(self.frame_distances(prototypes, query["query"]))
        return -(query_to_support + support_to_query)

    def class_logits(self, frames: Tensor) -> Tensor:
        """Video-text logits over the train classes: [V, T, d] -> [V, num_base_classes] = scale·cos_eps(mean frame, text)."""
        videos = frames.mean(dim=1)
        eps = self.options.cosine_eps
        dots = videos @ self.train_text.T
        norms = videos.norm(dim=-1)[:, None] * self.train_text.norm(dim=-1)[None, :]
        return self.scale * dots / (norms + eps)

    # -- training
    def loss(self, support_features: Tensor, query_features: Tensor, episode: TrainEpisode) -> LossOutput:
        """CE(logits) + λ_text·CE(video-text logits over the train classes).

        ``total`` is the reference's per-episode loss × BATCH_SIZE (4): the reference divides by 4 and accumulates
        4 episodes per GPU over 4 GPUs, so ``total / episodes_per_step`` (16) gives its gradient (as HyRSM, MoLo).
        """
        way, shot = episode.way, episode.shot
        support = {"frames": support_features.reshape(1, way, shot, *support_features.shape[1:]),
                   "class_text": self.train_text[episode.support_base_labels].reshape(1, way, shot, -1)}
        logits = self.logits(support, {"query": self.transformer(query_features).unsqueeze(0)})[0]
        ce = F.cross_entropy(logits, episode.query_labels)
        class_logits = self.class_logits(torch.cat([support_features, query_features]))
        targets = torch.cat([episode.support_base_labels, episode.query_base_labels])
        ce_text = F.cross_entropy(class_logits, targets)
        total = ce + self.options.text_weight * ce_text
        return LossOutput(total=total, terms={"ce": ce.detach(), "ce_text": ce_text.detach()}, logits=logits)

    # -- reference checkpoints
    def reference_key_map(self) -> dict[str, str]:
        """Our key -> the reference's (``CNN_OTAM_CLIPFSAR``: ``scale`` and ``context2.layers.0.*``)."""
        prefix = "context2.layers.0."
        names = {"scale": "scale", "transformer.norm": prefix + "0.norm", "transformer.to_q": prefix + "0.fn.to_q",
                 "transformer.to_k": prefix + "0.fn.to_k", "transformer.to_v": prefix + "0.fn.to_v",
                 "transformer.to_out": prefix + "0.fn.to_out.0", "transformer.ffn_in": prefix + "1.net.0",
                 "transformer.ffn_out": prefix + "1.net.3"}
        mapped = {}
        for key in self.state_dict():
            stem, _, leaf = key.rpartition(".")
            mapped[key] = names[key] if key in names else f"{names[stem]}.{leaf}"
        return mapped


# --------------------------------------------------------------------------- recipes
_NO_QUERY_AUGMENTATION = ("No AUGMENTATION.SUPPORT_QUERY_DIFF (COLOR_AUG false): supports and queries alike get the "
                          "squash to 256x256 and a random 224 crop, never a flip or colour jitter")


def _released(folder: str, name: str, lines: dict[str, int], *, lr: float, warmup_from: float, steps_iter: int,
              steps: tuple[int, ...], lrs: tuple[float, ...], tasks: int, val_fre_iter: int, text_weight: float,
              sampler: str = "molo-segment", query_augmentation: bool = False, five_shot: str = "") -> Recipe:
    """One released ``configs/projects/CLIPFSAR/<folder>/CLIPFSAR_<name>_1shot_v1.yaml`` (values and their lines),
    on the MoLo-repository trainer as it runs (``molo_family_recipe``: as-run schedule, optimiser groups)."""
    path = f"configs/projects/CLIPFSAR/{folder}/CLIPFSAR_{name}_1shot_v1.yaml"
    config = ReleasedConfig(MOLO_REPO, path, lines)
    augmentation = (f"AUGMENTATION.SUPPORT_QUERY_DIFF (line {lines['SUPPORT_QUERY_DIFF']}): queries also flipped and "
                    "colour-jittered" if query_augmentation else _NO_QUERY_AUGMENTATION)
    notes = (f"{path} (the _5shot_v1.yaml file differs in SHOT_TEST 5 and MERGE_BEFORE{five_shot}: it trains 1-shot "
             f"episodes; we train at the protocol's shot). {augmentation}.")
    recipe = molo_family_recipe(
        config, lr=lr, warmup_start_lr=warmup_from, steps_iter=steps_iter, steps=steps, lrs=lrs, num_train_tasks=tasks,
        batch_size_per_task=4, val_fre_iter=val_fre_iter, query_per_class=TRAIN_QUERIES_PER_CLASS,
        frame_sampler=sampler, head_options={"text_weight": (text_weight, "USE_CLASSIFICATION_VALUE")},
        query_augmentation=query_augmentation, notes=notes,
    )
    if not query_augmentation:
        return recipe
    switch = config.source("SUPPORT_QUERY_DIFF", note="true")
    sources = {**recipe.sources, **{key: f"{recipe.sources[key]}; {switch}" for key in ("flip", "color_jitter")}}
    return dataclasses.replace(recipe, sources=sources)


_SSV2_FULL = _released(
    "ssv2_full", "SSv2_Full", dict(USE_CLASSIFICATION_VALUE=6, QUERY_PER_CLASS=12, NUM_TRAIN_TASKS=14, VAL_FRE_ITER=16,
                                   BATCH_SIZE_PER_TASK=19, SAMPLING_RATE=43, BASE_LR=58, STEPS_ITER=60, STEPS=61,
                                   LRS=62, WARMUP_START_LR=67),
    lr=5e-5, warmup_from=1e-5, steps_iter=4000, steps=(0, 4, 6), lrs=(1, 0.1, 0.01), tasks=30_000, val_fre_iter=1000,
    text_weight=3.0)
_KINETICS = _released(
    "kinetics100", "K100", dict(USE_CLASSIFICATION_VALUE=7, QUERY_PER_CLASS=14, NUM_TRAIN_TASKS=16, VAL_FRE_ITER=18,
                                BATCH_SIZE_PER_TASK=21, SUPPORT_QUERY_DIFF=29, SAMPLING_RATE=46, BASE_LR=61,
                                STEPS_ITER=63, STEPS=64, LRS=65, WARMUP_START_LR=70),
    lr=1e-5, warmup_from=5e-6, steps_iter=250, steps=(0, 6, 9), lrs=(1, 0.1, 0.01), tasks=5000, val_fre_iter=100,
    text_weight=1.5, sampler="molo-kinetics", query_augmentation=True)

CLIPFSAR_RECIPES = {
    "ssv2-full": _SSV2_FULL,
    "ssv2-small": _released(
        "ssv2_small", "SSv2_Small", dict(USE_CLASSIFICATION_VALUE=6, QUERY_PER_CLASS=12, NUM_TRAIN_TASKS=14,
                                         VAL_FRE_ITER=16, BATCH_SIZE_PER_TASK=18, SAMPLING_RATE=44, BASE_LR=59,
                                         STEPS_ITER=61, STEPS=62, LRS=63, WARMUP_START_LR=68),
        lr=5e-5, warmup_from=2e-5, steps_iter=2000, steps=(0, 4, 6), lrs=(1, 0.1, 0.01), tasks=30_000,
        val_fre_iter=1000, text_weight=3.0),
    "kinetics100-molo": _KINETICS,
    "kinetics100": adopted(_KINETICS, "CLIP-FSAR trained on the MoLo/HyRSM Kinetics list (kinetics100-molo: its "
                           "configs/projects/CLIPFSAR/kinetics100/*_few_shot.txt are MoLo's files); the same config on "
                           "the CMN list"),
    "ucf101": _released(
        "ucf101", "UCF101", dict(USE_CLASSIFICATION_VALUE=6, QUERY_PER_CLASS=13, NUM_TRAIN_TASKS=15, VAL_FRE_ITER=17,
                                 BATCH_SIZE_PER_TASK=20, SAMPLING_RATE=45, BASE_LR=61, STEPS_ITER=63, STEPS=64, LRS=65,
                                 WARMUP_START_LR=70),
        lr=2e-6, warmup_from=1e-7, steps_iter=600, steps=(0, 4, 6), lrs=(1, 0.1, 0.01), tasks=3000, val_fre_iter=100,
        text_weight=1.5, five_shot=", and it moves MEAN/STD under SOLVER (its lines 66-67), where nothing reads "
        "them, so that run normalised with the base configs' 0.45/0.225 (configs/pool/base.yaml:55-56); we use CLIP's "
        "at every shot"),
    "hmdb51": _released(
        "hmdb51", "HMDB51", dict(USE_CLASSIFICATION_VALUE=6, QUERY_PER_CLASS=13, NUM_TRAIN_TASKS=15, VAL_FRE_ITER=17,
                                 BATCH_SIZE_PER_TASK=20, SAMPLING_RATE=44, BASE_LR=61, STEPS_ITER=63, STEPS=64, LRS=65,
                                 WARMUP_START_LR=70),
        lr=1e-5, warmup_from=1e-6, steps_iter=700, steps=(0, 4, 6), lrs=(1, 0.1, 0.01), tasks=5000, val_fre_iter=300,
        text_weight=1.2),
    "finegym": adopted(_SSV2_FULL, "fsar-bench's choice for finegym (no reference trained on FineGym): the "
                       "SSv2-Full config, the other fine-grained motion benchmark"),
    "synthetic": synthetic_recipe(
        iterations=150, val_every=50, val_episodes=100, head_options={"text_weight": 3.0},
        notes="Synthetic (a CLIP backbone at 64x64 on CPU; CLIP-FSAR needs a text tower, so never the small CNN): "
        "Adam lr 1e-3, 5 train queries per class, λ_text 3.0 (SSv2-Full), no augmentation. Shorter than the shared "
        "budget: 150 iterations of one episode each (a quarter of its 600: CLIP RN50 costs ~30x the small CNN per "
        "frame), val (100 episodes) every 50 iterations",
    ),
}

# --------------------------------------------------------------------------- cards
CLIPFSAR_NOTES = """\
Reference: CNN_OTAM_CLIPFSAR (RN50 branch) of the released code; the harness supplies the backbone (any backbone with
a text tower: clip-rn50 as published, clip-vit-b16) and the class texts, "a photo of {name}" with underscores in
folder names read as spaces, embedded once by the backbone's text tower (never trained, not in checkpoints).
Recipes: the released configs (alibaba-mmai-research/MoLo@f7f73b6
configs/projects/CLIPFSAR/*/CLIPFSAR_*_1shot_v1.yaml; CLIP-FSAR@30cf0a8 ships the same files,
tests/data/parity/README.md), every value with its file and line (`fsar-bench recipe clipfsar --dataset D`,
docs/recipes.md), on the MoLo-repository trainer as it runs: Adam with weight decay 1e-3 (the base config's
OPTIMIZER.WEIGHT_DECAY; the configs' SOLVER.WEIGHT_DECAY is never read), 0 for "bn"/"norm" parameters; the SOLVER
schedule as run (warm-up over the first STEPS_ITER iterations from WARMUP_START_LR, a step at s fires at
STEPS_ITER·ceil(s/2)). Counts are episodes: one reference iteration is 4 episodes (4 GPUs), an optimizer step 16
(BATCH_SIZE_PER_TASK 4). 5 training queries per class at every shot. λ_text (USE_CLASSIFICATION_VALUE) per
dataset is the head option text_weight. Frames: SAMPLING_RATE 50 (molo-segment), Kinetics 35 (molo-kinetics).
Training clips: squashed to 256x256, random 224 crop, CLIP's mean/std; only the Kinetics configs set
SUPPORT_QUERY_DIFF (queries also flipped and colour-jittered); SSv2, UCF101 and HMDB51 give queries the supports'
pipeline (no flip, no colour jitter).
Shots: prototypes always merge shots before the transformer (MERGE_BEFORE, the released 5-shot configs); at one
shot this is exactly the 1-shot configs' per-video path. The released 5-shot configs train on 1-shot episodes
(SHOT 1, SHOT_TEST 5); we train at the protocol's shot (5-shot episodes for the 5-shot protocol), in the
protocol's favour. Kinetics-100: the released configs use the MoLo list (kinetics100-molo); kinetics100 (CMN
list) gets the same recipe (adopted).
Loss: total = CE + λ_text·CE_text; the reference's per-episode loss is total/4 (its BATCH_SIZE), summed over 4
accumulated episodes and averaged over 4 GPUs, so total/episodes_per_step (16) reproduces its gradient.
Reference quirks, documented and not copied: validation on the test split (we select on val, >= 1,000 episodes,
every max(VAL_FRE_ITER x 4, 400) episodes); test frames sampled randomly for SSv2/UCF101/HMDB51 (ours are segment
centres); CLIPFSAR_UCF101_5shot_v1.yaml puts MEAN/STD under SOLVER (lines 66-67), so that run normalised with the
base configs' 0.45/0.225 (we use CLIP's at every shot); run from the MoLo repository the 5-shot configs also test
1-shot (only CLIP-FSAR's dataset file honours SHOT_TEST).
Reference checkpoints: none loadable yet (reference_checkpoint None). The reference saves the whole model: the
head under head.* (scale, context2.layers.0.*: reference_key_map covers them) and the fine-tuned CLIP visual tower
under head.backbone.* with OpenAI CLIP's names (conv1, bn1, ..., layer4, attnpool.*), while the clip-rn50 backbone
keeps open_clip's tower under visual.*; mapping those keys needs a reference_key_map on the backbone
(fsar_bench/backbones), not on this card. Published numbers: none entered yet (arXiv 2303.02982 reports RN50 and
ViT-B/16 rows; to be copied with their backbone as (dataset, shot, backbone) keys once checked against the paper).
Cached encoding per video: raw frames and query-side transformer output, 2·T·d floats, plus the class text (d
floats)."""

CARDS = (
    MethodCard(
        name="clipfsar",
        head=ClipFsarHead,
        summary=("CLIP-FSAR: class-text token appended to shot-merged support frames, shared temporal transformer, "
                 "OTAM (λ=0.5) matching; video-text CE over the train classes' prompts (λ_text)."),
        paper=("Wang, Zhang, Cen, Gao, Zhang, Zhao, Sang. CLIP-guided Prototype Modulating for Few-shot Action "
               "Recognition. IJCV 2023. arXiv:2303.02982"),
        reference_code=("alibaba-mmai-research/CLIP-FSAR@30cf0a8cf5287a56a9f37bfceb28e82be776fc5d models/base/few_shot.py "
                        "CNN_OTAM_CLIPFSAR (byte-identical in alibaba-mmai-research/MoLo@f7f73b6dd8cba446b414b1c47652ab26033bc88e), "
                        "runs/train_net_few_shot.py"),
        published={},
        published_unconfirmed={},
        published_source="none entered yet: arXiv 2303.02982's tables (RN50 and ViT-B/16 rows) are still to be "
        "checked against a second public source",
        published_backbone="clip-rn50",
        recipes=CLIPFSAR_RECIPES,
        preprocess={"clip-rn50": CLIPFSAR_PREPROCESS, "clip-vit-b16": CLIPFSAR_PREPROCESS},
        test_options={"heads": 4},
        notes=CLIPFSAR_NOTES,
        reference_checkpoint=None,  # the CLIP tower's keys need a backbone-side map (see notes)
    ),
)
