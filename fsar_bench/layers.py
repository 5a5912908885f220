"""Layers shared by the method heads (plugins import them from here).

Everything here follows the reference semantics in ``tests/data/parity/README.md``:

* ``HyrsmPositionalEncoding``: ``x·sqrt(d/A) + B·pe[:T]`` with HyRSM's non-standard sinusoid table.
* ``PreNormSelfAttention``: ``x + Linear(MHSA(LayerNorm(x)))``, the intra-video attention of both heads.
* ``PreNormTransformerLayer``: MoLo's one-layer ``Transformer_v2`` (the attention above, then ``x + FFN(x)``).
* ``SetAttention``: HyRSM's post-norm multi-head attention over a set of video tokens (HyRSM, HyRSM++), with
  ``forward_sets`` scoring every query's set {support items, the query} from cached projections.
* ``cosine_matrix`` / ``bi_mhm_distance``: Bi-directional Mean Hausdorff matching (sum form) with either the
  L2-normalised cosine (HyRSM) or the ``+eps``-in-denominator cosine (MoLo, OTAM).
* ``MotionDecoder``: MoLo's motion auto-decoder (bilinear up stages + BN + ReLU, 1×1 conv to RGB).
* ``LayoutTolerantConv3d``: ``nn.Conv3d`` that survives ``Module.to(memory_format=torch.channels_last)``.
* ``rename_keys``: turns our state-dict keys into the reference's by prefix rules.
* re-exported from ``fsar_bench.sequence_layers``: the TRX family's 0.1-scaled sinusoid, ordered frame tuples
  and tuple cross-attention (TRX, STRM; the table also TEAM's), and OTAM's soft alignment (OTAM, CLIP-FSAR).

Usage::

    from fsar_bench.layers import HyrsmPositionalEncoding, PreNormSelfAttention, bi_mhm_distance

    encode = HyrsmPositionalEncoding(dim=64, table_length=20, scale_a=10.0, scale_b=1.0, dropout=0.1)
    attend = PreNormSelfAttention(dim=64, heads=8, dropout=0.2)
    frames = torch.relu(attend(encode(features)))                     # [V, T, d]
    distance = bi_mhm_distance(frames[:1, None], frames[None, 1:])    # [1, V-1]
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsar_bench.sequence_layers import (  # noqa: F401 (re-exported for plugins)
    ScaledPositionalEncoding, frame_tuples, gather_tuples, nearest_tuple_logits, otam_alignment_cost,
    scaled_sinusoid_table, tuple_cross_attention_logits, tuple_cross_attention_logits_from_frames,
)

KeyRules = Sequence[tuple[str, str]]
"""Prefix rules ``(our prefix, reference prefix)``; the longest matching prefix wins."""


# --------------------------------------------------------------------------- positional encoding
def hyrsm_sinusoid_table(length: int, dim: int) -> Tensor:
    """HyRSM's table ``[length, dim]``; the exponent uses the raw channel index (not i/2).

    For even i: ``pe[p, i] = sin(p / 10000^(2i/d))`` and ``pe[p, i+1] = cos(p / 10000^(2(i+1)/d))``.
    """
    positions = torch.arange(length, dtype=torch.float64)[:, None]
    channels = torch.arange(dim, dtype=torch.float64)
    angles = positions / torch.pow(10000.0, 2.0 * channels / dim)
    table = torch.where(channels.long() % 2 == 0, torch.sin(angles), torch.cos(angles))
    return table.to(torch.float32)


class HyrsmPositionalEncoding(nn.Module):
    """``[V, T, d] -> [V, T, d]``: ``dropout(x·sqrt(d/A) + B·table[:T])``.

    The table is a persistent buffer ``[1, table_length, d]`` so that reference state dicts load it.
    """

    def __init__(self, dim: int, table_length: int, scale_a: float, scale_b: float, dropout: float) -> None:
        super().__init__()
        self.input_scale = math.sqrt(dim / scale_a)
        self.table_scale = scale_b
        self.register_buffer("table", hyrsm_sinusoid_table(table_length, dim)[None])
        self.dropout = nn.Dropout(dropout)

    def forward(self, frames: Tensor) -> Tensor:
        length = frames.shape[-2]
        if length > self.table.shape[1]:
            raise ValueError(
                f"{length} tokens but the positional table holds {self.table.shape[1]}: "
                "raise the 'position_table_length' option"
            )
        return self.dropout(frames * self.input_scale + self.table_scale * self.table[0, :length])


# --------------------------------------------------------------------------- attention
def split_heads(tensor: Tensor, heads: int) -> Tensor:
    """``[..., L, heads·dh] -> [..., heads, L, dh]`` (head-major channels)."""
    *lead, length, channels = tensor.shape
    return tensor.reshape(*lead, length, heads, channels // heads).transpose(-3, -2)


def merge_heads(tensor: Tensor) -> Tensor:
    """``[..., heads, L, dh] -> [..., L, heads·dh]``."""
    tensor = tensor.transpose(-3, -2)
    return tensor.reshape(*tensor.shape[:-2], -1)


class PreNormSelfAttention(nn.Module):
    """``[..., L, d] -> [..., L, d]``: ``x + Dropout(Linear(MHSA(LayerNorm(x))))``.

    ``to_qkv`` has no bias and yields q, k, v in that order, each head-major with
    ``head_dim = dim // heads``; scores are scaled by ``head_dim^-0.5``.
    """

    REFERENCE_RULES: KeyRules = (("norm.", "norm."), ("to_qkv.", "fn.to_qkv."), ("output.", "fn.to_out.0."))

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        inner = heads * self.head_dim
        self.norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * inner, bias=False)
        self.output = nn.Linear(inner, dim)
        self.output_dropout = nn.Dropout(dropout)

    def forward(self, tokens: Tensor) -> Tensor:
        queries, keys, values = self.to_qkv(self.norm(tokens)).chunk(3, dim=-1)
        queries, keys, values = (split_heads(part, self.heads) for part in (queries, keys, values))
        weights = torch.softmax(queries @ keys.transpose(-1, -2) * self.head_dim**-0.5, dim=-1)
        attended = merge_heads(weights @ values)
        return tokens + self.output_dropout(self.output(attended))


# --------------------------------------------------------------------------- matching
def cosine_matrix(rows: Tensor, columns: Tensor, denominator_eps: float | None = None) -> Tensor:
    """Cosine similarity of every row vector with every column vector.

    rows ``[..., m, d]``, columns ``[..., n, d]`` (leading axes broadcast) -> ``[..., m, n]``.
    ``denominator_eps=None``: L2-normalise both (``F.normalize``, eps 1e-12), then dot (HyRSM).
    Otherwise ``x·y / (‖x‖·‖y‖ + eps)`` (MoLo and OTAM use eps = 0.01).
    """
    if denominator_eps is None:
        return F.normalize(rows, dim=-1) @ F.normalize(columns, dim=-1).transpose(-1, -2)
    dots = rows @ columns.transpose(-1, -2)
    norms = rows.norm(dim=-1)[..., :, None] * columns.norm(dim=-1)[..., None, :]
    return dots / (norms + denominator_eps)


def bi_mhm_from_distances(distances: Tensor) -> Tensor:
    """``[..., Tq, Ts] -> [...]``: ``Σ_s min_q D + Σ_q min_s D`` (sums, not means)."""
    return distances.min(dim=-2).values.sum(dim=-1) + distances.min(dim=-1).values.sum(dim=-1)


def bi_mhm_distance(query: Tensor, support: Tensor, denominator_eps: float | None = None) -> Tensor:
    """Bi-directional Mean Hausdorff distance (sum form) with ``D = 1 − cos``.

    query ``[..., Tq, d]``, support ``[..., Ts, d]`` (leading axes broadcast) -> ``[...]``.
    """
    return bi_mhm_from_distances(1.0 - cosine_matrix(query, support, denominator_eps))


def all_pairs_bi_mhm(query: Tensor, support: Tensor, denominator_eps: float | None = None) -> Tensor:
    """Bi-MHM of every query against every support item, without expanding either.

    query ``[E, Q, Tq, d]``, support ``[E, N, Ts, d]`` -> ``[E, Q, N]``.
    """
    episodes, num_query, query_frames, dim = query.shape
    num_support, support_frames = support.shape[1], support.shape[2]
    similarity = cosine_matrix(
        query.reshape(episodes, num_query * query_frames, dim),
        support.reshape(episodes, num_support * support_frames, dim),
        denominator_eps,
    )
    similarity = similarity.reshape(episodes, num_query, query_frames, num_support, support_frames)
    return bi_mhm_from_distances(1.0 - similarity.permute(0, 1, 3, 2, 4))


# --------------------------------------------------------------------------- reference keys
def nest_rules(our_prefix: str, reference_prefix: str, rules: KeyRules) -> list[tuple[str, str]]:
    """Prefix a layer's own rules with where the layer sits in each model."""
    return [(our_prefix + ours, reference_prefix + theirs) for ours, theirs in rules]


