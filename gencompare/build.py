"""From a composed config to the objects a run needs: the device, the data and the model.

Shared by ``train`` (:mod:`gencompare.train`) and ``eval`` (:mod:`gencompare.evaluate`).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from gencompare.config import check_part_choices
from gencompare.data import DataBundle, apply_binarization, load_dataset
from gencompare.errors import GencompareError
from gencompare.models.base import GenerativeModel
from gencompare.terminal import console
from gencompare.trust import check_no_interpolation, check_targets, is_safe_target  # noqa: F401 - the trust rule for run dirs' configs


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


#: test images an evaluation needs at least: every metric scores against the test split, and
#: the feature metrics compare each image with its k = 5 nearest neighbours among them
#: (density/coverage, Naeem et al. 2020), which needs more than 5
MIN_TEST_EXAMPLES = 6


def check_data_for_metrics(cfg: DictConfig, bundle: DataBundle) -> None:
    """Refuse data whose test split is too small for the evaluation ``cfg.metrics`` asks
    for (enabled), before any training: the evaluation would otherwise fail after it.

    Raises:
        GencompareError: fewer than :data:`MIN_TEST_EXAMPLES` test examples, in one line
            saying how many of the dataset's examples each split got and what to change.
    """
    mcfg = cfg.get("metrics")
    if not mcfg or not mcfg.get("enabled", True):
        return
    sizes = bundle.sizes()
    if sizes["test"] < MIN_TEST_EXAMPLES:
        fix = ("add images or raise dataset.test_fraction" if "test_fraction" in cfg.dataset
               else "use more data")
        raise GencompareError(
            f"dataset={cfg.dataset.get('name')}: the test split holds {sizes['test']} of {sum(sizes.values())} "
            f"examples (train {sizes['train']}, valid {sizes['valid']}), but the metrics need at least "
            f"{MIN_TEST_EXAMPLES} (k-nearest-neighbour metrics with k=5); {fix}, or train with metrics=none")


def prepare_data(cfg: DictConfig, *, for_metrics: bool = True) -> DataBundle:
    """Load ``cfg.dataset`` with the loader it names (on the CPU; :func:`gencompare.data.load_dataset`),
    print a fallback or skipped-files warning as one yellow line, and apply the binarization
    (:func:`binarization_of`). The bundle's :attr:`~gencompare.data.DataBundle.transforms`
    (``dataset.random_flip``, dynamic binarization) are what training applies per batch.

    ``for_metrics``: also refuse data too small for the evaluation ``cfg.metrics`` asks for
    (:func:`check_data_for_metrics`); a run dir rebuilt for ``eval`` or ``sample`` skips it.

    Raises:
        GencompareError: the data is missing and cannot be downloaded or substituted, the
            config names no usable loader, or the test split is too small for the metrics.
    """
    from gencompare.data import OfflineSampleWarning, UnreadableImagesWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bundle = load_dataset(cfg.dataset, seed=int(cfg.seed))
    for w in caught:
        if issubclass(w.category, (OfflineSampleWarning, UnreadableImagesWarning)):
            console.print(f"[bold yellow]warning:[/] {w.message}")
    if for_metrics:
        check_data_for_metrics(cfg, bundle)
    # a fixed seed (not the run's) for static binarization: every run sees the same binary data
    return apply_binarization(bundle, binarization_of(cfg), seed=0)


def model_arguments(model_cfg: DictConfig) -> dict:
    """The family's arguments: ``model_cfg.module`` without the keys ``model_cfg.part_keys``
    names, plus the parts ``model_cfg.parts`` (the networks, a sampler: Hydra ``_partial_``
    factories the family calls with the data's shape), resolved to a plain dict. The keys
    left out choose and size the parts (``model.module.arch``, ``mlp_hidden``, ``sampler``,
    ...): the parts read them through interpolation, so ``model.module.<key>=...`` overrides
    keep their paths.

    Raises:
        GencompareError: an interpolation fails, e.g. ``model.module.arch`` names no entry of
            ``model.nets``.
    """
    check_part_choices(model_cfg)
    try:
        module = OmegaConf.to_container(model_cfg.module, resolve=True)
        parts = OmegaConf.to_container(model_cfg.parts, resolve=True) if "parts" in model_cfg else {}
    except Exception as exc:  # noqa: BLE001 - OmegaConf's interpolation errors
        raise GencompareError(f"model: {str(exc).splitlines()[0]}") from None
    for key in model_cfg.get("part_keys") or ():
        module.pop(key, None)
    return {**module, **parts}


def build_model(cfg: DictConfig, bundle: DataBundle) -> GenerativeModel:
    """Instantiate ``cfg.model.module`` (:func:`model_arguments`) for the data's shape.

    Raises:
        GencompareError: the family cannot model this dataset (its constructor's
            ValueError or TypeError, reported in one line), or the target is not a
            :class:`GenerativeModel`.
    """
    binary = bundle.kind == "image" and binarization_of(cfg) != "none"
    try:
        model = instantiate(model_arguments(cfg.model), data_shape=list(bundle.shape), binary=binary,
                            _convert_="all")
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


def check_run_config(cfg: DictConfig, source: str) -> None:
    """What a run dir's config must be before anything of it is read or built: no
    interpolation, only trusted ``_target_``s (:mod:`gencompare.trust`), and a model section
    this version builds.

    Raises:
        GencompareError: the first problem, naming ``source``.
    """
    # before anything reads a value: a resolver could make a _target_ no check of the text sees
    check_no_interpolation(cfg, source)
    # the run's metrics blocks name their classes too, but eval scores with its own metrics
    # config and never builds the run's: only what rebuilds the model is checked and built
    check_targets({k: v for k, v in OmegaConf.to_container(cfg, resolve=False).items() if k != "metrics"}, source)
    if "parts" not in cfg.model and "arch" in (cfg.model.get("module") or {}):
        # written before the networks became parts the config names (model.parts): its
        # model section no longer builds, and guessing today's parts could load other nets
        raise GencompareError(f"{source} was written by a gencompare older than its networks as config parts (no "
                              "model.parts); evaluate it with the version that trained it, or train it again")


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
            holding an interpolation (``${...}``) or naming an unsafe ``_target_``, a checkpoint of another family, dataset variant
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
    check_run_config(cfg, str(source))
    if checkpoint["family"] != cfg.model.name:
        raise GencompareError(
            f"{ckpt_path} holds a {checkpoint['family']} model but {run.path} was a {cfg.model.name} run"
        )
    if check is not None:
        check(cfg)
    if data_dir is not None:
        cfg.dataset.data_dir = data_dir
    bundle = prepare_data(cfg, for_metrics=False)  # eval scores with its own metrics, sample with none
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
