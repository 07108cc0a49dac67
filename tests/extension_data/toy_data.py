"""A dataset that lives outside gencompare: three Gaussians on a line, with its loader.

The recipe for a new dataset (tests/test_extension_dataset.py proves it): a
:class:`gencompare.data.DatasetLoader` dataclass whose fields are the config's keys and
whose ``load(seed)`` returns a :class:`gencompare.data.DataBundle`, importable on
``PYTHONPATH``, and one YAML naming it (``_target_``) in a folder on Hydra's search path
(``hydra.searchpath=[file://<folder>]``, holding ``dataset/<name>.yaml``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from gencompare.data import DataBundle, DatasetLoader, sample_mixture


@dataclass
class ThreeGaussians(DatasetLoader):
    """Equal-weight Gaussians at (-2, 0), (0, 0), (2, 0) with std ``std``, every split drawn
    from the run seed; mode coverage counts the three modes."""

    kind: str = "points"
    num_train: int = 3000
    num_valid: int = 300
    num_test: int = 300
    std: float = 0.05

    #: before every built-in dataset in compare's tables
    table_order: ClassVar[int] = 5

    def load(self, seed: int) -> DataBundle:
        means = torch.tensor([[-2.0, 0.0], [0.0, 0.0], [2.0, 0.0]])
        g = torch.Generator().manual_seed(seed)
        (xtr, ytr), (xva, yva), (xte, yte) = (sample_mixture(means, self.std, n, g)
                                              for n in (self.num_train, self.num_valid, self.num_test))
        return DataBundle(
            name=self.name, variant=f"{self.name}-std{self.std:g}", kind="points", coverage="mixture", shape=(2,),
            train=xtr, valid=xva, test=xte, train_labels=ytr, valid_labels=yva, test_labels=yte,
            num_classes=3, source=f"three Gaussians on a line, seed {seed}", means=means, std=self.std,
            seeded=True, table_order=self.table_order)