def rename_keys(keys: Iterable[str], rules: KeyRules) -> dict[str, str]:
    """Our key -> reference key by the longest matching prefix rule; keys with no rule keep their name."""
    ordered = sorted(rules, key=lambda rule: len(rule[0]), reverse=True)
    mapping = {}
    for key in keys:
        for ours, theirs in ordered:
            if key.startswith(ours):
                mapping[key] = theirs + key[len(ours):]
                break
        else:
            mapping[key] = key
    return mapping


# --------------------------------------------------------------------------- options
# --------------------------------------------------------------------------- transformer layer
class FeedForward(nn.Module):
    """``[..., d] -> [..., d]``: Linear -> exact GELU -> Dropout -> Linear -> Dropout."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.hidden = nn.Linear(dim, hidden)
        self.hidden_dropout = nn.Dropout(dropout)
        self.output = nn.Linear(hidden, dim)
        self.output_dropout = nn.Dropout(dropout)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.output_dropout(self.output(self.hidden_dropout(F.gelu(self.hidden(tokens)))))


class PreNormTransformerLayer(nn.Module):
    """``[..., L, d] -> [..., L, d]``: ``x + MHSA(LN(x))``, then ``x + FFN(x)`` (no norm before the FFN).

    Reference names are those of MoLo's ``Transformer_v2`` with depth 1.
    """

    REFERENCE_RULES: KeyRules = (
        *nest_rules("attention.", "layers.0.0.", PreNormSelfAttention.REFERENCE_RULES),
        ("feed_forward.hidden.", "layers.0.1.net.0."),
        ("feed_forward.output.", "layers.0.1.net.3."),
    )

    def __init__(
        self, dim: int, heads: int, attention_dropout: float, hidden: int, feed_forward_dropout: float
    ) -> None:
        super().__init__()
        self.attention = PreNormSelfAttention(dim, heads, attention_dropout)
        self.feed_forward = FeedForward(dim, hidden, feed_forward_dropout)

    def forward(self, tokens: Tensor) -> Tensor:
        tokens = self.attention(tokens)
        return tokens + self.feed_forward(tokens)


# --------------------------------------------------------------------------- Conv3d under channels_last
class LayoutTolerantConv3d(nn.Conv3d):
    """``nn.Conv3d`` whose 5-D weight keeps its layout when a whole model is converted to ``channels_last``.

    ``FSARModel.build`` calls ``model.to(memory_format=torch.channels_last)`` for faster 2-D convolutions;
    torch applies that format to every 4-D *and* 5-D parameter and raises "required rank 4 tensor to use
    channels_last format" on a Conv3d weight. Here a conversion that fails only for that reason leaves the
    tensor as it is (contiguous); every other conversion (device, dtype) is applied unchanged. Same state-dict
    keys and forward as ``nn.Conv3d``.

    Usage: ``LayoutTolerantConv3d(2048, 256, kernel_size=3, padding=1)`` wherever ``nn.Conv3d`` would go.
    """

    def _apply(self, fn, recurse: bool = True):  # type: ignore[override]
        def tolerant(tensor: Tensor) -> Tensor:
            try:
                return fn(tensor)
            except RuntimeError as error:
                if tensor.dim() == 5 and "channels_last format" in str(error):
                    return tensor
                raise

        return super()._apply(tolerant, recurse)


# --------------------------------------------------------------------------- MoLo motion auto-decoder
class DecoderStage(nn.Module):
    """``[R, c_in, h, w] -> [R, c_out, s·h, s·w]``: bilinear (align_corners) ×s, 3×3 conv (no bias), BN, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, scale: int) -> None:
        super().__init__()
        self.scale = scale
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(out_channels)

    def forward(self, maps: Tensor) -> Tensor:
        maps = F.interpolate(maps, scale_factor=self.scale, mode="bilinear", align_corners=True)
        return torch.relu(self.norm(self.conv(maps)))


