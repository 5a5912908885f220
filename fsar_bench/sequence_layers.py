"""Layers that match frame sequences: the TRX family's ordered frame tuples and tuple cross-attention (TRX, STRM,
which also has the per-frame-value form and the nearest-tuple classifier; the 0.1-scaled sinusoid is also TEAM's)
and OTAM's soft alignment (OTAM, CLIP-FSAR). Plugins import them from ``fsar_bench.layers``, which re-exports them.

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
    ).div_(math.sqrt(out_dim))  # [E, Q*n, N*K*n]; in place: the same values, one [E, Q*n, N*K*n] pass fewer
    attention = scores.view(episodes, query_rows, way, class_tuples).softmax(dim=-1).transpose(1, 2)  # [E, N, Q*n, K*n]
    prototypes = torch.matmul(attention, support_values.reshape(episodes, way, class_tuples, out_dim))
    return _prototype_logits(prototypes, query_values, num_queries)


def _prototype_logits(prototypes: Tensor, query_values: Tensor, num_queries: int) -> Tensor:
    """Prototypes [E, N, Q*n, o] and query values [E, Q, n, o] -> ``−Σ_i ||q_v[i] − p_i||² / n`` [E, Q, N].

    The prototypes are overwritten (in place is safe for autograd: matmul saves its inputs, not its output)."""
    episodes, way, query_rows, out_dim = prototypes.shape
    tuples = query_rows // num_queries
    differences = prototypes.sub_(query_values.reshape(episodes, 1, query_rows, out_dim))  # [E, N, Q*n, o]
    # At least float32 for the squared distances (fp16 under autocast would overflow at large out_dim).
    norm_dtype = torch.promote_types(differences.dtype, torch.float32)
    tuple_distances = torch.linalg.vector_norm(differences, dim=-1, dtype=norm_dtype).square()  # [E, N, Q*n]
    distances = tuple_distances.view(episodes, way, num_queries, tuples).sum(dim=-1) / tuples
    return -distances.transpose(1, 2)


def tuple_slot_rows(tuples: Tensor, frames: int) -> Tensor:
    """Tuples ``[n, k]`` -> long ``[n, k]``: row ``s·T + f`` of slot s's frame f in per-frame values ``[k·T, o]``."""
    return tuples + frames * torch.arange(tuples.shape[1], device=tuples.device)


