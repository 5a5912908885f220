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
    """A bar of training iterations: episodes/s, time left, the fraction of time waiting for data, loss and the last
    val accuracy ± CI; when stderr is not a terminal, one plain line per validation instead; nothing when ``quiet``.
    Returns (update(history entry), close); a resumed training's bar starts where it resumed."""
    import time

    if quiet:
        return lambda entry: None, lambda: None
    if not sys.stderr.isatty():
        def update_plain(entry: dict) -> None:
            if "val_acc" in entry:
                print(f"{label}: iteration {entry['iteration']}/{total} loss {entry['loss']:.3f} "
                      f"val {_accuracy(entry)}, {entry.get('episodes_per_second', 0.0):.2f} episodes/s, data wait "
                      f"{100 * entry.get('data_wait', 0.0):.0f}%", file=sys.stderr, flush=True)
        return update_plain, lambda: None
    bar = ProgressBar(label, total, fields=("episodes/s", "wait", "loss", "val"), transient=False)
    state = {"val": "-", "first": None, "done": 0, "started": time.monotonic()}

    def update(entry: dict) -> None:
        if state["first"] is None:
            state["first"] = state["done"] = entry["iteration"] - 1
        if "val_acc" in entry:
            state["val"] = _accuracy(entry)
        rate = (entry["iteration"] - state["first"]) / max(1e-9, time.monotonic() - state["started"])
        bar.advance(entry["iteration"] - state["done"], **{"episodes/s": f"{rate:.2f}"},
                    wait=f"{100 * entry.get('data_wait', 0.0):.0f}%", loss=f"{entry['loss']:.3f}", val=state["val"])
        state["done"] = entry["iteration"]

    return update, bar.close


def _accuracy(entry: dict) -> str:
    """``40.0%``, or ``40.0 ± 2.1%`` when the entry carries the 95% half-width (``val_ci``)."""
    interval = entry.get("val_ci")
    return f"{entry['val_acc']:.1f}%" if interval is None else f"{entry['val_acc']:.1f} ± {interval:.1f}%"
