"""``python -m fsar_bench ...`` is ``fsar-bench ...`` (also what torchrun launches)."""

from fsar_bench.cli.main import main

main()
