"""8-bit image datasets: CIFAR-10 and the user's own image folders.

Both are kept as their 8-bit pixel values: the training split is one ``uint8`` tensor
``(N, C, H, W)`` (a quarter of float32's memory; 138 MB for CIFAR-10's 45,000 images,
on the GPU when training there), converted to float pixels in [0, 1] (``k / 255``, as
every other dataset) batch by batch by :class:`gencompare.data.BatchStream`. Validation
and test splits are float32 (they are small and the metrics read them whole).

The loaders return the fields of a :class:`gencompare.data.DataBundle` (built by
:func:`gencompare.data.load_dataset`). ``bit_depth = 8`` tells the evaluation that likelihoods are reported as
bits/dim of the 8-bit pixels (protocols.md section 4), one convention for every family
(see :func:`gencompare.evaluate.test_likelihood`).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gencompare.errors import GencompareError

#: The archive torchvision downloads and the user can place by hand.
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
#: File endings read as images (torchvision's ``IMG_EXTENSIONS``).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class UnreadableImagesWarning(UserWarning):
    """Some files of an image folder could not be decoded and were skipped."""


def quiet(fn, *args, **kwargs):
    """Run a torchvision dataset constructor or download without its chatter on stdout."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        return fn(*args, **kwargs)


def as_pixels(x: Tensor) -> Tensor:
    """``uint8`` pixel values -> float32 in [0, 1] (``k / 255``); float tensors pass unchanged."""
    return x.to(torch.float32) / 255.0 if x.dtype == torch.uint8 else x


# --------------------------------------------------------------------------- CIFAR-10
def _cifar10_files() -> tuple[list[tuple[str, str]], list[tuple[str, str]], str, str]:
    from torchvision.datasets import CIFAR10

    return CIFAR10.train_list, CIFAR10.test_list, CIFAR10.meta["filename"], CIFAR10.base_folder


def _read_cifar_batches(folder: Path, names: list[str]) -> tuple[Tensor, Tensor]:
    """torchvision's on-disk format: pickled dicts with ``data`` (N, 3072) uint8 rows in
    R, G, B plane order and ``labels``; read as CIFAR10 does (``encoding="latin1"``)."""
    data, labels = [], []
    for name in names:
        with open(folder / name, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        data.append(np.asarray(entry["data"], dtype=np.uint8))
        labels.extend(entry["labels"])
    x = torch.from_numpy(np.concatenate(data).reshape(-1, 3, 32, 32))  # (N, 3, 32, 32) uint8, no copy
    return x, torch.tensor(labels, dtype=torch.long)


def load_cifar10(cfg) -> dict[str, Any]:
    """CIFAR-10 (Krizhevsky 2009) from ``<data_dir>/cifar-10-batches-py``, torchvision's layout.

    When the batches are absent: extract ``<data_dir>/cifar-10-python.tar.gz`` if it is
    there, else download it with torchvision (``dataset.download``). Splits:
    train[0:50000-valid_size] / train[-valid_size:] (validation, for Parzen's sigma) /
    the 10,000 test images; with the default ``valid_size`` 5,000 that is 45,000 / 5,000 /
    10,000. Files whose MD5 differs from torchvision's are used but give the variant
    ``cifar10-unverified``, so their numbers never share a row with CIFAR-10's.

    Raises:
        GencompareError: the data is absent and cannot be downloaded (one line naming
            the archive and where to put it), or ``valid_size`` leaves no training images.
    """
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import check_integrity, download_and_extract_archive, extract_archive

    train_list, test_list, meta_name, base = _cifar10_files()
    root = Path(cfg.data_dir)
    folder = root / base
    needed = [n for n, _ in train_list + test_list]

    def present() -> bool:
        return all((folder / n).is_file() for n in needed)

    archive = root / CIFAR10_ARCHIVE
    why = "dataset.download=false"
    if not present() and archive.is_file():
        quiet(extract_archive, str(archive), str(root))
    if not present() and cfg.download:
        try:
            quiet(download_and_extract_archive, CIFAR10.url, str(root), filename=CIFAR10_ARCHIVE,
                   md5=CIFAR10.tgz_md5)
        except Exception as exc:  # noqa: BLE001 - any network failure means "offline"
            why = f"the download failed ({type(exc).__name__})"
    if not present():
        raise GencompareError(
            f"CIFAR-10 not found: {folder} lacks {', '.join(needed)} and {why}; place {CIFAR10_ARCHIVE} "
            f"({CIFAR10.url}) in {root} and rerun (it is extracted there)"
        )
    xtr, ytr = _read_cifar_batches(folder, [n for n, _ in train_list])
    xte, yte = _read_cifar_batches(folder, [n for n, _ in test_list])
    n_valid = int(cfg.valid_size)
    if not 0 <= n_valid < len(xtr):
        raise GencompareError(f"dataset.valid_size={n_valid} must be in [0, {len(xtr)}) for CIFAR-10's "
                              f"{len(xtr)} training images")
    verified = all(check_integrity(str(folder / n), md5) for n, md5 in train_list + test_list)
    notes = [] if verified else [
        f"{folder} does not hold torchvision's CIFAR-10 (MD5 mismatch): variant cifar10-unverified, "
        "not comparable with published CIFAR-10 numbers"]
    meta = folder / meta_name
    classes: list[str] = []
    if meta.is_file():
        with open(meta, "rb") as f:
            classes = list(pickle.load(f, encoding="latin1").get("label_names", []))
    n_train = len(xtr) - n_valid
    return dict(
        name="cifar10", variant="cifar10" if verified else "cifar10-unverified", kind="image",
        coverage="classes", shape=(3, 32, 32),
        train=xtr[:n_train], valid=as_pixels(xtr[n_train:]), test=as_pixels(xte),
        train_labels=ytr[:n_train], valid_labels=ytr[n_train:], test_labels=yte,
        num_classes=10, source=str(folder), notes=notes, bit_depth=8, class_names=classes,
    )


# ------------------------------------------------------------------------ image folder
def _image_files(root: Path) -> tuple[list[Path], list[int], list[str]]:
    """Image files under ``root`` and their labels: one class per sub-folder (sorted
    names, as torchvision's ImageFolder), or a flat folder with no labels (-1)."""
    def images_in(folder: Path, recursive: bool) -> list[Path]:
        found = folder.rglob("*") if recursive else folder.iterdir()
        return sorted(p for p in found if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)

    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    classes = [c for c in classes if images_in(root / c, recursive=True)]
    if classes:
        files, labels = [], []
        for i, c in enumerate(classes):
            found = images_in(root / c, recursive=True)
            files += found
            labels += [i] * len(found)
        return files, labels, classes
    files = images_in(root, recursive=False)
    return files, [-1] * len(files), []


def _decode(path: Path, resolution: int, mode: str) -> Tensor:
    """One image as ``(C, r, r)`` uint8: the shorter side resized to ``r`` (antialiased
    bilinear), then the centre ``r x r`` crop.

    Raises:
        OSError (or PIL's errors): the file is not a readable image.
    """
    from PIL import Image
    from torchvision.transforms.v2 import functional as TF

    with Image.open(path) as img:
        img = img.convert(mode)
        x = TF.pil_to_tensor(img)  # (C, H, W) uint8
    x = TF.resize(x, [resolution], antialias=True)
    return TF.center_crop(x, [resolution, resolution])


def _fingerprint(files: list[Path], root: Path) -> str:
    """Six hex digits of the file names and sizes: two folders with the same name differ."""
    h = hashlib.sha1()
    for p in files:
        h.update(f"{p.relative_to(root)}:{p.stat().st_size};".encode())
    return h.hexdigest()[:6]


def load_image_folder(cfg) -> dict[str, Any]:
    """The user's images in ``dataset.path``, as 8-bit pixels of ``(channels, resolution, resolution)``.

    Labels come from class sub-folders (sorted names); a flat folder has none and mode
    coverage is not scored. Files that cannot be decoded are skipped, counted in one
    warning. The split is fixed by ``dataset.build_seed`` (not the run seed): a random
    ``test_fraction`` of the images is the test split and ``valid_fraction`` validation.

    Raises:
        GencompareError: no ``dataset.path``, not a folder, no readable image in it,
            ``channels`` not 1 or 3, or fractions that leave no training image.
    """
    import warnings

    if not cfg.get("path"):
        raise GencompareError("dataset=image_folder needs dataset.path=<folder of images>")
    root = Path(str(cfg.path)).expanduser()
    if not root.is_dir():
        raise GencompareError(f"dataset.path={root} is not a folder")
    channels, resolution = int(cfg.channels), int(cfg.resolution)
    if channels not in (1, 3):
        raise GencompareError(f"dataset.channels must be 1 or 3, got {channels}")
    if resolution < 4:
        raise GencompareError(f"dataset.resolution must be at least 4, got {resolution}")
    files, labels, classes = _image_files(root)
    if not files:
        raise GencompareError(f"{root} holds no images ({', '.join(IMAGE_EXTENSIONS)}), "
                              "neither directly nor in class sub-folders")
    mode = "RGB" if channels == 3 else "L"
    images, kept, bad = [], [], []
    for path, label in zip(files, labels):
        try:
            images.append(_decode(path, resolution, mode))
            kept.append(label)
        except Exception:  # noqa: BLE001 - PIL raises many types for a broken file
            bad.append(path)
    if not images:
        raise GencompareError(f"{root}: none of its {len(files)} image files could be read")
    notes = []
    if bad:
        message = (f"skipped {len(bad)} unreadable of {len(files)} image files in {root} "
                   f"(first: {bad[0].relative_to(root)})")
        warnings.warn(message, UnreadableImagesWarning, stacklevel=2)
        notes.append(message)
    x = torch.stack(images)  # (N, C, r, r) uint8
    y = torch.tensor(kept, dtype=torch.long)
    n = len(x)
    n_test, n_valid = int(n * float(cfg.test_fraction)), int(n * float(cfg.valid_fraction))
    if n - n_test - n_valid < 1:
        raise GencompareError(f"{root}: {n} images leave no training image after dataset.test_fraction="
                              f"{cfg.test_fraction} and dataset.valid_fraction={cfg.valid_fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(cfg.build_seed)))
    te, va, tr = perm[:n_test], perm[n_test:n_test + n_valid], perm[n_test + n_valid:]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", root.resolve().name) or "images"
    labelled = bool(classes)
    return dict(
        name="image_folder", variant=f"folder-{slug}-{resolution}px-{channels}ch-{_fingerprint(files, root)}",
        kind="image", coverage="classes" if labelled else None, shape=(channels, resolution, resolution),
        train=x[tr], valid=as_pixels(x[va]), test=as_pixels(x[te]),
        train_labels=y[tr], valid_labels=y[va], test_labels=y[te],
        num_classes=len(classes), source=f"{root} ({len(x)} images, {len(classes) or 'no'} classes)",
        notes=notes, bit_depth=8, class_names=classes,
    )
