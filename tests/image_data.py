"""Small 8-bit image datasets written to disk as users and torchvision have them: a fake
CIFAR-10 in torchvision's pickled-batch layout and a folder of PNGs with class sub-folders."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

CIFAR_TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]


def class_images(labels: np.ndarray, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """``(N, 3, size, size)`` uint8 images whose colour and stripe direction follow the label,
    plus noise: learnable by a classifier, varied enough for a generative model."""
    n = len(labels)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.empty((n, 3, size, size), dtype=np.float64)
    for i, c in enumerate(labels):
        stripes = np.sin(2 * np.pi * (3 * (xx if c % 2 else yy) + rng.random()))
        for ch in range(3):
            out[i, ch] = 0.5 + 0.3 * stripes * (1 if (c >> ch) & 1 else -1) + 0.1 * rng.standard_normal((size, size))
    return (out.clip(0, 1) * 255).round().astype(np.uint8)


def write_fake_cifar10(root: Path, *, per_batch: int = 40, num_test: int = 40, seed: int = 0) -> Path:
    """``root/cifar-10-batches-py`` with five training batches, a test batch and
    ``batches.meta``, pickled as in the real archive: ``data`` (N, 3072) uint8 rows of
    R, G, B planes, ``labels`` a list of ints."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, n in [(b, per_batch) for b in CIFAR_TRAIN_BATCHES] + [("test_batch", num_test)]:
        labels = rng.integers(0, 10, n)
        data = class_images(labels, rng).reshape(n, 3072)
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "labels": labels.tolist(), "data": data,
                         "filenames": [f"{name}_{i}.png" for i in range(n)]}, f)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names, "num_cases_per_batch": per_batch, "num_vis": 3072}, f)
    return folder


def write_png_folder(root: Path, *, per_class: int = 30, classes: tuple[str, ...] = ("cats", "dogs"),
                     size: tuple[int, int] = (40, 48), seed: int = 0, unreadable: bool = True) -> Path:
    """``root/<class>/<i>.png`` RGB images of ``size`` (W, H; not square, so resizing and
    centre-cropping are exercised), and one file with a PNG name that is not an image."""
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        imgs = class_images(np.full(per_class, c * 5), rng, size=max(size))
        for i, img in enumerate(imgs):
            arr = img.transpose(1, 2, 0)[: size[1], : size[0]]
            Image.fromarray(np.ascontiguousarray(arr)).save(root / name / f"{i:03d}.png")
    if unreadable:
        (root / classes[0] / "broken.png").write_bytes(b"not a png at all")
    return root
