"""Progress bars on stderr for long steps (generation, data check, encoding, scoring, training): one implementation.

A bar shows its label, count, time left and any named fields; it draws nothing when disabled or when stderr is
not a terminal (logs and pipes stay clean).

Usage::

    with step_progress("encode otam synthetic", total=240) as advance:
        for batch in batches:
            ...
            advance(len(batch))

    with ProgressBar("data check ucf101") as bar:         # total unknown until the listing is done
        check(..., progress=bar.advance, on_total=bar.set_total)

    update, close = training_progress(600, "train otam synthetic 5-shot")   # loss and val fields
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any


class ProgressBar:
    """A rich bar on stderr with ``fields`` shown after the count; inert when disabled or not a terminal."""

    def __init__(self, label: str, total: int | None = None, *, enabled: bool = True, fields: tuple[str, ...] = (),
                 transient: bool = True) -> None:
        self.active = enabled and sys.stderr.isatty() and (total is None or total > 0)
        self._progress: Any = None
        if not self.active:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
        if fields:
            columns.append(TextColumn("  ".join(f"{name} {{task.fields[{name}]}}" for name in fields)))
        self._progress = Progress(*columns, TimeRemainingColumn(), console=Console(stderr=True), transient=transient)
        self._task = self._progress.add_task(label, total=total, **{name: "-" for name in fields})
        self._progress.start()

    def advance(self, count: int = 1, **fields: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=count, **fields)

    def set_total(self, total: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, total=total)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def step_progress(label: str, total: int, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)`` of a transient bar of ``total`` steps (nothing drawn when not a terminal)."""
    with ProgressBar(label, total, enabled=enabled and total > 0) as bar:
        yield bar.advance


def training_progress(total: int, label: str, quiet: bool = False) -> tuple[Callable[[dict], None], Callable[[], None]]:
    """A bar of training iterations showing loss and the last val accuracy; when stderr is not a terminal, one
    plain line per validation instead; nothing when ``quiet``. Returns (update(history entry), close)."""
    if quiet:
        return lambda entry: None, lambda: None
    if not sys.stderr.isatty():
        def update_plain(entry: dict) -> None:
            if "val_acc" in entry:
                print(f"{label}: iteration {entry['iteration']}/{total} loss {entry['loss']:.3f} "
                      f"val {_accuracy(entry)}", file=sys.stderr, flush=True)
        return update_plain, lambda: None
    bar = ProgressBar(label, total, fields=("loss", "val"), transient=False)
    last_val = ["-"]

    def update(entry: dict) -> None:
        if "val_acc" in entry:
            last_val[0] = _accuracy(entry)
        bar.advance(1, loss=f"{entry['loss']:.3f}", val=last_val[0])

    return update, bar.close


def _accuracy(entry: dict) -> str:
    """``40.0%``, or ``40.0 ± 2.1%`` when the entry carries the 95% half-width (``val_ci``)."""
    interval = entry.get("val_ci")
    return f"{entry['val_acc']:.1f}%" if interval is None else f"{entry['val_acc']:.1f} ± {interval:.1f}%"