class MotionDecoder(nn.Module):
    """Motion auto-decoder: differential features ``[R, c, h, w]`` -> pixel differences ``[R, 3, S·h, S·w]``."""

    def __init__(self, in_channels: int, widths: tuple[int, ...], scales: tuple[int, ...]) -> None:
        super().__init__()
        channels = (in_channels, *widths)
        self.stages = nn.Sequential(
            *(DecoderStage(channels[index], channels[index + 1], scales[index]) for index in range(len(widths)))
        )
        self.to_pixels = nn.Conv2d(widths[-1], 3, kernel_size=1)

    def forward(self, differences: Tensor) -> Tensor:
        return self.to_pixels(self.stages(differences))


# --------------------------------------------------------------------------- HyRSM set attention
_MIN_GEMM_ROWS = 32
"""Fewer rows can send a CPU GEMM to another kernel, with other rounding: ``_pad_rows`` keeps a batch of one
episode bit-identical to a larger batch."""


def _pad_rows(rows: Tensor) -> Tensor:
    """``[..., M, k]`` -> at least ``_MIN_GEMM_ROWS`` rows (zero rows appended; slice them off after the GEMM)."""
    missing = _MIN_GEMM_ROWS - rows.shape[-2]
    return F.pad(rows, (0, 0, 0, missing)) if missing > 0 else rows


