"""Tests for fsar_bench.report.stats: every statistic against scipy or a hand computation."""

from __future__ import annotations

import doctest
import math
import warnings

import numpy as np
import pytest
from scipy import stats as scipy_stats

from fsar_bench.report import stats
from fsar_bench.report.stats import (
    friedman,
    holm,
    mark_best,
    mean_ci,
    nemenyi_critical_difference,
    paired_comparison,
)


def simulate_pair(
    n_episodes: int, rng: np.random.Generator, *, effect: float, n_queries: int = 5, shared: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Per-episode accuracies ``[E]`` of two correlated methods on the 0/20/.../100 grid.

    Each episode has a difficulty p ~ Beta(4, 3); a query is answered correctly by A when
    u < p + effect/200 and by B when u' < p - effect/200, where u' = u for a ``shared`` fraction
    of queries (the methods agree on easy/hard queries) and is fresh otherwise. The expected
    difference is ``effect`` percentage points.
    """
    difficulty = rng.beta(4.0, 3.0, size=(n_episodes, 1))
    u_a = rng.random((n_episodes, n_queries))
    u_b = np.where(rng.random((n_episodes, n_queries)) < shared, u_a, rng.random((n_episodes, n_queries)))
    correct_a = u_a < difficulty + effect / 200.0
    correct_b = u_b < difficulty - effect / 200.0
    return 100.0 * correct_a.mean(axis=1), 100.0 * correct_b.mean(axis=1)


# --------------------------------------------------------------------------- mean_ci
def test_mean_ci_by_hand():
    result = mean_ci(np.array([0.0, 20.0, 60.0, 100.0]))
    # deviations from 45: -45, -25, 15, 55 -> squares 2025 + 625 + 225 + 3025 = 5900; / (4 - 1)
    std = math.sqrt(5900.0 / 3.0)
    assert result.n == 4 and result.ddof == 1
    assert result.mean == pytest.approx(45.0)
    assert result.std == pytest.approx(std)
    assert result.ci95 == pytest.approx(1.96 * std / 2.0)
    assert (result.low, result.high) == pytest.approx((45.0 - result.ci95, 45.0 + result.ci95))


def test_mean_ci_single_episode_is_nan_and_bad_input_raises():
    single = mean_ci([80.0])
    assert single.mean == 80.0 and single.n == 1
    assert math.isnan(single.std) and math.isnan(single.ci95)
    with pytest.raises(ValueError, match="empty"):
        mean_ci([])
    with pytest.raises(ValueError, match="episode 1"):
        mean_ci([20.0, float("nan")])
    with pytest.raises(ValueError, match=r"shape \[E\]"):
        mean_ci(np.zeros((2, 3)))


# --------------------------------------------------------------------------- paired_comparison
def test_paired_comparison_against_scipy_and_by_hand():
    rng = np.random.default_rng(1)
    a, b = simulate_pair(400, rng, effect=3.0)
    result = paired_comparison(a, b, seed=0, n_bootstrap=2000)
    diff = a - b
    n = len(a)

    assert result.n == n
    assert result.mean_a == pytest.approx(a.mean()) and result.mean_b == pytest.approx(b.mean())
    assert result.delta == pytest.approx(diff.mean())
    assert result.delta_std == pytest.approx(diff.std(ddof=1))
    assert result.delta_ci95 == pytest.approx(1.96 * diff.std(ddof=1) / math.sqrt(n))

    t_ref = scipy_stats.ttest_rel(a, b)
    assert result.t_statistic == pytest.approx(t_ref.statistic)
    assert result.t_pvalue == pytest.approx(t_ref.pvalue)
    w_ref = scipy_stats.wilcoxon(a, b, zero_method="pratt")
    assert result.wilcoxon_pvalue == pytest.approx(w_ref.pvalue)

    assert result.correlation == pytest.approx(scipy_stats.pearsonr(a, b).statistic)
    unpaired = 1.96 * math.sqrt(a.var(ddof=1) / n + b.var(ddof=1) / n)
    assert result.unpaired_ci95 == pytest.approx(unpaired)
    assert result.correlation > 0.2 and result.delta_ci95 < result.unpaired_ci95  # pairing pays off
    # (z_0.975 + z_0.8) = 1.959964 + 0.841621 = 2.801585
    assert result.min_detectable_effect == pytest.approx(2.801585 * diff.std(ddof=1) / math.sqrt(n), rel=1e-6)
    assert result.wins + result.ties + result.losses == n
    assert result.ties > 0  # the grid makes exact ties common


def test_win_tie_loss_counts():
    a = np.array([60.0, 80.0, 100.0, 40.0, 0.0, 20.0])
    b = np.array([40.0, 80.0, 60.0, 60.0, 0.0, 20.0 + 1e-12])  # the last one is a tie up to rounding
    result = paired_comparison(a, b, seed=0, n_bootstrap=100)
    assert (result.wins, result.ties, result.losses) == (2, 3, 1)
    assert result.delta == pytest.approx(40.0 / 6.0)  # (20 + 0 + 40 - 20 + 0 + 0) / 6


def test_all_zero_differences_give_p_one_without_warnings():
    a = np.array([20.0, 40.0, 60.0, 80.0, 100.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = paired_comparison(a, a.copy(), seed=0, n_bootstrap=100)
    assert result.t_pvalue == 1.0 and result.wilcoxon_pvalue == 1.0
    assert result.delta == 0.0 and result.ties == 5
    assert (result.bootstrap_low, result.bootstrap_high) == (0.0, 0.0)
    assert result.correlation == pytest.approx(1.0)


def test_constant_nonzero_difference_and_constant_method():
    a = np.array([40.0, 60.0, 80.0, 100.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = paired_comparison(a, a - 20.0, seed=0, n_bootstrap=100)
        constant = paired_comparison(np.full(4, 60.0), a, seed=0, n_bootstrap=100)
    assert result.t_pvalue == 0.0 and result.t_statistic == math.inf
    assert result.wilcoxon_pvalue < 0.2  # 4 episodes cannot reach 0.05 with a signed-rank test
    assert math.isnan(constant.correlation)


def test_paired_comparison_rejects_mismatched_runs():
    with pytest.raises(ValueError, match="same episodes"):
        paired_comparison(np.zeros(5), np.zeros(6), seed=0)
    with pytest.raises(ValueError, match="at least 2"):
        paired_comparison([20.0], [40.0], seed=0)


@pytest.mark.parametrize("jitter", [0.0, 1e-3], ids=["grid", "continuous"])
def test_bootstrap_is_seeded(jitter):
    rng = np.random.default_rng(2)
    a, b = simulate_pair(500, rng, effect=2.0)
    a = a + jitter * rng.standard_normal(a.size)  # many distinct differences: the index-drawing path
    first = paired_comparison(a, b, seed=7, n_bootstrap=500)
    again = paired_comparison(a, b, seed=7, n_bootstrap=500)
    other = paired_comparison(a, b, seed=8, n_bootstrap=500)
    assert (first.bootstrap_low, first.bootstrap_high) == (again.bootstrap_low, again.bootstrap_high)
    assert (first.bootstrap_low, first.bootstrap_high) != (other.bootstrap_low, other.bootstrap_high)
    assert first.seed == 7 and first.n_bootstrap == 500


@pytest.mark.parametrize("jitter", [0.0, 1e-3], ids=["grid", "continuous"])
def test_bootstrap_ci_matches_normal_ci_on_large_n(jitter):
    rng = np.random.default_rng(3)
    a, b = simulate_pair(10_000, rng, effect=1.0)
    a = a + jitter * rng.standard_normal(a.size)
    result = paired_comparison(a, b, seed=0, n_bootstrap=4000)
    half = result.delta_ci95
    assert result.bootstrap_low == pytest.approx(result.delta_low, abs=0.1 * half)
    assert result.bootstrap_high == pytest.approx(result.delta_high, abs=0.1 * half)


def test_bootstrap_paths_resample_episodes():
    """Both bootstrap implementations have the spread of the mean of E episodes: s_d / sqrt(E)."""
    rng = np.random.default_rng(4)
    a, b = simulate_pair(2000, rng, effect=0.0)
    diff = a - b
    continuous = diff + 1e-6 * rng.standard_normal(diff.size)
    expected = diff.std(ddof=0) / math.sqrt(diff.size)
    for values in (diff, continuous):
        means = stats._bootstrap_means(values, n_bootstrap=4000, seed=0)
        assert means.shape == (4000,)
        assert means.mean() == pytest.approx(values.mean(), abs=0.1 * expected)
        assert means.std() == pytest.approx(expected, rel=0.06)


@pytest.mark.benchmark_quick
@pytest.mark.parametrize("jitter", [0.0, 1e-3], ids=["grid", "continuous"])
def test_bootstrap_speed_at_full_protocol_size(benchmark, jitter):
    """Speed is measured by pytest-benchmark, never asserted with a wall clock (typically 0.05 s / 0.5 s)."""
    rng = np.random.default_rng(5)
    a, b = simulate_pair(10_000, rng, effect=1.0)
    a = a + jitter * rng.standard_normal(a.size)
    result = benchmark.pedantic(paired_comparison, args=(a, b), kwargs={"seed": 0, "n_bootstrap": 10_000},
                                rounds=1, iterations=1)
    assert result.n_bootstrap == 10_000


def test_planted_two_point_effect_is_detected():
    rng = np.random.default_rng(6)
    a, b = simulate_pair(10_000, rng, effect=2.0)
    result = paired_comparison(a, b, seed=0)
    assert result.delta == pytest.approx(2.0, abs=0.6)
    assert result.t_pvalue < 1e-6 and result.wilcoxon_pvalue < 1e-6
    assert result.bootstrap_low > 0.0
    assert result.min_detectable_effect < 2.0
    assert result.wins > result.losses


def test_null_pairs_false_positive_rate_is_near_alpha():
    rng = np.random.default_rng(7)
    n_sims, alpha = 300, 0.05
    t_rejections = wilcoxon_rejections = 0
    for _ in range(n_sims):
        a, b = simulate_pair(100, rng, effect=0.0)
        result = paired_comparison(a, b, seed=0, n_bootstrap=50)
        t_rejections += result.t_pvalue < alpha
        wilcoxon_rejections += result.wilcoxon_pvalue < alpha
    assert 0.02 <= t_rejections / n_sims <= 0.09
    assert 0.02 <= wilcoxon_rejections / n_sims <= 0.09


# --------------------------------------------------------------------------- holm
def test_holm_hand_worked_example():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> monotone 0.06
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm([0.5, 0.6, 0.01]), [1.0, 1.0, 0.03])  # capped at 1


def test_holm_matches_definition_on_random_p_values():
    rng = np.random.default_rng(8)
    for m in (1, 2, 5, 12):
        p = np.round(rng.random(m) ** 2, 2)  # rounding makes ties
        order = np.argsort(p, kind="stable")
        expected_sorted = [
            min(1.0, max((m - j) * p[order[j]] for j in range(i + 1))) for i in range(m)
        ]
        expected = np.empty(m)
        expected[order] = expected_sorted
        np.testing.assert_allclose(holm(p), expected)
        assert np.all(holm(p) >= p)


def test_holm_edge_cases():
    assert holm([]).shape == (0,)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([0.1, 1.5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([0.1, float("nan")])


# --------------------------------------------------------------------------- mark_best
def test_mark_best():
    means = [70.0, 72.5, 72.0, 65.0]
    p_adjusted = [0.001, float("nan"), 0.4, 0.05]
    np.testing.assert_array_equal(mark_best(means, p_adjusted, alpha=0.05), [False, True, True, True])
    np.testing.assert_array_equal(mark_best(means, p_adjusted, alpha=0.06), [False, True, True, False])
    # tie at the top: the first is the best, the other is marked through its p-value
    np.testing.assert_array_equal(mark_best([72.0, 72.0], [float("nan"), 1.0]), [True, True])
    with pytest.raises(ValueError, match="indices"):
        mark_best([70.0, 72.0], [float("nan"), float("nan")])
    with pytest.raises(ValueError, match="equal length"):
        mark_best([70.0, 72.0], [0.1])


# --------------------------------------------------------------------------- friedman / nemenyi
def test_friedman_by_hand_without_ties():
    # method 0 always best, method 2 always worst over N=4 cells: ranks (1, 2, 3)
    scores = np.array([[70.0, 60.0, 50.0], [71.0, 62.0, 55.0], [69.0, 65.0, 60.0], [90.0, 80.0, 10.0]])
    result = friedman(scores)
    # chi2 = 12N/(k(k+1)) * (sum R_j^2 - k(k+1)^2/4) = 12*4/12 * (1 + 4 + 9 - 12) = 8; p = exp(-8/2) for 2 df
    assert result.average_ranks == (1.0, 2.0, 3.0)
    assert result.statistic == pytest.approx(8.0)
    assert result.p_value == pytest.approx(math.exp(-4.0))
    assert (result.n_cells, result.n_methods) == (4, 3)


def test_friedman_with_ties_against_scipy():
    scores = np.array(
        [[60.0, 60.0, 50.0, 40.0], [55.0, 58.0, 58.0, 50.0], [70.0, 65.0, 66.0, 66.0], [40.0, 45.0, 42.0, 41.0]]
    )
    result = friedman(scores)
    reference = scipy_stats.friedmanchisquare(*scores.T)
    assert result.statistic == pytest.approx(reference.statistic)
    assert result.p_value == pytest.approx(reference.pvalue)
    # cell ranks: (1.5, 1.5, 3, 4), (3, 1.5, 1.5, 4), (1, 4, 2.5, 2.5), (4, 1, 2, 3)
    np.testing.assert_allclose(result.average_ranks, [9.5 / 4, 8.0 / 4, 9.0 / 4, 13.5 / 4])


def test_friedman_degenerate_and_invalid():
    all_tied = friedman(np.full((3, 4), 50.0))
    assert (all_tied.statistic, all_tied.p_value) == (0.0, 1.0)
    assert all_tied.average_ranks == (2.5, 2.5, 2.5, 2.5)
    with pytest.raises(ValueError, match=">= 3 methods"):
        friedman(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="nan"):
        friedman([[1.0, 2.0, float("nan")], [1.0, 2.0, 3.0]])


def test_nemenyi_critical_difference_matches_demsar():
    # Demšar (2006), Table 5(a): q_0.05 = 1.960 (k=2), 2.343 (k=3), 2.569 (k=4), 3.164 (k=10)
    for k, q in ((2, 1.960), (3, 2.343), (4, 2.569), (10, 3.164)):
        cd = nemenyi_critical_difference(k, 14)
        assert cd / math.sqrt(k * (k + 1) / (6.0 * 14)) == pytest.approx(q, abs=1e-3)
    # his worked example: 4 methods over 14 data sets, CD = 2.569 * sqrt(4*5 / (6*14)) = 1.25
    assert nemenyi_critical_difference(4, 14) == pytest.approx(1.2536, abs=1e-3)
    # q_0.10 for k=4 is 2.291
    assert nemenyi_critical_difference(4, 14, alpha=0.10) == pytest.approx(2.291 * math.sqrt(20 / 84), abs=1e-3)
    with pytest.raises(ValueError):
        nemenyi_critical_difference(1, 14)


def test_docstring_examples_run():
    failures, tried = doctest.testmod(stats)
    assert tried > 0 and failures == 0
