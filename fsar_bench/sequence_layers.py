"""Layers that match frame sequences: the TRX family's ordered frame tuples and tuple cross-attention (TRX, STRM;
its 0.1-scaled sinusoid also TEAM's) and OTAM's soft alignment (OTAM, CLIP-FSAR). Plugins import them from
``fsar_bench.layers``, which re-exports them.

Usage::

    from fsar_bench.layers import frame_tuples, gather_tuples, otam_alignment_cost

    pairs = gather_tuples(frames, frame_tuples(8, 2))                  # [V, 28, 2·d]
    cost = otam_alignment_cost(1 - cosine, softmin_lambda=0.1)         # [..., T, T] -> [...]
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


# --------------------------------------------------------------------------- TRX family: tuples and cross-attention
def scaled_sinusoid_table(length: int, dim: int, scale: float) -> Tensor:
    """The Transformer sinusoid times ``scale`` (TRX, STRM, TEAM use 0.1): ``[length, dim]``.

    ``pe[p, 2i] = scale·sin(p·exp(−2i·ln(10000)/d))``, ``pe[p, 2i+1] = scale·cos(same)``, in float32 as the references.
    """
    positions = torch.arange(length, dtype=torch.float32)[:, None]
    frequencies = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * -(math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(positions * frequencies) * scale
    table[:, 1::2] = torch.cos(positions * frequencies[: dim // 2]) * scale
    return table


class ScaledPositionalEncoding(nn.Module):
    """``[..., L, d] -> [..., L, d]``: ``dropout(x + table[:L])`` with the 0.1-scaled table (persistent buffer
    ``table`` ``[1, length, d]``, so reference ``pe.pe`` buffers load into it)."""

    def __init__(self, dim: int, length: int, dropout: float, scale: float = 0.1) -> None:
        super().__init__()
        self.register_buffer("table", scaled_sinusoid_table(length, dim, scale)[None])
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: Tensor) -> Tensor:
        length = tokens.shape[-2]
        if length > self.table.shape[1]:
            raise ValueError(f"{length} tokens but the positional table holds {self.table.shape[1]}")
        return self.dropout(tokens + self.table[0, :length])


def frame_tuples(frames: int, cardinality: int) -> Tensor:
    """Ordered frame tuples ``itertools.combinations(range(frames), k)`` in lexicographic order: long ``[n, k]``."""
    return torch.tensor(list(itertools.combinations(range(frames), cardinality)), dtype=torch.long).reshape(-1, cardinality)


def gather_tuples(frames: Tensor, tuples: Tensor) -> Tensor:
    """``[V, T, d]`` and tuples ``[n, k]`` -> ``[V, n, k·d]``: each tuple's frames concatenated in frame order."""
    return frames[:, tuples].flatten(-2)


def tuple_cross_attention_logits(
    support_keys: Tensor, support_values: Tensor, query_keys: Tensor, query_values: Tensor
) -> Tensor:
    """TRX logits of one cardinality, batched over episodes, queries and classes.

    support_keys/values [E, N, K, n, o], query_keys/values [E, Q, n, o] -> [E, Q, N].

    For query tuple i and class c, attention ``a_i = softmax_j(q_k[i]·s_k[j] / sqrt(o))`` runs jointly over the
    K·n support tuples j of c; the prototype is ``p_i = Σ_j a_ij s_v[j]`` and the distance
    ``Σ_i ||q_v[i] − p_i||² / n``; the logit is minus it.

    Cost: two GEMMs per episode, scores [Q·n, o]x[o, N·K·n] and prototypes (E·N batched [Q·n, K·n]x[K·n, o]),
    plus one fused subtract-and-norm pass over the prototypes [E, N, Q·n, o]. The expansion ||q||² − 2q·p + ||p||²
    avoids that tensor but needs the per-class Gram matrix, one more GEMM of the same size; it measured slower
    on CPU (about 0.57 vs 0.83 of bare-GEMM speed at d=2048, T=8, o=1152, 5-way 5-shot) and loses precision.
    """
    episodes, way, shot, tuples, out_dim = support_keys.shape
    num_queries = query_keys.shape[1]
    class_tuples = shot * tuples
    query_rows = num_queries * tuples
    scores = torch.bmm(
        query_keys.reshape(episodes, query_rows, out_dim),
        support_keys.reshape(episodes, way * class_tuples, out_dim).transpose(1, 2),
    ) / math.sqrt(out_dim)  # [E, Q*n, N*K*n]
    attention = scores.view(episodes, query_rows, way, class_tuples).softmax(dim=-1).transpose(1, 2)  # [E, N, Q*n, K*n]
    prototypes = torch.matmul(attention, support_values.reshape(episodes, way, class_tuples, out_dim))
    # In place is safe for autograd: matmul saves its inputs, not its output.
    differences = prototypes.sub_(query_values.reshape(episodes, 1, query_rows, out_dim))  # [E, N, Q*n, o]
    # At least float32 for the squared distances (fp16 under autocast would overflow at large out_dim).
    norm_dtype = torch.promote_types(differences.dtype, torch.float32)
    tuple_distances = torch.linalg.vector_norm(differences, dim=-1, dtype=norm_dtype).square()  # [E, N, Q*n]
    distances = tuple_distances.view(episodes, way, num_queries, tuples).sum(dim=-1) / tuples
    return -distances.transpose(1, 2)


# --------------------------------------------------------------------------- OTAM soft alignment (OTAM, CLIP-FSAR)
def _soft_min(costs: tuple[Tensor, ...], softmin_lambda: float) -> Tensor:
    """``-λ·log Σ_i exp(-c_i/λ)`` elementwise over same-shaped tensors, via stable log-sum-exp.

    The costs are stacked on a new leading axis: the reduction then runs over contiguous slices.
    """
    return -softmin_lambda * torch.logsumexp(torch.stack(costs) / -softmin_lambda, dim=0)


def otam_alignment_cost(distances: Tensor, softmin_lambda: float = 0.1) -> Tensor:
    """OTAM cumulative cost of one direction: distances [..., R, C] -> [...] (λ: 0.1 OTAM, 0.5 CLIP-FSAR).

    The column axis is padded with a zero column on each side ([R, C+2]). Row 0 is a hard running sum; column 0
    stays 0 (free start); later rows take the soft-min over up-left, up and left in the first real column, over
    diagonal and left in the middle columns, and over diagonal, up and left in the last (padding) column, which
    holds the free end. The soft-min is a max-shifted log-sum-exp (the references' naive log(sum(exp)) agrees to
    float rounding wherever it is finite).
    """
    rows, columns = distances.shape[-2:]
    # Cell-major layout [R, C+2, ...]: each cell below is one contiguous slice over all episodes, queries
    # and supports (the same arithmetic as [..., R, C+2], several times faster on CPU).
    padded = F.pad(distances, (1, 1)).movedim((-2, -1), (0, 1)).contiguous()  # [R, C+2, ...]
    previous = padded[0].cumsum(dim=0)  # row 0; padded[0, 0] = 0 keeps column 0 at 0
    for row in range(1, rows):
        row_distances = padded[row]
        cells = [torch.zeros_like(previous[0])]
        cells.append(row_distances[1] + _soft_min((previous[0], previous[1], cells[0]), softmin_lambda))
        for column in range(2, columns + 1):
            cells.append(row_distances[column] + _soft_min((previous[column - 1], cells[column - 1]), softmin_lambda))
        cells.append(_soft_min((previous[columns], previous[columns + 1], cells[columns]), softmin_lambda))
        previous = torch.stack(cells)
    return previous[columns + 1]
