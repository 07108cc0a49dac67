"""The splits of one dataset as tensors (:class:`DataBundle`) and their binarization.

Every image dataset is float32 pixels in [0, 1] (uint8 / 255, not binarized), shape
``(N, C, H, W)``; 8-bit data (CIFAR-10, image folders) keeps its training split as uint8,
converted per batch. The 2D mixtures are raw points, shape ``(N, 2)``. Whole splits are
kept as one tensor each, moved to the training device by the runner, so a GPU step never
waits on a loader.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from gencompare.data.stream import BatchStream, DynamicBinarization, RandomHFlip, Transform

__all__ = ["DataBundle", "BINARIZATIONS", "binarize", "apply_binarization", "DEFAULT_TABLE_ORDER"]

#: Where a dataset whose loader sets no order sits in compare's tables: after the built-in
#: ones (0-99), ties broken by variant name.
DEFAULT_TABLE_ORDER = 100


@dataclass
class DataBundle:
    """The splits of one dataset, as tensors on one device.

    Attributes:
        name: dataset config name ("mnist", "ring8", "cifar10", ...).
        variant: what was actually loaded; differs from ``name`` when a fallback was used
            ("mnist-5k", "stacked_mnist-5k"). Runs of different variants are never compared.
        kind: "image" or "points".
        coverage: how mode coverage is scored (docs/protocols.md 3): "mixture" (modes of a 2D
            Gaussian mixture, ``means``/``std``), "classes" (a classifier's classes),
            "stacked" (Stacked MNIST's 1,000 digit triples) or None (not scored).
        classifier: which of the tool's digit classifiers labels the samples for mode
            coverage (its cache key: "mnist", "mnist-5k", "fashion_mnist"; Stacked MNIST
            is labelled channel by channel with the classifier of its MNIST); None: labelled
            images get a classifier trained on their own classes
            (:mod:`gencompare.metrics.image_classifier`), other data none.
        table_order: where the variant's table sits in ``compare`` (ascending; ties by
            variant name; :data:`DEFAULT_TABLE_ORDER` after the built-in datasets).
        shape: shape of one example, ``(C, H, W)`` or ``(2,)``.
        train, valid, test: float32 tensors ``(N, *shape)``; ``valid`` may be empty. 8-bit
            data keeps ``train`` as uint8 (see ``bit_depth``); an image folder larger than
            its memory budget keeps it in its files, a :class:`gencompare.data.folders.FolderImages`
            (indexed like the uint8 tensor, decoded on reading). Read batches of it with
            :meth:`batches`, which works for either.
        train_labels, valid_labels, test_labels: int64 ``(N,)`` class (image) or mode
            index (mixtures); for Stacked MNIST ``100 r + 10 g + b``.
        means: ``(K, 2)`` mixture means (mixtures only) and ``std`` their common std.
        num_classes: number of classes or modes (10, 1000, 8, 25).
        source: where the data came from (folder or generator), for the run's record.
        binarization: how train/valid/test were binarized ("none", "static", "threshold";
            "dynamic" leaves train continuous and binarizes each batch).
        bit_depth: 8 where the likelihood families report bits/dim of the 8-bit pixels
            (CIFAR-10, image folders; docs/protocols.md section 4); None keeps each family's
            own convention (MNIST-like data, points).
        class_names: names of the classes, where the data has them (CIFAR-10, folders).
        seeded: True where the data itself is drawn from the run seed (the 2D mixtures), so
            that runs of other seeds train and are scored on other draws (a seed batch loads
            each member's own).
        random_flip: training images are mirrored left-right per draw (``dataset.random_flip``).
    """

    name: str
    variant: str
    kind: str
    shape: tuple[int, ...]
    train: Tensor
    valid: Tensor
    test: Tensor
    train_labels: Tensor
    valid_labels: Tensor
    test_labels: Tensor
    num_classes: int
    source: str
    means: Tensor | None = None
    std: float | None = None
    coverage: str | None = None
    classifier: str | None = None
    table_order: int = DEFAULT_TABLE_ORDER
    binarization: str = "none"
    notes: list[str] = field(default_factory=list)
    #: the [0, 1] pixels of splits that were binarized (metrics always score continuous data)
    continuous: dict[str, Tensor] = field(default_factory=dict)
    bit_depth: int | None = None
    class_names: list[str] = field(default_factory=list)
    seeded: bool = False
    random_flip: bool = False

    def continuous_view(self) -> "DataBundle":
        """A shallow copy whose train/valid/test are the continuous pixels (Parzen, classifier)."""
        return replace(self, binarization="none", continuous={},
                       **{k: self.continuous.get(k, getattr(self, k)) for k in ("train", "valid", "test")})

    @property
    def streamed(self) -> bool:
        """True when the training split is read from its files as training goes (an image
        folder over its memory budget), False when it is one tensor."""
        return not isinstance(self.train, Tensor)

    @property
    def transforms(self) -> tuple[Transform, ...]:
        """What training applies to each drawn batch, in this order: the left-right flip
        (``random_flip``, images only), then a fresh binarization (``binarization ==
        "dynamic"``). Pass them to :meth:`batches` (or :class:`BatchStream`)."""
        flip = (RandomHFlip(),) if self.random_flip and self.kind == "image" else ()
        return flip + ((DynamicBinarization(),) if self.binarization == "dynamic" else ())

    def batches(self, batch_size: int, seed: int, batches_drawn: int = 0, *,
                transforms: tuple[Transform, ...] = ()) -> BatchStream:
        """The training minibatches, float32 ``(batch_size, *shape)`` ([0, 1] pixels for
        images), in the seeded, resumable order of :class:`BatchStream`, whichever way the
        split is held (resident tensor, or streamed from files), each passed through
        ``transforms`` (none by default; training passes :attr:`transforms`).

        Raises:
            GencompareError: ``batch_size`` exceeds the training split.
        """
        return BatchStream(self.train, batch_size, seed, batches_drawn, transforms=transforms)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "valid": len(self.valid), "test": len(self.test)}

    def to(self, device: torch.device | str) -> "DataBundle":
        for name in ("train", "valid", "test", "train_labels", "valid_labels", "test_labels"):
            setattr(self, name, getattr(self, name).to(device))
        self.continuous = {k: v.to(device) for k, v in self.continuous.items()}
        if self.means is not None:
            self.means = self.means.to(device)
        return self

    def describe(self) -> dict[str, Any]:
        """What a run records about its data (metrics.json's ``data`` block, W&B summary)."""
        return {
            "name": self.name,
            "variant": self.variant,
            "kind": self.kind,
            "coverage": self.coverage,
            "classifier": self.classifier,
            "table_order": self.table_order,
            "shape": list(self.shape),
            "sizes": self.sizes(),
            "source": self.source,
            "binarization": self.binarization,
            "notes": list(self.notes),
            **({"bit_depth": self.bit_depth, "train_storage": str(self.train.dtype).replace("torch.", ""),
                "train_loading": "streamed" if self.streamed else "resident"}
               if self.bit_depth else {}),
        }


# ----------------------------------------------------------------- binarization
BINARIZATIONS = ("none", "dynamic", "static", "threshold")


def binarize(x: Tensor, mode: str, generator: torch.Generator | None = None) -> Tensor:
    """Binarize pixel intensities ``x`` in [0, 1] (any shape) to {0, 1} floats.

    - "dynamic" / "static": each pixel ~ Bernoulli(intensity) (static = one fixed such
      sample, made once with a fixed generator); "threshold": ``x > 0.5``; "none": ``x``.

    Raises:
        ValueError: unknown mode.
    """
    if mode == "none":
        return x
    if mode in ("dynamic", "static"):
        if generator is not None and generator.device != x.device:
            return torch.bernoulli(x.cpu(), generator=generator).to(x.device)
        return torch.bernoulli(x, generator=generator)
    if mode == "threshold":
        return (x > 0.5).to(x.dtype)
    raise ValueError(f"unknown binarization {mode!r}; choose one of {', '.join(BINARIZATIONS)}")


def apply_binarization(bundle: DataBundle, mode: str, seed: int = 0) -> DataBundle:
    """Binarize a bundle for a family that models binary images.

    static / threshold: train, valid and test are fixed once (static with a generator
    seeded by ``seed``, the same for every run). dynamic: train stays continuous (each
    drawn batch is binarized afresh: :attr:`DataBundle.transforms`) and valid/test get one
    fixed sample so likelihoods are computed on fixed binary images. Points are never
    binarized.

    Raises:
        ValueError: unknown mode.
        GencompareError: static or threshold on a training split streamed from its files.
    """
    from gencompare.errors import GencompareError

    if mode not in BINARIZATIONS:
        raise ValueError(f"unknown binarization {mode!r}; choose one of {', '.join(BINARIZATIONS)}")
    if bundle.kind != "image" or mode == "none":
        return bundle
    if bundle.streamed and mode != "dynamic":
        raise GencompareError(
            f"binarization {mode} fixes every training image once, but {bundle.variant}'s training split is "
            "streamed from its files; use binarization dynamic or none, or dataset.stream=false")
    g = torch.Generator().manual_seed(int(seed))
    # 8-bit storage is binarized as [0, 1] pixels; a streamed split's batches arrive as such
    if not bundle.streamed and bundle.train.dtype == torch.uint8:
        bundle.train = bundle.train.to(torch.float32) / 255.0
    bundle.continuous = {"valid": bundle.valid, "test": bundle.test}
    if mode != "dynamic":
        bundle.continuous["train"] = bundle.train
        bundle.train = binarize(bundle.train, mode, g)
    bundle.valid = binarize(bundle.valid, "threshold" if mode == "threshold" else "static", g)
    bundle.test = binarize(bundle.test, "threshold" if mode == "threshold" else "static", g)
    bundle.binarization = mode
    return bundle
