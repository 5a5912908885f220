"""The results store: one folder per run, safe against being killed at any moment (DESIGN §5).

``results/runs/<run_id>/``
  ``stamps.json``   config, versions, git commit, fingerprints, checkpoint sha256, seeds, device (written first)
  ``records.jsonl`` one line per scored episode, appended and fsync'd in batches
  ``summary.json``  written last, by atomic rename: its presence marks a finished run
  ``reads.jsonl``   one line per later invocation of a finished run (whose stamps are never rewritten)
``results/episodes/<fingerprint>.npz``  each episode manifest, stored once
``results/locks/<run_id>.lock``  held by the one process writing the run (fsar_bench.locks)
``results/replaced/<run_id>__<time>/``  a run set aside by ``--retrain`` after its code changed

A killed run leaves at worst a partial last line: opening the run truncates it, and resuming
scores only the episodes that have no record, so nothing is lost and nothing is counted twice.

Usage::

    run = RunStore.open(results_dir, run_id, stamps)
    todo = [e for e in range(n) if e not in run.done]
    run.append([EpisodeRecord(e, correct, total, predictions), ...])
    run.finish({"accuracy": ...})
"""

from __future__ import annotations

import json
import os
import time
import tempfile
from dataclasses import dataclass
from collections.abc import Callable, KeysView, Sequence
from pathlib import Path
from typing import Any

from fsar_bench.code_digest import changed_modules
from fsar_bench.errors import DataError, FsarError, ProtocolMismatchError
from fsar_bench.files import append_durable, json_text, write_bytes_atomic, write_json_atomic

RECORDS_FILE, STAMPS_FILE, SUMMARY_FILE = "records.jsonl", "stamps.json", "summary.json"
WEIGHTS_TRAINED_HERE, WEIGHTS_UNTRAINED, WEIGHTS_REFERENCE = "trained here", "untrained", "reference checkpoint"
"""A run's ``weights`` stamp: trained by fsar-bench's trainer (selected on val), untrained (``--no-train``), or
trained and saved by the method's own reference code (``fsar_bench.model.reference_checkpoints``)."""
READS_FILE = "reads.jsonl"  # one line per later invocation of a finished run (its stamps are never rewritten)


class StoreError(FsarError):
    """The results folder cannot be written, or a record file is corrupt."""


@dataclass(frozen=True)
class EpisodeRecord:
    """One scored episode: ``correct`` of ``queries`` right; ``predictions`` per query (class-major queries)."""

    episode: int
    correct: int
    queries: int
    predictions: list[int]


def record_line(record: EpisodeRecord) -> str:
    """One JSON line, the same text as ``json.dumps(asdict(record), separators=(",", ":")) + "\\n"`` (faster)."""
    predictions = ",".join(map(str, record.predictions))
    return (f'{{"episode":{int(record.episode)},"correct":{int(record.correct)},"queries":{int(record.queries)},'
            f'"predictions":[{predictions}]}}\n')


