"""CIFAR-10 (Krizhevsky 2009), kept as its 8-bit pixel values, and what every 8-bit
dataset shares (:func:`as_pixels`, :func:`quiet`).

The training split is one ``uint8`` tensor ``(N, 3, 32, 32)`` (a quarter of float32's
memory; 138 MB for CIFAR-10's 45,000 images, on the GPU when training there), converted to
float pixels in [0, 1] (``k / 255``, as every other dataset) batch by batch by
:class:`gencompare.data.BatchStream`. Validation and test splits are float32.
``bit_depth = 8`` tells the evaluation that likelihoods are reported as bits/dim of the
8-bit pixels (docs/protocols.md section 4), one convention for every family (see
:func:`gencompare.evaluate.test_likelihood`). Its files came from elsewhere: batches are
read by a restricted unpickler and archives extracted only when every member stays in its
folder (:mod:`gencompare.untrusted`).
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from gencompare.data.bundle import DataBundle
from gencompare.data.loader import DatasetLoader
from gencompare.errors import GencompareError
from gencompare.untrusted import extract_tar, load_data_pickle

__all__ = ["CIFAR10", "CIFAR10_ARCHIVE", "as_pixels", "quiet"]

#: The archive torchvision downloads and the user can place by hand.
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"


def quiet(fn, *args, **kwargs):
    """Run a torchvision dataset constructor or download without its chatter on stdout."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        return fn(*args, **kwargs)


def as_pixels(x: Tensor) -> Tensor:
    """``uint8`` pixel values -> float32 in [0, 1] (``k / 255``); float tensors pass unchanged."""
    return x.to(torch.float32) / 255.0 if x.dtype == torch.uint8 else x


def _cifar10_files() -> tuple[list[tuple[str, str]], list[tuple[str, str]], str, str]:
    from torchvision.datasets import CIFAR10

    return CIFAR10.train_list, CIFAR10.test_list, CIFAR10.meta["filename"], CIFAR10.base_folder


def _read_cifar_batches(folder: Path, names: list[str]) -> tuple[Tensor, Tensor]:
    """torchvision's on-disk format: pickled dicts with ``data`` (N, 3072) uint8 rows in
    R, G, B plane order and ``labels``; decoded as CIFAR10 does (``encoding="latin1"``) but
    with :func:`gencompare.untrusted.load_data_pickle`, which refuses any pickle that names
    code instead of data."""
    data, labels = [], []
    for name in names:
        entry = load_data_pickle(folder / name, encoding="latin1")  # a file that came from elsewhere: data only
        data.append(np.asarray(entry["data"], dtype=np.uint8))
        labels.extend(entry["labels"])
    x = torch.from_numpy(np.concatenate(data).reshape(-1, 3, 32, 32))  # (N, 3, 32, 32) uint8, no copy
    return x, torch.tensor(labels, dtype=torch.long)



def _fetch(root: Path, folder: Path, needed: list[str], download: bool) -> None:
    """Make ``folder`` hold the ``needed`` batch files: extract ``root``'s archive if it is
    there, else download it with torchvision (``download``).

    Raises:
        GencompareError: still absent (one line naming the archive and where to put it).
    """
    from torchvision.datasets import CIFAR10 as TorchCIFAR10
    from torchvision.datasets.utils import download_url

    def present() -> bool:
        return all((folder / n).is_file() for n in needed)

    archive = root / CIFAR10_ARCHIVE
    why = "dataset.download=false"
    if not present() and archive.is_file():
        extract_tar(archive, root)  # members checked: nothing lands outside root
    if not present() and download:
        try:
            quiet(download_url, TorchCIFAR10.url, str(root), filename=CIFAR10_ARCHIVE, md5=TorchCIFAR10.tgz_md5)
        except Exception as exc:  # noqa: BLE001 - any network failure means "offline"
            why = f"the download failed ({type(exc).__name__})"
        else:
            extract_tar(archive, root)
    if not present():
        raise GencompareError(
            f"CIFAR-10 not found: {folder} lacks {', '.join(needed)} and {why}; place {CIFAR10_ARCHIVE} "
            f"({TorchCIFAR10.url}) in {root} and rerun (it is extracted there)"
        )


@dataclass
class CIFAR10(DatasetLoader):
    """CIFAR-10 from ``<data_dir>/cifar-10-batches-py``, torchvision's layout.

    When the batches are absent: extract ``<data_dir>/cifar-10-python.tar.gz`` if it is
    there, else download it with torchvision (``download``). Splits:
    train[0:50000-valid_size] / train[-valid_size:] (validation, for Parzen's sigma) /
    the 10,000 test images; with the default ``valid_size`` 5,000 that is 45,000 / 5,000 /
    10,000. Files whose MD5 differs from torchvision's are used but give the variant
    ``cifar10-unverified``, so their numbers never share a row with CIFAR-10's. Mode
    coverage: a classifier trained on its classes.

    Raises (on load):
        GencompareError: the data is absent and cannot be downloaded (one line naming
            the archive and where to put it), or ``valid_size`` leaves no training images.
    """

    data_dir: str = "data"
    valid_size: int = 5000

    config_name: ClassVar[str] = "cifar10"

    def load(self, seed: int) -> DataBundle:
        from torchvision.datasets.utils import check_integrity

        train_list, test_list, meta_name, base = _cifar10_files()
        root = Path(self.data_dir)
        folder = root / base
        _fetch(root, folder, [n for n, _ in train_list + test_list], self.download)
        xtr, ytr = _read_cifar_batches(folder, [n for n, _ in train_list])
        xte, yte = _read_cifar_batches(folder, [n for n, _ in test_list])
        n_valid = int(self.valid_size)
        if not 0 <= n_valid < len(xtr):
            raise GencompareError(f"dataset.valid_size={n_valid} must be in [0, {len(xtr)}) for CIFAR-10's "
                                  f"{len(xtr)} training images")
        verified = all(check_integrity(str(folder / n), md5) for n, md5 in train_list + test_list)
        notes = [] if verified else [
            f"{folder} does not hold torchvision's CIFAR-10 (MD5 mismatch): variant cifar10-unverified, "
            "not comparable with published CIFAR-10 numbers"]
        meta = folder / meta_name
        classes = list(load_data_pickle(meta, encoding="latin1").get("label_names", [])) if meta.is_file() else []
        n_train = len(xtr) - n_valid
        return DataBundle(
            name=self.name, variant="cifar10" if verified else "cifar10-unverified", kind="image",
            coverage="classes", shape=(3, 32, 32),
            train=xtr[:n_train], valid=as_pixels(xtr[n_train:]), test=as_pixels(xte),
            train_labels=ytr[:n_train], valid_labels=ytr[n_train:], test_labels=yte,
            num_classes=10, source=str(folder), notes=notes, bit_depth=8, class_names=classes,
            table_order=self.table_order)
