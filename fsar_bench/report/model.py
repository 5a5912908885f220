"""The report as values: tables of rows with their statistics, Friedman across cells, and what was left out.

``build_report`` (in ``fsar_bench.report.analysis``) makes a ``Report``; the renderers turn it into
terminal, Markdown, CSV, LaTeX and JSON text, and ``fsar_bench.report.plots`` into figures. A ``Report``
is plain data: nothing here reads files or draws random numbers.

Usage::

    report = build_report(loaded, published={"otam": {("ucf101", 5): 88.9}})
    for table in report.tables:                 # one per (dataset, shot, protocol, episodes)
        for row in table.rows:                  # best first
            print(table.name, row.label, row.cell.mean, row.comparison and row.comparison.delta)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from fsar_bench.report.runs import SkippedRun
from fsar_bench.report.stats import MeanCI, PairedComparison


@dataclass(frozen=True)
class RunSummary:
    """One run (one training seed) inside a row: its own mean and per-run CI over episodes."""

    run_id: str
    train_seed: int | None
    checkpoint: str  # short checkpoint sha256
    mean: float
    ci95: float


@dataclass(frozen=True)
class Row:
    """One method (variant) in one table.

    ``cell`` is over the per-episode accuracy ``accuracy`` ``[E]``: the run's own, or with several
    training seeds the mean over seeds episode by episode (so ``cell.mean`` is the mean of the run
    means). Its CI is over episodes only; ``seed_std`` is the spread across training seeds.
    ``comparison`` is this row minus the table's baseline (None for the baseline itself).
    """

    label: str  # what tables show: the method name, with "(untrained)", "(reference checkpoint)" or a variant tag
    method: str
    runs: tuple[RunSummary, ...]
    cell: MeanCI
    seed_std: float  # std of run means across training seeds (ddof=1); nan with one run
    published: float | None
    comparison: PairedComparison | None
    p_holm: float  # paired t-test p vs the baseline, Holm-corrected across the table; nan for the baseline
    p_holm_vs_best: float  # the same against the best row (what ``marked`` uses); nan for the best
    is_best: bool
    marked: bool  # the best, or not significantly worse than it
    accuracy: NDArray[np.float64] = field(repr=False, compare=False)  # [E]
    episodes: NDArray[np.int64] = field(repr=False, compare=False)  # [E] episode ids
    weights: str = "trained here"  # or "untrained", "reference checkpoint" (the reference code's own file)

    @property
    def n_seeds(self) -> int:
        return len(self.runs)

    @property
    def train_seeds(self) -> tuple[int | None, ...]:
        return tuple(run.train_seed for run in self.runs)

    @property
    def published_delta(self) -> float | None:
        return None if self.published is None else self.cell.mean - self.published


@dataclass(frozen=True)
class CellTable:
    """Every method evaluated on one episode set with one backbone on one track: same dataset, shot, protocol,
    episodes, backbone (and weights) and track ("finetune" or "frozen")."""

    dataset: str
    shot: int
    way: int
    protocol_fingerprint: str
    episode_fingerprint: str
    status: str  # "complete", "smoke" or "other-protocol" (see fsar_bench.report.runs)
    detail: str  # why smoke / other-protocol
    n_episodes: int
    baseline: str  # label of the row every other row is compared with
    baseline_note: str  # non-empty when the requested baseline has no result here
    rows: tuple[Row, ...]  # best first
    backbone: str = "unknown"
    backbone_weights: str = "unknown"
    track: str = "finetune"

    @property
    def name(self) -> str:
        """``synthetic 5-shot small-cnn finetune``, tagged when not the standard protocol: ``... [smoke]``."""
        tag = {"complete": "", "smoke": " [smoke]", "other-protocol": f" [protocol {self.protocol_fingerprint[:8]}]"}
        return f"{self.dataset} {self.shot}-shot {self.backbone} {self.track}{tag.get(self.status, '')}"

    @property
    def best(self) -> Row:
        return self.rows[0]

    def row(self, label: str) -> Row:
        return next(row for row in self.rows if row.label == label)


@dataclass(frozen=True)
class FriedmanSummary:
    """Friedman test across cells (tables) of the methods present in every one, with Nemenyi's CD."""

    methods: tuple[str, ...]  # row labels, in the order of ``average_ranks``
    average_ranks: tuple[float, ...]  # 1 = best
    statistic: float
    p_value: float
    critical_difference: float
    alpha: float
    cells: tuple[str, ...]  # table names
    left_out: tuple[str, ...]  # methods missing from some cell


@dataclass(frozen=True)
class IncompleteRun:
    """A run still in progress or killed: listed, never used as a result."""

    run_id: str
    method: str | None
    dataset: str | None
    shot: int | None
    recorded: int
    expected: int | None
    detail: str


@dataclass(frozen=True)
class NotShown:
    """Finished runs left out of the report, and the option that shows them."""

    status: str  # "smoke", "other-protocol" or "superseded" (an older run of the same training seed)
    protocol: str  # short protocol fingerprint
    runs: int
    detail: str
    option: str  # e.g. "--include-smoke" or "--protocol 1a2b3c4d"


@dataclass(frozen=True)
class ReportSettings:
    baseline: str | None  # requested with --baseline; None: the best of each table
    alpha: float
    n_bootstrap: int
    bootstrap_seed: int


@dataclass(frozen=True)
class Report:
    settings: ReportSettings
    tables: tuple[CellTable, ...]
    friedman: FriedmanSummary | None
    friedman_note: str  # why there is no Friedman test, or what it covers
    incomplete: tuple[IncompleteRun, ...]
    not_shown: tuple[NotShown, ...]
    skipped: tuple[SkippedRun, ...]
