"""The processes an evaluation runs on, as one object it is given (issue 22).

An evaluation spreads its work over the ranks of a data-parallel job as training does:
every rank draws exactly the random numbers one process draws (the global batch's noise,
:func:`gencompare.models.base.draw_examples`, advancing the RNG through the other ranks'
rows without running the network on them) and runs the network on its own rows of each
chunk only; the rows are then gathered in order. So the samples and the per-example test
likelihoods of W ranks are one process's, up to the order of float sums inside the
networks (a row's result may differ in the last bits with the batch it is computed in).

- :class:`OneProcess`: one process; every method is the identity (the numbers of a
  one-process run are those of before, bit for bit);
- :class:`AcrossRanks`: rank ``rank`` of ``world_size``, in a joined process group.

A metric that spreads its work (``Metric.across_ranks``, the family's likelihood) runs on
every rank; every other metric runs on rank 0 alone, on the gathered samples
(:meth:`OneProcess.computes`).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from gencompare.models.base import BatchShard, batch_shard

__all__ = ["AcrossRanks", "OneProcess"]


class OneProcess:
    """The evaluation of one process: nothing spread, nothing gathered."""

    rank = 0
    world_size = 1

    @property
    def main(self) -> bool:
        """Whether this process records the evaluation (rank 0)."""
        return self.rank == 0

    def computes(self, metric) -> bool:
        """Whether this process computes ``metric`` (a :class:`~gencompare.metrics.base.Metric`)."""
        return True

    def rows(self, n: int) -> tuple[int, int]:
        """``(start, count)``: this process's rows of a global chunk of ``n``."""
        return 0, n

    def shard(self, n: int) -> BatchShard | None:
        """The :class:`~gencompare.models.base.BatchShard` a model draws a global chunk of
        ``n`` under (None: one process)."""
        return None

    def gather(self, x: Tensor, n: int) -> Tensor:
        """The global chunk ``(n, ...)`` from this process's rows ``x`` of it."""
        return x

    def chunk(self, n: int, compute: Callable[[int, int], Tensor]) -> Tensor:
        """A global chunk of ``n`` rows ``(n, ...)``: ``compute(start, count)``, this process's
        rows ``[start, start + count)`` of it ``(count, ...)``, run under its
        :class:`~gencompare.models.base.BatchShard` (so the model draws the chunk's noise as one
        process draws it), then gathered. One process: ``compute(0, n)``."""
        start, count = self.rows(n)
        with batch_shard(self.shard(n)):
            part = compute(start, count)
        return self.gather(part, n)


class AcrossRanks(OneProcess):
    """Rank ``rank`` of ``world_size`` in the joined process group: a chunk of ``n`` rows is
    split as ``numpy.array_split`` splits it (the first ``n % world_size`` ranks one row
    more), in rank order, and gathered with ``all_gather`` (every rank gets the chunk)."""

    def __init__(self, rank: int, world_size: int) -> None:
        self.rank, self.world_size = int(rank), int(world_size)

    def computes(self, metric) -> bool:
        return bool(getattr(metric, "across_ranks", False)) or self.main

    def sizes(self, n: int) -> tuple[int, ...]:
        """Rows of a chunk of ``n`` per rank, in rank order."""
        q, r = divmod(int(n), self.world_size)
        return tuple(q + (k < r) for k in range(self.world_size))

    def rows(self, n: int) -> tuple[int, int]:
        """Its own rows of a chunk of ``n``; a rank that holds none computes one row of
        another rank's, which :meth:`gather` drops (the networks take no empty batch, and
        the rank must draw the chunk's noise all the same)."""
        sizes = self.sizes(n)
        start = sum(sizes[: self.rank])
        return (start, sizes[self.rank]) if sizes[self.rank] else (min(start, n - 1), 1)

    def shard(self, n: int) -> BatchShard:
        return BatchShard(self.rank, self.world_size, n, self.rows(n)[0])

    def gather(self, x: Tensor, n: int) -> Tensor:
        """``x`` ``(count, ...)``, the rows :meth:`rows` gave this rank, of every rank,
        concatenated in rank order: ``(n, ...)`` on ``x``'s device. On nccl the copies
        travel through this rank's GPU.

        Raises:
            ValueError: ``x`` is not the rows :meth:`rows` gave this rank.
        """
        import torch.distributed as dist

        sizes = self.sizes(n)
        if len(x) != self.rows(n)[1]:
            raise ValueError(f"rank {self.rank} computes {self.rows(n)[1]} of {n} rows, got {len(x)}")
        x = x[: sizes[self.rank]]
        via = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else x.device
        padded = x.new_zeros(max(sizes), *x.shape[1:]).to(via)  # all_gather takes equal shapes
        padded[: len(x)] = x.to(via)
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
        return torch.cat([p[:k] for p, k in zip(parts, sizes)]).to(x.device)
