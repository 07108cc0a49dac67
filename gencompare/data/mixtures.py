"""The 2D Gaussian mixtures of the mode-collapse literature (docs/protocols.md 3a), drawn
from the run seed: every seed trains and is scored on its own draw."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from gencompare.data.bundle import DataBundle
from gencompare.data.loader import DatasetLoader

__all__ = ["GaussianMixture2D", "Ring8", "Grid25", "mixture_means", "sample_mixture", "ring_means", "grid_means"]


def ring_means(k: int = 8) -> Tensor:
    """``(k, 2)`` means at angles 2 pi i / k (i = 0..k-1; not an endpoint-inclusive
    linspace, which repeats a mode) on the unit circle."""
    angles = 2 * math.pi * torch.arange(k, dtype=torch.float64) / k
    return torch.stack([angles.cos(), angles.sin()], dim=1).float()


def grid_means() -> Tensor:
    """``(25, 2)`` means on the grid {-4, -2, 0, 2, 4}^2 (PacGAN, Lin et al. 2018)."""
    v = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0])
    gx, gy = torch.meshgrid(v, v, indexing="ij")
    return torch.stack([gx.flatten(), gy.flatten()], dim=1)


def mixture_means(name: str) -> tuple[Tensor, float]:
    """Means ``(K, 2)`` and std of the built-in 2D mixtures: ring8 (std 0.01), grid25
    (std 0.05).

    Raises:
        ValueError: unknown mixture name.
    """
    for cls in (Ring8, Grid25):
        if cls.config_name == name:
            return cls().means(), cls.std
    raise ValueError(f"unknown mixture {name!r}; choose ring8 or grid25")


def sample_mixture(means: Tensor, std: float, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` points ``(n, 2)`` from the equal-weight mixture and their mode labels ``(n,)``."""
    labels = torch.randint(len(means), (n,), generator=generator)
    points = means[labels] + std * torch.randn(n, 2, generator=generator)
    return points, labels


@dataclass
class GaussianMixture2D(DatasetLoader):
    """An equal-weight mixture of isotropic 2D Gaussians, its train, valid and test splits
    drawn in that order from a generator seeded with the run seed. Subclasses give
    :meth:`means` ``(K, 2)`` and ``std``; mode coverage counts the modes the samples hit
    (docs/protocols.md 3a)."""

    kind: str = "points"
    num_train: int = 50000
    num_valid: int = 2500
    num_test: int = 2500  # protocols evaluate 2,500 samples

    std: ClassVar[float]

    def means(self) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__}.means")

    def load(self, seed: int) -> DataBundle:
        means, std = self.means(), self.std
        g = torch.Generator().manual_seed(int(seed))
        xtr, ytr = sample_mixture(means, std, int(self.num_train), g)
        xva, yva = sample_mixture(means, std, int(self.num_valid), g)
        xte, yte = sample_mixture(means, std, int(self.num_test), g)
        return DataBundle(
            name=self.name, variant=self.name, kind="points", coverage="mixture", shape=(2,),
            train=xtr, valid=xva, test=xte, train_labels=ytr, valid_labels=yva, test_labels=yte,
            num_classes=len(means), source=f"generated from seed {seed}", means=means, std=std, seeded=True,
            table_order=self.table_order)


@dataclass
class Ring8(GaussianMixture2D):
    """8 Gaussians on the unit circle, std 0.01 (Metz et al. 2017)."""

    name: str = "ring8"
    config_name: ClassVar[str] = "ring8"
    table_order: ClassVar[int] = 40
    std: ClassVar[float] = 0.01

    def means(self) -> Tensor:
        return ring_means(8)


@dataclass
class Grid25(GaussianMixture2D):
    """25 Gaussians on {-4, -2, 0, 2, 4}^2, std 0.05 (Lin et al. 2018, PacGAN)."""

    name: str = "grid25"
    config_name: ClassVar[str] = "grid25"
    table_order: ClassVar[int] = 50
    std: ClassVar[float] = 0.05

    def means(self) -> Tensor:
        return grid_means()
