"""`fsar-bench doctor`: loader speed, step time with and without data, bf16 against fp32 (see fsar_bench.doctor).

Usage::

    fsar-bench doctor                                    # synthetic, otam, on the default device
    fsar-bench doctor --dataset ucf101 --method molo --device cuda --episodes 20 --workers 0,4,8
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from fsar_bench.cli.common import config_from, handle_errors, stderr, stdout
from fsar_bench.errors import UsageError


def register(app: typer.Typer) -> None:
    @app.command("doctor")
    @handle_errors
    def doctor(
        ctx: typer.Context,
        dataset: Annotated[str, typer.Option("--dataset", "-d", help="Benchmark whose training videos to load.")] = "synthetic",
        method: Annotated[str, typer.Option("--method", "-m", help="Method whose training step to time.")] = "otam",
        episodes: Annotated[int, typer.Option(min=1, help="Episodes per measurement.")] = 8,
        workers: Annotated[str, typer.Option(help="Loader worker counts to compare, comma-separated.")] = "0,1,2",
        queries: Annotated[int, typer.Option(min=1, help="Queries per class in a training episode.")] = 6,
        device: Annotated[Optional[str], typer.Option(help="auto | cpu | cuda | cuda:N.")] = None,
    ) -> None:
        """Measure what this machine does with training: loader episodes/s, step time with and without data
        per precision, bf16 vs fp32 logits on the parity fixtures."""
        from rich.table import Table

        from fsar_bench.doctor import DoctorOptions, run_doctor
        from fsar_bench.runner import resolve_device

        try:
            counts = tuple(int(part) for part in workers.split(","))
        except ValueError:
            raise UsageError(f"--workers takes comma-separated integers, got {workers!r}") from None
        if any(count < 0 for count in counts):
            raise UsageError(f"--workers counts must be 0 or more, got {workers!r}")
        config = config_from(ctx, {"run.device": device})
        stderr.print(f"doctor: {method} on {dataset}, {episodes} episodes per measurement ...")
        rows = run_doctor(config, DoctorOptions(dataset, method, episodes, counts, queries=queries),
                          resolve_device(config.run["device"]))
        table = Table(title="fsar-bench doctor")
        table.add_column("check")
        table.add_column("result")
        for name, value in rows:
            table.add_row(name, value)
        stdout.print(table)
