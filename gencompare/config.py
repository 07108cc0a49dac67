"""Typed schemas for the composed config, registered in Hydra's ConfigStore.

``conf/train.yaml`` lists ``train_schema`` first in its defaults, so every value the
YAML files or the command line set is checked against these dataclasses while Hydra
composes: a misspelt key (``trainer.max_stpes=5``) or a wrong type
(``trainer.batch_size=abc``) fails before any data is loaded. Value checks that a type
cannot express (a positive batch size, a positive learning rate) live in
:func:`validate`.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from gencompare.data import BINARIZATIONS, register_schemas as register_dataset_schemas
from gencompare.errors import GencompareError


@dataclass
class PathsConfig:
    data_dir: str = MISSING
    cache_dir: str = MISSING
    log_dir: str = MISSING
    # Hydra's job dir; None under `--cfg job --resolve`, which prints the config without making one
    output_dir: Optional[str] = MISSING


@dataclass
class TrainerConfig:
    max_steps: int = 5000
    epochs: Optional[int] = None
    batch_size: int = 100
    log_every: int = 50
    sample_every: int = 1000
    checkpoint_every: int = 500
    eval_every: Optional[int] = None
    num_grid_samples: int = 64
    precision: str = "32"
    grad_clip: Optional[float] = None
    # false | true | auto (RESUME_CHOICES): continue <run dir>/checkpoints/last.ckpt; auto, on the
    # command line: resume when the run dir holds one (gencompare.launch.resolve_auto_resume)
    resume: Any = False
    progress: bool = True
    compile: bool = False  # torch.compile each of the family's networks (Module.compile: same state_dict)
    seed_batch: int = 1    # S > 1: seeds seed..seed+S-1 trained stacked in one process (gencompare.train.seeds)
    lr_warmup_steps: int = 0  # N > 0: every learning rate scaled by min(step / N, 1) (Ho et al. 2020's warm-up)
    devices: int = 1  # N > 1: N data-parallel processes on this node (gencompare.launch; issue 22)
    sync_batchnorm: bool = False  # data-parallel: batch norm as torch.nn.SyncBatchNorm (CUDA only)


@dataclass
class DeviceConfig:
    name: str = "auto"


@dataclass
class LoggerConfig:
    name: str = "none"
    project: str = "gencompare"
    entity: Optional[str] = None
    mode: str = "auto"
    group: Optional[str] = None
    run_name: Optional[str] = None
    tags: list[str] = field(default_factory=list)
    log_images: bool = True
    log_model: bool = True  # the checkpoint as a W&B model artifact (offline: a staged copy until `wandb sync`)


@dataclass
class TrainSchema:
    seed: int = 0
    task_name: str = "train"
    model: Any = MISSING
    # typed by the loader its conf/dataset YAML names (schema/dataset/<name>, gencompare.data.register_schemas)
    dataset: Any = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    metrics: Any = None
    tags: list[str] = field(default_factory=list)
    trust_checkpoint: bool = False  # load a checkpoint that needs pickle (weights_only=False) on resume
    optimized_metric: Optional[str] = None  # dotted key into train()'s metrics, returned to sweepers (Optuna)


def register_schemas() -> None:
    """Register the schemas with Hydra (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainSchema)
    register_dataset_schemas()


register_schemas()

PRECISIONS = ("32", "bf16")
DEVICES = ("auto", "cpu", "cuda", "mps")


def _walk(node: Any, path: str = ""):
    if isinstance(node, (DictConfig, Mapping)):
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, (ListConfig, list, tuple)):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]")
    else:
        yield path, node


#: A model config's choice keys (``model.module.<key>``) and the table each picks from (``model.<table>``)
PART_CHOICES = (("arch", "nets"), ("sampler", "samplers"))


def check_part_choices(model_cfg: DictConfig) -> None:
    """Refuse a ``model.module.arch`` (``sampler``) that names no entry of ``model.nets``
    (``model.samplers``), before an interpolation through it fails deep in OmegaConf.

    Raises:
        GencompareError: the choice and the entries there are.
    """
    module = model_cfg.get("module") or {}
    for key, table in PART_CHOICES:
        chosen, options = module.get(key), model_cfg.get(table)
        if options is not None and chosen is not None and chosen not in options:
            raise GencompareError(f"model.module.{key}={chosen} is not one of {sorted(options)}")


#: ``trainer.resume``'s values; ``auto`` is turned into true or false on the command line,
#: before Hydra makes the run dir (:func:`gencompare.launch.resolve_auto_resume`)
RESUME_CHOICES = (False, True, "auto")


