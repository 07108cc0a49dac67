"""The user's own images (``dataset=image_folder dataset.path=<folder>``), as 8-bit pixels.

The training split is one ``uint8`` tensor ``(N, C, r, r)`` when it fits its memory budget
(:func:`choose_streaming`), else it stays in the files, a :class:`FolderImages` read batch
by batch through a DataLoader (:class:`gencompare.data.stream.StreamedBatches`): the same
pixels, split and batch order. Validation and test splits are float32 in [0, 1] (they are
small and the metrics read them whole). ``bit_depth = 8``: likelihoods are reported as
bits/dim of the 8-bit pixels (docs/protocols.md section 4).
"""
from __future__ import annotations

import hashlib
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional

import torch
from torch import Tensor

from gencompare.data.bundle import DataBundle
from gencompare.data.images import as_pixels
from gencompare.data.loader import DatasetLoader
from gencompare.data.stream import unreadable_during_run
from gencompare.errors import GencompareError

__all__ = ["ImageFolder", "FolderImages", "UnreadableImagesWarning", "IMAGE_EXTENSIONS", "RESIDENT_SHARE",
           "choose_streaming", "resident_budget", "unreadable_during_run"]

#: File endings read as images (torchvision's ``IMG_EXTENSIONS``).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class UnreadableImagesWarning(UserWarning):
    """Some files of an image folder could not be decoded and were skipped."""


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
        img = _eight_bit(img).convert(mode)
        x = TF.pil_to_tensor(img)  # (C, H, W) uint8
    x = TF.resize(x, [resolution], antialias=True)
    return TF.center_crop(x, [resolution, resolution])


