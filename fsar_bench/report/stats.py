"""Statistics over per-episode accuracies: CIs, paired comparisons, Holm, Friedman/Nemenyi.

Every method in fsar-bench is evaluated on the *same* seeded episodes, in the same order, so two
runs can be compared episode by episode. All functions here are pure: numpy arrays in, frozen
dataclasses or arrays out, no I/O, no global RNG (randomness takes ``seed`` and uses
``numpy.random.default_rng(seed)``). Accuracies are per episode, in percent (0..100); an episode
with 5 queries has accuracy in {0, 20, ..., 100}. Differences are in percentage points.

Usage::

    from fsar_bench.report import stats

    cell = stats.mean_ci(acc_otam)                       # acc_otam: [E] per-episode accuracy
    print(f"{cell.mean:.2f} ± {cell.ci95:.2f} (N={cell.n})")

    cmp = stats.paired_comparison(acc_otam, acc_tsn, seed=0)
    print(f"Δ={cmp.delta:+.2f} ± {cmp.delta_ci95:.2f}, p={cmp.t_pvalue:.2g}, "
          f"W/T/L={cmp.wins}/{cmp.ties}/{cmp.losses}")

    best = int(np.argmax(means))                         # accs: [M, E], means: [M]
    others = [i for i in range(len(means)) if i != best]
    p_vs_best = np.full(len(means), np.nan)
    p_vs_best[others] = stats.holm([stats.paired_comparison(accs[best], accs[i], seed=0).t_pvalue
                                    for i in others])
    marked = stats.mark_best(means, p_vs_best, alpha=0.05)  # [M] bool: best or not worse

    result = stats.friedman(scores)                      # scores: [cells, methods] mean accuracies
    cd = stats.nemenyi_critical_difference(n_methods=scores.shape[1], n_cells=scores.shape[0])

Decisions: std uses ddof=1; every "95% CI" is a normal interval with the constant 1.96 (as the
report promises: mean ± 1.96·s/√N), not Student t (at N=10,000 the two agree to 4 digits); the
bootstrap is a percentile bootstrap resampling whole episodes (the queries of one episode share a
support set, so they are not independent). A per-run CI says nothing about training-seed variance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import sqrt

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats as _scipy_stats

Z95 = 1.96
"""The normal quantile used for every 95% CI in the report (mean ± 1.96·s/√N)."""

TIE_TOLERANCE = 1e-9
"""Per-episode differences with ``|a - b| <= TIE_TOLERANCE`` (percentage points) count as ties.

