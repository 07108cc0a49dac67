"""The training minibatches: :class:`BatchStream`, a seeded, resumable order drawn without
replacement, and the transforms applied to each batch as it is drawn (the left-right flip,
dynamic binarization). :class:`StreamedBatches` is the same stream for a training split
left in its files (an image folder over its memory budget), read through a DataLoader.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from gencompare.errors import GencompareError

__all__ = ["BatchStream", "StreamedBatches", "EpochBatchSampler", "epoch_order", "Transform", "RandomHFlip",
           "DynamicBinarization", "StackedStreams", "random_hflip", "unreadable_during_run"]

#: A batch transform: ``(B, *shape)`` -> same shape, drawing from the global RNG of the
#: batch's device (never from the stream's own order generator).
Transform = Callable[[Tensor], Tensor]


def random_hflip(x: Tensor) -> Tensor:
    """Each image of ``x`` ``(..., C, H, W)`` mirrored left-right with probability 1/2, on
    its own coin from the global (training) RNG: ``dataset.random_flip``, the CIFAR-10
    augmentation of Ho et al. 2020 (official code: scripts/run_cifar.py, ``randflip=1``,
    ``tf.image.random_flip_left_right`` on the training batch)."""
    flip = torch.rand(x.shape[:-3], device=x.device) < 0.5
    return torch.where(flip[..., None, None, None], x.flip(-1), x)


class RandomHFlip:
    """:func:`random_hflip` as a batch transform: one ``torch.rand`` of ``x.shape[:-3]``
    per batch from the global RNG."""

    def __call__(self, x: Tensor) -> Tensor:
        return random_hflip(x)

    def __repr__(self) -> str:
        return "RandomHFlip()"


class DynamicBinarization:
    """Each pixel of a [0, 1] batch (any shape) replaced by a Bernoulli(intensity) draw
    from the global RNG, afresh per batch: dynamic binarization (Salakhutdinov & Murray
    2008; the binarized MNIST of the NADE and VAE papers). Returns {0, 1} floats."""

    def __call__(self, x: Tensor) -> Tensor:
        return torch.bernoulli(x)

    def __repr__(self) -> str:
        return "DynamicBinarization()"


def unreadable_during_run(path) -> GencompareError:
    """The one-line error for an image file that was readable when the run started."""
    return GencompareError(f"{path} can no longer be read (it could when the run started); restore it and "
                           "resume, or start a new run, which skips it (with another split)")


def epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    """The order ``(n,)`` of epoch ``epoch`` in :class:`BatchStream`: a pure function of
    ``(seed, epoch)``."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