def tuple_cross_attention_logits_from_frames(
    support_keys: Tensor, support_frame_values: Tensor, query_keys: Tensor, query_frame_values: Tensor,
    tuples: Tensor,
) -> Tensor:
    """``tuple_cross_attention_logits`` for values linear in the tuple's frames, from per-frame values.

    support_keys [E, N, K, n, o], support_frame_values [E, N, K, k·T, o], query_keys [E, Q, n, o],
    query_frame_values [E, Q, k·T, o], tuples [n, k] (frame indices) -> [E, Q, N].

    With ``V_j = Σ_s W_s·x_{t_js} + b`` (``W = [W_1 | … | W_k]``, tuple j = frames t_j1..t_jk), the frame values are
    ``U[s·T + f] = W_s·x_f`` (+ b in slot 0's rows). As the attention ``a_ij`` sums to 1 over a class's tuples,
    ``p_i = Σ_j a_ij V_j = Σ_{κ,s,f} A[i, (κ,s,f)]·U_κ[s·T + f]`` with ``A = a·M``, M the fixed 0/1 membership
    [n, k·T] (``M[j, s·T + f] = 1`` iff ``t_js = f``) applied per support video κ, and the query's
    ``q_v[i] = Σ_s U_q[s·T + t_is]`` (the bias enters p_i once, via Σ_j a_ij = 1). The same logits as
    ``tuple_cross_attention_logits`` up to float rounding (the distance is computed as there); the prototype GEMM's
    inner size is K·k·T instead of K·n (80 vs 140 for pairs, T=8, 5-shot), plus the small [Q·n·N·K, n]x[n, k·T]
    membership GEMM, and k·T instead of n value rows are gathered per video. Worth it when k·T < C(T, k) (pairs
    and triples at T=8). Every GEMM is batched per episode with batch-independent shapes (bit-identical batching).
    """
    episodes, way, shot, num_tuples, out_dim = support_keys.shape
    num_queries, slots = query_keys.shape[1], support_frame_values.shape[-2]
    rows = tuple_slot_rows(tuples, slots // tuples.shape[1])  # [n, k]
    query_rows = num_queries * num_tuples
    scores = torch.bmm(
        query_keys.reshape(episodes, query_rows, out_dim),
        support_keys.reshape(episodes, way * shot * num_tuples, out_dim).transpose(1, 2),
    ).div_(math.sqrt(out_dim))  # [E, Q*n, N*K*n]
    attention = scores.view(episodes, query_rows, way, shot * num_tuples).softmax(dim=-1)  # [E, Q*n, N, K*n]
    membership = torch.zeros(num_tuples, slots, dtype=attention.dtype, device=attention.device).scatter_(1, rows, 1.0)
    # One GEMM per episode (a batch-independent shape): [Q*n*N*K, n] x [n, k*T].
    frame_attention = torch.bmm(attention.reshape(episodes, query_rows * way * shot, num_tuples),
                                membership.expand(episodes, num_tuples, slots))
    # [E, N, Q*n, K*k*T], contiguous: a small copy that makes the prototype GEMM's operand dense (measured faster).
    frame_attention = frame_attention.view(episodes, query_rows, way, shot * slots).transpose(1, 2).contiguous()
    prototypes = torch.matmul(frame_attention, support_frame_values.reshape(episodes, way, shot * slots, out_dim))
    query_values = query_frame_values.index_select(2, rows[:, 0])  # [E, Q, n, o]: slot by slot (cheapest gather)
    for slot in range(1, rows.shape[1]):
        query_values = query_values.add_(query_frame_values.index_select(2, rows[:, slot]))
    return _prototype_logits(prototypes, query_values, num_queries)


def nearest_tuple_logits(support_embed: Tensor, query_embed: Tensor) -> Tensor:
    """Nearest-tuple classifier (STRM's query-class similarity): support [E, N, K, n, h], query [E, Q, n, h] ->
    ``−mean_i min_j ‖q_i − s_j‖₂`` [E, Q, N], j over the class's K·n support tuples (Euclidean, as ``torch.cdist``).

    Without autograd or autocast (scoring): one GEMM per episode gives ``‖s_j‖² − 2·q_i·s_j`` ([Q·n, N·K·n], the
    support norms as the GEMM's initial value), its minimum over each class's tuples gets ``‖q_i‖²`` added,
    and only those [E, Q, n, N] minima are clamped at 0 and square-rooted (sqrt is monotonic: the same nearest
    tuple). The same expansion as cdist's ``use_mm_for_euclid_dist`` (values equal to float rounding, ~4e-6
    on full-size logits), without its augmented [x, ‖x‖², 1] copies or a sqrt per pair: 0.8x of its time at
    d=2048, 5-shot. With autograd or under autocast: ``torch.cdist`` itself, as before (its backward is finite
    at zero distance; the expansion in bf16 would lose the small distances).
    """
    episodes, way, shot, tuples, width = support_embed.shape
    num_queries = query_embed.shape[1]
    query = query_embed.reshape(episodes, num_queries * tuples, width)
    support = support_embed.reshape(episodes, way * shot * tuples, width)
    if (torch.is_grad_enabled() and (support.requires_grad or query.requires_grad)) or torch.is_autocast_enabled(
            query.device.type):
        distances = torch.cdist(query, support, compute_mode="use_mm_for_euclid_dist")  # [E, Q*n, N*K*n]
        return -distances.view(episodes, num_queries, tuples, way, shot * tuples).amin(dim=-1).mean(dim=2)
    support_norms = torch.linalg.vector_norm(support, dim=-1).square_()  # [E, N*K*n]
    query_norms = torch.linalg.vector_norm(query, dim=-1).square_()  # [E, Q*n]
    partial = torch.baddbmm(support_norms[:, None], query, support.transpose(1, 2), alpha=-2)  # [E, Q*n, N*K*n]
    nearest = partial.view(episodes, num_queries, tuples, way, shot * tuples).amin(dim=-1)  # [E, Q, n, N]
    nearest = nearest.add_(query_norms.view(episodes, num_queries, tuples, 1)).clamp_min_(0).sqrt_()
    return -nearest.mean(dim=2)


# --------------------------------------------------------------------------- OTAM soft alignment (OTAM, CLIP-FSAR)
EXP_FLOOR = -80.0
"""The soft-min's exponents are clamped here: ``exp(−80)`` is the smallest round figure above float32's subnormals."""


def _log_add_exp(first: Tensor, second: Tensor) -> Tensor:
    """``log(exp(a) + exp(b))`` elementwise, as ``max + log1p(exp(min − max))``.

    Not ``torch.logaddexp``: its CPU kernel computes the last few elements of a tensor with scalar libm calls and
    the rest with SIMD ones, so an element's rounding would depend on its position, and batched logits would not
    be bit-identical to one episode at a time; ``exp``/``log1p`` apply one vector routine to every element. The
    exponent is clamped at −80 (``exp`` = 1.8e-35): below it, ``exp`` would return subnormals, ~15x slower on
    CPU, for a term that cannot change the sum.
    """
    larger = torch.maximum(first, second)
    return larger + torch.log1p(torch.exp((torch.minimum(first, second) - larger).clamp_min_(EXP_FLOOR)))


def otam_alignment_cost(distances: Tensor, softmin_lambda: float = 0.1) -> Tensor:
    """OTAM cumulative cost of one direction: distances [..., R, C] -> [...] (λ: 0.1 OTAM, 0.5 CLIP-FSAR).

    The column axis is padded with a zero column on each side ([R, C+2]). Row 0 is a hard running sum; column 0
    stays 0 (free start); later rows take the soft-min ``−λ·log Σ exp(−c/λ)`` over up-left, up and left in the
    first real column, over diagonal and left in the middle columns, and over diagonal, up and left in the last
    (padding) column, which holds the free end.

    The recursion runs on scores ``s = −cost/λ``, where each soft-min is a stable log-add-exp of its candidates,
    and scales back by ``−λ`` at the end: the references' naive ``−λ·log(sum(exp(−c/λ)))`` to float rounding
    (≈2e-7 relative in float32) wherever theirs is finite. It sweeps column by column: a middle column needs only
    the previous column (diagonal and left), so all its rows are one vectorised step; only the first real column
    and the last one (which have an "up" term) run down the rows: ~22 log-add-exps instead of one per cell. On a
    training episode's 1,250 pairs that is 1.7x (forward) and 1.9x (forward and backward) faster than a
    row-by-row sweep, and 5x (forward) faster than the stacked ``logsumexp`` soft-min it replaced.
    """
    rows, columns = distances.shape[-2:]
    # Column-major layout [C+2, R, ...]: each column below is one contiguous block over all episodes, queries and
    # supports.
    scores = F.pad(distances / -softmin_lambda, (1, 1)).movedim((-2, -1), (1, 0)).contiguous()  # [C+2, R, ...]
    first_row = scores[:, 0].cumsum(dim=0)  # [C+2, ...]: row 0, a hard running sum (scores[0, 0] = 0)
    if rows == 1:
        return first_row[columns + 1] * -softmin_lambda
    # First real column: up-left and left are column 0 (score 0 each), so the soft-min is over (up, log 2).
    log_two = torch.full_like(first_row[0], math.log(2.0))
    cells = [first_row[1]]
    for row in range(1, rows):
        cells.append(scores[1, row] + _log_add_exp(cells[-1], log_two))
    column = torch.stack(cells)  # [R, ...]
    for index in range(2, columns + 1):  # middle columns: diagonal (row − 1) and left (same row) of the previous
        column = torch.cat((first_row[index, None], scores[index, 1:] + _log_add_exp(column[:-1], column[1:])))
    # Last (padding) column: no cost of its own; diagonal and left pair up per row, then "up" runs down the rows.
    diagonal_and_left = _log_add_exp(column[:-1], column[1:])  # [R−1, ...]
    last = first_row[columns + 1]
    for row in range(1, rows):
        last = _log_add_exp(last, diagonal_and_left[row - 1])
    return last * -softmin_lambda
