"""The tool's own classifier for labelled colour images (CIFAR-10, image folders with class
sub-folders): labels samples for class coverage (docs/protocols.md 3b) and supplies the feature
space of precision/recall, density/coverage and the Frechet distance (3d), and the fallback
network of FID and IS when Inception's weights are absent (4).

A VGG-style CNN (Simonyan & Zisserman 2015) small enough to train on a CPU: three stages of
two 3x3 convolutions with BatchNorm and ReLU (32, 64, 128 channels), max-pooling between
them, global average pooling, a 128-unit feature layer and the class layer. Trained once
per dataset variant with the usual CIFAR recipe (random crops of the 4-pixel-padded image
and horizontal flips; AdamW, one-cycle learning rate, label smoothing), cached under
``cache_dir`` and its test accuracy reported with every number that depends on it. No
accuracy is required (docs/protocols.md sets one for digits only); on CIFAR-10 it is well below
Inception's, so numbers on its features compare runs of this tool, never papers.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gencompare.data import as_pixels
from gencompare.metrics.classifier import (
    _save_atomic,
    eval_batched,
    get_classifier,
    has_digit_classifier,
    load_cached,
)

__all__ = ["ImageClassifier", "train_image_classifier", "get_image_classifier", "classifier_for"]

#: Epochs of the default recipe. On CIFAR-10's 45,000 training images one epoch took 814 s
#: of a 2-core CPU shared with other jobs (load average ~6.5; measured), i.e. over two hours
#: for the default, once per variant (cached); seconds per epoch on a GPU.
DEFAULT_EPOCHS = 10


class ImageClassifier(nn.Module):
    """A small VGG-style CNN for ``(C, H, W)`` images in [0, 1] (H, W divisible by 8).

    Args (keyword-only):
        channels: C.
        num_classes: K.
        feature_dim: width F of the penultimate layer (:meth:`features`).
        width: channels of the first stage (then 2x and 4x).
        dropout: before the class layer (training only).
    """

    def __init__(self, *, channels: int, num_classes: int, feature_dim: int = 128, width: int = 32,
                 dropout: float = 0.3) -> None:
        super().__init__()
        self.channels, self.num_classes, self.feature_dim = int(channels), int(num_classes), int(feature_dim)

        def stage(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                    nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        w = int(width)
        self.body = nn.Sequential(
            *stage(self.channels, w), nn.MaxPool2d(2),  # (N, w, H/2, W/2)
            *stage(w, 2 * w), nn.MaxPool2d(2),  # (N, 2w, H/4, W/4)
            *stage(2 * w, 4 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten(),  # (N, 4w)
            nn.Linear(4 * w, self.feature_dim), nn.ReLU(inplace=True),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.feature_dim, self.num_classes))
        # the training images' per-channel mean and std, so callers pass raw [0, 1] pixels
        self.register_buffer("mean", torch.zeros(self.channels))
        self.register_buffer("std", torch.ones(self.channels))

    def features(self, x: Tensor) -> Tensor:
        """``(N, C, H, W)`` pixels in [0, 1] -> ``(N, F)`` penultimate-layer features."""
        return self.body((x - self.mean[:, None, None]) / self.std[:, None, None])

    def forward(self, x: Tensor) -> Tensor:
        """Class logits ``(N, K)``."""
        return self.head(self.features(x))

    def predict(self, x: Tensor, *, batch_size: int = 500) -> Tensor:
        """Predicted class ``(N,)`` int64 (CPU), in eval mode; ``x`` float [0, 1] or uint8."""
        return eval_batched(self, lambda b: self(b).argmax(dim=1), x, batch_size).long()

    def logits(self, x: Tensor, *, batch_size: int = 500) -> Tensor:
        """Class logits ``(N, K)`` float32 (CPU), in eval mode."""
        return eval_batched(self, self, x, batch_size)

    def embed(self, x: Tensor, *, batch_size: int = 500) -> Tensor:
        """:meth:`features` ``(N, F)`` float32 (CPU), in eval mode, batched, without gradients."""
        return eval_batched(self, self.features, x, batch_size)


def _crop_and_flip(x: Tensor, g: torch.Generator, pad: int = 4) -> Tensor:
    """Per image: a random ``H x W`` crop of the image zero-padded by ``pad`` and a
    horizontal flip with probability 1/2 (the standard CIFAR augmentation)."""
    n, _, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=g).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=g).to(x.device)
    flip = (torch.rand(n, generator=g) < 0.5).to(x.device)
    rows = oy[:, None] + torch.arange(h, device=x.device)  # (n, h)
    cols = ox[:, None] + torch.arange(w, device=x.device)  # (n, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    out = xp[torch.arange(n, device=x.device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2)  # (n, h, w, C) -> (n, C, h, w)


def train_image_classifier(images: Tensor, labels: Tensor, *, num_classes: int, epochs: int = DEFAULT_EPOCHS,
                           seed: int = 0, batch_size: int = 128, lr: float = 3e-3, weight_decay: float = 5e-4,
                           device: str | torch.device = "cpu") -> ImageClassifier:
    """Train an :class:`ImageClassifier` from scratch on ``images`` ``(N, C, H, W)`` (uint8
    or [0, 1] floats; converted per batch) and ``labels`` ``(N,)``.

    Deterministic given ``seed`` on the CPU; the callers' RNG streams are untouched.

    Raises:
        ValueError: malformed shapes or labels.
    """
    if images.ndim != 4 or labels.shape != (len(images),):
        raise ValueError(f"need images (N, C, H, W) and labels (N,), got {tuple(images.shape)} and {tuple(labels.shape)}")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{int(labels.min())}, {int(labels.max())}]")
    device = torch.device(device)
    batch_size = max(1, min(batch_size, len(images)))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        model = ImageClassifier(channels=images.shape[1], num_classes=num_classes).to(device)
        x, y = images.to(device), labels.to(device, torch.long)
        with torch.no_grad():  # per-channel statistics of the training pixels
            sample = as_pixels(x[torch.randperm(len(x), generator=g)[:5000].to(device)])
            model.mean.copy_(sample.mean(dim=(0, 2, 3)))
            model.std.copy_(sample.std(dim=(0, 2, 3)).clamp_min(1e-3))
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        steps_per_epoch = len(x) // batch_size
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, epochs * steps_per_epoch))
        model.train()
        for _ in range(epochs):
            perm = torch.randperm(len(x), generator=g).to(device)
            for i in range(steps_per_epoch):
                idx = perm[i * batch_size:(i + 1) * batch_size]
                loss = F.cross_entropy(model(_crop_and_flip(as_pixels(x[idx]), g)), y[idx], label_smoothing=0.1)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    return model.eval()


def get_image_classifier(bundle, cache_dir: str | os.PathLike, *, device: str | torch.device = "cpu",
                         epochs: int | None = None, seed: int = 0) -> tuple[ImageClassifier, dict]:
    """The classifier for ``bundle``'s labelled images: loaded from
    ``cache_dir/classifier-<variant>.pt`` or trained once on its training split (and cached,
    atomically). A cache trained with other epochs / seed / shape is retrained.

    Returns:
        ``(classifier, info)`` with the keys of :func:`gencompare.metrics.classifier.get_classifier`'s
        info: ``feature_network`` ("gencompare-cnn-<variant>"), ``test_accuracy`` on the
        bundle's test split, ``required_accuracy`` and ``meets_protocol`` None (no protocol
        sets one), ``num_train``, ``epochs``, ``train_seconds``, ``cached``, ...
    Raises:
        ValueError: the bundle has no classes, or is binarized.
    """
    if bundle.num_classes < 2 or bundle.coverage != "classes":
        raise ValueError(f"{bundle.variant} has no classes to train a classifier on")
    if getattr(bundle, "binarization", "none") != "none":
        raise ValueError(f"the classifier needs the [0, 1] pixels, but {bundle.variant} is binarized ({bundle.binarization})")
    epochs = DEFAULT_EPOCHS if epochs is None else int(epochs)
    key = bundle.variant
    path = Path(cache_dir) / f"classifier-{key}.pt"
    shape = [int(s) for s in bundle.shape]
    model, meta = load_cached(
        path, lambda m: (m["epochs"], m["seed"], m["key"], m.get("shape")) == (epochs, seed, key, shape),
        lambda m: ImageClassifier(channels=shape[0], num_classes=m["num_classes"], feature_dim=m["feature_dim"]))
    cached = model is not None
    if model is None:
        start = time.perf_counter()
        model = train_image_classifier(bundle.train, bundle.train_labels, num_classes=bundle.num_classes,
                                       epochs=epochs, seed=seed, device=device)
        meta = {"key": key, "epochs": epochs, "seed": seed, "shape": shape, "num_train": len(bundle.train),
                "num_classes": model.num_classes, "feature_dim": model.feature_dim,
                "train_seconds": time.perf_counter() - start, "trained_from": bundle.variant}
        _save_atomic({"state_dict": {k: v.cpu() for k, v in model.state_dict().items()}, "meta": meta}, path)
    model = model.to(device).eval()
    y_test = bundle.test_labels.cpu()
    accuracy = (model.predict(bundle.test) == y_test).double().mean().item() if len(y_test) else float("nan")
    info = {
        "variant": key, "bundle_variant": bundle.variant, "feature_network": f"gencompare-cnn-{key}",
        "feature_dim": model.feature_dim, "test_accuracy": accuracy, "num_test": len(y_test),
        "required_accuracy": None, "meets_protocol": None, "num_train": meta["num_train"],
        "epochs": meta["epochs"], "seed": meta["seed"], "train_seconds": meta["train_seconds"],
        "cached": cached, "cache_path": str(path),
    }
    return model, info


def classifier_for(bundle, cache_dir: str | os.PathLike, *, device: str | torch.device = "cpu",
                   epochs: int | None = None):
    """The tool's classifier for ``bundle``: the digit classifier for the MNIST-like variants
    it knows (:func:`gencompare.metrics.classifier.get_classifier`), this module's for any
    other labelled images. Returns ``(classifier, info)``."""
    if has_digit_classifier(bundle):
        return get_classifier(bundle, cache_dir, device=device, epochs=epochs)
    return get_image_classifier(bundle, cache_dir, device=device, epochs=epochs)
