"""Moved to :mod:`gencompare.data` (CIFAR-10: :mod:`gencompare.data.images`, image folders:
:mod:`gencompare.data.folders`); these names stay importable from here for the modules
that still read them (the metrics' ``as_pixels``)."""
from gencompare.data.folders import FolderImages, UnreadableImagesWarning
from gencompare.data.images import CIFAR10_ARCHIVE, as_pixels, quiet

__all__ = ["as_pixels", "quiet", "FolderImages", "UnreadableImagesWarning", "CIFAR10_ARCHIVE"]
