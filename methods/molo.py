"""MoLo: motion-augmented long-short contrastive learning (Wang et al., CVPR 2023), Bi-MHM variant.

Per video (``encode``, cached): from conv5 maps ``[V, T, d, h, w]``, RGB frame tokens (pooled, class token,
positional encoding, one transformer layer, ReLU) and motion frame tokens (Conv3d reduction, per-frame conv,
feature differences, 1×1 expansion, pooled, same token pipeline). Per episode (``logits``): shot-mean
prototypes and ``−(BiMHM_rgb + 0.3·BiMHM_motion)``. Training adds base-class CE, four long-short contrastive
CEs and the motion auto-decoder's pixel-difference reconstruction. Semantics: ``tests/data/parity/README.md``.

Usage::

    from fsar_bench.api import HeadConfig, support_to_episode, add_episode_axis
    from methods.molo import MoloHead

    head = MoloHead(HeadConfig(dim=2048, frames=8, num_base_classes=64, feature_size=(7, 7)))
    support = support_to_episode(head.encode(support_maps), way=5, shot=1)      # maps [N*K, T, d, 7, 7]
    logits = head.logits(support, add_episode_axis(head.encode(query_maps)))   # [1, Q, N]

Ablations are their own methods: ``molo-no-motion``, ``molo-no-contrastive``, ``molo-no-recons``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsar_bench.api import (
    MOLO_REPOSITORY_CHECKPOINT,
    MOLO_RESNET50_PREPROCESS,
    FewShotHead,
    HeadConfig,
    LossOutput,
    MethodCard,
    OptionError,
    MOLO_REPO,
    Recipe,
    ReleasedConfig,
    Reps,
    TrainEpisode,
    adopted,
    loss_weight,
    molo_family_recipe,
    synthetic_recipe,
)
from fsar_bench.layers import (
    HyrsmPositionalEncoding,
    LayoutTolerantConv3d,
    MotionDecoder,
    PreNormTransformerLayer,
    all_pairs_bi_mhm,
    cosine_matrix,
    nest_rules,
    rename_keys,
)


# --------------------------------------------------------------------------- options
@dataclass(frozen=True)
class MoloOptions:
    """MoLo's sizes, constants, loss weights and ablation switches (the reference's defaults)."""

    heads: int = 8  # head_dim = dim // heads
    position_a: float = 10.0
    position_b: float = 1.0
    position_table_length: int = 20
    position_dropout: float = 0.1
    attention_dropout: float = 0.2
    feed_forward_dropout: float = 0.05
    motion_reduction: int = 8  # motion channels = dim // 8
    decoder_widths: tuple[int, ...] = (128, 32, 16)
    decoder_scales: tuple[int, ...] = (2, 4, 4)  # bilinear up factors; the product (32) maps conv5 size to pixels
    motion_weight: float = 0.3  # logits = −(BiMHM_rgb + 0.3·BiMHM_motion)
    cosine_eps: float = 0.01  # x·y / (‖x‖‖y‖ + eps)
    classification_weight: float = loss_weight(0.8)  # λ_cls
    contrastive_weight: float = loss_weight(0.05)  # λ_con
    reconstruction_weight: float = loss_weight(0.1)  # λ_rec
    reference_batch_size: int = 4  # the reference divides every term but reconstruction by this
    use_motion: bool = True
    use_contrastive: bool = True
    use_reconstruction: bool = True


# --------------------------------------------------------------------------- head
class MoloHead(FewShotHead):
    """MoLo head over conv5 maps ``[V, T, d, h, w]``.

    Cached per video: ``{"rgb": [V, T, d], "motion": [V, T-1, d]}``, the frame tokens after ReLU (class
    tokens only feed training losses, so they are not cached; without motion only "rgb").
    """

    options_class = MoloOptions
    feature_maps = True
    needs_pixels = True

    def __init__(self, config: HeadConfig) -> None:
        super().__init__(config)
        options: MoloOptions = self.options
        self.use_motion = options.use_motion
        self.use_contrastive = options.use_contrastive
        self.use_reconstruction = self.use_motion and options.use_reconstruction
        dim = config.dim
        if config.frames + 1 > options.position_table_length:
            raise OptionError(f"molo: {config.frames} frames + class token exceed position_table_length")

        def transformer() -> PreNormTransformerLayer:
            return PreNormTransformerLayer(dim, options.heads, options.attention_dropout, dim, options.feed_forward_dropout)

        self.positional_encoding = HyrsmPositionalEncoding(
            dim, options.position_table_length, options.position_a, options.position_b, options.position_dropout
        )
        self.rgb_class_token = nn.Parameter(torch.randn(1, 1, dim))
        self.rgb_transformer = transformer()
        self.base_classifier = nn.Linear(dim, config.num_base_classes)
        if self.use_contrastive:
            self.contrastive_scale = nn.Parameter(torch.ones(1))
        if self.use_motion:
            channels = dim // options.motion_reduction
            self.motion_class_token = nn.Parameter(torch.randn(1, 1, dim))
            self.motion_reduce = LayoutTolerantConv3d(dim, channels, kernel_size=3, padding=1)
            self.motion_frame_conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
            self.motion_expand = nn.Conv2d(channels, dim, kernel_size=1)
            self.motion_transformer = transformer()
            if self.use_contrastive:
                self.contrastive_scale_motion = nn.Parameter(torch.ones(1))
        if self.use_reconstruction:
            if len(options.decoder_widths) != len(options.decoder_scales):
                raise OptionError("molo: decoder_widths and decoder_scales need the same length")
            self.decoder = MotionDecoder(channels, options.decoder_widths, options.decoder_scales)

    # -- per video
    def _token_pipeline(self, frames: Tensor, class_token: Tensor, transformer: nn.Module) -> Tensor:
        """[V, L, d] -> [V, L+1, d]: prepend the class token, positional encoding, transformer (before ReLU)."""
        tokens = torch.cat([class_token.expand(frames.shape[0], -1, -1), frames], dim=1)
        return transformer(self.positional_encoding(tokens))

    def motion_differences(self, maps: Tensor) -> Tensor:
        """[V, T, d, h, w] -> differential features m[t] = conv(r[t+1]) − r[t]  [V, T-1, c, h, w]."""
        reduced = self.motion_reduce(maps.transpose(1, 2)).transpose(1, 2)  # Conv3d over (T, h, w)
        convolved = self.motion_frame_conv(reduced.flatten(0, 1)).reshape(reduced.shape)
        return convolved[:, 1:] - reduced[:, :-1]

    def tokens(self, maps: Tensor) -> dict[str, Tensor]:
        """[V, T, d, h, w] -> "rgb" [V, T+1, d] and "motion" [V, T, d] (transformer outputs before ReLU; token 0
        is the class token) and "motion_diff" [V, T-1, c, h, w]."""
        if maps.dim() != 5 or maps.shape[2] != self.config.dim:
            raise ValueError(f"molo: expected conv5 maps [V, T, {self.config.dim}, h, w], got {tuple(maps.shape)}")
        result = {"rgb": self._token_pipeline(maps.mean(dim=(-2, -1)), self.rgb_class_token, self.rgb_transformer)}
        if self.use_motion:
            differences = self.motion_differences(maps)
            expanded = torch.relu(self.motion_expand(differences.flatten(0, 1))).mean(dim=(-2, -1))
            motion_frames = expanded.reshape(*differences.shape[:2], -1)
            result["motion"] = self._token_pipeline(motion_frames, self.motion_class_token, self.motion_transformer)
            result["motion_diff"] = differences
        return result

    def encode(self, features: Tensor) -> Reps:
        """[V, T, d, h, w] -> {"rgb": [V, T, d], "motion": [V, T-1, d]} (frame tokens after ReLU)."""
        tokens = self.tokens(features)
        return {key: torch.relu(tokens[key][:, 1:]) for key in ("rgb", "motion") if key in tokens}

    # -- per episode
    def logits(self, support: Reps, query: Reps) -> Tensor:
        """support {key: [E, N, K, L, d]}, query {key: [E, Q, L, d]} -> [E, Q, N]."""
        assert isinstance(support, dict) and isinstance(query, dict)
        eps = self.options.cosine_eps
        distance = all_pairs_bi_mhm(query["rgb"], support["rgb"].mean(dim=2), eps)
        if self.use_motion:
            motion = all_pairs_bi_mhm(query["motion"], support["motion"].mean(dim=2), eps)
            distance = distance + self.options.motion_weight * motion
        return -distance

    def _long_short_logits(self, prototypes: Tensor, query: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
        """prototypes [N, L, d], query [Q, L, d] (token 0 global) -> (s2q, q2s) logits [Q, N]."""
        eps = self.options.cosine_eps
        support_frames_vs_query_global = cosine_matrix(query[None, :, 0], prototypes[:, 1:], eps)  # [N, Q, L-1]
        query_frames_vs_support_global = cosine_matrix(query[:, 1:], prototypes[None, :, 0], eps)  # [Q, L-1, N]
        s2q = -scale * (1.0 - support_frames_vs_query_global).sum(dim=-1).T
        q2s = -scale * (1.0 - query_frames_vs_support_global).sum(dim=1)
        return s2q, q2s

    def episode_outputs(
        self,
        support_maps: Tensor,
        query_maps: Tensor,
        way: int,
        shot: int,
        support_pixels: Tensor | None = None,
        query_pixels: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """One episode, every output the losses need.

        support_maps [N*K, T, d, h, w] class-major, query_maps [Q, T, d, h, w]; pixels [V, T, 3, H, W] (only
        with reconstruction). Returns "logits" [Q, N], "class_logits" [N*K+Q, classes], the contrastive
        "logits_s2q", "logits_q2s" (+ "_motion") [Q, N], and "reconstruction", "reconstruction_target"
        [(N*K+Q)*(T-1), 3, H', W'] when pixels are given, plus "tokens" (see ``tokens``).
        """
        num_support = support_maps.shape[0]
        tokens = self.tokens(torch.cat([support_maps, query_maps]))
        activated = {key: torch.relu(tokens[key]) for key in ("rgb", "motion") if key in tokens}
        pooled = sum(value.mean(dim=1) for value in activated.values())  # means include the class tokens
        outputs = {"class_logits": self.base_classifier(pooled), "tokens": tokens}
        support = {key: value[:num_support].reshape(way, shot, *value.shape[1:]) for key, value in activated.items()}
        query = {key: value[num_support:] for key, value in activated.items()}
        outputs["logits"] = self.logits(
            {key: value[None, :, :, 1:] for key, value in support.items()},
            {key: value[None, :, 1:] for key, value in query.items()},
        )[0]
        if self.use_contrastive:
            scales = {"rgb": ("", self.contrastive_scale)}
            if self.use_motion:
                scales["motion"] = ("_motion", self.contrastive_scale_motion)
            for key, (suffix, scale) in scales.items():
                s2q, q2s = self._long_short_logits(support[key].mean(dim=1), query[key], scale)
                outputs[f"logits_s2q{suffix}"], outputs[f"logits_q2s{suffix}"] = s2q, q2s
        if self.use_reconstruction and support_pixels is not None and query_pixels is not None:
            differences = tokens["motion_diff"].flatten(0, 1)  # support videos, then queries
            outputs["reconstruction"] = self.decoder(differences)
            outputs["reconstruction_target"] = self._pixel_differences(
                torch.cat([support_pixels, query_pixels]), outputs["reconstruction"].shape[-2:]
            )
        return outputs

    @staticmethod
    def _pixel_differences(pixels: Tensor, size: torch.Size) -> Tensor:
        """[V, T, 3, H, W] -> x[t+1] − x[t]  [V*(T-1), 3, *size] (bilinear resize if H×W differs from size)."""
        differences = (pixels[:, 1:] - pixels[:, :-1]).flatten(0, 1)
        if tuple(differences.shape[-2:]) != tuple(size):
            warnings.warn(
                f"molo: pixel frames are {tuple(differences.shape[-2:])} but the decoder outputs {tuple(size)} "
                "(32 × the conv5 size); resizing the reconstruction target bilinearly",
                stacklevel=3,
            )
            differences = F.interpolate(differences, size=tuple(size), mode="bilinear", align_corners=False)
        return differences

    # -- training
    def loss(self, support_features: Tensor, query_features: Tensor, episode: TrainEpisode) -> LossOutput:
        """Named terms; ``total`` = CE + λ_cls·CE_base + λ_con·ΣCE_contrastive + B·λ_rec·MSE (B = 4).

        The reference's per-episode loss is ``total / B``: it divides all but the reconstruction by its
        BATCH_SIZE B and sums B accumulated episodes per GPU over 4 GPUs, so ``total / episodes_per_step``
        (16) reproduces its gradient, including the B-fold weight it gives the reconstruction term.
        """
        if self.use_reconstruction and (episode.support_pixels is None or episode.query_pixels is None):
            raise ValueError("molo: reconstruction needs episode.support_pixels and episode.query_pixels")
        outputs = self.episode_outputs(
            support_features, query_features, episode.way, episode.shot, episode.support_pixels, episode.query_pixels
        )
        return self.loss_terms(outputs, episode)

    def loss_terms(self, outputs: dict[str, Tensor], episode: TrainEpisode) -> LossOutput:
        """The named loss terms and ``total`` (see ``loss``) from ``episode_outputs``."""
        labels = episode.query_labels
        base_labels = torch.cat([episode.support_base_labels, episode.query_base_labels])
        terms = {
            "ce_episode": F.cross_entropy(outputs["logits"], labels),
            "ce_base_class": F.cross_entropy(outputs["class_logits"], base_labels),
        }
        for name in ("logits_s2q", "logits_q2s", "logits_s2q_motion", "logits_q2s_motion"):
            if name in outputs:
                terms[f"ce_{name}"] = F.cross_entropy(outputs[name], labels)
        total = terms["ce_episode"] + self.options.classification_weight * terms["ce_base_class"]
        contrastive = [value for key, value in terms.items() if key.startswith("ce_logits_")]
        if contrastive:
            total = total + self.options.contrastive_weight * sum(contrastive)
        if "reconstruction" in outputs:
            terms["loss_recons"] = F.mse_loss(outputs["reconstruction"], outputs["reconstruction_target"])
            recons_weight = self.options.reference_batch_size * self.options.reconstruction_weight
            total = total + recons_weight * terms["loss_recons"]
        return LossOutput(total=total, terms=terms, logits=outputs["logits"])

    # -- reference checkpoints
    def reference_key_map(self) -> dict[str, str]:
        rules = [
            ("contrastive_scale", "scale"),
            ("contrastive_scale_motion", "scale_motion"),
            ("rgb_class_token", "class_token"),
            ("motion_class_token", "class_token_motion"),
            ("positional_encoding.table", "pe.pe"),
            ("motion_frame_conv.", "motion_conv."),
            ("motion_expand.", "motion_up."),
            ("base_classifier.", "classification_layer."),
            ("decoder.to_pixels.", "outc.conv."),
            *nest_rules("rgb_transformer.", "temporal_atte_before.", PreNormTransformerLayer.REFERENCE_RULES),
            *nest_rules("motion_transformer.", "temporal_atte_before_motion.", PreNormTransformerLayer.REFERENCE_RULES),
        ]
        for index in range(len(self.options.decoder_widths)):
            rules.append((f"decoder.stages.{index}.conv.", f"up{index + 1}.conv.double_conv.0."))
            rules.append((f"decoder.stages.{index}.norm.", f"up{index + 1}.conv.double_conv.1."))
        return rename_keys(self.state_dict(), rules)


# --------------------------------------------------------------------------- recipes
def _released(folder: str, name: str, lines: dict[str, int], *, lr: float, warmup_from: float, steps_iter: int,
              steps: tuple[int, ...], lrs: tuple[float, ...], tasks: int, val_fre_iter: int,
              weights: tuple[float, float, float], sampler: str = "molo-segment", position: tuple[float, float] | None = None) -> Recipe:
    """One released ``configs/projects/MoLo/<folder>/MoLo_<name>_1shot_v1.yaml`` (values and their lines)."""
    config = ReleasedConfig(MOLO_REPO, f"configs/projects/MoLo/{folder}/MoLo_{name}_1shot_v1.yaml", lines)
    options = {"classification_weight": (weights[0], "USE_CLASSIFICATION_VALUE"),
               "reconstruction_weight": (weights[1], "RECONS_COFF"),
               "contrastive_weight": (weights[2], "USE_CONTRASTIVE_COFF")}
    if position:
        options.update(position_a=(position[0], "POSITION_A"), position_b=(position[1], "POSITION_B"))
    return molo_family_recipe(
        config, lr=lr, warmup_start_lr=warmup_from, steps_iter=steps_iter, steps=steps, lrs=lrs, num_train_tasks=tasks,
        batch_size_per_task=4, val_fre_iter=val_fre_iter, query_per_class=6, frame_sampler=sampler, head_options=options,
    )


_LINES_SSV2 = dict(BASE_LR=63, WARMUP_START_LR=72, STEPS_ITER=65, STEPS=66, LRS=67, NUM_TRAIN_TASKS=22, VAL_FRE_ITER=24,
                   BATCH_SIZE_PER_TASK=26, QUERY_PER_CLASS=18, SAMPLING_RATE=50, USE_CLASSIFICATION_VALUE=8,
                   USE_CONTRASTIVE_COFF=21)
_SSV2_FULL = _released("ssv2_full", "SSv2_Full", {**_LINES_SSV2, "RECONS_COFF": 14}, lr=1e-4, warmup_from=2e-5,
                       steps_iter=6000, steps=(0, 6, 9), lrs=(1, 0.1, 0.01), tasks=50_000, val_fre_iter=1000,
                       weights=(0.8, 0.1, 0.05))
_KINETICS = _released(
    "kinetics100", "K100", dict(BASE_LR=66, WARMUP_START_LR=75, STEPS_ITER=68, STEPS=69, LRS=70, NUM_TRAIN_TASKS=25,
                                VAL_FRE_ITER=27, BATCH_SIZE_PER_TASK=29, QUERY_PER_CLASS=23, SAMPLING_RATE=53,
                                USE_CLASSIFICATION_VALUE=11, RECONS_COFF=14, USE_CONTRASTIVE_COFF=20, POSITION_A=7,
                                POSITION_B=8),
    lr=2e-5, warmup_from=5e-6, steps_iter=350, steps=(0, 4, 6), lrs=(1, 0.1, 0.01), tasks=5000, val_fre_iter=20,
    weights=(0.1, 0.1, 0.05), sampler="molo-kinetics", position=(2048.0, 0.02))

MOLO_RECIPES = {
    "ssv2-full": _SSV2_FULL,
    "ssv2-small": _released("ssv2_small", "SSv2_Small", {**_LINES_SSV2, "RECONS_COFF": 11}, lr=1e-4, warmup_from=2e-5,
                            steps_iter=1500, steps=(0, 4, 8), lrs=(1, 0.1, 0.01), tasks=20_000, val_fre_iter=1000,
                            weights=(0.15, 0.05, 0.05)),
    "kinetics100-molo": _KINETICS,
    "kinetics100": adopted(_KINETICS, "MoLo trained and published on its own Kinetics list (kinetics100-molo); "
                           "the same config on the CMN list"),
    "ucf101": _released(
        "ucf101", "UCF101", dict(BASE_LR=65, WARMUP_START_LR=74, STEPS_ITER=67, STEPS=68, LRS=69, NUM_TRAIN_TASKS=23,
                                 VAL_FRE_ITER=25, BATCH_SIZE_PER_TASK=27, QUERY_PER_CLASS=16, SAMPLING_RATE=51,
                                 USE_CLASSIFICATION_VALUE=8, RECONS_COFF=19, USE_CONTRASTIVE_COFF=21),
        lr=5e-5, warmup_from=1e-5, steps_iter=2000, steps=(0, 3, 6), lrs=(1, 0.1, 0.01), tasks=6000, val_fre_iter=100,
        weights=(0.6, 0.05, 0.05)),
    "hmdb51": _released(
        "hmdb51", "HMDB51", dict(BASE_LR=66, WARMUP_START_LR=75, STEPS_ITER=68, STEPS=69, LRS=70, NUM_TRAIN_TASKS=23,
                                 VAL_FRE_ITER=25, BATCH_SIZE_PER_TASK=27, QUERY_PER_CLASS=19, SAMPLING_RATE=51,
                                 USE_CLASSIFICATION_VALUE=8, RECONS_COFF=15, USE_CONTRASTIVE_COFF=22),
        lr=5e-5, warmup_from=1e-5, steps_iter=500, steps=(0, 3, 5, 7), lrs=(1, 0.5, 0.1, 0.01), tasks=2000,
        val_fre_iter=100, weights=(0.4, 0.05, 0.05)),
    "finegym": adopted(_SSV2_FULL, "fsar-bench's choice for finegym (no reference trained on FineGym): the "
                       "SSv2-Full config, the other fine-grained motion benchmark"),
    "synthetic": synthetic_recipe(
        train_queries_per_class=3,
        head_options={"classification_weight": 0.8, "reconstruction_weight": 0.1, "contrastive_weight": 0.05,
                      "decoder_widths": (16, 8, 8)},
        notes="Synthetic (small CNN, d=128, 2×2 maps at 64×64 input, so the ×32 decoder output is exactly the frame "
        "size): Adam lr 1e-3, 600 iterations of one episode each, SSv2-Full loss weights. Two cuts for CPU time, "
        "both in the motion auto-decoder, which is ~95% of a training step at the reference sizes: decoder widths "
        "16/8/8 (reference 128/32/16 from d/8 = 256 input channels; here d/8 = 16) and 3 train queries per class "
        "(reference 6). Val (200 episodes) every 100 iterations. No augmentation (frames are 64x64 already; never "
        "flipped: synthetic's classes include left/right mirror pairs).",
    ),
}

# --------------------------------------------------------------------------- cards
MOLO_NOTES = """\
Recipes: the released configs (alibaba-mmai-research/MoLo@f7f73b6 configs/projects/MoLo/*/MoLo_*_1shot_v1.yaml),
every value with its file and line (`fsar-bench recipe molo --dataset D`, docs/recipes.md). Counts are episodes
(one reference iteration = 4 episodes on 4 GPUs; optimizer step every 4 iterations = 16 episodes); 6 training
queries per class at every shot; Adam with weight decay 1e-3 (the base config's OPTIMIZER.WEIGHT_DECAY: the
configs' SOLVER.WEIGHT_DECAY is never read), 0 for "bn"/"norm" parameters; the SOLVER schedule as the released
loop runs it (epoch = it//STEPS_ITER + it/STEPS_ITER: warm-up over the first STEPS_ITER iterations, a step at s
fires at STEPS_ITER·ceil(s/2)); `schedule = "as-configured"` in bench.toml gives the nominal one. Training clips:
squashed to 256x256, random 224 crop; queries also flipped and colour-jittered (SUPPORT_QUERY_DIFF). Kinetics:
positional encoding A=2048, B=0.02, MoLo's own Kinetics list (kinetics100-molo; published numbers are keyed to it).
Reference quirks, documented and not copied:
- 5-shot: the released 5-shot configs train 1-shot (SHOT: 1, SHOT_TEST: 5); we train 5-shot models for 5-shot
  evaluation (same recipe otherwise).
- validation: its "validation" runs on the test split and keeps the best checkpoint; we select on val (>= 1,000
  episodes, every max(VAL_FRE_ITER x 4, 400) episodes).
- test frames are sampled randomly for SSv2/UCF101/HMDB51; ours are segment centres.
Loss: total = CE + λ_cls·CE_base + λ_con·(CE_s2q + CE_q2s + CE_s2q_m + CE_q2s_m) + 4·λ_rec·MSE_recons. The
reference divides all but the reconstruction by BATCH_SIZE=4 and accumulates 4 episodes per GPU over 4 GPUs;
its per-episode loss is total/4, so total/episodes_per_step (16) reproduces its gradient, including the 4-fold
effective weight of the reconstruction term (option reference_batch_size).
Reconstruction target: pixel differences of the normalised input frames; the decoder upsamples conv5 maps ×32
(2·4·4); if frames are not 32h×32w the target is resized bilinearly (with a warning).
Cached encoding per video: RGB frame tokens [T, d] + motion frame tokens [T-1, d] = (2T-1)·d floats (15·d at
T=8; 120 KiB at d=2048); class tokens only feed training losses and are not cached (no-motion: T·d)."""

_COMMON = {
    "head": MoloHead,
    "paper": "Wang et al., MoLo: Motion-augmented Long-short Contrastive Learning for Few-shot Action Recognition, "
    "CVPR 2023 (arXiv 2304.00946)",
    "reference_code": "alibaba-mmai-research/MoLo@f7f73b6dd8cba446b414b1c47652ab26033bc88e models/base/few_shot.py "
    "(CNN_BiMHM_MoLo)",
    "recipes": MOLO_RECIPES,
    "preprocess": {"resnet50": MOLO_RESNET50_PREPROCESS},
    "test_options": {"heads": 4},
}

CARDS = (
    MethodCard(
        name="molo",
        summary="RGB + motion tokens, Bi-MHM matching, long-short contrastive and motion auto-decoder losses",
        published={("kinetics100-molo", 1): 74.0, ("ssv2-small", 1): 42.7},
        published_unconfirmed={
            ("ssv2-full", 1): 56.6, ("ssv2-full", 5): 70.6, ("kinetics100-molo", 5): 85.6, ("ssv2-small", 5): 56.4,
            ("ucf101", 1): 86.0, ("ucf101", 5): 95.5, ("hmdb51", 1): 60.8, ("hmdb51", 5): 77.4,
        },
        published_source="MoLo paper tables (arXiv 2304.00946); confirmed cells checked against a second public source",
        notes=MOLO_NOTES,
        reference_checkpoint=MOLO_REPOSITORY_CHECKPOINT,
        **_COMMON,
    ),
    MethodCard(
        name="molo-no-motion",
        summary="MoLo ablation: RGB branch only (RGB Bi-MHM, RGB contrastive terms, no motion, no reconstruction)",
        options={"use_motion": False},
        published_source="none: an ablation (our own run)",
        notes="Ablation of molo. " + MOLO_NOTES,
        **_COMMON,
    ),
    MethodCard(
        name="molo-no-contrastive",
        summary="MoLo ablation: without the long-short contrastive terms",
        options={"use_contrastive": False},
        published_source="none: an ablation (our own run)",
        notes="Ablation of molo. " + MOLO_NOTES,
        **_COMMON,
    ),
    MethodCard(
        name="molo-no-recons",
        summary="MoLo ablation: without the motion auto-decoder (reconstruction) term",
        options={"use_reconstruction": False},
        published_source="none: an ablation (our own run)",
        notes="Ablation of molo. " + MOLO_NOTES,
        **_COMMON,
    ),
)