def _eight_bit(img):
    """A PIL image whose pixels ``convert("L")``/``("RGB")`` can read as 8 bits: 16-bit
    greyscale (modes ``I;16*``, and ``I`` holding 0..65535: 16-bit PNG, PGM, TIFF) scaled
    to 8 bits, ``round(v * 255 / 65535)`` (PIL's own conversion clips every value above 255
    to white). Colour 16-bit PNGs PIL already reads as 8-bit ``RGB``.

    Raises:
        ValueError: a float image (mode ``F``), or 32-bit integers outside 0..65535: no
            range says what 8-bit value they are, so the file is skipped as unreadable.
    """
    import numpy as np
    from PIL import Image

    if img.mode == "F":
        raise ValueError("floating-point pixels (PIL mode F) have no 8-bit scale")
    if img.mode != "I" and not img.mode.startswith("I;16"):
        return img
    a = np.asarray(img)
    if a.size and (int(a.min()) < 0 or int(a.max()) > 65535):
        raise ValueError(f"integer pixels {int(a.min())}..{int(a.max())} exceed 16 bits; no 8-bit scale")
    return Image.fromarray(((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8))  # (H, W) uint8: L


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


def resident_budget(spec: "ImageFolder") -> tuple[int, str]:
    """The bytes a resident uint8 image split may take, and where that figure comes from:
    ``dataset.max_resident_mb`` when set, else :data:`RESIDENT_SHARE` of the available RAM
    and, when ``dataset.device`` resolves to CUDA, of the GPU's free memory too (the smaller)."""
    if spec.max_resident_mb is not None:
        return int(float(spec.max_resident_mb) * 2**20), "dataset.max_resident_mb"
    budget, where = int(RESIDENT_SHARE * _available_ram()), f"{RESIDENT_SHARE:.0%} of the available RAM"
    device = str(spec.device or "cpu")
    if device in ("auto", "cuda") or device.startswith("cuda:"):
        if torch.cuda.is_available():
            free, _ = torch.cuda.mem_get_info(torch.device(device) if device.startswith("cuda:") else None)
            if RESIDENT_SHARE * free < budget:
                budget, where = int(RESIDENT_SHARE * free), f"{RESIDENT_SHARE:.0%} of the GPU's free memory"
    return budget, where


def choose_streaming(spec: "ImageFolder", n_images: int, channels: int, resolution: int) -> tuple[bool, str]:
    """Whether the training split streams from its files (``dataset.stream``: ``auto``,
    ``true``, ``false``), and the one line that says which path and why.

    ``auto`` streams when all ``n_images`` as uint8 (``n * C * r * r`` bytes, counted
    before decoding) exceed :func:`resident_budget`.

    Raises:
        GencompareError: ``dataset.stream`` is not auto, true or false, or
            ``dataset.max_resident_mb`` / ``dataset.num_workers`` is negative.
    """
    mode = str(spec.stream).lower()
    if mode not in ("auto", "true", "false"):
        raise GencompareError(f"dataset.stream must be auto, true or false, got {spec.stream}")
    if spec.max_resident_mb is not None and float(spec.max_resident_mb) < 0:
        raise GencompareError(f"dataset.max_resident_mb must be >= 0 (or null: automatic), got {spec.max_resident_mb}")
    if int(spec.num_workers) < 0:
        raise GencompareError(f"dataset.num_workers must be >= 0, got {spec.num_workers}")
    def mb(n_bytes: int) -> str:  # two significant digits below 1 MB: a small budget is not "0.0 MB"
        return f"{n_bytes / 2**20:,.1f}" if n_bytes >= 2**20 else f"{n_bytes / 2**20:.2g}"

    size = n_images * channels * resolution * resolution
    what = f"{n_images:,} images x {channels}x{resolution}x{resolution} uint8 = {mb(size)} MB"
    if mode == "auto":
        budget, where = resident_budget(spec)
        stream = size > budget
        why = f"{'>' if stream else '<='} {mb(budget)} MB ({where})"
    else:
        stream, why = mode == "true", f"(dataset.stream={mode})"
    return stream, what + " " + why



@dataclass
class ImageFolder(DatasetLoader):
    """The images in ``path``, as 8-bit pixels of ``(channels, resolution, resolution)``.

    Labels come from class sub-folders (sorted names); a flat folder has none and mode
    coverage is not scored. Files that cannot be decoded are skipped, counted in one
    warning. The split is fixed by ``build_seed`` (not the run seed): a random
    ``test_fraction`` of the images is the test split and ``valid_fraction`` validation.
    Both the resident and the streamed path decode every file once at load (the streaming
    path to find the unreadable ones, keeping nothing), so they skip the same files, draw
    the same split and give the same pixels. One line says which path was taken.

    Raises (on load):
        GencompareError: no ``path``, not a folder, no readable image in it, ``channels``
            not 1 or 3, fractions that leave no training image, or a bad ``stream`` /
            ``max_resident_mb`` / ``num_workers``.
    """

    path: Optional[str] = None            # required: the folder
    resolution: int = 32                  # the 32x32 networks of every family (arch: auto)
    channels: int = 3                     # 3 (RGB) or 1 (grey)
    build_seed: int = 0
    test_fraction: float = 0.1
    valid_fraction: float = 0.05          # Parzen's sigma is chosen on it
    stream: Any = "auto"                  # auto | true | false
    max_resident_mb: Optional[float] = None  # null: a quarter of the available RAM (and GPU memory on CUDA)
    num_workers: int = 2                  # DataLoader processes that decode a streamed split
    device: Optional[str] = None          # ${device.name}: where a resident split would live

    config_name: ClassVar[str] = "image_folder"

    def load(self, seed: int) -> DataBundle:
        root = self._root()
        channels, resolution = int(self.channels), int(self.resolution)
        files, labels, classes = _image_files(root)
        if not files:
            raise GencompareError(f"{root} holds no images ({', '.join(IMAGE_EXTENSIONS)}), "
                                  "neither directly nor in class sub-folders")
        stream, why = choose_streaming(self, len(files), channels, resolution)
        read = self._scan if stream else self._decode_all
        kept_files, images, kept, bad = read(files, labels)
        n = len(kept)
        if not n:
            raise GencompareError(f"{root}: none of its {len(files)} image files could be read")
        notes = []
        if bad:
            message = (f"skipped {len(bad)} unreadable of {len(files)} image files in {root} "
                       f"(first: {bad[0].relative_to(root)})")
            warnings.warn(message, UnreadableImagesWarning, stacklevel=2)
            notes.append(message)
        y = torch.tensor(kept, dtype=torch.long)
        n_test, n_valid = int(n * float(self.test_fraction)), int(n * float(self.valid_fraction))
        if n - n_test - n_valid < 1:
            raise GencompareError(f"{root}: {n} images leave no training image after dataset.test_fraction="
                                  f"{self.test_fraction} and dataset.valid_fraction={self.valid_fraction}")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(self.build_seed)))
        te, va, tr = perm[:n_test], perm[n_test:n_test + n_valid], perm[n_test + n_valid:]
        train, valid, test = (self._streamed_splits(kept_files, tr, va, te) if stream
                              else self._resident_splits(images, tr, va, te))
        self._say(why, stream, len(va) + len(te))
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", root.resolve().name) or "images"
        return DataBundle(
            name=self.name, variant=f"folder-{slug}-{resolution}px-{channels}ch-{_fingerprint(files, root)}",
            kind="image", coverage="classes" if classes else None, shape=(channels, resolution, resolution),
            train=train, valid=as_pixels(valid), test=as_pixels(test),
            train_labels=y[tr], valid_labels=y[va], test_labels=y[te], num_classes=len(classes),
            source=f"{root} ({n} images, {len(classes) or 'no'} classes)", notes=notes, bit_depth=8,
            class_names=classes, table_order=self.table_order)

    def _root(self) -> Path:
        if not self.path:
            raise GencompareError("dataset=image_folder needs dataset.path=<folder of images>")
        root = Path(str(self.path)).expanduser()
        if not root.is_dir():
            raise GencompareError(f"dataset.path={root} is not a folder")
        if int(self.channels) not in (1, 3):
            raise GencompareError(f"dataset.channels must be 1 or 3, got {self.channels}")
        if int(self.resolution) < 4:
            raise GencompareError(f"dataset.resolution must be at least 4, got {self.resolution}")
        return root

    @property
    def _mode(self) -> str:
        return "RGB" if int(self.channels) == 3 else "L"

    def _scan(self, files: list[Path], labels: list[int]):
        """Streaming: one decoding pass over every file, keeping nothing, to find the
        unreadable ones. Returns ``(kept files, None, kept labels, unreadable files)``."""
        _, bad_idx = _decode_files(files, int(self.resolution), self._mode, int(self.num_workers), keep=False)
        bad_set = set(bad_idx)
        kept_files = [p for i, p in enumerate(files) if i not in bad_set]
        kept = [lab for i, lab in enumerate(labels) if i not in bad_set]
        return kept_files, None, kept, [files[i] for i in bad_idx]

    def _decode_all(self, files: list[Path], labels: list[int]):
        """Resident: every readable file decoded. Returns ``(None, images, kept labels,
        unreadable files)``, images a list of ``(C, r, r)`` uint8."""
        images, kept, bad = [], [], []
        for path, label in zip(files, labels):
            try:
                images.append(_decode(path, int(self.resolution), self._mode))
                kept.append(label)
            except Exception:  # noqa: BLE001 - PIL raises many types for a broken file
                bad.append(path)
        return None, images, kept, bad

    def _streamed_splits(self, kept_files: list[Path], tr: Tensor, va: Tensor, te: Tensor):
        def split(idx: Tensor) -> list[Path]:
            return [kept_files[i] for i in idx.tolist()]

        workers = int(self.num_workers)
        train = FolderImages(split(tr), int(self.resolution), int(self.channels), num_workers=workers)
        # the evaluation splits stay resident (the metrics read them whole), decoded as the training ones
        valid, valid_bad = _decode_files(split(va), int(self.resolution), self._mode, workers)
        test, test_bad = _decode_files(split(te), int(self.resolution), self._mode, workers)
        if valid_bad or test_bad:
            raise unreadable_during_run(split(va if valid_bad else te)[(valid_bad or test_bad)[0]])
        return train, valid, test

    @staticmethod
    def _resident_splits(images: list[Tensor], tr: Tensor, va: Tensor, te: Tensor):
        x = torch.stack(images)  # (N, C, r, r) uint8
        images.clear()  # the decoded list would double what loading holds
        return x[tr], x[va], x[te]

    def _say(self, why: str, stream: bool, n_eval: int) -> None:
        from gencompare.terminal import console

        if stream:
            workers = int(self.num_workers)
            console.print(f"image folder: {why}: streaming the training split from its files (DataLoader, "
                          f"{workers} worker{'' if workers == 1 else 's'}, pinned memory on CUDA); validation and "
                          f"test ({n_eval:,} images) resident as float32", highlight=False)
        else:
            console.print(f"image folder: {why}: the training split resident, one uint8 tensor on the device",
                          highlight=False)