Guards against accuracies computed by different code paths differing in the last ulp; real
differences are at least 100/queries points apart."""

_BOOTSTRAP_CHUNK_ELEMENTS = 2_500_000  # indices drawn per chunk in the generic bootstrap (~10 MB int32)


# --------------------------------------------------------------------------- one method
@dataclass(frozen=True)
class MeanCI:
    """Mean of per-episode accuracies with a normal 95% CI half-width ``ci95 = 1.96·std/√n``."""

    mean: float
    std: float  # sample standard deviation with ``ddof``
    n: int
    ci95: float  # half-width; the interval is mean ± ci95
    ddof: int = 1

    @property
    def low(self) -> float:
        return self.mean - self.ci95

    @property
    def high(self) -> float:
        return self.mean + self.ci95


def mean_ci(acc: ArrayLike) -> MeanCI:
    """Mean, std (ddof=1) and 95% CI half-width of per-episode accuracies ``acc`` ``[E]``.

    With a single episode the std and CI are undefined and returned as nan (the mean is still
    reported). An empty or non-finite input raises ``ValueError``.

    >>> mean_ci([0.0, 20.0, 60.0, 100.0]).mean
    45.0
    """
    values = _as_episode_vector(acc, "acc")
    n = values.size
    mean = float(values.mean())
    if n == 1:
        return MeanCI(mean=mean, std=float("nan"), n=1, ci95=float("nan"))
    std = float(values.std(ddof=1))
    return MeanCI(mean=mean, std=std, n=n, ci95=Z95 * std / sqrt(n))


# --------------------------------------------------------------------------- two methods
@dataclass(frozen=True)
class PairedComparison:
    """Method A vs method B on identical episodes; ``delta = mean(a - b)`` in percentage points.

    Every p-value is two-sided and never nan: when all per-episode differences are zero both
    tests report p = 1.0. ``correlation`` is nan when either method is constant.
    """

    n: int
    mean_a: float
    mean_b: float
    delta: float  # mean(a - b)
    delta_std: float  # s_d, std of per-episode differences (ddof=1)
    delta_ci95: float  # half-width, 1.96·s_d/√n (normal, paired)
    t_statistic: float
    t_pvalue: float  # paired t-test, scipy.stats.ttest_rel
    wilcoxon_pvalue: float  # signed-rank, zero_method="pratt"
    bootstrap_low: float  # percentile bootstrap 95% CI of delta, resampling episodes
    bootstrap_high: float
    n_bootstrap: int
    seed: int
    wins: int  # episodes where a > b
    ties: int
    losses: int  # episodes where a < b
    correlation: float  # Pearson r between a and b over episodes
    unpaired_ci95: float  # half-width 1.96·sqrt(s_a²/n + s_b²/n): what ignoring the pairing costs
    min_detectable_effect: float  # (z_0.975 + z_0.8)·s_d/√n: α=0.05 two-sided, power 0.8

    @property
    def delta_low(self) -> float:
        return self.delta - self.delta_ci95

    @property
    def delta_high(self) -> float:
        return self.delta + self.delta_ci95


def paired_comparison(a: ArrayLike, b: ArrayLike, *, seed: int, n_bootstrap: int = 10_000) -> PairedComparison:
    """Compare per-episode accuracies ``a`` and ``b`` ``[E]`` of two methods on the same episodes.

    ``a[i]`` and ``b[i]`` must come from the same episode ``i``. Needs at least 2 episodes.
    The bootstrap is seeded (``numpy.random.default_rng(seed)``): same inputs and seed give the
    same interval. N=10,000 episodes with 10,000 resamples takes well under a second.

    >>> cmp = paired_comparison([60.0, 80, 100, 40], [40.0, 80, 60, 40], seed=0, n_bootstrap=1000)
    >>> cmp.delta, (cmp.wins, cmp.ties, cmp.losses)
    (15.0, (2, 2, 0))
    """
    acc_a = _as_episode_vector(a, "a")
    acc_b = _as_episode_vector(b, "b")
    if acc_a.shape != acc_b.shape:
        raise ValueError(
            f"paired comparison needs the same episodes: a has {acc_a.size} episodes, b has {acc_b.size}; "
            "compare runs of the same protocol fingerprint"
        )
    n = acc_a.size
    if n < 2:
        raise ValueError(f"paired comparison needs at least 2 episodes, got {n}")
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be >= 1, got {n_bootstrap}")

    diff = acc_a - acc_b
    diff[np.abs(diff) <= TIE_TOLERANCE] = 0.0
    delta = float(diff.mean())
    delta_std = float(diff.std(ddof=1))
    std_a, std_b = float(acc_a.std(ddof=1)), float(acc_b.std(ddof=1))

    if np.all(diff == 0.0):
        t_statistic, t_pvalue, wilcoxon_pvalue = 0.0, 1.0, 1.0
    else:
        if delta_std == 0.0:  # constant non-zero difference: scipy warns and returns ±inf, p=0
            t_statistic, t_pvalue = float(np.copysign(np.inf, delta)), 0.0
        else:
            t_result = _scipy_stats.ttest_1samp(diff, 0.0)  # identical to ttest_rel(a, b)
            t_statistic, t_pvalue = float(t_result.statistic), float(t_result.pvalue)
        wilcoxon_pvalue = float(_scipy_stats.wilcoxon(diff, zero_method="pratt").pvalue)

    boot_means = _bootstrap_means(diff, n_bootstrap=n_bootstrap, seed=seed)
    bootstrap_low, bootstrap_high = (float(x) for x in np.percentile(boot_means, [2.5, 97.5]))

    if std_a == 0.0 or std_b == 0.0:
        correlation = float("nan")
    else:
        correlation = float(np.corrcoef(acc_a, acc_b)[0, 1])

    z_power = float(_scipy_stats.norm.ppf(0.975) + _scipy_stats.norm.ppf(0.8))
    return PairedComparison(
        n=n,
        mean_a=float(acc_a.mean()),
        mean_b=float(acc_b.mean()),
        delta=delta,
        delta_std=delta_std,
        delta_ci95=Z95 * delta_std / sqrt(n),
        t_statistic=t_statistic,
        t_pvalue=t_pvalue,
        wilcoxon_pvalue=wilcoxon_pvalue,
        bootstrap_low=bootstrap_low,
        bootstrap_high=bootstrap_high,
        n_bootstrap=n_bootstrap,
        seed=seed,
        wins=int(np.count_nonzero(diff > 0)),
        ties=int(np.count_nonzero(diff == 0)),
        losses=int(np.count_nonzero(diff < 0)),
        correlation=correlation,
        unpaired_ci95=Z95 * sqrt(std_a**2 / n + std_b**2 / n),
        min_detectable_effect=z_power * delta_std / sqrt(n),
    )


def _bootstrap_means(diff: NDArray[np.float64], *, n_bootstrap: int, seed: int) -> NDArray[np.float64]:
    """Means of ``n_bootstrap`` resamples (with replacement) of the episodes of ``diff`` ``[E]``.

    Differences sit on a coarse grid (few distinct values K), so a resample is fully described by
    how often each distinct value is drawn: counts ~ Multinomial(E, empirical frequencies). That is
    exactly the episode bootstrap, at a cost of B·K instead of B·E draws. With many distinct
    values it falls back to drawing episode indices in chunks.
    """
    rng = np.random.default_rng(seed)
    n = diff.size
    values, counts = np.unique(diff, return_counts=True)
    if 16 * values.size <= n:
        draws = rng.multinomial(n, counts / n, size=n_bootstrap)  # [B, K]
        return draws @ values / n
    means = np.empty(n_bootstrap)
    chunk = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // n)
    for start in range(0, n_bootstrap, chunk):
        stop = min(start + chunk, n_bootstrap)
        index = rng.integers(0, n, size=(stop - start, n), dtype=np.int32)  # [chunk, E]
        means[start:stop] = diff[index].mean(axis=1)
    return means


# --------------------------------------------------------------------------- many comparisons
def holm(p_values: Sequence[float] | ArrayLike) -> NDArray[np.float64]:
    """Holm step-down adjusted p-values, in the input order (as statsmodels' ``method="holm"``).

    The i-th smallest p (1-based) is multiplied by ``m - i + 1``, made monotone non-decreasing
    along the sorted order, and capped at 1. Reject where ``adjusted <= alpha``.

    >>> holm([0.01, 0.04, 0.03, 0.005]).round(4).tolist()
    [0.03, 0.06, 0.06, 0.02]
    """
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1:
        raise ValueError(f"holm expects a flat sequence of p-values, got shape {p.shape}")
    if p.size == 0:
        return p.copy()
    if not np.all(np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError(f"p-values must be finite and in [0, 1], got {p.tolist()}")
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = p[order] * np.arange(m, 0, -1)  # m, m-1, ..., 1
    adjusted_sorted = np.minimum(np.maximum.accumulate(scaled), 1.0)
    adjusted = np.empty(m)
    adjusted[order] = adjusted_sorted
    return adjusted


def mark_best(
    means: Sequence[float] | ArrayLike,
    p_adjusted_vs_best: Sequence[float] | ArrayLike,
    *,
    alpha: float = 0.05,
) -> NDArray[np.bool_]:
    """Which methods are the best or not significantly worse than it: a bool mask ``[M]``.

    ``means[i]`` is method i's mean accuracy; the best is ``argmax(means)`` (first on ties).
    ``p_adjusted_vs_best[i]`` is the (e.g. Holm-) adjusted p-value of method i against the best;
    the best's own entry is ignored (pass nan). Method i is marked when it is the best or
    ``p_adjusted_vs_best[i] >= alpha``.

    >>> mark_best([70.0, 72.5, 72.0], [0.001, float("nan"), 0.4]).tolist()
    [False, True, True]
    """
    mean_values = np.asarray(means, dtype=float)
    p = np.asarray(p_adjusted_vs_best, dtype=float)
    if mean_values.ndim != 1 or mean_values.size == 0 or p.shape != mean_values.shape:
        raise ValueError(
            f"means and p_adjusted_vs_best must be flat and of equal length, got {mean_values.shape} and {p.shape}"
        )
    if not np.all(np.isfinite(mean_values)):
        raise ValueError(f"means must be finite, got {mean_values.tolist()}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    best = int(np.argmax(mean_values))
    others = np.arange(mean_values.size) != best
    if np.any(np.isnan(p[others])):
        missing = np.flatnonzero(others & np.isnan(p)).tolist()
        raise ValueError(f"p-value vs the best (index {best}) is nan for methods at indices {missing}")
    marked = p >= alpha
    marked[best] = True
    return marked


# --------------------------------------------------------------------------- across cells
@dataclass(frozen=True)
class FriedmanResult:
    """Friedman test over ``[cells, methods]`` scores; rank 1 is the best (highest) method."""

    statistic: float  # chi-square, tie-corrected (scipy.stats.friedmanchisquare)
    p_value: float
    average_ranks: tuple[float, ...]  # one per method, ties share average ranks
    n_cells: int
    n_methods: int


def friedman(scores: ArrayLike) -> FriedmanResult:
    """Friedman test of ``scores`` ``[cells, methods]`` (e.g. mean accuracy per dataset×shot cell).

    Needs at least 3 methods and 2 cells. When every cell ties all methods, the statistic is 0
    and p = 1 (scipy returns nan there).

    >>> result = friedman([[70.0, 60.0, 50.0], [71.0, 62.0, 55.0], [69.0, 65.0, 60.0]])
    >>> result.average_ranks
    (1.0, 2.0, 3.0)
    """
    table = np.asarray(scores, dtype=float)
    if table.ndim != 2:
        raise ValueError(f"scores must be [cells, methods], got shape {table.shape}")
    n_cells, n_methods = table.shape
    if n_methods < 3 or n_cells < 2:
        raise ValueError(f"Friedman needs >= 3 methods and >= 2 cells, got {n_methods} methods, {n_cells} cells")
    if not np.all(np.isfinite(table)):
        raise ValueError("scores contain nan or inf: every method needs a result in every cell")
    ranks = _scipy_stats.rankdata(-table, method="average", axis=1)  # [cells, methods]
    average_ranks = tuple(float(r) for r in ranks.mean(axis=0))
    if np.all(table == table[:, :1]):
        statistic, p_value = 0.0, 1.0
    else:
        result = _scipy_stats.friedmanchisquare(*table.T)
        statistic, p_value = float(result.statistic), float(result.pvalue)
    return FriedmanResult(statistic, p_value, average_ranks, n_cells, n_methods)


def nemenyi_critical_difference(n_methods: int, n_cells: int, alpha: float = 0.05) -> float:
    """Nemenyi critical difference of average ranks (Demšar 2006, eq. for CD).

    ``CD = q_alpha · sqrt(k(k+1) / (6N))`` with ``q_alpha`` the studentized range quantile (k
    groups, infinite df) divided by √2. Two methods whose average ranks differ by more than CD
    differ significantly.

    >>> round(nemenyi_critical_difference(n_methods=4, n_cells=14), 3)   # Demšar's example
    1.254
    """
    if n_methods < 2:
        raise ValueError(f"critical difference needs >= 2 methods, got {n_methods}")
    if n_cells < 1:
        raise ValueError(f"critical difference needs >= 1 cell, got {n_cells}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    q_alpha = float(_scipy_stats.studentized_range.ppf(1.0 - alpha, n_methods, np.inf)) / sqrt(2.0)
    return q_alpha * sqrt(n_methods * (n_methods + 1) / (6.0 * n_cells))


# --------------------------------------------------------------------------- helpers
def _as_episode_vector(values: ArrayLike, name: str) -> NDArray[np.float64]:
    """A copy of ``values`` as a finite float64 vector ``[E]``, or a ``ValueError`` naming ``name``."""
    array = np.array(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be per-episode accuracies of shape [E], got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty: no episodes")
    if not np.all(np.isfinite(array)):
        bad = int(np.flatnonzero(~np.isfinite(array))[0])
        raise ValueError(f"{name} has a non-finite accuracy at episode {bad}: {array[bad]}")
    return array
