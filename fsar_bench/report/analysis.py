"""From loaded runs to a ``Report``: tables per episode set, paired comparisons, seeds, published numbers.

Rules (DESIGN §5):

- A table holds the runs of one (dataset, shot, protocol fingerprint, episode fingerprint). Runs are
  paired episode by episode only inside a table, and the episode ids are checked again before any
  pairing: runs of different episodes are never compared.
- Smoke runs and runs of other protocols are left out unless asked for (``include_smoke``,
  ``protocols``) and then labelled; incomplete runs are listed, never used as results.
- Runs of the same method variant from different training seeds make one row: per-episode
  accuracy averaged over seeds, plus mean ± std of the run means across seeds.
- Every row is compared with the baseline (``baseline``, default: the best row) by
  ``stats.paired_comparison``; t-test p-values are Holm-corrected across the table. The best row and
  every row not significantly worse than it (Holm-corrected paired t-test vs the best) are marked.
- Friedman test and Nemenyi critical difference across cells when >= 3 methods have results in
  >= 3 cells.

Usage::

    loaded = load_results(Path("results"), expected_protocol=config.protocol)
    report = build_report(loaded, baseline="tsn", published={"otam": {("ucf101", 5): 88.9}})
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fsar_bench.report import stats
from fsar_bench.errors import ProtocolMismatchError, UnknownNameError, UsageError
from fsar_bench.report.model import (
    CellTable, FriedmanSummary, IncompleteRun, NotShown, Report, ReportSettings, Row, RunSummary,
)
from fsar_bench.report.runs import LEGACY_WEIGHT_STAMPS, LoadedResults, RunData

Published = Mapping[str, Mapping[tuple, float]]
"""Method name -> {(dataset, shot, backbone): published accuracy %}, from the method cards; a ``(dataset, shot)`` key
means the number was published with ResNet-50 (``DEFAULT_PUBLISHED_BACKBONE``)."""
DEFAULT_PUBLISHED_BACKBONE = "resnet50"


def published_value(published: Published, method: str, dataset: str, shot: int, backbone: str) -> float | None:
    """The published number of ``method`` for this cell measured with ``backbone``, or None."""
    numbers = published.get(method) or {}
    value = numbers.get((dataset, shot, backbone))
    if value is None and backbone == DEFAULT_PUBLISHED_BACKBONE:
        value = numbers.get((dataset, shot))
    return None if value is None else float(value)

_STATUS_ORDER = {"complete": 0, "smoke": 1, "other-protocol": 2}


@dataclass(frozen=True)
class Selection:
    """The finished runs a report shows, the incomplete ones it lists and what it leaves out."""

    shown: tuple[RunData, ...]
    incomplete: tuple[IncompleteRun, ...]
    not_shown: tuple[NotShown, ...]


def select_runs(loaded: LoadedResults, include_smoke: bool = False, protocols: Sequence[str] = ()) -> Selection:
    """Standard runs, plus smoke runs when ``include_smoke``, plus runs whose protocol fingerprint starts
    with one of ``protocols``. An unknown or too short prefix is a UsageError (with did-you-mean)."""
    known = sorted({run.protocol_fingerprint[:8] for run in loaded.runs if run.stamps})
    for prefix in protocols:
        if len(prefix) < 4:
            raise UsageError(f"--protocol {prefix!r}: give at least 4 characters of the protocol fingerprint")
        if not any(run.stamps and run.protocol_fingerprint.startswith(prefix) for run in loaded.runs):
            raise UnknownNameError("protocol", prefix, known, "Protocol fingerprints are listed in the report's table titles.")
    shown, incomplete, left_out = [], [], {}
    for run in loaded.runs:
        if run.status == "incomplete":
            stamps = run.stamps
            incomplete.append(IncompleteRun(
                run.run_id, stamps.get("method"), stamps.get("dataset"), stamps.get("shot"), len(run.accuracy),
                stamps["protocol"]["episodes"] if stamps else None, run.detail))
        elif (run.status == "complete" or (run.status == "smoke" and include_smoke)
              or any(run.protocol_fingerprint.startswith(prefix) for prefix in protocols)):
            shown.append(run)
        else:
            key = (run.status, run.protocol_fingerprint[:8])
            count, detail = left_out.get(key, (0, run.detail))
            left_out[key] = (count + 1, detail)
    not_shown = tuple(
        NotShown(status, protocol, count, detail, "--include-smoke" if status == "smoke" else f"--protocol {protocol}")
        for (status, protocol), (count, detail) in sorted(left_out.items()))
    shown, superseded = _newest_per_seed(shown)
    return Selection(tuple(shown), tuple(incomplete), not_shown + superseded)


def _newest_per_seed(runs: list[RunData]) -> tuple[list[RunData], tuple[NotShown, ...]]:
    """One run per (episode set, method variant, training seed): the newest (``started_at``). Older ones, e.g.
    scored before a code change and trained again since, are left out and listed, so that a re-run is never
    counted as a second training seed."""
    newest: dict[tuple, RunData] = {}
    for run in runs:
        key = (run.dataset, run.shot, run.protocol_fingerprint, run.episode_fingerprint, run.backbone,
               run.backbone_weights, run.track, run.method, _variant_key(run), run.train_seed)
        current = newest.get(key)
        if current is None or _started(run) > _started(current):
            newest[key] = run
    kept = {id(run) for run in newest.values()}
    older = [run for run in runs if id(run) not in kept]
    notes = tuple(
        NotShown("superseded", run.protocol_fingerprint[:8], 1,
                 f"{run.run_id}: an older run of {run.method} {run.dataset} {run.shot}-shot, training seed "
                 f"{run.train_seed}; the newest run of that seed is shown", "")
        for run in sorted(older, key=lambda r: r.run_id))
    return [run for run in runs if id(run) in kept], notes


def _started(run: RunData) -> tuple[str, str]:
    return str(run.stamps.get("started_at") or ""), run.run_id


def build_report(loaded: LoadedResults, *, baseline: str | None = None, published: Published | None = None,
                 include_smoke: bool = False, protocols: Sequence[str] = (), alpha: float = 0.05,
                 n_bootstrap: int = 10_000, bootstrap_seed: int = 0) -> Report:
    """The whole report over ``loaded`` runs. ``baseline`` naming no shown method is an UnknownNameError."""
    if not 0.0 < alpha < 1.0:
        raise UsageError(f"--alpha must be in (0, 1), got {alpha}")
    if n_bootstrap < 1:
        raise UsageError(f"--bootstrap must be at least 1, got {n_bootstrap}")
    selection = select_runs(loaded, include_smoke, protocols)
    groups: dict[tuple[str, ...], list[RunData]] = {}
    for run in selection.shown:  # a table per (dataset, shot, backbone and its weights, track) on one episode set
        key = (run.dataset, str(run.shot), run.protocol_fingerprint, run.episode_fingerprint, run.backbone,
               run.backbone_weights, run.track)
        groups.setdefault(key, []).append(run)
    if baseline is not None:
        names = {run.method for run in selection.shown} | {label for runs in groups.values()
                                                            for label in _row_labels(runs).values()}
        if baseline not in names:
            raise UnknownNameError("baseline method", baseline, {run.method for run in selection.shown},
                                   "--baseline must name a method with results in this report.")
    settings = ReportSettings(baseline, alpha, n_bootstrap, bootstrap_seed)
    tables = [_build_table(runs, settings, published or {}) for runs in groups.values()]
    tables.sort(key=lambda t: (t.dataset, t.shot, t.backbone, t.track, t.backbone_weights, _STATUS_ORDER.get(t.status, 9),
                               t.protocol_fingerprint, t.episode_fingerprint))
    friedman, note = _friedman(tables, alpha)
    return Report(settings, tuple(tables), friedman, note, selection.incomplete, selection.not_shown,
                  tuple(loaded.skipped))


# --------------------------------------------------------------------------- one table
def _variant_key(run: RunData) -> str:
    """What must be equal for two runs to be training seeds of one method variant."""
    model = {k: v for k, v in (run.stamps.get("model") or {}).items() if k not in ("method",)}
    recipe = (run.stamps.get("training") or {}).get("recipe")
    key = {"untrained": run.untrained, "model": model, "recipe": recipe}
    if run.reference_checkpoint:  # never pooled with runs trained here (keys of other runs unchanged)
        key["weights"] = run.weights
    if eval_precision(run) != "fp32":  # runs scored at another precision are another variant (fp32 keys unchanged)
        key["eval_precision"] = eval_precision(run)
    return json.dumps(key, sort_keys=True, default=str)


def eval_precision(run: RunData) -> str:
    """The precision a run was evaluated at (stamped since issue 12; earlier runs: fp16 autocast on CUDA, else fp32)."""
    stamped = run.stamps.get("eval_precision")
    if stamped:
        return str(stamped)
    return "fp16" if str(run.stamps.get("device", "cpu")).startswith("cuda") else "fp32"


def _row_labels(runs: Iterable[RunData]) -> dict[tuple[str, str], str]:
    """(method, variant key) -> label: the method name, "(untrained)" or "(reference checkpoint)", and a
    backbone or hash tag when one method has several variants in a table."""
    variants: dict[str, dict[str, RunData]] = {}
    for run in runs:
        variants.setdefault(run.method, {}).setdefault(_variant_key(run), run)
    labels = {}
    precisions = {eval_precision(run) for by_key in variants.values() for run in by_key.values()}
    for method, by_key in variants.items():
        backbones = {str((run.stamps.get("model") or {}).get("backbone")) for run in by_key.values()}
        parts_of = {}
        for key, run in by_key.items():
            parts = ["untrained"] if run.untrained else ([run.weights] if run.reference_checkpoint else [])
            if len(backbones) > 1:
                parts.append(str((run.stamps.get("model") or {}).get("backbone")))
            if len(precisions) > 1:  # never compare precisions silently: every row says its own
                parts.append(f"eval {eval_precision(run)}")
            parts_of[key] = parts
        seen = [tuple(p) for p in parts_of.values()]
        for key, parts in parts_of.items():
            if seen.count(tuple(parts)) > 1:
                parts = [*parts, "variant " + hashlib.sha256(key.encode()).hexdigest()[:6]]
            labels[(method, key)] = f"{method} ({', '.join(parts)})" if parts else method
    return labels


def _make_row(label: str, runs: list[RunData], published: Published, dataset: str, shot: int) -> dict:
    """The per-row values that do not depend on other rows."""
    first = runs[0]
    for run in runs[1:]:
        if not np.array_equal(run.episodes, first.episodes):
            raise ProtocolMismatchError(f"runs {first.run_id} and {run.run_id} share an episode fingerprint but not "
                                        "their episode ids; move one aside")
    runs = sorted(runs, key=lambda r: (r.train_seed is None, r.train_seed or 0, r.run_id))
    accuracy = np.mean([run.accuracy for run in runs], axis=0)
    summaries = []
    for run in runs:
        cell = stats.mean_ci(run.accuracy)
        summaries.append(RunSummary(run.run_id, run.train_seed, str(run.stamps["checkpoint_sha256"]).split(":")[-1][:10],
                                    cell.mean, cell.ci95))
    run_means = [s.mean for s in summaries]
    # papers fine-tuned their backbone end to end from its pretrained weights: published numbers stand beside
    # fine-tuned, trained rows of that backbone only (never frozen, random-weight or untrained rows)
    random_weights = first.backbone_weights == "none" and LEGACY_WEIGHT_STAMPS.get(first.backbone) != "none"
    comparable = (not first.untrained and first.stamps.get("comparable_to_papers") is not False
                  and first.track == "finetune" and not random_weights)
    value = published_value(published, first.method, dataset, shot, first.backbone) if comparable else None
    return {"label": label, "method": first.method, "runs": tuple(summaries), "cell": stats.mean_ci(accuracy),
            "seed_std": float(np.std(run_means, ddof=1)) if len(runs) > 1 else float("nan"),
            "published": None if value is None else float(value), "accuracy": accuracy, "episodes": first.episodes,
            "weights": first.weights}


def _build_table(runs: list[RunData], settings: ReportSettings, published: Published) -> CellTable:
    first = runs[0]
    labels = _row_labels(runs)
    by_label: dict[str, list[RunData]] = {}
    for run in runs:
        by_label.setdefault(labels[(run.method, _variant_key(run))], []).append(run)
    rows = [_make_row(label, members, published, first.dataset, first.shot) for label, members in by_label.items()]
    rows.sort(key=lambda r: (-r["cell"].mean, r["label"]))
    best = rows[0]

    baseline, note = best, ""
    if settings.baseline is not None:
        matching = ([r for r in rows if r["label"] == settings.baseline]
                    or [r for r in rows if r["method"] == settings.baseline])  # exact label first, then the best variant
        if matching:
            baseline = matching[0]
        else:
            note = f"{settings.baseline} has no result here; compared with the best"

    cache: dict[tuple[str, str], stats.PairedComparison | None] = {}

    def compare(row: dict, reference: dict) -> stats.PairedComparison | None:
        key = (row["label"], reference["label"])
        if key not in cache:
            if not np.array_equal(row["episodes"], reference["episodes"]):
                raise ProtocolMismatchError(f"{row['label']} and {reference['label']} were not scored on the same episodes")
            cache[key] = (stats.paired_comparison(row["accuracy"], reference["accuracy"], seed=settings.bootstrap_seed,
                                                  n_bootstrap=settings.n_bootstrap)
                          if len(row["accuracy"]) >= 2 else None)
        return cache[key]

    vs_baseline = _holm_against(rows, baseline, compare)
    vs_best = _holm_against(rows, best, compare) if baseline is not best else vs_baseline
    p_best = np.array([vs_best[r["label"]][1] for r in rows])
    if np.all(np.isfinite(p_best[1:])):
        marked = stats.mark_best([r["cell"].mean for r in rows], p_best, alpha=settings.alpha)
    else:  # too few episodes to compare: only the best is marked
        marked = np.arange(len(rows)) == 0
    final = tuple(
        Row(comparison=vs_baseline[r["label"]][0], p_holm=vs_baseline[r["label"]][1],
            p_holm_vs_best=vs_best[r["label"]][1], is_best=i == 0, marked=bool(marked[i]), **r)
        for i, r in enumerate(rows))
    return CellTable(first.dataset, first.shot, first.way, first.protocol_fingerprint, first.episode_fingerprint,
                     first.status, first.detail, len(first.accuracy), baseline["label"], note, final,
                     first.backbone, first.backbone_weights, first.track)


def _holm_against(rows: list[dict], reference: dict, compare) -> dict[str, tuple[stats.PairedComparison | None, float]]:
    """label -> (row vs reference, Holm-corrected t-test p across the table); the reference gets (None, nan)."""
    others = [r for r in rows if r is not reference]
    comparisons = [compare(r, reference) for r in others]
    result = {reference["label"]: (None, float("nan"))}
    if comparisons and all(c is not None for c in comparisons):
        adjusted = stats.holm([c.t_pvalue for c in comparisons])
        result.update({r["label"]: (c, float(p)) for r, c, p in zip(others, comparisons, adjusted)})
    else:
        result.update({r["label"]: (c, float("nan")) for r, c in zip(others, comparisons)})
    return result


# --------------------------------------------------------------------------- across cells
def _friedman(tables: list[CellTable], alpha: float) -> tuple[FriedmanSummary | None, str]:
    """Friedman + Nemenyi CD over the standard-protocol tables (all shown tables when none is standard)."""
    cells = [t for t in tables if t.status == "complete"] or tables
    scope = "standard-protocol cells" if cells and cells[0].status == "complete" else "the shown (non-standard) cells"
    all_labels = sorted({row.label for t in cells for row in t.rows})
    methods = [label for label in all_labels if all(any(r.label == label for r in t.rows) for t in cells)]
    left_out = tuple(label for label in all_labels if label not in methods)
    if not cells:
        return None, ""
    if len(cells) < 3 or len(methods) < 3:
        return None, (f"No Friedman test or critical-difference diagram: they need >= 3 methods with results in >= 3 "
                      f"cells; here {len(methods)} method(s) have results in every one of the {len(cells)} {scope}.")
    scores = np.array([[t.row(label).cell.mean for label in methods] for t in cells])  # [cells, methods]
    result = stats.friedman(scores)
    cd = stats.nemenyi_critical_difference(len(methods), len(cells), alpha=alpha)
    note = (f"Friedman test over {len(cells)} {scope} and {len(methods)} methods"
            + (f" (left out, missing from some cell: {', '.join(left_out)})" if left_out else "") + ".")
    return FriedmanSummary(tuple(methods), result.average_ranks, result.statistic, result.p_value, cd, alpha,
                           tuple(t.name for t in cells), left_out), note