def check_writable(folder: Path) -> None:
    """Create ``folder`` if needed and prove it is writable, or raise StoreError saying what to do."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe-")
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise StoreError(
            f"results folder {folder} is not writable ({error.strerror}). Fix its permissions or point "
            "[paths] results in bench.toml (or --results) to a writable folder."
        ) from None


def record_problem(record: EpisodeRecord, query_labels: Sequence[int] | None) -> str:
    """What is wrong with a parsed record ("" when nothing), checked when the query labels are known (a run
    reading its own records): predictions that do not fit, or a ``correct`` that disagrees with them."""
    if query_labels is not None:
        if not isinstance(record.predictions, list) or len(record.predictions) != record.queries:
            return f"{len(record.predictions) if isinstance(record.predictions, list) else 'no'} predictions for {record.queries} queries"
        if not 0 <= record.correct <= record.queries or record.episode < 0:
            return f"correct {record.correct} outside 0..{record.queries}"
        if len(query_labels) != record.queries:
            return f"{record.queries} queries, the protocol has {len(query_labels)}"
        right = sum(int(p == label) for p, label in zip(record.predictions, query_labels))
        if right != record.correct:
            return f"correct {record.correct} disagrees with its predictions ({right} right)"
    return ""


def read_records(path: Path, repair: bool = False, query_labels: Sequence[int] | None = None,
                 warn: Callable[[str], None] | None = None) -> list[EpisodeRecord]:
    """Records of a run, first occurrence of each episode kept. A partial last line (a kill mid-write) is
    ignored. Any other bad line (not a record, or a record that contradicts itself: see ``record_problem``)
    raises StoreError naming the line; with ``repair``, bad lines are dropped instead (the file is rewritten
    atomically with the good records only, and ``warn`` names the dropped lines), so that a resumed run
    scores again exactly the episodes they held."""
    if not path.exists():
        return []
    data = path.read_bytes()
    good_end = data.rfind(b"\n") + 1
    records: dict[int, EpisodeRecord] = {}
    kept: list[bytes] = []
    bad: list[str] = []
    for number, line in enumerate(data[:good_end].splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = EpisodeRecord(**json.loads(line))
            problem = record_problem(record, query_labels)
        except (ValueError, TypeError, AttributeError) as error:
            problem = f"not a record ({str(error)[:80]})"
        if problem:
            if not repair:
                raise StoreError(f"{path}:{number}: corrupt record: {problem}; run the same command again to "
                                 "drop it and score that episode again (the other records are kept)")
            bad.append(f"{number} ({problem})")
            continue
        if record.episode not in records:
            records[record.episode] = record
            kept.append(line + b"\n")
    if repair and bad:
        write_bytes_atomic(path, b"".join(kept))
        if warn is not None:
            shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            warn(f"{path}: dropped corrupt line{'s' if len(bad) > 1 else ''} {shown}; "
                 f"{len(records)} good records kept, the dropped episodes are scored again")
    elif repair and good_end < len(data):
        with open(path, "r+b") as stream:
            stream.truncate(good_end)
            os.fsync(stream.fileno())
    return sorted(records.values(), key=lambda r: r.episode)


def read_stamps(path: Path) -> dict[str, Any] | None:
    """A run's stamps (None when absent); DataError naming the file when they are not a JSON object."""
    if not path.exists():
        return None
    try:
        stamps = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        problem = f"not valid JSON ({error})"
    else:
        if isinstance(stamps, dict):
            return stamps
        problem = f"a JSON {type(stamps).__name__}, not an object"
    raise DataError(f"{path} is corrupt: {problem}. The run's provenance is lost, so its records cannot be "
                    f"trusted: move the folder {path.parent} aside (or delete it) and run the same command again")


IDENTITY_STAMPS = ("protocol_fingerprint", "episode_fingerprint", "checkpoint_sha256", "method")


