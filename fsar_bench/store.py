"""The results store: one folder per run, safe against being killed at any moment (DESIGN §5).

``results/runs/<run_id>/``
  ``stamps.json``   config, versions, git commit, fingerprints, checkpoint sha256, seeds, device (written first)
  ``records.jsonl`` one line per scored episode, appended and fsync'd in batches
  ``summary.json``  written last, by atomic rename: its presence marks a finished run
``results/episodes/<fingerprint>.npz``  each episode manifest, stored once

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
import tempfile
from dataclasses import dataclass
from collections.abc import KeysView
from pathlib import Path
from typing import Any

from fsar_bench.errors import FsarError, ProtocolMismatchError
from fsar_bench.files import append_durable, write_json_atomic

RECORDS_FILE, STAMPS_FILE, SUMMARY_FILE = "records.jsonl", "stamps.json", "summary.json"
WEIGHTS_TRAINED_HERE, WEIGHTS_UNTRAINED, WEIGHTS_REFERENCE = "trained here", "untrained", "reference checkpoint"
"""A run's ``weights`` stamp: trained by fsar-bench's trainer (selected on val), untrained (``--no-train``), or
trained and saved by the method's own reference code (``fsar_bench.model.reference_checkpoints``)."""


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


def read_records(path: Path, repair: bool = False) -> list[EpisodeRecord]:
    """Records of a run, first occurrence of each episode kept. A partial last line (a kill mid-write)
    is ignored, and cut off when ``repair``; a malformed line elsewhere raises StoreError."""
    if not path.exists():
        return []
    data = path.read_bytes()
    good_end = data.rfind(b"\n") + 1
    records: dict[int, EpisodeRecord] = {}
    for number, line in enumerate(data[:good_end].splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = EpisodeRecord(**json.loads(line))
        except (ValueError, TypeError) as error:
            raise StoreError(f"{path}:{number}: corrupt record ({error}); move the run folder aside to re-run it") from None
        records.setdefault(record.episode, record)
    if repair and good_end < len(data):
        with open(path, "r+b") as stream:
            stream.truncate(good_end)
            os.fsync(stream.fileno())
    return sorted(records.values(), key=lambda r: r.episode)


class RunStore:
    """An open run folder. ``done`` holds the episode ids already recorded; the records themselves are
    kept in memory too (this process is the run's only writer: ``append`` refuses a repeated episode)."""

    def __init__(self, folder: Path, stamps: dict[str, Any], records: list[EpisodeRecord]) -> None:
        self.folder = folder
        self.stamps = stamps
        self._records = {record.episode: record for record in records}

    @property
    def done(self) -> KeysView[int]:
        """Episode ids already recorded (a live view)."""
        return self._records.keys()

    @classmethod
    def open(cls, results_dir: Path, run_id: str, stamps: dict[str, Any]) -> RunStore:
        """Create the run, or reopen it to resume (its stored fingerprints must equal ``stamps``')."""
        check_writable(results_dir)
        folder = results_dir / "runs" / run_id
        folder.mkdir(parents=True, exist_ok=True)
        stamps_path = folder / STAMPS_FILE
        if stamps_path.exists():
            stored = json.loads(stamps_path.read_text(encoding="utf-8"))
            for key in ("protocol_fingerprint", "episode_fingerprint", "checkpoint_sha256", "method"):
                if stored.get(key) != stamps.get(key):
                    raise ProtocolMismatchError(
                        f"{folder} holds a run with {key} {stored.get(key)!r}, this run has {stamps.get(key)!r}; "
                        "move that folder aside"
                    )
            stored.setdefault("resumed_at", []).append(stamps.get("started_at"))
            stamps = {**stamps, "started_at": stored.get("started_at"), "resumed_at": stored["resumed_at"]}
        write_json_atomic(stamps_path, stamps)
        return cls(folder, stamps, read_records(folder / RECORDS_FILE, repair=True))

    @property
    def finished(self) -> bool:
        return (self.folder / SUMMARY_FILE).exists()

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
