"""One progress-bar implementation: inert off a terminal, drawn on one, used by generation and data check."""

from __future__ import annotations

import io
import sys

import pytest

from fsar_bench import progress
from fsar_bench.data.synthetic import SyntheticSpec, generate_synthetic, synthetic_classes


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bars_draw_nothing_off_a_terminal(capsys) -> None:
    with progress.step_progress("encode", 10) as advance:
        advance(10)
    with progress.ProgressBar("check") as bar:
        bar.set_total(3)
        bar.advance(3)
    assert not bar.active and capsys.readouterr().err == ""


def test_a_bar_on_a_terminal_shows_label_count_and_fields(monkeypatch) -> None:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    bar = progress.ProgressBar("train otam", 4, fields=("loss", "val"), transient=False)
    assert bar.active
    bar.advance(4, loss="0.123", val="55.0%")
    bar.close()
    drawn = terminal.getvalue()
    assert "train otam" in drawn and "4/4" in drawn and "loss 0.123" in drawn and "val 55.0%" in drawn


def test_training_progress_prints_validation_lines_off_a_terminal(capsys) -> None:
    update, close = progress.training_progress(10, "train tsn synthetic 1-shot")
    update({"iteration": 5, "loss": 1.5})
    update({"iteration": 10, "loss": 1.25, "val_acc": 40.0, "val_ci": 9.5, "episodes_per_second": 2.5,
            "data_wait": 0.04})
    close()
    assert capsys.readouterr().err == ("train tsn synthetic 1-shot: iteration 10/10 loss 1.250 val 40.0 ± 9.5%, "
                                       "2.50 episodes/s, data wait 4%\n")


@pytest.mark.parametrize("jobs", [1, 2])
def test_synthetic_generation_reports_each_class(tmp_path, jobs: int) -> None:
    done = []
    spec = SyntheticSpec(videos_per_class=1, min_frames=8, max_frames=8, size=32)
    generate_synthetic(tmp_path / "synthetic", spec, jobs=jobs, progress=done.append)
    assert sum(done) == len(synthetic_classes()) and (tmp_path / "synthetic" / "COMPLETE.json").is_file()
