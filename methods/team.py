"""TEAM: temporal alignment-free matching with pattern tokens (Lee et al., CVPR 2025).

Per video (``encode``, cached): conv5 maps are average-pooled to frames, A learnable pattern tokens attend over
the T frames (single head, shared LayerNorm), giving the video's attended tokens O and its instance patterns
``pos = ReLU(u + MLP(u))``, ``u = AP + O`` and ``neg`` with ``AP − O``. Per episode (``logits``): class prototypes
(the shot mean of the pooled frames; at 1-shot the cached video itself), exclusive patterns that push each class
away from every other class by the token-wise similarity of their patterns, then token-wise cosine distances
summed over the A tokens: ``logits = −(c_pos + c_neg)``. Semantics: ``tests/data/parity/README.md`` (TEAM).

Usage::

    from fsar_bench.api import HeadConfig, add_episode_axis, support_to_episode
    from methods.team import TeamHead

    head = TeamHead(HeadConfig(dim=2048, frames=8, num_base_classes=64, feature_size=(7, 7),
                               options={"pattern_tokens": 60}))
    support = support_to_episode(head.encode(support_maps), way=5, shot=1)   # maps [N*K, T, d, h, w], class-major
    logits = head.logits(support, add_episode_axis(head.encode(query_maps)))  # [1, Q, N]
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsar_bench.api import (
    FewShotHead,
    HeadConfig,
    LossOutput,
    MethodCard,
    ReferenceCheckpoint,
    Preprocess,
    Recipe,
    Reps,
    TrainEpisode,
    add_episode_axis,
    adopted,
    reference_recipe,
    support_to_episode,
    synthetic_recipe,
)
from fsar_bench.layers import ScaledPositionalEncoding, rename_keys

COSINE_EPS = 1e-8
"""``F.cosine_similarity``'s eps: each norm is clamped to at least this."""
POSITIONAL_LENGTH_FACTOR = 1.5
"""The positional table holds ``int(1.5·T)`` rows; only the first T are used."""


# --------------------------------------------------------------------------- options
@dataclass(frozen=True)
class TeamOptions:
    """TEAM's sizes and dropouts (the reference's; its loss has no weights: CE_pos + CE_neg)."""

    pattern_tokens: int = 60  # A (--agg_num): 60 at 1-shot, 70 (HMDB51) or 80 (Kinetics, UCF101) at 5-shot
    positional_scale: float = 0.1  # the sinusoid's amplitude (pe_scale_factor), the only source of frame order
    heads: int = 8  # sets only the attention temperature sqrt(d // heads): the attention has one head
    dropout: float = 0.1  # after the positional encoding
    attention_dropout: float = 0.1  # on the attention probabilities
    output_dropout: float = 0.1  # on the attended tokens ("refine")


# --------------------------------------------------------------------------- head


