"""Peak scratch memory of a piece of tensor code, measured by tracking the storages it creates.

Used to size batches from a memory budget (episodes per scoring batch, pairs per pair-scoring
chunk) on any device, CPU included, where no allocator statistics exist.

Usage::

    with torch.inference_mode(), PeakMemory() as tracker:
        scores = head.pair_scores(support, query)
    print(tracker.peak)   # bytes
    fixed, per_item = linear_peak_bytes(lambda count: score(items[:count]), available=len(items))
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

CPU_SCRATCH_BYTES = 256 << 20
"""Default scratch memory for scoring on CPU (all worker threads together)."""


class PeakMemory(TorchDispatchMode):
    """Live bytes of the tensors created inside the mode (storages tracked until freed), and their peak."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False  # do not wrap __torch_dispatch__ for dynamo: importing it costs seconds

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                key = id(storage)
                if key not in self.live:
                    self.live[key] = storage.nbytes()
                    self.current += storage.nbytes()
                    weakref.finalize(storage, self._free, key)
        self.peak = max(self.peak, self.current)
        return out


def memory_budget(device: torch.device) -> int:
    """Scratch memory for scoring: a quarter of the free GPU memory, or on CPU 256 MiB (at most 1/8 of RAM)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 4
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        available = 8 << 30
    return min(CPU_SCRATCH_BYTES, available // 8)


def linear_peak_bytes(run: Callable[[int], object], available: int = 3) -> tuple[int, int]:
    """(fixed, per-item) peak scratch bytes of ``run(count)``, from a 1- and a 3-item probe (a 1-item probe
    alone when fewer than 3 items are ``available``: then all of it counts per item). Probes run on one
    intra-op thread: tiny work, and no wait on the OpenMP pool."""
    counts = (1, 3) if available >= 3 else (1,)
    peaks = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for count in counts:
            with PeakMemory() as tracker:
                run(count)
            peaks.append(tracker.peak)
    finally:
        torch.set_num_threads(threads)
    if len(peaks) == 1:
        return 0, max(1, peaks[0])
    per_item = max(1, (peaks[1] - peaks[0]) // 2)
    return max(0, peaks[0] - per_item), per_item
