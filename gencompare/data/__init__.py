"""Datasets: loaders that dataset configs name, the :class:`DataBundle` they return, and the
:class:`BatchStream` training draws from.

- :mod:`.bundle`: :class:`DataBundle` (the splits as tensors, and what code may infer
  about the data: coverage kind, classifier, table order) and binarization;
- :mod:`.stream`: :class:`BatchStream` / :class:`StreamedBatches` and the draw-time
  transforms (:class:`RandomHFlip`, :class:`DynamicBinarization`);
- :mod:`.loader`: :class:`DatasetLoader`, the base and schema of every loader, and
  :func:`load_dataset`;
- :mod:`.mnist` (MNIST, Fashion-MNIST, Stacked MNIST), :mod:`.mixtures` (ring8, grid25),
  :mod:`.images` (CIFAR-10), :mod:`.folders` (image folders): the built-in loaders.

Each ``conf/dataset/<name>.yaml`` names its loader (``_target_``) and its schema
(``/schema/dataset/<name>``, :func:`register_schemas`).
"""
from __future__ import annotations

from gencompare.data.bundle import BINARIZATIONS, DEFAULT_TABLE_ORDER, DataBundle, apply_binarization, binarize
from gencompare.data.folders import FolderImages, ImageFolder, UnreadableImagesWarning
from gencompare.data.images import CIFAR10, CIFAR10_ARCHIVE, as_pixels
from gencompare.data.loader import DatasetLoader, build_loader, load_dataset, target_of
from gencompare.data.mixtures import GaussianMixture2D, Grid25, Ring8, mixture_means, sample_mixture
from gencompare.data.mnist import (
    MNIST,
    MNIST_FILES,
    FashionMNIST,
    OfflineSampleWarning,
    StackedMNIST,
    load_mnist_offline_sample,
    stack_digits,
)
from gencompare.data.stream import (
    BatchStream,
    DynamicBinarization,
    EpochBatchSampler,
    RandomHFlip,
    StackedStreams,
    StreamedBatches,
    epoch_order,
    random_hflip,
)

#: The loaders of conf/dataset/*.yaml; each is its config's schema (``schema/dataset/<config_name>``).
BUILTIN_LOADERS = (MNIST, FashionMNIST, StackedMNIST, Ring8, Grid25, CIFAR10, ImageFolder)


def register_schemas() -> None:
    """Store each built-in loader as ``schema/dataset/<config_name>`` in Hydra's ConfigStore
    (idempotent), the schema a dataset YAML's defaults list names."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    for cls in BUILTIN_LOADERS:
        cs.store(group="schema/dataset", name=cls.config_name, node=cls)


__all__ = [
    "DataBundle", "BINARIZATIONS", "DEFAULT_TABLE_ORDER", "binarize", "apply_binarization",
    "BatchStream", "StreamedBatches", "EpochBatchSampler", "epoch_order", "RandomHFlip", "DynamicBinarization",
    "StackedStreams",    "random_hflip", "DatasetLoader", "build_loader", "load_dataset", "target_of", "MNIST", "FashionMNIST",
    "StackedMNIST", "MNIST_FILES", "OfflineSampleWarning", "load_mnist_offline_sample", "stack_digits",
    "GaussianMixture2D", "Ring8", "Grid25", "mixture_means", "sample_mixture", "CIFAR10", "CIFAR10_ARCHIVE",
    "as_pixels", "ImageFolder", "FolderImages", "UnreadableImagesWarning", "BUILTIN_LOADERS",
    "register_schemas",
]
