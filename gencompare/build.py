"""From a composed config to the objects a run needs: the device, the data and the model.

Shared by ``train`` (:mod:`gencompare.runner`) and ``eval`` (:mod:`gencompare.evaluate`).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from gencompare.data import DataBundle, apply_binarization, load_dataset
from gencompare.errors import GencompareError
from gencompare.models.base import GenerativeModel
from gencompare.terminal import console


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU.

    Raises:
        GencompareError: a device that is asked for by name is not available.
    """
    mps = getattr(torch.backends, "mps", None)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise GencompareError("device=cuda but no CUDA GPU is available here; use device=auto or device=cpu")
    if name == "mps" and not (mps and mps.is_available()):
        raise GencompareError("device=mps but Apple's MPS backend is not available here; use device=auto or device=cpu")
    return torch.device(name)


def prepare_data(cfg: DictConfig) -> DataBundle:
    """Load ``cfg.dataset`` (on the CPU), print a fallback warning as one yellow line, and
    apply the family's binarization (``cfg.model.binarize``).

    Raises:
        GencompareError: the data is missing and cannot be downloaded or substituted.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bundle = load_dataset(cfg.dataset, seed=int(cfg.seed))
    for w in caught:
        if issubclass(w.category, UserWarning) and "offline sample" in str(w.message):
            console.print(f"[bold yellow]warning:[/] {w.message}")
    # a fixed seed (not the run's) for static binarization: every run sees the same binary data
    return apply_binarization(bundle, cfg.model.get("binarize", "none"), seed=0)


def build_model(cfg: DictConfig, bundle: DataBundle) -> GenerativeModel:
    """Instantiate ``cfg.model.module`` for the data's shape.

    Raises:
        GencompareError: the family cannot model this dataset (its constructor's
            ValueError or TypeError, reported in one line), or the target is not a
            :class:`GenerativeModel`.
    """
    binary = bundle.kind == "image" and cfg.model.get("binarize", "none") != "none"
    try:
        model = instantiate(cfg.model.module, data_shape=list(bundle.shape), binary=binary, _convert_="all")
    except Exception as exc:  # noqa: BLE001 - Hydra wraps constructor errors
        root = exc
        while root.__cause__ is not None:
            root = root.__cause__
        if isinstance(root, (ValueError, TypeError)):
            raise GencompareError(f"model={cfg.model.name} on dataset={bundle.variant}: {root}") from None
        raise
    if not isinstance(model, GenerativeModel):
        raise GencompareError(f"model.module._target_ built a {type(model).__name__}, not a GenerativeModel")
    return model


def total_steps(cfg: DictConfig, bundle: DataBundle) -> int:
    """``trainer.max_steps``, or ``trainer.epochs`` full passes over the training split."""
    t = cfg.trainer
    if t.epochs is not None:
        return int(t.epochs) * max(1, len(bundle.train) // int(t.batch_size))
    return int(t.max_steps)


def run_dir_of(cfg: DictConfig) -> Path:
    """The run dir (``paths.output_dir``, Hydra's job dir).

    Raises:
        GencompareError: outside a Hydra run with no explicit ``paths.output_dir``.
    """
    try:
        return Path(cfg.paths.output_dir)
    except Exception as exc:  # noqa: BLE001 - ${hydra:...} outside a Hydra run
        raise GencompareError("paths.output_dir is not set (outside a Hydra run, set it explicitly)") from exc