class PatternMatching(nn.Module):
    """The reference's ``Discriminative_Pattern_Matching``: pattern tokens ``AP`` [1, A, d], a positional table, one
    LayerNorm shared by tokens and frames, and a residual MLP (Linear d→d, ReLU, Linear d→d)."""

    REFERENCE_RULES = (
        ("patterns", "AP"),
        ("positional.table", "pe.pe"),
        ("norm.", "ln."),
        ("mlp_hidden.", "mlp.inp_fc."),
        ("mlp_out.", "mlp.out_fc."),
    )

    def __init__(self, dim: int, frames: int, options: TeamOptions) -> None:
        super().__init__()
        self.patterns = nn.Parameter(torch.randn(1, options.pattern_tokens, dim))
        self.positional = ScaledPositionalEncoding(dim, int(POSITIONAL_LENGTH_FACTOR * frames), options.dropout,
                                                   options.positional_scale)
        self.norm = nn.LayerNorm(dim)
        self.temperature = (dim // options.heads) ** 0.5
        self.attention_dropout = nn.Dropout(options.attention_dropout)
        self.output_dropout = nn.Dropout(options.output_dropout)
        self.mlp_hidden = nn.Linear(dim, dim)
        self.mlp_out = nn.Linear(dim, dim)

    def attend(self, frames: Tensor) -> Tensor:
        """frames [..., T, d] -> attended tokens O [..., A, d]: ``softmax(LN(AP)·LN(x')ᵀ/τ)·LN(x')``, x' = x + pe."""
        normed = self.norm(self.positional(frames))
        scores = (self.norm(self.patterns[0]) / self.temperature) @ normed.transpose(-1, -2)  # [..., A, T]
        return self.output_dropout(self.attention_dropout(scores.softmax(dim=-1)) @ normed)

    def refine(self, tokens: Tensor, hidden: Tensor) -> Tensor:
        """``ReLU(u + out_fc(ReLU(h)))`` for tokens u whose ``inp_fc(u)`` is ``hidden`` (linear, so it is assembled
        from per-item parts by the callers)."""
        return torch.relu(tokens + self.mlp_out(torch.relu(hidden)))

    def instance_patterns(self, attended: Tensor) -> tuple[Tensor, Tensor]:
        """O [..., A, d] -> (pos, neg): ``ReLU(u + MLP(u))`` for u = AP + O and for u = AP − O."""
        patterns = self.patterns[0]
        base = F.linear(patterns, self.mlp_hidden.weight, self.mlp_hidden.bias)
        projected = F.linear(attended, self.mlp_hidden.weight)
        return self.refine(patterns + attended, base + projected), self.refine(patterns - attended, base - projected)


class TeamHead(FewShotHead):
    """TEAM over conv5 maps ``[V, T, d, h, w]``.

    Cached per video: ``{"frames": pooled [V, T, d], "attended": O [V, A, d], "pos": [V, A, d], "neg": [V, A, d]}``.
    """

    options_class = TeamOptions
    feature_maps = True

    def __init__(self, config: HeadConfig) -> None:
        super().__init__(config)
        self.matching = PatternMatching(config.dim, config.frames, self.options)

    # -- per video
    def encode(self, features: Tensor) -> Reps:
        """maps [V, T, d, h, w] -> {"frames": [V, T, d], "attended", "pos", "neg": [V, A, d]}."""
        frames = features.mean(dim=-1).mean(dim=-1)  # over W, then H, as the reference
        attended = self.matching.attend(frames)
        positive, negative = self.matching.instance_patterns(attended)
        return {"frames": frames, "attended": attended, "pos": positive, "neg": negative}

    # -- per episode, batched
    def episode_outputs(self, support: Reps, query: Reps) -> dict[str, Tensor]:
        """support [E, N, K, ...] class-major, query [E, Q, ...] -> logits, logits_pos, logits_neg [E, Q, N] and the
        support patterns (``support_pos``/``_neg`` [E, N, A, d]), similarities (``sim_pos``/``_neg``
        [E, N, N−1, A]) and exclusive patterns (``disc_pos``/``_neg`` [E, N, A, d])."""
        assert isinstance(support, dict) and isinstance(query, dict)
        episodes, way, shot = support["frames"].shape[:3]
        matching = self.matching
        if shot == 1:  # the prototype is the video: its cached tokens are exact
            attended, support_pos, support_neg = (support[key][:, :, 0] for key in ("attended", "pos", "neg"))
        else:  # prototypes are shot means of the pooled frames, before any learned module
            attended = matching.attend(support["frames"].mean(dim=2))
            support_pos, support_neg = matching.instance_patterns(attended)
        others = torch.tensor([[other for other in range(way) if other != c] for c in range(way)],
                              device=attended.device, dtype=torch.long)  # [N, N-1], ascending
        sim_pos = _token_cosine(support_pos[:, :, None], support_pos[:, others])  # [E, N, N-1, A]
        sim_neg = _token_cosine(support_neg[:, :, None], support_neg[:, others])
        patterns = matching.patterns[0]
        base = F.linear(patterns, matching.mlp_hidden.weight, matching.mlp_hidden.bias)  # inp_fc(AP)
        projected = F.linear(attended, matching.mlp_hidden.weight)  # [E, N, A, d], inp_fc(O) without bias
        own, own_projected = attended[:, :, None], projected[:, :, None]
        shift, shift_projected = attended[:, others] - own, projected[:, others] - own_projected  # [E, N, N-1, A, d]
        weight_pos, weight_neg = sim_pos[..., None], sim_neg[..., None]
        disc_pos = matching.refine(patterns + own - weight_pos * shift,
                                   base + own_projected - weight_pos * shift_projected).mean(dim=2)
        disc_neg = matching.refine(patterns - own + weight_neg * shift,
                                   base - own_projected + weight_neg * shift_projected).mean(dim=2)
        distance_pos = _summed_cosine_distance(disc_pos, query["pos"])  # [E, Q, N]
        distance_neg = (_max_over_other_classes(_summed_cosine_distance(disc_pos, query["neg"]))
                        + _max_over_other_classes(_summed_cosine_distance(disc_neg, query["pos"]))) / 2
        return {
            "logits": -(distance_pos + distance_neg), "logits_pos": -distance_pos, "logits_neg": -distance_neg,
            "support_pos": support_pos, "support_neg": support_neg, "sim_pos": sim_pos, "sim_neg": sim_neg,
            "disc_pos": disc_pos, "disc_neg": disc_neg,
        }

    def logits(self, support: Reps, query: Reps) -> Tensor:
        """support [E, N, K, ...] class-major, query [E, Q, ...] -> ``−(c_pos + c_neg)`` [E, Q, N]."""
        return self.episode_outputs(support, query)["logits"]

    # -- training
    def loss(self, support_features: Tensor, query_features: Tensor, episode: TrainEpisode) -> LossOutput:
        """CE(logits_pos) + CE(logits_neg) (``TEAM.loss``; the combined logits are not trained directly). The
        reference divides by tasks_per_batch, as the trainer divides ``total`` by ``episodes_per_step``."""
        support = support_to_episode(self.encode(support_features), episode.way, episode.shot)
        query = add_episode_axis(self.encode(query_features))
        outputs = self.episode_outputs(support, query)
        ce_pos = F.cross_entropy(outputs["logits_pos"][0], episode.query_labels)
        ce_neg = F.cross_entropy(outputs["logits_neg"][0], episode.query_labels)
        return LossOutput(total=ce_pos + ce_neg, terms={"ce_pos": ce_pos, "ce_neg": ce_neg},
                          logits=outputs["logits"][0])

    # -- reference checkpoints
    def reference_key_map(self) -> dict[str, str]:
        """Our key -> the reference's (``DPM.{AP, pe.pe, ln.*, mlp.inp_fc.*, mlp.out_fc.*}``)."""
        rules = [("matching." + ours, "DPM." + theirs) for ours, theirs in PatternMatching.REFERENCE_RULES]
        return rename_keys(self.state_dict(), rules)


def _token_cosine(first: Tensor, second: Tensor) -> Tensor:
    """Cosine over the last axis with each norm clamped to ``COSINE_EPS`` (``F.cosine_similarity``), broadcast."""
    return (_unit(first) * _unit(second)).sum(dim=-1)


def _unit(tokens: Tensor) -> Tensor:
    return tokens / tokens.norm(dim=-1, keepdim=True).clamp_min(COSINE_EPS)


def _summed_cosine_distance(support: Tensor, query: Tensor) -> Tensor:
    """support [E, N, A, d], query [E, Q, A, d] -> ``Σ_a (1 − cos(s_a, q_a))`` [E, Q, N] (token-wise, same a)."""
    tokens = support.shape[2]
    similarity = torch.einsum("enad,eqad->eqn", _unit(support), _unit(query))
    return tokens - similarity


def _max_over_other_classes(distances: Tensor) -> Tensor:
    """[E, Q, N] -> [E, Q, N]: entry c is the maximum over the classes o ≠ c (class c's own value never enters)."""
    way = distances.shape[-1]
    own = torch.eye(way, dtype=torch.bool, device=distances.device)
    return distances[..., None, :].expand(*distances.shape, way).masked_fill(own, float("-inf")).amax(dim=-1)


# --------------------------------------------------------------------------- recipes
TEAM_RESNET50_PREPROCESS = Preprocess(resize="short-side", resize_to=256, crop=224)
"""TEAM: frames extracted at short side 256 (preprocess.py), Resize(256), centre crop 224, mean 0.45, std 0.225."""


TEAM_REPO = "leesb7426/TEAM@8bd6b6e"
TEAM_RESNET_SCRIPTS = ("scripts/run_hmdb.sh", "scripts/run_kinetics.sh", "scripts/run_ucf.sh")
"""The scripts with ResNet lines (line 3: 1-shot, line 8: 5-shot); scripts/run_ssv2_small.sh has ViT lines only."""
TEAM_RUN_SOURCES = {
    "optimizer": "run_train.py:45-51 --opt sgd (default, l.94): torch.optim.SGD",
    "momentum": "run_train.py:49 momentum=0.9",
    "nesterov": "run_train.py:51 nesterov=True",
    "weight_decay": "run_train.py:50 weight_decay=5e-4 (every parameter)",
    "iterations": "run_train.py:116 training_iterations = 10000",
    "lr_steps": "run_train.py:117-118 steps_iter 1000, steps [0, 3, 5, 7] (lr_policy.py:9-19 at task/1000, no warm-up)",
    "lr_factors": "run_train.py:119 lrs [1, 0.5, 0.1, 0.01] (relative lrs, as successive factors)",
    "train_queries_per_class": "run_train.py:86 --query_per_class 6 (default; the scripts pass none)",
    "resize": "preprocess.py:11-15 (ffmpeg: short side 256) + video_reader.py:94 Resize(256)",
    "resize_to": "video_reader.py:94 Resize(256)",
    "antialias": "videotransforms/functional.py:55-59 (Resize's default 'nearest' selects PIL bilinear)",
    "random_crop": "video_reader.py:100 RandomCrop(224)",
    "flip": "video_reader.py:99 RandomHorizontalFlip (every training clip)",
    "color_jitter": "video_reader.py:101-104 ColorJitter (every training clip)",
    "jitter": "video_reader.py:101-104 ColorJitter(0.5, 0.5, 0.5, 0.25), no grayscale",
    "frame_sampler": "video_reader.py:268-271 (segments of n//8 frames, one random frame each; the last n mod 8 "
                     "never sampled: molo-segment's formula)",
    "val_every": "fsar-bench: every 500 episodes (TEAM saves a checkpoint every 500 tasks, run_train.py:138, "
                 "and picks the best on test)",
    "val_episodes": "fsar-bench: >= 1,000 val episodes (TEAM tests on 10,000 tasks, run_train.py:90)",
}
"""run_train.py's, preprocess.py's and video_reader.py's facts every ResNet script shares (file:line in
``TEAM_REPO``)."""


def _team_recipe(notes: str, script: str | None = None, five_shot_tokens: int = 80, pattern_tokens: int = 60,
                 why: str = "") -> Recipe:
    """run_train.py with the ResNet lines of ``script`` (scripts/run_*.sh; None: the ResNet lines' common settings,
    identical in every script at 1-shot): line 3 trains 1-shot with ``pattern_tokens``, line 8 5-shot with
    ``five_shot_tokens`` and nothing else changed. Its lr_policy has no warm-up (unlike the MoLo family's, which
    ``reference_recipe``'s STEPS_ITER implies), so the steps are given directly. ``why``: the reason the settings
    are used for a benchmark no script covers (appended to every source)."""
    where = f"{script}:3" if script else "the ResNet lines of " + ", ".join(f"{name}:3" for name in TEAM_RESNET_SCRIPTS)
    sources = {key: text if text.startswith("fsar-bench") else f"{TEAM_REPO} {text}"
               for key, text in TEAM_RUN_SOURCES.items()}
    sources.update({
        "lr": f"{TEAM_REPO} {where} --learning_rate 0.001",
        "episodes_per_step": f"{TEAM_REPO} {where} --tasks_per_batch 16 (optimizer step: run_train.py:184-187)",
        "head_options": f"{TEAM_REPO} {where} --agg_num {pattern_tokens} (1-shot)",
        "head_options_by_shot": (f"{TEAM_REPO} {script}:8 --shot 5 --agg_num {five_shot_tokens}" if script else
                                 f"fsar-bench: --agg_num {five_shot_tokens} at 5-shot, as {TEAM_REPO} scripts/run_kinetics.sh:8 and "
                                 "scripts/run_ucf.sh:8 (run_hmdb.sh:8 uses 70; the SSv2-Small ViT line 80)"),
    })
    if why:
        sources = {key: f"{text} [{why}]" for key, text in sources.items()}
    constant = reference_recipe(
        optimizer="sgd", lr=1e-3, momentum=0.9, weight_decay=5e-4, iterations=10_000, iterations_per_step=16,
        train_queries_per_class=6, head_options={"pattern_tokens": pattern_tokens},
        head_options_by_shot={5: {"pattern_tokens": five_shot_tokens}}, val_every=500,
        val_episodes=1000, notes=notes, nesterov=True,
        # video_reader.py: resize 256, flip, random 224 crop, ColorJitter(0.5, 0.5, 0.5, 0.25) on every clip
        resize="short-side", resize_to=256, antialias=True, random_crop=True, flip="all", color_jitter="all",
        jitter=(0.5, 0.5, 0.5, 0.25, 0.0), frame_sampler="molo-segment", sources=sources,
    )
    return dataclasses.replace(constant, lr_steps=(3000, 5000, 7000), lr_factors=(0.5, 0.2, 0.1))


_NO_RESNET_SSV2 = ("TEAM releases no ResNet setting for SSv2 (scripts/run_ssv2_small.sh has ViT lines only): the "
                   "ResNet scripts' common settings")
TEAM_RECIPES = {
    "hmdb51": _team_recipe("scripts/run_hmdb.sh ResNet lines: A (agg_num) 60 at 1-shot, 70 at 5-shot",
                           "scripts/run_hmdb.sh", five_shot_tokens=70),
    "kinetics100": _team_recipe("scripts/run_kinetics.sh ResNet lines (splits/kinetics is the CMN list): A 60 at "
                                "1-shot, 80 at 5-shot", "scripts/run_kinetics.sh"),
    "ucf101": _team_recipe("scripts/run_ucf.sh ResNet lines: A 60 at 1-shot, 80 at 5-shot", "scripts/run_ucf.sh"),
    "ssv2-small": _team_recipe("no ResNet script for SSv2-Small (scripts/run_ssv2_small.sh has ViT lines only: "
                               "lr 5e-4, A 50 / 80, 4 tasks per step): the ResNet scripts' common settings",
                               why=_NO_RESNET_SSV2),
    "ssv2-full": _team_recipe("TEAM releases no SSv2-Full setting: the ResNet scripts' common settings",
                              why=_NO_RESNET_SSV2),
    "synthetic": synthetic_recipe(
        train_queries_per_class=6, head_options={"pattern_tokens": 16, "positional_scale": 1.0},
        notes="Synthetic (small CNN, d=128, CPU): the shared budget with the scripts' 6 train queries per class, 16 "
        "pattern tokens and a positional sinusoid of amplitude 1 (reference 0.1): frame order reaches TEAM's "
        "alignment-free pattern tokens only through it, and synthetic's test classes are time-reversed pairs",
    ),
}
TEAM_RECIPES["kinetics100-molo"] = adopted(TEAM_RECIPES["kinetics100"], "the CMN-list recipe on the MoLo/HyRSM Kinetics list")
TEAM_RECIPES["finegym"] = adopted(TEAM_RECIPES["ssv2-full"], "fsar-bench's choice for finegym (no reference trained on FineGym): "
                          "the SSv2-Full recipe, the other fine-grained motion benchmark")

# --------------------------------------------------------------------------- cards
TEAM_NOTES = """Recipes: run_train.py as the ResNet scripts run it: SGD, momentum 0.9, Nesterov, weight decay 5e-4
on every parameter, lr 1e-3 x 1 / 0.5 / 0.1 / 0.01 from task 0 / 3000 / 5000 / 7000 (steps_iter 1000, steps
[0, 3, 5, 7], no warm-up), 10,000 tasks, 16 tasks per optimizer step, 6 train queries per class; training frames
one random frame from each of 8 segments of n//8 frames (video_reader.py:268-271, the molo-segment formula).
The number of pattern tokens A is a head option: 60 at 1-shot, and at 5-shot the scripts' 70 (HMDB51) or 80
(Kinetics, UCF101; SSv2 and FineGym, which no ResNet script covers, take 80 too) via head_options_by_shot. Shots 2-4
(no script) use the 1-shot value.
Loss: CE(logits_pos) + CE(logits_neg) (TEAM.loss; the combined logits are not trained directly), divided by
tasks_per_batch in run_train.py as the trainer divides by episodes_per_step.
Where the reference departs from the protocol, and what fsar-bench does:
- checkpoint selection: run_eval.py / run_remain_best.py evaluate all 20 checkpoints (every 500 tasks) on the
  TEST split and keep the best, so the published numbers are a maximum over 20 test evaluations. fsar-bench
  selects on val (every 500 episodes, 1,000 val episodes) and evaluates test once.
- mixed precision: training and evaluation run under torch.cuda.amp.autocast (fp16 matmuls, no GradScaler);
  fsar-bench follows its own AMP setting.
- dropout: during training the reference recomputes the prototypes' attended tokens for the exclusive patterns
  (a second dropout draw); here one draw is shared. Eval is deterministic in both.
Reference checkpoints: {iteration, model_state_dict, optimizer_state_dict}; DPM.* plus backbone.<i>.* (or
backbone.module.<i>.* with DataParallel).
Cached encoding per video: pooled frames plus attended tokens and both instance patterns, (T + 3A)·d floats
(T=8, A=60, d=2048: 385,024 floats, 1.5 MiB). At 1-shot the support patterns come from the cache; at K>1 the
prototypes' tokens are computed per episode, as are the N(N-1) exclusive-pattern MLPs (A rows each) of every
episode."""

CARDS = (
    MethodCard(
        name="team",
        head=TeamHead,
        summary="A learnable pattern tokens attend over the frames (no temporal alignment); exclusive patterns "
        "remove what a class shares with the others; token-wise cosine distances, positive and negative",
        paper="Lee, Moon, Seong, Heo. Temporal Alignment-Free Video Matching for Few-shot Action Recognition. "
        "CVPR 2025. arXiv:2504.05956",
        reference_code="leesb7426/TEAM@8bd6b6e07cbdf992649fc758ba16f13b674f8b8f model.py TEAM, model_util.py "
        "Discriminative_Pattern_Matching, run_train.py",
        published={},
        published_source="not yet checked against the paper's tables (arXiv 2504.05956): no cell is shown; the "
        "README publishes none and public listings mix the ResNet-50 and ViT-B rows",
        recipes=TEAM_RECIPES,
        preprocess={"resnet50": TEAM_RESNET50_PREPROCESS},
        test_options={"pattern_tokens": 6},
        notes=TEAM_NOTES,
        reference_checkpoint=ReferenceCheckpoint(
            code="leesb7426/TEAM run_train.py save_checkpoint: {iteration, model_state_dict, optimizer_state_dict}; "
            "backbone.<i>.* (backbone.module.<i>.* with DataParallel), DPM.*",
            backbone_prefix="backbone.",
            selection="the best of the 20 saved checkpoints on the test split (run_eval.py, run_remain_best.py)",
        ),
    ),
)