def validate(cfg: DictConfig) -> None:
    """Check the values a schema type cannot express, before anything is loaded.

    Raises:
        GencompareError: a non-positive batch size, step count or interval, a
            non-positive learning rate anywhere under ``model``, an unknown
            precision / device / binarization, or a network or sampler choice the
            model's config does not list (:func:`check_part_choices`), a ``trainer.resume``
            other than true, false or auto (auto from a config file: it is resolved on the
            command line).
    """
    t = cfg.trainer
    if not (isinstance(t.resume, bool) or t.resume == "auto"):
        raise GencompareError(f"trainer.resume must be one of true, false, auto, got {t.resume!r}")
    if t.resume == "auto":
        raise GencompareError("trainer.resume=auto is resolved on the command line, where the run dir is chosen: "
                              "pass trainer.resume=auto there (a config file sets true or false)")
    if t.batch_size <= 0:
        raise GencompareError(f"trainer.batch_size must be a positive integer, got {t.batch_size}")
    if t.get("seed_batch") is not None and int(t.seed_batch) < 1:
        raise GencompareError(f"trainer.seed_batch (seeds trained at once) must be >= 1, got {t.seed_batch}")
    if int(t.get("lr_warmup_steps") or 0) < 0:
        raise GencompareError(f"trainer.lr_warmup_steps must be >= 0 (0: no warm-up), got {t.lr_warmup_steps}")
    if cfg.get("dataset") is not None and cfg.dataset.get("random_flip") and cfg.dataset.get("kind") == "points":
        raise GencompareError(f"dataset.random_flip mirrors images; {cfg.dataset.name} holds 2D points")
    if t.epochs is None and t.max_steps <= 0:
        raise GencompareError(f"trainer.max_steps must be positive, got {t.max_steps}")
    if t.epochs is not None and t.epochs <= 0:
        raise GencompareError(f"trainer.epochs must be positive, got {t.epochs}")
    for key in ("log_every", "sample_every", "checkpoint_every", "num_grid_samples"):
        if t[key] <= 0:
            raise GencompareError(f"trainer.{key} must be positive, got {t[key]}")
    if t.eval_every is not None and t.eval_every <= 0:
        raise GencompareError(f"trainer.eval_every must be positive or null, got {t.eval_every}")
    if t.precision not in PRECISIONS:
        raise GencompareError(f"trainer.precision must be one of {', '.join(PRECISIONS)}, got {t.precision!r}")
    if cfg.device.name not in DEVICES:
        raise GencompareError(f"device must be one of {', '.join(DEVICES)}, got {cfg.device.name!r}")
    check_part_choices(cfg.model)
    for path, value in _walk(cfg.model, "model"):
        leaf = path.rsplit(".", 1)[-1]
        if leaf in ("lr", "learning_rate") and isinstance(value, (int, float)) and value <= 0:
            raise GencompareError(f"{path} must be a positive learning rate, got {value}")
    binarize = cfg.model.get("binarize", "none")
    if binarize not in BINARIZATIONS:
        raise GencompareError(f"model.binarize must be one of {', '.join(BINARIZATIONS)}, got {binarize!r}")
    if cfg.dataset.get("binarize") not in (None, *BINARIZATIONS):
        raise GencompareError(f"dataset.binarize must be null or one of {', '.join(BINARIZATIONS)}, "
                              f"got {cfg.dataset.binarize!r}")


def hydra_overrides() -> list[str] | None:
    """The command line's overrides of the running Hydra job, or None outside one."""
    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:  # HydraConfig was not set: not inside a Hydra run
        return None


HYDRA_SUBDIR = ".hydra"  # Hydra's own record of a job, as output_subdir writes it


def save_hydra_records(cfg: DictConfig, run_dir: Path) -> Path | None:
    """Write Hydra's record of the running job into ``<run_dir>/.hydra/``: ``config.yaml``
    (the composed config, unresolved), ``hydra.yaml`` (Hydra's own config: launcher,
    sweeper, run and sweep dirs, ``hydra.*`` overrides) and ``overrides.yaml`` (the task
    overrides), the three files ``hydra.output_subdir`` writes. Hydra's own writer is off
    (``output_subdir: null``) because it writes before the run dir is checked and claimed:
    a rejected command would overwrite an earlier run's files. None outside a Hydra job."""
    try:
        hc = HydraConfig.get()
    except ValueError:
        return None
    folder = Path(run_dir) / HYDRA_SUBDIR
    folder.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, folder / "config.yaml")
    record = OmegaConf.to_container(hc, resolve=False)
    if Path(str(hc.runtime.output_dir)).resolve() != Path(run_dir).resolve():
        # the run claimed another dir than Hydra made (one started in the same second took
        # it: RunDir.claim): the record names the dir the run is in
        record["runtime"]["output_dir"] = str(Path(run_dir).resolve())
        if hc.mode == RunMode.RUN:
            record["run"]["dir"] = str(run_dir)
    OmegaConf.save(OmegaConf.create({"hydra": record}), folder / "hydra.yaml")
    OmegaConf.save(OmegaConf.create(list(hc.overrides.task)), folder / "overrides.yaml")
    return folder


def sweep_group() -> str | None:
    """The W&B group of a multirun job: ``sweep-<date>_<time>`` of its sweep dir; None otherwise."""
    try:
        hc = HydraConfig.get()
    except ValueError:
        return None
    if hc.mode == RunMode.MULTIRUN:
        p = Path(hc.sweep.dir)
        return f"sweep-{p.parent.name}_{p.name}"
    return None


def to_container(cfg: DictConfig) -> dict:
    """The resolved config as plain Python (for checkpoints and W&B); unresolvable Hydra
    interpolations are kept as strings rather than failing."""
    try:
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except Exception:  # noqa: BLE001 - e.g. ${hydra:...} outside a Hydra run
        return OmegaConf.to_container(cfg, resolve=False)  # type: ignore[return-value]