class BatchStream:
    """Minibatches drawn without replacement, epoch by epoch, from a tensor on any device.

    The order of epoch ``e`` is ``randperm`` from a generator seeded with ``(seed, e)``, so
    the stream is a pure function of ``(seed, batches_drawn)``: a checkpoint stores that
    count alone and a resumed run sees exactly the batches an uninterrupted one would.
    The last incomplete batch of an epoch is dropped (equal-size batches). A ``uint8``
    tensor (8-bit pixel values) stays so on its device; each batch is converted to float
    pixels in [0, 1] (``k / 255``) as it is drawn, then passed through ``transforms`` in
    order (none by default; a training run passes :attr:`gencompare.data.DataBundle.transforms`).

    ``BatchStream(images, ...)`` for a :class:`gencompare.data.folders.FolderImages` (a
    split left in its files) is a :class:`StreamedBatches`: the same batches, in the same
    order, read through a DataLoader, so the runner never asks which it has.

    Raises:
        GencompareError: ``batch_size`` exceeds the training examples.
    """

    def __new__(cls, data, *args, **kwargs):
        if cls is BatchStream and not isinstance(data, Tensor):
            cls = StreamedBatches
        return super().__new__(cls)

    def __init__(self, data: Tensor, batch_size: int, seed: int, batches_drawn: int = 0, *,
                 transforms: Sequence[Transform] = ()) -> None:
        if batch_size > len(data):
            raise GencompareError(
                f"trainer.batch_size={batch_size} exceeds the {len(data)} training examples"
            )
        self.data = data
        self.batch_size = batch_size
        self.seed = seed
        self.per_epoch = len(data) // batch_size
        self.batches_drawn = batches_drawn
        self.transforms = tuple(transforms)
        self._epoch = -1
        self._perm: Tensor | None = None

    @property
    def epoch(self) -> int:
        return self.batches_drawn // self.per_epoch

    def _draw(self) -> Tensor:
        """The next batch as [0, 1] pixels (or points), before the transforms."""
        epoch, pos = divmod(self.batches_drawn, self.per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(len(self.data), generator=g).to(self.data.device)
            self._epoch = epoch
        idx = self._perm[pos * self.batch_size : (pos + 1) * self.batch_size]
        self.batches_drawn += 1
        batch = self.data[idx]
        return batch.to(torch.float32) / 255.0 if batch.dtype == torch.uint8 else batch

    def __next__(self) -> Tensor:
        batch = self._draw()
        for transform in self.transforms:
            batch = transform(batch)
        return batch

    def __iter__(self):
        return self


class StackedStreams:
    """The batches of S streams drawn together, ``(S, B, *data_shape)`` with stream i's at
    ``[i]``, then passed through ``transforms`` as one batch: a transform draws its random
    numbers for the whole stack at once (one ``torch.rand`` of ``(S, B)`` for the flip), as a
    stack of seeds trained under ``torch.func.vmap`` draws every other random number. The
    streams advance together, so batches drawn, epoch and epoch length are stream 0's.

    Args:
        streams: the S member streams, each without transforms of its own.
        transforms: applied to each stacked batch in order
            (:attr:`gencompare.data.DataBundle.transforms`).
    """

    def __init__(self, streams: Sequence[BatchStream], transforms: Sequence[Transform] = ()) -> None:
        self.streams, self.transforms = list(streams), tuple(transforms)

    @property
    def batches_drawn(self) -> int:
        return self.streams[0].batches_drawn

    @property
    def per_epoch(self) -> int:
        return self.streams[0].per_epoch

    @property
    def epoch(self) -> int:
        return self.streams[0].epoch

    def __next__(self) -> Tensor:
        batch = torch.stack([next(s) for s in self.streams])  # (S, B, *data_shape)
        for transform in self.transforms:
            batch = transform(batch)
        return batch

    def __iter__(self):
        return self


class EpochBatchSampler(torch.utils.data.Sampler):
    """Lists of indices in :class:`BatchStream`'s order (:func:`epoch_order`, last partial
    batch of an epoch dropped), without end, starting at batch ``start``: a resumed run
    starts at its saved batch count and sees what an uninterrupted run sees from there."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int = 0) -> None:
        self.n, self.batch_size, self.seed, self.start = n, batch_size, seed, start
        self.per_epoch = n // batch_size

    def __iter__(self):
        epoch, pos = divmod(self.start, self.per_epoch)
        while True:
            order = epoch_order(self.n, self.seed, epoch)
            for p in range(pos, self.per_epoch):
                yield order[p * self.batch_size:(p + 1) * self.batch_size].tolist()
            epoch, pos = epoch + 1, 0


class StreamedBatches(BatchStream):
    """:class:`BatchStream` for a training split left in its files (a
    :class:`gencompare.data.folders.FolderImages`): the same batches in the same order
    (:class:`EpochBatchSampler`), decoded by a DataLoader's ``num_workers`` processes
    (``dataset.num_workers``; persistent, prefetching), pinned when the data goes to CUDA
    and converted to [0, 1] float32 on the device, then passed through ``transforms``.
    Workers start at the first batch drawn; :meth:`close` stops them (so does dropping
    the stream).

    Raises (on drawing):
        GencompareError: an image file that was readable at start-up no longer is.
    """

    def __init__(self, data, batch_size: int, seed: int, batches_drawn: int = 0, *,
                 transforms: Sequence[Transform] = ()) -> None:
        super().__init__(data, batch_size, seed, batches_drawn, transforms=transforms)
        self.loader = self._loader()
        self._batches = None

    def _loader(self):
        from torch.utils.data import DataLoader

        workers = self.data.num_workers
        return DataLoader(
            self.data.dataset, batch_sampler=EpochBatchSampler(len(self.data), self.batch_size, self.seed,
                                                               self.batches_drawn),
            num_workers=workers, pin_memory=self.data.device.type == "cuda", persistent_workers=workers > 0,
            prefetch_factor=4 if workers else None,
            # its own generator: a DataLoader seeds its workers from the global RNG otherwise,
            # and the model's draws (noise, dropout) would differ from a resident run's
            generator=torch.Generator().manual_seed(0))

    def _draw(self) -> Tensor:
        if self._batches is None:
            self._batches = iter(self.loader)
        images, codes = next(self._batches)  # (B, C, r, r) uint8, (B,) file index or -1 - index
        if bool((codes < 0).any()):
            raise unreadable_during_run(self.data.files[-1 - int(codes[codes < 0][0])])
        self.batches_drawn += 1
        return images.to(self.data.device, non_blocking=True).to(torch.float32) / 255.0

    def close(self) -> None:
        """Stop the DataLoader's workers; a later draw starts new ones at the same place (a
        persistent DataLoader would restart its sampler, hence a new one)."""
        self._batches = None
        self.loader = self._loader()
