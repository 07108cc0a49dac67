"""From a composed config to the objects a run needs: the device, the data and the model.

Shared by ``train`` (:mod:`gencompare.train`) and ``eval`` (:mod:`gencompare.evaluate`).
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

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


def binarization_of(cfg: DictConfig) -> str:
    """The binarization a run applies: ``dataset.binarize`` where the dataset sets one
    (CIFAR-10 and image folders: ``none``, so every likelihood is of the 8-bit pixels),
    else the family's ``model.binarize``."""
    chosen = cfg.dataset.get("binarize")
    return str(chosen) if chosen is not None else cfg.model.get("binarize", "none")


def prepare_data(cfg: DictConfig) -> DataBundle:
    """Load ``cfg.dataset`` (on the CPU), print a fallback or skipped-files warning as one
    yellow line, and apply the binarization (:func:`binarization_of`).

    Raises:
        GencompareError: the data is missing and cannot be downloaded or substituted.
    """
    from gencompare.images import UnreadableImagesWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bundle = load_dataset(cfg.dataset, seed=int(cfg.seed))
    for w in caught:
        if (issubclass(w.category, UserWarning) and "offline sample" in str(w.message)) or \
                issubclass(w.category, UnreadableImagesWarning):
            console.print(f"[bold yellow]warning:[/] {w.message}")
    # a fixed seed (not the run's) for static binarization: every run sees the same binary data
    return apply_binarization(bundle, binarization_of(cfg), seed=0)


#: What a config that came from a run dir (``gencompare eval``) may instantiate: the
#: families' constructors, and torch's optimizers and learning-rate schedulers by class name.
FAMILY_TARGETS = frozenset({
    "gencompare.models.gan.GAN", "gencompare.models.vae.VAE", "gencompare.models.ddpm.DDPM",
    "gencompare.models.nade.build", "gencompare.models.nade.NADE", "gencompare.models.nade.RNADE",
})


def is_safe_target(target: str) -> bool:
    """True for a family constructor or a ``torch.optim`` optimizer / scheduler class."""
    if target in FAMILY_TARGETS:
        return True
    module, _, name = target.rpartition(".")
    if module == "torch.optim":
        obj = getattr(torch.optim, name, None)
        return isinstance(obj, type) and issubclass(obj, torch.optim.Optimizer)
    if module == "torch.optim.lr_scheduler":
        obj = getattr(torch.optim.lr_scheduler, name, None)
        return isinstance(obj, type) and issubclass(obj, torch.optim.lr_scheduler.LRScheduler)
    return False


def check_targets(node: Any, where: str) -> None:
    """Refuse a config (one read from a run dir) whose ``_target_`` anywhere is not
    :func:`is_safe_target`: instantiating it would run whatever callable it names.

    Raises:
        GencompareError: the first unsafe target, with its key.
    """
    def walk(value: Any, path: str) -> None:
        if isinstance(value, Mapping):
            for key, sub in value.items():
                if key == "_target_" and not (isinstance(sub, str) and is_safe_target(sub)):
                    raise GencompareError(
                        f"{where}: {path + '.' if path else ''}_target_={sub} is not a gencompare family, optimizer "
                        "or scheduler; a run dir's config may only build those (train it again from your own config)")
                walk(sub, f"{path}.{key}" if path else str(key))
        elif isinstance(value, (list, tuple)):
            for i, sub in enumerate(value):
                walk(sub, f"{path}[{i}]")

    walk(OmegaConf.to_container(node, resolve=False) if isinstance(node, (DictConfig, ListConfig)) else node, "")


def build_model(cfg: DictConfig, bundle: DataBundle) -> GenerativeModel:
    """Instantiate ``cfg.model.module`` for the data's shape.

    Raises:
        GencompareError: the family cannot model this dataset (its constructor's
            ValueError or TypeError, reported in one line), or the target is not a
            :class:`GenerativeModel`.
    """
    binary = bundle.kind == "image" and binarization_of(cfg) != "none"
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


def load_run_model(run_dir: str | Path, *, ckpt: str | Path | None = None, trust: bool = False,
                   data_dir: str | None = None, device: str = "cpu", check=None):
    """Rebuild a trained run's model from its run dir: the run's ``config.yaml`` (else the
    config inside the checkpoint), its data (for the shape and the variant) and the
    weights of ``checkpoints/last.ckpt`` or ``ckpt``. Shared by ``eval`` and ``sample``.
    ``check(cfg)``, when given, runs on the run's config before any data loads (so a bad
    option fails before a slow load or its warnings).

    Returns:
        ``(cfg, checkpoint, bundle, model)``: the run's config, the checkpoint dict, the
        data on ``device`` and the model on ``device`` (in train mode, as built).

    Raises:
        GencompareError: no such run dir, no checkpoint, an unreadable config, a config
            naming an unsafe ``_target_``, a checkpoint of another family, dataset variant
            or network, or one that needs full unpickling without ``trust``.
    """
    from gencompare.checkpoint import load_checkpoint
    from gencompare.record import RunDir

    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise GencompareError(f"run dir {run.path} does not exist")
    ckpt_path = Path(ckpt) if ckpt else run.checkpoint
    if not ckpt_path.is_file():
        raise GencompareError(f"{run.path} has no checkpoint ({ckpt_path} is missing); train it first")
    checkpoint = load_checkpoint(ckpt_path, trust=trust)
    source = run.config if run.config.is_file() else ckpt_path
    try:
        cfg = OmegaConf.load(run.config) if run.config.is_file() else OmegaConf.create(checkpoint["config"])
    except Exception as exc:  # noqa: BLE001 - yaml errors come in many types
        raise GencompareError(f"{source} is unreadable ({type(exc).__name__}); cannot rebuild the run's model") from None
    check_targets(cfg, str(source))
    if checkpoint["family"] != cfg.model.name:
        raise GencompareError(
            f"{ckpt_path} holds a {checkpoint['family']} model but {run.path} was a {cfg.model.name} run"
        )
    if check is not None:
        check(cfg)
    if data_dir is not None:
        cfg.dataset.data_dir = data_dir
    bundle = prepare_data(cfg)
    if bundle.variant != checkpoint.get("variant", bundle.variant):
        raise GencompareError(f"the checkpoint was trained on {checkpoint['variant']}, but {bundle.variant} loads now")
    model = build_model(cfg, bundle)
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as exc:
        raise GencompareError(f"checkpoint does not fit the {cfg.model.name} model of {run.path}: "
                              f"{str(exc).splitlines()[0]}") from None
    dev = resolve_device(device) if isinstance(device, str) else device
    model.to(dev)
    bundle.to(dev)
    return cfg, checkpoint, bundle, model
