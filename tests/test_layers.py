"""fsar_bench.layers: positional table, pre-norm attention, Bi-MHM matching, key renaming, options."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fsar_bench.layers import (
    HyrsmPositionalEncoding,
    LayoutTolerantConv3d,
    PreNormSelfAttention,
    all_pairs_bi_mhm,
    bi_mhm_distance,
    cosine_matrix,
    hyrsm_sinusoid_table,
    rename_keys,
)


def test_sinusoid_table_uses_raw_channel_index() -> None:
    length, dim = 7, 10
    table = hyrsm_sinusoid_table(length, dim)
    for position in range(length):
        for channel in range(0, dim, 2):
            even = math.sin(position / 10000 ** (2 * channel / dim))
            odd = math.cos(position / 10000 ** (2 * (channel + 1) / dim))
            assert table[position, channel].item() == pytest.approx(even, abs=1e-6)
            assert table[position, channel + 1].item() == pytest.approx(odd, abs=1e-6)
    standard = math.sin(3 / 10000 ** (2 / dim))  # the usual table at channel 2 uses i/2 = 1
    assert table[3, 2].item() != pytest.approx(standard, abs=1e-3)


def test_positional_encoding_scales_input_and_table() -> None:
    encoding = HyrsmPositionalEncoding(dim=8, table_length=5, scale_a=2.0, scale_b=0.5, dropout=0.1).eval()
    frames = torch.rand(3, 4, 8)
    expected = frames * math.sqrt(8 / 2.0) + 0.5 * hyrsm_sinusoid_table(5, 8)[:4]
    torch.testing.assert_close(encoding(frames), expected)
    assert encoding.state_dict()["table"].shape == (1, 5, 8)
    with pytest.raises(ValueError, match="position_table_length"):
        encoding(torch.rand(1, 6, 8))


def naive_attention(layer: PreNormSelfAttention, tokens: torch.Tensor) -> torch.Tensor:
    """One head at a time, one sequence at a time: [L, d] -> [L, d]."""
    normed = layer.norm(tokens)
    qkv = normed @ layer.to_qkv.weight.T
    inner = layer.heads * layer.head_dim
    heads = []
    for head in range(layer.heads):
        channels = slice(head * layer.head_dim, (head + 1) * layer.head_dim)
        query, key, value = (qkv[:, part * inner :][:, channels] for part in range(3))
        weights = torch.softmax(query @ key.T / math.sqrt(layer.head_dim), dim=-1)
        heads.append(weights @ value)
    return tokens + layer.output(torch.cat(heads, dim=-1))


def test_pre_norm_attention_matches_naive_and_broadcasts() -> None:
    torch.manual_seed(0)
    layer = PreNormSelfAttention(dim=12, heads=3, dropout=0.2).eval()
    tokens = torch.randn(2, 3, 5, 12)
    batched = layer(tokens)
    assert batched.shape == tokens.shape
    for index in range(2):
        for inner in range(3):
            torch.testing.assert_close(batched[index, inner], naive_attention(layer, tokens[index, inner]))
    assert set(layer.state_dict()) == {"norm.weight", "norm.bias", "to_qkv.weight", "output.weight", "output.bias"}


def test_cosine_variants() -> None:
    torch.manual_seed(1)
    rows, columns = torch.randn(2, 4, 6), torch.randn(2, 3, 6)
    expected = F.cosine_similarity(rows[:, :, None], columns[:, None], dim=-1)
    torch.testing.assert_close(cosine_matrix(rows, columns), expected)
    with_eps = cosine_matrix(rows, columns, denominator_eps=0.01)
    manual = (rows[0, 1] @ columns[0, 2]) / (rows[0, 1].norm() * columns[0, 2].norm() + 0.01)
    torch.testing.assert_close(with_eps[0, 1, 2], manual)
    zeros = cosine_matrix(torch.zeros(1, 2, 6), columns[:1], denominator_eps=0.01)
    assert torch.equal(zeros, torch.zeros_like(zeros))
    assert torch.isfinite(cosine_matrix(torch.zeros(1, 2, 6), columns[:1])).all()


def test_bi_mhm_is_a_sum_of_minima_both_ways() -> None:
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    support = torch.tensor([[1.0, 0.0], [1.0, 0.2]])
    distances = 1 - cosine_matrix(query, support)  # [3, 2]
    expected = distances.min(dim=1).values.sum() + distances.min(dim=0).values.sum()
    torch.testing.assert_close(bi_mhm_distance(query, support), expected)
    assert bi_mhm_distance(query, query).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("eps", [None, 0.01])
def test_all_pairs_bi_mhm_equals_broadcast(eps: float | None) -> None:
    torch.manual_seed(2)
    query, support = torch.rand(2, 5, 4, 8), torch.rand(2, 3, 6, 8)
    broadcast = bi_mhm_distance(query[:, :, None], support[:, None], eps)
    assert broadcast.shape == (2, 5, 3)
    torch.testing.assert_close(all_pairs_bi_mhm(query, support, eps), broadcast)
    torch.testing.assert_close(broadcast[1, 4, 2], bi_mhm_distance(query[1, 4], support[1, 2], eps))


def test_rename_keys_longest_prefix_wins() -> None:
    rules = [("a.", "x."), ("a.b.", "y.z."), ("c", "w")]
    mapping = rename_keys(["a.b.weight", "a.c.weight", "c", "d.bias"], rules)
    assert mapping == {"a.b.weight": "y.z.weight", "a.c.weight": "x.c.weight", "c": "w", "d.bias": "d.bias"}


def test_layout_tolerant_conv3d_survives_channels_last_and_computes_conv3d() -> None:
    """FSARModel.build converts the whole model to channels_last; a plain Conv3d weight makes torch raise."""
    torch.manual_seed(0)
    plain = torch.nn.Conv3d(4, 2, kernel_size=3, padding=1)
    with pytest.raises(RuntimeError, match="channels_last"):
        torch.nn.Sequential(torch.nn.Conv3d(4, 2, 3)).to(memory_format=torch.channels_last)
    tolerant = LayoutTolerantConv3d(4, 2, kernel_size=3, padding=1)
    tolerant.load_state_dict(plain.state_dict())
    model = torch.nn.Sequential(tolerant, torch.nn.Flatten(0, 1)).to(memory_format=torch.channels_last)
    assert set(tolerant.state_dict()) == {"weight", "bias"}
    x = torch.rand(2, 4, 3, 5, 5)
    torch.testing.assert_close(model[0](x), plain(x))
    model.to(torch.float64)  # other conversions still apply
    assert tolerant.weight.dtype == torch.float64


def test_scaled_sinusoid_table_and_frame_tuples() -> None:
    from fsar_bench.layers import ScaledPositionalEncoding, frame_tuples, gather_tuples, scaled_sinusoid_table

    table = scaled_sinusoid_table(6, 8, 0.1)
    for position in range(6):
        for pair in range(4):
            angle = position * math.exp(-2 * pair * math.log(10000.0) / 8)
            assert table[position, 2 * pair].item() == pytest.approx(0.1 * math.sin(angle), abs=1e-7)
            assert table[position, 2 * pair + 1].item() == pytest.approx(0.1 * math.cos(angle), abs=1e-7)
    encoding = ScaledPositionalEncoding(dim=8, length=6, dropout=0.5).eval()
    frames = torch.rand(2, 4, 8)
    torch.testing.assert_close(encoding(frames), frames + table[:4])
    with pytest.raises(ValueError, match="positional table holds 6"):
        encoding(torch.rand(1, 7, 8))
    tuples = frame_tuples(4, 2)
    assert tuples.tolist() == [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]
    gathered = gather_tuples(frames, tuples)  # [V, n, k*d]: frames in increasing order, concatenated
    torch.testing.assert_close(gathered[1, 4], torch.cat([frames[1, 1], frames[1, 3]]))


def test_tuple_cross_attention_matches_a_loop() -> None:
    from fsar_bench.layers import tuple_cross_attention_logits

    generator = torch.Generator().manual_seed(0)
    way, shot, tuples, width, queries = 3, 2, 4, 5, 2
    support_keys, support_values = (torch.randn(1, way, shot, tuples, width, generator=generator) for _ in range(2))
    query_keys, query_values = (torch.randn(1, queries, tuples, width, generator=generator) for _ in range(2))
    logits = tuple_cross_attention_logits(support_keys, support_values, query_keys, query_values)
    for query in range(queries):
        for label in range(way):
            keys, values = support_keys[0, label].flatten(0, 1), support_values[0, label].flatten(0, 1)
            attention = torch.softmax(query_keys[0, query] @ keys.T / math.sqrt(width), dim=-1)
            distance = (query_values[0, query] - attention @ values).pow(2).sum() / tuples
            assert logits[0, query, label].item() == pytest.approx(-distance.item(), rel=1e-5)
