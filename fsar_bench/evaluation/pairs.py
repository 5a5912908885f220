"""Scoring episodes of a ``PairwiseHead``: each distinct (query, support video) pair once.

10,000 5-shot 5-way episodes with one query per class hold 1.25 million query/support pairs, but a
test set of V videos has at most V² distinct pairs (57,600 for the synthetic set's 240 videos). A
``PairScoreTable`` scores the pairs an episode batch needs that it has not seen yet, in chunks
sized from the memory budget and spread over worker threads, and keeps them in a dense memo
``[V*V, ...]`` (when that fits the budget; otherwise it only de-duplicates within each batch).
Episodes then gather their pair scores and ``head.reduce_pairs`` turns them into logits.

Results are bit-identical to ``head.logits`` on the same episodes, one at a time or in any batch:
``pair_scores`` is batch-invariant (the ``PairwiseHead`` contract), so a pair has the same bits in
whatever chunk it was scored, and ``reduce_pairs`` sees the same values ``logits`` would.

Usage::

    pairs = PairScoreTable(head, table, torch.device("cpu"), workers=2)
    logits = pairs.logits(query_rows, support_rows)   # rows into ``table``: [B, Q], [B, N, K] -> [B, Q, N]
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

from fsar_bench.api import PairwiseHead, Reps, index_reps, reps_num_videos
from fsar_bench.episodes import EpisodeSet
from fsar_bench.evaluation.checks import check_logits
from fsar_bench.evaluation.peak_memory import linear_peak_bytes, memory_budget

CHUNK_SCRATCH_BYTES = 16 << 20
"""Scratch per pair chunk on CPU, at most (on GPU the budget alone). Larger chunks run slower on CPU:
OTAM at d=128 scores 380k pairs/s per thread at 16 MiB and 250k at 24 MiB and above; at d=2048, 41k
against 14k. The working set leaves the caches, and allocations above glibc's 32 MiB mmap ceiling take
fresh pages every time."""


def pair_bytes(head: PairwiseHead, table: Reps, device: torch.device) -> tuple[int, int]:
    """(fixed, per-pair) peak scratch bytes of ``head.pair_scores`` (gathered rows included)."""
    def probe(count: int) -> None:
        rows = torch.zeros(count, dtype=torch.long, device=device)
        with torch.inference_mode():
            head.pair_scores(index_reps(table, rows), index_reps(table, rows))

    return linear_peak_bytes(probe)


class PairScoreTable:
    """Scores of (query row, support row) pairs of ``table`` (rows 0..V-1), each computed once.

    ``workers`` > 1 on CPU scores chunks in that many threads of one intra-op thread each.
    ``budget`` (bytes; default ``memory_budget(device)``) bounds the chunk scratch and the memo.
    """

    def __init__(self, head: PairwiseHead, table: Reps, device: torch.device, workers: int = 1,
                 budget: int | None = None) -> None:
        self.head = head
        self.table = table
        self.device = device
        self.videos = reps_num_videos(table)
        self.workers = max(1, workers) if device.type == "cpu" else 1
        budget = memory_budget(device) if budget is None else budget
        fixed, per_pair = pair_bytes(head, table, device)
        per_chunk = budget // self.workers
        if device.type == "cpu":
            per_chunk = min(per_chunk, CHUNK_SCRATCH_BYTES)
        self.chunk = int(max(1, (per_chunk - fixed) // per_pair))
        one = self._score_chunk(np.zeros(1, dtype=np.int64))  # a score's shape and dtype
        pairs = self.videos * self.videos
        self.use_memo = pairs * (one[0].numel() * one.element_size() + 1) <= budget
        self.memo = one.new_zeros((pairs, *one.shape[1:])) if self.use_memo else None
        self.known = np.zeros(pairs, dtype=bool) if self.use_memo else None
        self.computed = 0

    def logits(self, query_rows: np.ndarray, support_rows: np.ndarray) -> Tensor:
        """Rows [B, Q] and [B, N, K] -> logits [B, Q, N] (``head.reduce_pairs`` of the pair scores)."""
        with torch.inference_mode():
            return self.head.reduce_pairs(self.scores(query_rows, support_rows))

    def scores(self, query_rows: np.ndarray, support_rows: np.ndarray) -> Tensor:
        """Rows [B, Q] and [B, N, K] -> pair scores [B, Q, N, K, ...]."""
        pairs = (np.asarray(query_rows, dtype=np.int64)[:, :, None, None] * self.videos
                 + np.asarray(support_rows, dtype=np.int64)[:, None, :, :])
        if self.memo is not None and self.known is not None:
            wanted = np.zeros_like(self.known)
            wanted[pairs.ravel()] = True  # distinct pairs in O(V²), no sort
            missing = np.flatnonzero(wanted & ~self.known)
            if len(missing):
                self._score(missing, into_memo=True)
            return self.memo[torch.from_numpy(pairs).to(self.device)]
        distinct, inverse = np.unique(pairs, return_inverse=True)
        scores = self._score(distinct, into_memo=False)
        return scores[torch.from_numpy(inverse.reshape(pairs.shape)).to(self.device)]

    def _score(self, pairs: np.ndarray, into_memo: bool) -> Tensor:
        """Score flat pair ids ``pairs`` (query row * V + support row); into the memo, or returned [P, ...]."""
        chunk = max(1, min(self.chunk, -(-len(pairs) // self.workers)))
        chunks = [pairs[start:start + chunk] for start in range(0, len(pairs), chunk)]
        parts: list[Tensor] = []
        for ids, scores in zip(chunks, self._map(chunks)):
            if into_memo:
                self._store(ids, scores)
            else:
                parts.append(scores)
        self.computed += len(pairs)
        return torch.cat(parts) if parts else torch.empty(0)

    def _map(self, chunks: list[np.ndarray]) -> Iterator[Tensor]:
        if self.workers <= 1 or len(chunks) <= 1:
            yield from (self._score_chunk(ids) for ids in chunks)
            return
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(self.workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
                yield from pool.map(self._score_chunk, chunks)
        finally:
            torch.set_num_threads(threads)

    def _score_chunk(self, ids: np.ndarray) -> Tensor:
        index = torch.from_numpy(ids).to(self.device)
        with torch.inference_mode():
            query = index_reps(self.table, torch.div(index, self.videos, rounding_mode="floor"))
            support = index_reps(self.table, torch.remainder(index, self.videos))
            return self.head.pair_scores(support, query)

    def _store(self, ids: np.ndarray, scores: Tensor) -> None:
        assert self.memo is not None and self.known is not None
        self.memo[torch.from_numpy(ids).to(self.device)] = scores
        self.known[ids] = True


def score_pairwise(head: PairwiseHead, table: Reps, row_of: np.ndarray, episodes: EpisodeSet,
                   episode_ids: np.ndarray, batch: int, device: torch.device,
                   workers: int = 1) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (episode ids [B], predictions [B, Q]) batch by batch, in order (as ``score_episodes``)."""
    pairs = PairScoreTable(head, table, device, workers)
    for start in range(0, len(episode_ids), batch):
        ids = episode_ids[start:start + batch]
        logits = pairs.logits(row_of[episodes.query[ids]], row_of[episodes.support[ids]])
        check_logits(logits, head, ids, episodes.query.shape[1], episodes.support.shape[1])
        yield ids, logits.argmax(dim=-1).cpu().numpy()
