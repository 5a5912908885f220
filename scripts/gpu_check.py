#!/usr/bin/env python
"""GPU check for fsar-bench training: the same as `fsar-bench doctor` (loader episodes/s, step time with and
without data per precision, bf16 vs fp32 logits on the parity fixtures). Arguments are doctor's.

Usage::

    python scripts/gpu_check.py --dataset ucf101 --method molo --device cuda --workers 0,4,8
"""

from __future__ import annotations

import sys

from fsar_bench.cli.main import app


def arguments(argv: list[str]) -> list[str]:
    """doctor's arguments, with a ``--config PATH`` moved before the command (it is a global option)."""
    rest, front = list(argv), []
    if "--config" in rest:
        at = rest.index("--config")
        front, rest = rest[at:at + 2], rest[:at] + rest[at + 2:]
    return [*front, "doctor", *rest]


if __name__ == "__main__":
    sys.exit(app(arguments(sys.argv[1:])))
