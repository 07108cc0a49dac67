"""What a dataset config names: a loader, built by Hydra from ``conf/dataset/<name>.yaml``.

A loader is a dataclass whose fields are its config's keys (it doubles as the config's
schema, stored in Hydra's ConfigStore as ``schema/dataset/<name>`` so that a misspelt
``dataset.*`` key fails while Hydra composes) and whose :meth:`DatasetLoader.load`
returns the :class:`~gencompare.data.DataBundle`. A new dataset is one such class and one
YAML that names it (``_target_``) and its schema; nothing in gencompare lists datasets
(docs: tests/test_extension_dataset.py is the recipe).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

from hydra.utils import instantiate
from omegaconf import MISSING, DictConfig, OmegaConf

from gencompare.data.bundle import DEFAULT_TABLE_ORDER, DataBundle
from gencompare.errors import GencompareError

__all__ = ["DatasetLoader", "load_dataset", "build_loader", "target_of"]


@dataclass
class DatasetLoader:
    """The keys every dataset config has, and the loader's interface.

    Attributes:
        name: the config's name (``dataset=<name>``), recorded as the run's dataset.
        kind: "image" or "points": what the metrics and ``dataset.random_flip`` may expect
            before the data is loaded.
        data_dir: where downloaded or cached files live (``${paths.data_dir}``); None for
            generated data.
        download: fetch missing files from the network (``dataset.download=false`` keeps a
            run offline); data that is never downloaded ignores it.
        binarize: overrides the family's ``model.binarize`` where set (8-bit data: none).
        random_flip: images: each training image mirrored left-right with probability 1/2
            per draw (:class:`gencompare.data.stream.RandomHFlip`).
    """

    #: the class itself, named by the YAML (Hydra's instantiate consumes it)
    _target_: str = MISSING
    name: str = MISSING
    kind: str = "image"
    data_dir: Optional[str] = None
    download: bool = True
    binarize: Optional[str] = None
    random_flip: bool = False

    #: where this dataset's table sits in ``compare`` (:attr:`DataBundle.table_order`)
    table_order: ClassVar[int] = DEFAULT_TABLE_ORDER
    #: the built-in config a run dir's config without ``_target_`` means by its ``name``
    config_name: ClassVar[Optional[str]] = None

    def load(self, seed: int) -> DataBundle:
        """The dataset's splits on the CPU; ``seed`` is the run seed (used only by data
        drawn from it, :attr:`DataBundle.seeded`).

        Raises:
            GencompareError: the data is missing and cannot be downloaded or substituted.
        """
        raise NotImplementedError(f"{type(self).__name__}.load")


def target_of(cls: type) -> str:
    """The ``_target_`` that names ``cls`` in a YAML."""
    return f"{cls.__module__}.{cls.__qualname__}"


def _subclasses(cls: type) -> list[type]:
    return [c for sub in cls.__subclasses__() for c in (sub, *_subclasses(sub))]


def _legacy_loader(cfg: DictConfig) -> DatasetLoader:
    """A config without ``_target_`` (a run dir written before datasets named their
    loader): the built-in loader whose ``config_name`` is ``cfg.name``, given the keys it has."""
    name = cfg.get("name")
    cls = next((c for c in _subclasses(DatasetLoader) if c.config_name == name), None)
    if cls is None:
        raise GencompareError(f"unknown dataset {name!r}: its config names no loader (_target_)")
    known = {f.name for f in dataclasses.fields(cls)} - {"_target_"}
    given = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    return cls(**{k: v for k, v in given.items() if k in known})


def build_loader(cfg: DictConfig | dict[str, Any]) -> DatasetLoader:
    """The loader a ``dataset`` config names (``_target_``), built with the config's keys.

    Raises:
        GencompareError: the target cannot be imported, or does not take the config's keys
            (one line naming the dataset and the cause).
    """
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(cfg)
    if "_target_" not in cfg:
        return _legacy_loader(cfg)
    try:
        return instantiate(cfg, _convert_="all")
    except Exception as exc:  # noqa: BLE001 - Hydra wraps import and constructor errors
        root = exc
        while root.__cause__ is not None:
            root = root.__cause__
        raise GencompareError(f"dataset={cfg.get('name')}: cannot build {cfg._target_}: "
                              f"{str(root).splitlines()[0] if str(root) else type(root).__name__}") from None


def load_dataset(cfg: DictConfig | dict[str, Any], *, seed: int = 0) -> DataBundle:
    """Load the dataset a ``dataset`` config describes (on the CPU): its loader's
    (:func:`build_loader`) ``load(seed)``, with ``random_flip`` recorded on the bundle.

    Args:
        cfg: the ``dataset`` config node (see conf/dataset/*.yaml).
        seed: the run seed; data drawn from it (the 2D mixtures) differs per seed.
    Raises:
        GencompareError: the data is missing and cannot be downloaded or substituted, or
            the config names no usable loader.
    """
    loader = build_loader(cfg)
    if getattr(loader, "data_dir", None):
        os.makedirs(loader.data_dir, exist_ok=True)
    bundle = loader.load(seed=int(seed))
    if not isinstance(bundle, DataBundle):
        raise GencompareError(f"dataset={getattr(loader, 'name', '?')}: {type(loader).__name__}.load returned a "
                              f"{type(bundle).__name__}, not a DataBundle")
    bundle.random_flip = bool(getattr(loader, "random_flip", False))
    return bundle