class RunStore:
    """An open run folder. ``done`` holds the episode ids already recorded; the records themselves are
    kept in memory too (the caller holds the run's lock, so this process is its only writer: ``append``
    refuses a repeated episode)."""

    def __init__(self, folder: Path, stamps: dict[str, Any], records: list[EpisodeRecord]) -> None:
        self.folder = folder
        self.stamps = stamps
        self._records = {record.episode: record for record in records}

    @property
    def done(self) -> KeysView[int]:
        """Episode ids already recorded (a live view)."""
        return self._records.keys()

    @classmethod
    def open(cls, results_dir: Path, run_id: str, stamps: dict[str, Any], query_labels: Sequence[int] | None = None,
             accept_code_change: bool = False, set_aside_other_code: bool = False,
             warn: Callable[[str], None] = print) -> RunStore:
        """Create the run, or reopen it: to resume it, or to read a finished run, whose stamps are never
        rewritten (a ``reads.jsonl`` line records each later invocation instead).

        The stored fingerprints must equal ``stamps``'; a stored code digest (``stamps["code"]``) that differs
        is refused (exit 4) naming the changed modules, unless ``accept_code_change`` (then stamped) or
        ``set_aside_other_code`` (``--retrain``: the old folder moves to ``results/replaced/`` and the run
        starts afresh).
        """
        check_writable(results_dir)
        folder = results_dir / "runs" / run_id
        folder.mkdir(parents=True, exist_ok=True)
        stamps_path = folder / STAMPS_FILE
        stored = read_stamps(stamps_path)
        accepted: list[str] = []
        if stored is not None:
            for key in IDENTITY_STAMPS:
                if stored.get(key) != stamps.get(key):
                    raise ProtocolMismatchError(
                        f"{folder} holds a run with {key} {stored.get(key)!r}, this run has {stamps.get(key)!r}; "
                        "move that folder aside"
                    )
            if "code" in stamps and (changed := changed_modules(stored.get("code"), stamps["code"])):
                if set_aside_other_code and not accept_code_change:
                    aside = results_dir / "replaced" / f"{run_id}__{time.strftime('%Y%m%d-%H%M%S')}"
                    aside.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(folder, aside)
                    warn(f"{folder} was scored by other code ({'; '.join(changed)}); moved to {aside}, scoring afresh")
                    return cls.open(results_dir, run_id, stamps, query_labels, warn=warn)
                if not accept_code_change:
                    raise ProtocolMismatchError(
                        f"{folder} was scored by other code; changed since: {'; '.join(changed)}. Pass --retrain to "
                        "train and score again with the current code, or --accept-code-change if the change cannot "
                        "alter results (this is stamped into the run)")
                accepted = changed
        records = read_records(folder / RECORDS_FILE, repair=True, query_labels=query_labels, warn=warn)
        if stored is not None and (folder / SUMMARY_FILE).exists():
            if len(records) == stored.get("protocol", {}).get("episodes", len(records)):
                append_durable(folder / READS_FILE, json_text({
                    "at": stamps.get("started_at"), "argv": stamps.get("argv"), "config_file": stamps.get("config_file"),
                    "config": stamps.get("config"), "code_change_accepted": accepted or None}, indent=None))
                return cls(folder, stored, records)
            (folder / SUMMARY_FILE).unlink()  # records were dropped above: score them again, then finish anew
        if stored is not None:
            resumed = [*stored.get("resumed_at", []), stamps.get("started_at")]
            changes = [*stored.get("code_changes_accepted", []), *([{"at": stamps.get("started_at"), "modules": accepted}]
                                                                  if accepted else [])]
            stamps = {**stamps, "started_at": stored.get("started_at"), "resumed_at": resumed,
                      **({"code_changes_accepted": changes, "code": stored.get("code")} if changes else {})}
        write_json_atomic(stamps_path, stamps)
        return cls(folder, stamps, records)

    @property
    def finished(self) -> bool:
        return (self.folder / SUMMARY_FILE).exists()

    def summary(self) -> dict[str, Any]:
        """The stored summary of a finished run."""
        return json.loads((self.folder / SUMMARY_FILE).read_text(encoding="utf-8"))

    def append(self, records: list[EpisodeRecord]) -> None:
        """Append new episodes' records and fsync; already-recorded episodes are refused."""
        repeated = [r.episode for r in records if r.episode in self.done]
        if repeated:
            raise StoreError(f"episodes {repeated[:5]} are already recorded in {self.folder}")
        append_durable(self.folder / RECORDS_FILE, "".join(map(record_line, records)))
        self._records.update((r.episode, r) for r in records)

    def records(self) -> list[EpisodeRecord]:
        """Every record of the run (read at open, plus those appended since), by episode."""
        return [self._records[episode] for episode in sorted(self._records)]

    def finish(self, summary: dict[str, Any]) -> None:
        """Mark the run finished (atomic); the stamps get the final timings too."""
        write_json_atomic(self.folder / STAMPS_FILE, self.stamps)
        write_json_atomic(self.folder / SUMMARY_FILE, summary)


def run_folders(results_dir: Path) -> list[Path]:
    """Every run folder under ``results_dir/runs`` (sorted)."""
    runs = results_dir / "runs"
    return sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []
