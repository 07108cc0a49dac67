"""8-bit image datasets: CIFAR-10 and the user's own image folders.

Both are kept as their 8-bit pixel values: the training split is one ``uint8`` tensor
``(N, C, H, W)`` (a quarter of float32's memory; 138 MB for CIFAR-10's 45,000 images,
on the GPU when training there), converted to float pixels in [0, 1] (``k / 255``, as
every other dataset) batch by batch by :class:`gencompare.data.BatchStream`. Validation
and test splits are float32 (they are small and the metrics read them whole). An image
folder over its memory budget (:func:`choose_streaming`) leaves its training split in the
files instead, a :class:`FolderImages` read batch by batch through a DataLoader
(:class:`gencompare.data.StreamedBatches`): the same pixels, split and batch order.

The loaders return the fields of a :class:`gencompare.data.DataBundle` (built by
:func:`gencompare.data.load_dataset`). ``bit_depth = 8`` tells the evaluation that likelihoods are reported as
bits/dim of the 8-bit pixels (docs/protocols.md section 4), one convention for every family
(see :func:`gencompare.evaluate.test_likelihood`).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gencompare.errors import GencompareError
from gencompare.untrusted import extract_tar, load_data_pickle

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
    from torchvision.datasets.utils import check_integrity, download_url

    train_list, test_list, meta_name, base = _cifar10_files()
    root = Path(cfg.data_dir)
    folder = root / base
    needed = [n for n, _ in train_list + test_list]

    def present() -> bool:
        return all((folder / n).is_file() for n in needed)

    archive = root / CIFAR10_ARCHIVE
    why = "dataset.download=false"
    if not present() and archive.is_file():
        extract_tar(archive, root)  # members checked: nothing lands outside root
    if not present() and cfg.download:
        try:
            quiet(download_url, CIFAR10.url, str(root), filename=CIFAR10_ARCHIVE, md5=CIFAR10.tgz_md5)
        except Exception as exc:  # noqa: BLE001 - any network failure means "offline"
            why = f"the download failed ({type(exc).__name__})"
        else:
            extract_tar(archive, root)
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
        classes = list(load_data_pickle(meta, encoding="latin1").get("label_names", []))
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


#: Share of the available memory (RAM; on CUDA also the GPU's free memory) that all of a
#: folder's images as uint8 (N x D bytes) may take under ``dataset.stream: auto`` and stay
#: resident: loading holds up to 2.6 N D of RAM (every image decoded, the split copies,
#: float32 validation and test), training 1.45 N D where the data lives, and the model,
#: its activations and the evaluation need the rest.
RESIDENT_SHARE = 0.25


class _Decoded(torch.utils.data.Dataset):
    """The DataLoader's view of image files: item ``i`` is ``(image, code)``, the image
    ``(C, r, r)`` uint8 as :func:`_decode` makes it and ``code = i``, or, for a file that
    cannot be decoded, zeros and ``code = -1 - i`` (the main process names the file:
    an exception raised in a worker would arrive as a multi-line traceback)."""

    def __init__(self, files: list[Path], resolution: int, mode: str) -> None:
        self.files, self.resolution, self.mode = list(files), int(resolution), mode

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        try:
            return _decode(self.files[i], self.resolution, self.mode), i
        except Exception:  # noqa: BLE001 - PIL raises many types for a broken file
            channels = 3 if self.mode == "RGB" else 1
            return torch.zeros(channels, self.resolution, self.resolution, dtype=torch.uint8), -1 - i


def _decode_files(files: list[Path], resolution: int, mode: str, num_workers: int, *,
                  keep: bool = True) -> tuple[Tensor | None, list[int]]:
    """Decode ``files`` in order through a DataLoader with ``num_workers`` processes.

    Returns:
        ``(images, bad)``: ``(N_ok, C, r, r)`` uint8 of the readable files in order (None
        when ``keep`` is false: a scan that only finds the unreadable ones, in bounded
        memory) and the indices of the files that could not be decoded.
    """
    from torch.utils.data import DataLoader

    # its own generator: seeding the workers must not draw from the run's global RNG
    loader = DataLoader(_Decoded(files, resolution, mode), batch_size=64, num_workers=num_workers,
                        generator=torch.Generator().manual_seed(0))
    kept, bad = [], []
    for images, codes in loader:
        ok = codes >= 0
        bad += [-1 - int(c) for c in codes[~ok]]
        if keep:
            kept.append(images[ok])
    if not keep:
        return None, bad
    channels = 3 if mode == "RGB" else 1
    return (torch.cat(kept) if kept else torch.empty(0, channels, resolution, resolution, dtype=torch.uint8)), bad


class FolderImages:
    """A training split left in its files: behaves as the ``(N, C, r, r)`` uint8 tensor the
    resident path would hold, but decodes (:func:`_decode`: resize, centre crop) the images
    an index asks for, each time it is asked.

    ``x[i]`` ``(C, r, r)``, ``x[a:b]``, ``x[index_tensor]`` ``(k, C, r, r)`` uint8 on
    ``x.device``; ``len``, ``shape``, ``ndim``, ``dtype`` as the tensor's; ``x.to(device)``
    sets where indexed images are delivered (the data stays on disk). Training reads it
    through :class:`gencompare.data.StreamedBatches` (a DataLoader with workers); the
    metrics that read the training split (classifier, FID's real images, Parzen's
    training-image baseline) index it in bounded pieces.

    Raises:
        GencompareError (on indexing): a file that was readable when the run started no
            longer is.
        TypeError: ``to(dtype)``, i.e. a conversion of the whole split, which streaming
            exists to avoid.
    """

    dtype = torch.uint8
    ndim = 4

    def __init__(self, files: list[Path], resolution: int, channels: int, *, num_workers: int = 0,
                 device: torch.device | str = "cpu") -> None:
        self.files = list(files)
        self.resolution, self.channels = int(resolution), int(channels)
        self.num_workers = int(num_workers)
        self.device = torch.device(device)
        self.dataset = _Decoded(self.files, self.resolution, "RGB" if self.channels == 3 else "L")

    def __len__(self) -> int:
        return len(self.files)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.files), self.channels, self.resolution, self.resolution))

    def __repr__(self) -> str:
        return f"FolderImages({len(self)} files, {self.channels}x{self.resolution}x{self.resolution} uint8, {self.device})"

    def to(self, device, *args, **kwargs) -> "FolderImages":
        if isinstance(device, torch.dtype) or args or kwargs:
            raise TypeError("FolderImages streams its images from files; index it (x[i:j]) before converting")
        return FolderImages(self.files, self.resolution, self.channels, num_workers=self.num_workers,
                            device=device)

    def __getitem__(self, index) -> Tensor:
        if isinstance(index, slice):
            return self._read(list(range(len(self)))[index])
        idx = torch.as_tensor(index).cpu()
        if idx.dtype == torch.bool:
            idx = idx.nonzero().flatten()
        if idx.ndim == 0:
            return self._read([int(idx)])[0]
        return self._read(idx.flatten().tolist())

    def _read(self, idx: list[int]) -> Tensor:
        images = []
        for i in idx:
            if not -len(self) <= i < len(self):
                raise IndexError(f"index {i} is out of range for {len(self)} images")
            i %= len(self)
            image, code = self.dataset[i]
            if code < 0:
                raise unreadable_during_run(self.files[i])
            images.append(image)
        if not images:
            return torch.empty(0, *self.shape[1:], dtype=torch.uint8, device=self.device)
        return torch.stack(images).to(self.device)


def unreadable_during_run(path: Path) -> GencompareError:
    """The one-line error for an image file that was readable when the run started."""
    return GencompareError(f"{path} can no longer be read (it could when the run started); restore it and "
                           "resume, or start a new run, which skips it (with another split)")


def _available_ram() -> int:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``; elsewhere free pages)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 0


def resident_budget(cfg) -> tuple[int, str]:
    """The bytes a resident uint8 image split may take, and where that figure comes from:
    ``dataset.max_resident_mb`` when set, else :data:`RESIDENT_SHARE` of the available RAM
    and, when ``dataset.device`` resolves to CUDA, of the GPU's free memory too (the smaller)."""
    if cfg.get("max_resident_mb") is not None:
        return int(float(cfg.max_resident_mb) * 2**20), "dataset.max_resident_mb"
    budget, where = int(RESIDENT_SHARE * _available_ram()), f"{RESIDENT_SHARE:.0%} of the available RAM"
    device = str(cfg.get("device") or "cpu")
    if device in ("auto", "cuda") or device.startswith("cuda:"):
        if torch.cuda.is_available():
            free, _ = torch.cuda.mem_get_info(torch.device(device) if device.startswith("cuda:") else None)
            if RESIDENT_SHARE * free < budget:
                budget, where = int(RESIDENT_SHARE * free), f"{RESIDENT_SHARE:.0%} of the GPU's free memory"
    return budget, where


def choose_streaming(cfg, n_images: int, channels: int, resolution: int) -> tuple[bool, str]:
    """Whether the training split streams from its files (``dataset.stream``: ``auto``,
    ``true``, ``false``), and the one line that says which path and why.

    ``auto`` streams when all ``n_images`` as uint8 (``n * C * r * r`` bytes, counted
    before decoding) exceed :func:`resident_budget`.

    Raises:
        GencompareError: ``dataset.stream`` is not auto, true or false, or
            ``dataset.max_resident_mb`` / ``dataset.num_workers`` is negative.
    """
    mode = str(cfg.get("stream", "auto")).lower()
    if mode not in ("auto", "true", "false"):
        raise GencompareError(f"dataset.stream must be auto, true or false, got {cfg.get('stream')}")
    if cfg.get("max_resident_mb") is not None and float(cfg.max_resident_mb) < 0:
        raise GencompareError(f"dataset.max_resident_mb must be >= 0 (or null: automatic), got {cfg.max_resident_mb}")
    if int(cfg.get("num_workers", 0)) < 0:
        raise GencompareError(f"dataset.num_workers must be >= 0, got {cfg.num_workers}")
    def mb(n_bytes: int) -> str:  # two significant digits below 1 MB: a small budget is not "0.0 MB"
        return f"{n_bytes / 2**20:,.1f}" if n_bytes >= 2**20 else f"{n_bytes / 2**20:.2g}"

    size = n_images * channels * resolution * resolution
    what = f"{n_images:,} images x {channels}x{resolution}x{resolution} uint8 = {mb(size)} MB"
    if mode == "auto":
        budget, where = resident_budget(cfg)
        stream = size > budget
        why = f"{'>' if stream else '<='} {mb(budget)} MB ({where})"
    else:
        stream, why = mode == "true", f"(dataset.stream={mode})"
    return stream, what + " " + why


def load_image_folder(cfg) -> dict[str, Any]:
    """The user's images in ``dataset.path``, as 8-bit pixels of ``(channels, resolution, resolution)``.

    Labels come from class sub-folders (sorted names); a flat folder has none and mode
    coverage is not scored. Files that cannot be decoded are skipped, counted in one
    warning. The split is fixed by ``dataset.build_seed`` (not the run seed): a random
    ``test_fraction`` of the images is the test split and ``valid_fraction`` validation.

    The training split is either resident, one ``(N, C, r, r)`` uint8 tensor, or, when
    :func:`choose_streaming` says so, a :class:`FolderImages` that decodes its files as
    they are read. Both paths decode every file once here (the streaming path to find
    the unreadable ones, keeping nothing), so they skip the same files, draw the same
    split and give the same pixels. Validation and test splits are float32 in [0, 1]
    either way. One line says which path was taken.

    Raises:
        GencompareError: no ``dataset.path``, not a folder, no readable image in it,
            ``channels`` not 1 or 3, fractions that leave no training image, or a bad
            ``dataset.stream`` / ``max_resident_mb`` / ``num_workers``.
    """
    import warnings

    from gencompare.terminal import console

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
    stream, why = choose_streaming(cfg, len(files), channels, resolution)
    workers = int(cfg.get("num_workers", 0))
    mode = "RGB" if channels == 3 else "L"
    if stream:  # one decoding pass over every file, keeping nothing: which ones are unreadable
        _, bad_idx = _decode_files(files, resolution, mode, workers, keep=False)
        bad_set = set(bad_idx)
        bad = [files[i] for i in bad_idx]
        kept_files = [p for i, p in enumerate(files) if i not in bad_set]
        kept = [lab for i, lab in enumerate(labels) if i not in bad_set]
        n = len(kept_files)
    else:
        images, kept, bad = [], [], []
        for path, label in zip(files, labels):
            try:
                images.append(_decode(path, resolution, mode))
                kept.append(label)
            except Exception:  # noqa: BLE001 - PIL raises many types for a broken file
                bad.append(path)
        n = len(images)
    if not n:
        raise GencompareError(f"{root}: none of its {len(files)} image files could be read")
    notes = []
    if bad:
        message = (f"skipped {len(bad)} unreadable of {len(files)} image files in {root} "
                   f"(first: {bad[0].relative_to(root)})")
        warnings.warn(message, UnreadableImagesWarning, stacklevel=2)
        notes.append(message)
    y = torch.tensor(kept, dtype=torch.long)
    n_test, n_valid = int(n * float(cfg.test_fraction)), int(n * float(cfg.valid_fraction))
    if n - n_test - n_valid < 1:
        raise GencompareError(f"{root}: {n} images leave no training image after dataset.test_fraction="
                              f"{cfg.test_fraction} and dataset.valid_fraction={cfg.valid_fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(cfg.build_seed)))
    te, va, tr = perm[:n_test], perm[n_test:n_test + n_valid], perm[n_test + n_valid:]
    if stream:
        def split(idx: Tensor) -> list[Path]:
            return [kept_files[i] for i in idx.tolist()]

        train = FolderImages(split(tr), resolution, channels, num_workers=workers)
        # the evaluation splits stay resident (the metrics read them whole), decoded as the training ones
        valid, valid_bad = _decode_files(split(va), resolution, mode, workers)
        test, test_bad = _decode_files(split(te), resolution, mode, workers)
        if valid_bad or test_bad:
            raise unreadable_during_run(split(va if valid_bad else te)[(valid_bad or test_bad)[0]])
        console.print(f"image folder: {why}: streaming the training split from its files (DataLoader, "
                      f"{workers} worker{'' if workers == 1 else 's'}, pinned memory on CUDA); validation and "
                      f"test ({len(va) + len(te):,} images) resident as float32", highlight=False)
    else:
        x = torch.stack(images)  # (N, C, r, r) uint8
        del images  # the decoded list would double what loading holds
        train, valid, test = x[tr], x[va], x[te]
        console.print(f"image folder: {why}: the training split resident, one uint8 tensor on the device",
                      highlight=False)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", root.resolve().name) or "images"
    labelled = bool(classes)
    return dict(
        name="image_folder", variant=f"folder-{slug}-{resolution}px-{channels}ch-{_fingerprint(files, root)}",
        kind="image", coverage="classes" if labelled else None, shape=(channels, resolution, resolution),
        train=train, valid=as_pixels(valid), test=as_pixels(test),
        train_labels=y[tr], valid_labels=y[va], test_labels=y[te],
        num_classes=len(classes), source=f"{root} ({n} images, {len(classes) or 'no'} classes)",
        notes=notes, bit_depth=8, class_names=classes,
    )