class SetAttention(nn.Module):
    """Post-norm multi-head attention over a token set: ``[..., L, d] -> [..., L, d]`` (before ReLU).

    ``LayerNorm(x + Dropout(Linear(softmax(QKᵀ/sqrt(dk))·V)))`` with bias-free head-major q/k/v projections.
    """

    REFERENCE_RULES = (
        ("query_proj.", "w_qs."),
        ("key_proj.", "w_ks."),
        ("value_proj.", "w_vs."),
        ("output.", "fc."),
        ("norm.", "layer_norm."),
    )

    def __init__(self, dim: int, heads: int, dropout: float, attention_dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.key_dim = dim // heads
        inner = heads * self.key_dim
        self.query_proj = nn.Linear(dim, inner, bias=False)
        self.key_proj = nn.Linear(dim, inner, bias=False)
        self.value_proj = nn.Linear(dim, inner, bias=False)
        self.attention_dropout = nn.Dropout(attention_dropout)
        self.output = nn.Linear(inner, dim)
        self.output_dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: Tensor) -> Tensor:
        queries = split_heads(self.query_proj(tokens), self.heads)
        keys = split_heads(self.key_proj(tokens), self.heads)
        values = split_heads(self.value_proj(tokens), self.heads)
        weights = torch.softmax(queries @ keys.transpose(-1, -2) / self.key_dim**0.5, dim=-1)
        attended = merge_heads(self.attention_dropout(weights) @ values)
        return self.norm(tokens + self.output_dropout(self.output(attended)))

    def project_qkv(self, tokens: Tensor) -> Tensor:
        """``[..., d] -> [..., 3, d]``: the query, key and value projections of each token (one GEMM)."""
        weight = torch.cat([self.query_proj.weight, self.key_proj.weight, self.value_proj.weight])
        return F.linear(tokens, weight).unflatten(-1, (3, -1))

    def forward_sets(self, items: Tensor, queries: Tensor, item_qkv: Tensor | None = None,
                     query_qkv: Tensor | None = None) -> Tensor:
        """``forward`` of every query's set {n items, the query}, the items shared by all Q queries.

        items [E, n, d], queries [E, Q, d] -> [E, Q, n+1, d], the same as ``forward`` of
        ``cat([items expanded to Q, queries], dim=2)`` up to float rounding, at a fraction of the cost: the
        q/k/v projections come from the cache (``item_qkv`` [E, n, 3, d], ``query_qkv`` [E, Q, 3, d], from
        ``project_qkv``; they are linear and bias-free, so a prototype's are the mean of its videos') or run
        once per distinct token, and the output projection, being linear, is applied per head to the
        distinct values before the attention sum.
        """
        episodes, num_items, dim = items.shape
        num_queries = queries.shape[1]
        distinct_count = num_items + num_queries
        if item_qkv is None or query_qkv is None:
            distinct = _pad_rows(torch.cat([items, queries], dim=1).reshape(episodes * distinct_count, dim))
            qkv = self.project_qkv(distinct)[: episodes * distinct_count].view(episodes, distinct_count, 3, dim)
        else:
            qkv = torch.cat([item_qkv, query_qkv], dim=1)  # [E, n+Q, 3, d]
        queries_all, keys_all, values_all = (split_heads(qkv[:, :, index], self.heads) for index in range(3))
        # every distinct value through its head's block of the output projection: [E, h, n+Q, d]
        head_blocks = self.output.weight.view(dim, self.heads, self.key_dim).permute(1, 2, 0)  # [h, dk, d]
        per_head = _pad_rows(values_all.transpose(0, 1).reshape(self.heads, episodes * distinct_count, self.key_dim))
        projected = torch.bmm(per_head, head_blocks)[:, : episodes * distinct_count]
        projected = projected.reshape(self.heads, episodes, distinct_count, dim).transpose(0, 1)
        set_index = torch.cat([torch.arange(num_items, device=items.device).expand(num_queries, -1),
                               torch.arange(num_items, num_items + num_queries, device=items.device)[:, None]], dim=1)
        set_queries = queries_all[:, :, set_index].transpose(1, 2)  # [E, Q, h, n+1, dk]
        set_keys = keys_all[:, :, set_index].transpose(1, 2)
        weights = torch.softmax(set_queries @ set_keys.transpose(-1, -2) / self.key_dim**0.5, dim=-1)
        weights = self.attention_dropout(weights)  # [E, Q, h, n+1 (token), n+1 (attended)]
        # items' contributions: one GEMM per episode over (h, item); the query's own: one per (episode, query)
        item_weights = weights[..., :num_items].permute(0, 1, 3, 2, 4).reshape(episodes, num_queries * (num_items + 1),
                                                                                self.heads * num_items)
        item_values = projected[:, :, :num_items].reshape(episodes, self.heads * num_items, dim)
        attended = (item_weights @ item_values).view(episodes, num_queries, num_items + 1, dim)
        query_weights = weights[..., num_items].permute(0, 1, 3, 2)  # [E, Q, n+1, h]
        query_values = projected[:, :, num_items:].transpose(1, 2)  # [E, Q, h, d]
        attended = attended + query_weights @ query_values + self.output.bias
        tokens = torch.cat([items[:, None].expand(episodes, num_queries, num_items, dim), queries[:, :, None]], dim=2)
        return self.norm(tokens + self.output_dropout(attended))
