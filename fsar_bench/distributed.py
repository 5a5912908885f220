"""Scaling out with torchrun (torch.distributed): one process per rank, merged into one run (DESIGN §6).

``torchrun --nproc_per_node N -m fsar_bench run otam -d ucf101`` starts N processes with the usual
environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). ``from_environment`` joins them
into a process group (gloo on CPU, nccl on CUDA, each rank on ``cuda:LOCAL_RANK``); without that
environment it returns the single-process ``SINGLE`` and nothing here communicates.

What is sharded, and how it is merged:
* encoding: the test videos missing from the encoding cache, in fixed batches, batch ``b`` on rank
  ``b % N`` (so every video is encoded in the same batch as in a one-process run); the encodings are
  all-gathered so that every rank holds every video;
* scoring: each round of episodes is split among the ranks and the predictions are all-gathered;
  rank 0 alone writes the RunStore (records in episode order, fsync'd per round), so resuming and
  "nothing counted twice" work exactly as in one process;
* training: DistributedDataParallel, each optimizer step's episodes dealt round-robin to the ranks
  (``fsar_bench.train``), so the recipe's episodes per step do not depend on N.

A rank that dies makes torchrun stop the others; a collective that fails raises ``RankFailure``
with what to do (run the same command again: the run resumes from the records rank 0 wrote).

Usage::

    dist, device = from_environment("auto")
    mine = dist.shard(list_of_work)              # this rank's share (round-robin)
    merged = dist.all_gather_objects(partial)    # list, one item per rank
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from fsar_bench.api import Reps
from fsar_bench.errors import FsarError, UsageError, first_line

T = TypeVar("T")
DEFAULT_TIMEOUT_MINUTES = 120


class RankFailure(FsarError):
    """Another process of the torchrun job stopped, or the group could not be formed."""


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job. ``SINGLE`` (rank 0 of 1) means no torch.distributed at all."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's items: ``items[rank::world_size]``."""
        return list(items[self.rank::self.world_size])

    # -- collectives (no-ops in one process)
    def barrier(self) -> None:
        if self.active:
            _call(torch.distributed.barrier)

    def broadcast_object(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        if not self.active:
            return value
        box = [value if self.is_main else None]
        _call(torch.distributed.broadcast_object_list, box, src=0)
        return box[0]

    def all_gather_objects(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order."""
        if not self.active:
            return [value]
        gathered: list[Any] = [None] * self.world_size
        _call(torch.distributed.all_gather_object, gathered, value)
        return gathered

    def any_true(self, mask: torch.Tensor) -> torch.Tensor:
        """Element-wise OR of a bool tensor over ranks."""
        if not self.active:
            return mask
        values = mask.to(torch.uint8).to(self.device)
        _call(torch.distributed.all_reduce, values, op=torch.distributed.ReduceOp.MAX)
        return values.cpu().bool()

    def all_gather_rows(self, reps: Reps | None) -> list[Reps | None]:
        """Every rank's rows (leading axis; None = no rows on that rank), in rank order."""
        spec = None if reps is None else [(key, tensor.dtype, tuple(tensor.shape)) for key, tensor in _items(reps)]
        specs = self.all_gather_objects(spec)
        if not self.active:
            return [reps]
        known = next((s for s in specs if s is not None), None)
        if known is None:
            return [None] * self.world_size
        counts = [0 if s is None else s[0][2][0] for s in specs]
        longest = max(counts)
        parts: list[dict[str, torch.Tensor]] = [dict() for _ in range(self.world_size)]
        for index, (key, dtype, shape) in enumerate(known):
            padded = torch.zeros((longest, *shape[1:]), dtype=dtype, device=self.device)
            if reps is not None:
                tensor = _items(reps)[index][1]
                padded[: tensor.shape[0]] = tensor.to(self.device)
            gathered = [torch.empty_like(padded) for _ in range(self.world_size)]
            _call(torch.distributed.all_gather, gathered, padded)
            for rank, value in enumerate(gathered):
                parts[rank][key] = value[: counts[rank]].cpu()
        return [None if counts[rank] == 0 else (part[""] if list(part) == [""] else part)
                for rank, part in enumerate(parts)]

    def broadcast_module(self, module: torch.nn.Module, buffers_only: bool = False) -> None:
        """Rank 0's parameters (unless ``buffers_only``) and buffers on every rank (in place)."""
        if not self.active:
            return
        with torch.no_grad():
            for tensor in ([] if buffers_only else list(module.parameters())) + list(module.buffers()):
                data = tensor.data.to(self.device)
                _call(torch.distributed.broadcast, data, src=0)
                tensor.data.copy_(data)

    @property
    def device(self) -> torch.device:
        """Where collectives run: CPU under gloo, this rank's GPU under nccl."""
        if self.active and torch.distributed.get_backend() == "nccl":
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")


SINGLE = Distributed()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_main_process() -> bool:
    """Rank 0 under torchrun, or a single process (from the environment; no process group needed)."""
    return int(os.environ.get("RANK", "0")) == 0


def from_environment(device_name: str = "auto") -> tuple[Distributed, torch.device]:
    """(this process's Distributed, its device). Joins the torchrun group once per process.

    ``device_name``: "auto" (CUDA if available, else CPU), "cpu", "cuda" or "cuda:N"; under torchrun a
    CUDA device is always ``cuda:LOCAL_RANK``. ``FSAR_DIST_TIMEOUT_MINUTES`` bounds a collective's wait.
    """
    want_cuda = (device_name == "auto" and torch.cuda.is_available()) or device_name.startswith("cuda")
    if not launched_by_torchrun():
        return SINGLE, single_device(device_name)
    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if want_cuda and not torch.cuda.is_available():
        raise UsageError(f"device {device_name!r} requested but CUDA is not available")
    device = torch.device("cuda", local) if want_cuda else torch.device("cpu")
    if not torch.distributed.is_initialized():
        if want_cuda:
            torch.cuda.set_device(device)
        timeout = datetime.timedelta(minutes=float(os.environ.get("FSAR_DIST_TIMEOUT_MINUTES", DEFAULT_TIMEOUT_MINUTES)))
        try:
            torch.distributed.init_process_group("nccl" if want_cuda else "gloo", rank=rank, world_size=world,
                                                 timeout=timeout)
        except Exception as error:
            raise RankFailure(f"rank {rank} of {world} could not join the torchrun group ({first_line(error)}); "
                              "check MASTER_ADDR/MASTER_PORT and that every node started") from None
    return Distributed(rank, world, local), device


def single_device(name: str) -> torch.device:
    """"auto": CUDA when available, else CPU; otherwise the named device, checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} requested but CUDA is not available")
    return device


def _call(function, *args, **kwargs):
    """Run a collective; a peer that died becomes a RankFailure saying how to resume."""
    try:
        return function(*args, **kwargs)
    except (RuntimeError, ValueError) as error:  # DistBackendError is a RuntimeError
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else "?"
        raise RankFailure(
            f"rank {rank}: another process of this torchrun job stopped or timed out ({first_line(error)}). "
            "The records written so far are kept: fix the cause (see that rank's error above) and run the "
            "same command again to resume."
        ) from None


def _items(reps: Reps) -> list[tuple[str, torch.Tensor]]:
    return [("", reps)] if isinstance(reps, torch.Tensor) else sorted(reps.items())

