"""What a checkpoint holds, written and restored in one place: :class:`TrainState`.

A checkpoint (``<run dir>/checkpoints/last.ckpt``) is :meth:`TrainState.to_dict` saved with
:func:`gencompare.checkpoint.save_checkpoint`: tensors and plain values only, so that it loads
with ``torch.load(weights_only=True)``. Every strategy writes this one dict: a seed batch's
checkpoint of all members adds ``seed_batch`` (the members' records), and each member's own
checkpoint adds ``seed_batch_member`` (which batch trained it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from gencompare import config as _config
from gencompare.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from gencompare.data import DataBundle
from gencompare.errors import GencompareError
from gencompare.models.base import GenerativeModel
from gencompare.record import RunDir

__all__ = ["RESUME_FREE", "RESUME_FIXED", "TrainState", "check_resume", "check_resume_keys", "checkpoint_to_resume"]

#: What a resume must keep: the keys that define the data or the model, compared with the
#: checkpoint's config (a key and everything under it). The data stream is a function of
#: ``seed``, ``trainer.batch_size`` and the batches drawn, and the 2D mixtures are drawn from
#: the seed; precision, gradient clipping and the warm-up change every step that follows.
RESUME_FIXED = ("model", "dataset", "seed", "trainer.batch_size", "trainer.precision", "trainer.grad_clip",
                "trainer.lr_warmup_steps", "trainer.seed_batch")
#: What a resume may change: lengths, intervals, logging, metrics, where it runs and how it
#: shows progress. Inside a fixed key, only where the data is looked for (the files it finds
#: are checked by the data's own variant and shape).
RESUME_FREE = ("trainer.max_steps", "trainer.epochs", "trainer.log_every", "trainer.sample_every",
               "trainer.checkpoint_every", "trainer.eval_every", "trainer.num_grid_samples", "trainer.resume",
               "trainer.progress", "trainer.compile", "device", "logger", "metrics", "paths", "tags", "task_name",
               "trust_checkpoint", "optimized_metric",
               "dataset.data_dir", "dataset.download", "dataset.system_dirs")


@dataclass(kw_only=True)
class TrainState:
    """One checkpoint's contents, in the order they are written.

    ``step`` optimizer steps taken and ``batches_drawn`` batches drawn (the data stream is a
    pure function of the seed and this count); ``model`` and ``optimizers`` state dicts; ``rng``
    the global generators (:func:`gencompare.checkpoint.rng_state`); ``config`` the resolved
    run config; ``train_time_s`` seconds of training loop so far; ``eval_history`` the
    periodic evaluations; ``last_logs`` the last logged ``train/*`` means.
    """

    family: str
    variant: str | None = None
    step: int
    batches_drawn: int
    model: dict[str, torch.Tensor]
    optimizers: dict[str, dict[str, Any]]
    rng: dict[str, Any]
    config: dict[str, Any]
    train_time_s: float = 0.0
    wandb_id: str | None = None
    data_shape: list[int] = field(default_factory=list)
    eval_history: list[dict[str, Any]] = field(default_factory=list)
    last_logs: dict[str, float] = field(default_factory=dict)
    arch: str | None = None
    seed_batch: dict[str, Any] | None = None         # a seed batch's checkpoint of all its members
    seed_batch_member: dict[str, Any] | None = None  # a member's own checkpoint: the batch that trained it

    @classmethod
    def capture(cls, model: GenerativeModel, optimizers: dict[str, torch.optim.Optimizer], **facts: Any) -> TrainState:
        """The state now: ``model``'s and the optimizers' state dicts, the global RNG, and
        ``facts`` (the other fields)."""
        return cls(model=model.state_dict(), optimizers={n: o.state_dict() for n, o in optimizers.items()},
                   rng=rng_state(), **facts)

    @classmethod
    def from_dict(cls, checkpoint: dict[str, Any]) -> TrainState:
        """A checkpoint as loaded (older ones lack the later fields: their defaults)."""
        known = {k: v for k, v in checkpoint.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        """The dict a checkpoint holds (the two seed-batch fields only where set)."""
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        for name in ("seed_batch", "seed_batch_member"):
            if out[name] is None:
                del out[name]
        return out

    def provenance(self) -> dict[str, Any]:
        """What ``metrics.json`` says of the run that trained this state, beyond itself: the
        seed batch of a member's checkpoint (its size, seeds, index and whole loop time)."""
        if self.seed_batch_member is None:
            return {}
        return {"seed_batch": {k: v for k, v in self.seed_batch_member.items() if k != "checkpoint"}}

    def save(self, path: Path) -> Path:
        """Write the checkpoint atomically (:func:`gencompare.checkpoint.save_checkpoint`)."""
        return save_checkpoint(self.to_dict(), path)

    def restore(self, model: GenerativeModel, optimizers: dict[str, torch.optim.Optimizer], where: Path) -> None:
        """Load the weights, the optimizers' states and the global RNG.

        Raises:
            GencompareError: the weights do not fit ``model`` (``where``: the file, for the message).
        """
        try:
            model.load_state_dict(self.model)
        except RuntimeError as exc:
            raise GencompareError(f"{where} does not fit this {self.family} model: "
                                  f"{str(exc).splitlines()[0]}") from None
        for name, opt in optimizers.items():
            opt.load_state_dict(self.optimizers[name])
        set_rng_state(self.rng)


def checkpoint_to_resume(cfg: DictConfig, run: RunDir) -> TrainState | None:
    """The checkpoint ``trainer.resume=true`` continues, or None for a new run.

    Raises:
        GencompareError: resume without a checkpoint, a checkpoint of another family, or a
            new run pointed at a dir that already holds one.
    """
    if not cfg.trainer.resume:
        if run.holds_run():
            raise GencompareError(f"{run.path} already holds a run; pass trainer.resume=true to continue it "
                                  "or choose another hydra.run.dir")
        return None
    if not run.checkpoint.is_file():
        raise GencompareError(f"trainer.resume=true but {run.checkpoint} does not exist; "
                              "point hydra.run.dir at the run dir to continue")
    checkpoint = load_checkpoint(run.checkpoint, trust=bool(cfg.get("trust_checkpoint", False)))
    if checkpoint["family"] != cfg.model.name:
        raise GencompareError(f"{run.checkpoint} holds a {checkpoint['family']} model, not {cfg.model.name}")
    return TrainState.from_dict(checkpoint)


def check_resume(state: TrainState, cfg: DictConfig, bundle: DataBundle, run: RunDir, model: GenerativeModel) -> None:
    """Refuse to continue a checkpoint on other data or another network.

    Raises:
        GencompareError: the dataset variant, the data shape or the architecture differs
            from the checkpoint's (the family is checked on loading).
    """
    if state.variant is not None and state.variant != bundle.variant:
        raise GencompareError(f"{run.checkpoint} was trained on {state.variant}, not {bundle.variant}; "
                              f"resume with its dataset or start a new run")
    if state.data_shape and tuple(state.data_shape) != tuple(bundle.shape):
        raise GencompareError(f"{run.checkpoint} was trained on data of shape {tuple(state.data_shape)}, "
                              f"not {tuple(bundle.shape)}")
    now = getattr(model, "arch", None)
    if state.arch is not None and now is not None and state.arch != now:
        raise GencompareError(f"{run.checkpoint} holds a {state.arch} network, not {now}; "
                              "resume with the run's own model settings")
    target = ((state.config or {}).get("model") or {}).get("module", {}).get("_target_")
    if target is not None and target != cfg.model.module.get("_target_"):
        raise GencompareError(f"{run.checkpoint} holds a {target} model, not {cfg.model.module.get('_target_')}")
    check_resume_keys(state.config or {}, _config.to_container(cfg), run.checkpoint)


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict) and node:
        return {k: v for key, value in node.items() for k, v in _leaves(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: node}


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def check_resume_keys(saved: dict[str, Any], now: dict[str, Any], where: Path) -> None:
    """Refuse a resume whose config differs from the checkpoint's in a key that defines the
    data or the model (:data:`RESUME_FIXED`, less :data:`RESUME_FREE`). A key the
    checkpoint's config lacks is not compared (written by a version that did not have it).

    Raises:
        GencompareError: the first such key, both values, in one line.
    """
    before, after = _leaves(saved), _leaves(now)
    for key in sorted(set(before) | set(after)):
        if not _under(key, RESUME_FIXED) or _under(key, RESUME_FREE) or key not in before:
            continue
        if before[key] != after.get(key, "<absent>"):
            raise GencompareError(f"resume changes {key}: {where} was trained with {key}={before[key]!r}, this "
                                  f"command has {after.get(key, '<absent>')!r}; resume with the run's value or start "
                                  "a new run (docs/training.md: which keys a resume may change)")
