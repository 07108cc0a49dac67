"""The loop's duties after a step, each a callback with ``after_step(loop)``, called in
order: log, sample grid, periodic evaluation, checkpoint. Each knows its own schedule
(``trainer.log_every``, ``sample_every``, ``eval_every``, ``checkpoint_every``) and what it
writes into the run dir (:mod:`gencompare.record`'s contract: ``history.jsonl``,
``samples/``, ``eval_history``, ``checkpoints/last.ckpt``)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor

from gencompare.data import DataBundle
from gencompare.errors import GencompareError
from gencompare.evaluate import evaluate_and_log
from gencompare.models.base import GenerativeModel
from gencompare.plots import save_samples
from gencompare.record import RunDir, history_line
from gencompare.tracking import Tracker
from gencompare.train.loop import Loop
from gencompare.train.state import TrainState

__all__ = ["CheckpointCallback", "EvalCallback", "GridCallback", "LogCallback", "append_history", "grid_samples"]


def grid_samples(model: GenerativeModel, n: int, seed: int) -> Tensor:
    """Samples for a grid drawn from a fixed seed in a forked RNG: successive grids show
    the same noise (progress is visible) and training's RNG stream is untouched."""
    devices = [model.device] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        was_training = model.training
        model.eval()
        with torch.no_grad():
            s = model.sample(n)
        model.train(was_training)
    return s


def append_history(history, run: RunDir, step: int, record: dict[str, Any]) -> None:
    """Append one ``history.jsonl`` line to the open file ``history`` of ``run`` and flush it.

    Raises:
        GencompareError: the write failed (one line naming the file).
    """
    try:
        history.write(history_line(step, record))
        history.flush()
    except OSError as exc:
        raise GencompareError(f"cannot write {run.history}: {exc.strerror or exc}") from None


def due(every: int, step: int) -> bool:
    """Whether ``step`` is a multiple of ``every`` (0: never)."""
    return bool(every) and step % every == 0


class LogCallback:
    """At log steps (every ``trainer.log_every`` and the last): check the losses, then log the
    window's ``train/*`` means, ``train/samples_per_s`` and ``train/epoch`` to the tracker and
    ``history.jsonl``; sets the progress line's stats."""

    def __init__(self, run: RunDir, history, tracker: Tracker, batch_size: int) -> None:
        self.run, self.history, self.tracker, self.batch_size = run, history, tracker, batch_size

    def after_step(self, loop: Loop) -> None:
        if loop.log_due(loop.step):
            self.log(loop)

    def rate(self, loop: Loop) -> float:
        """Examples per second of this invocation's loop."""
        elapsed = time.perf_counter() - loop.t0
        return (loop.stream.batches_drawn - loop.start_batches) * self.batch_size / max(elapsed, 1e-9)

    def log(self, loop: Loop) -> None:
        loop.window.check_finite()
        loop.last_logs = loop.window.means()
        rate = self.rate(loop)
        record = {**{f"train/{k}": v for k, v in loop.last_logs.items()},
                  "train/samples_per_s": rate, "train/epoch": loop.stream.epoch}
        self.tracker.log(record, step=loop.step)
        append_history(self.history, self.run, loop.step, record)
        shown = [k for k in loop.last_logs if not k.startswith("grad_norm")][:4]
        loop.stats = {**{k: loop.last_logs[k] for k in shown}, "ex/s": rate}


class GridCallback:
    """Every ``trainer.sample_every`` steps but the last (the run's finish draws that one):
    the sample grid (images) or scatter plot (points) ``samples/step_<step>.png``."""

    def __init__(self, cfg: DictConfig, bundle: DataBundle, run: RunDir, tracker: Tracker) -> None:
        self.cfg, self.bundle, self.run, self.tracker = cfg, bundle, run, tracker
        self.every = int(cfg.trainer.sample_every)
        self.n = int(cfg.trainer.num_grid_samples) if bundle.kind == "image" else 2500
        self.seed = int(cfg.seed) + 12345

    def after_step(self, loop: Loop) -> None:
        if due(self.every, loop.step) and loop.step != loop.max_steps:
            self.write(loop, f"step_{loop.step:07d}")

    def write(self, loop: Loop, tag: str, samples: Tensor | None = None) -> Path:
        """The grid ``tag`` of ``samples`` when given, else of samples drawn from the grid's
        fixed seed (:func:`grid_samples`); logged to the tracker unless ``logger.log_images=false``."""
        title = f"{self.cfg.model.name} on {self.bundle.variant}, step {loop.step}"
        real = self.bundle.train[:5000] if self.bundle.kind == "points" else None  # drawn faint behind the samples
        if samples is None:
            samples = grid_samples(loop.model, self.n, self.seed)
        path = save_samples(samples, self.run.grid(tag), means=self.bundle.means, std=self.bundle.std, real=real,
                            seed=int(self.cfg.seed), title=title, color=loop.model.family_color)
        if self.cfg.logger.get("log_images", True):
            self.tracker.log_image("samples", path, step=loop.step, caption=title)
        return path


class EvalCallback:
    """Every ``trainer.eval_every`` steps but the last (when metrics are on): the metrics on
    the model as it is, logged as ``eval/*`` and kept in ``loop.eval_history``."""

    def __init__(self, cfg: DictConfig, bundle: DataBundle, run: RunDir, tracker: Tracker) -> None:
        self.cfg, self.bundle, self.run, self.tracker = cfg, bundle, run, tracker
        metrics_on = bool(cfg.get("metrics") and cfg.metrics.enabled)
        self.every = int(cfg.trainer.eval_every) if cfg.trainer.eval_every and metrics_on else 0

    def after_step(self, loop: Loop) -> None:
        if due(self.every, loop.step) and loop.step != loop.max_steps:
            self.evaluate(loop)

    def evaluate(self, loop: Loop) -> None:
        results = evaluate_and_log(self.cfg, loop.model, self.bundle, self.run, self.tracker, loop.step, final=False)
        loop.eval_history.append({"step": loop.step, **results})
        loop.model.train()


class CheckpointCallback:
    """Every ``trainer.checkpoint_every`` steps, at the last step and when a stop was
    requested: check the losses, then save :class:`TrainState` to ``checkpoints/last.ckpt``.

    Args:
        facts: the fields of :class:`TrainState` fixed for the run (``family``, ``variant``,
            ``config``, ``data_shape``, ``arch``).
    """

    def __init__(self, run: RunDir, tracker: Tracker, every: int, **facts: Any) -> None:
        self.run, self.tracker, self.every, self.facts = run, tracker, every, facts

    def after_step(self, loop: Loop) -> None:
        if due(self.every, loop.step) or loop.step == loop.max_steps or loop.stopping:
            self.save(loop)
            loop.saved_step = loop.step  # only once the file is in place (an interrupted save leaves the old one)

    def state(self, loop: Loop) -> TrainState:
        """The run's state now (weights, optimizers, RNG, counts, records)."""
        return TrainState.capture(
            loop.model, loop.optimizers, step=loop.step, batches_drawn=loop.stream.batches_drawn,
            train_time_s=loop.time_before + loop.elapsed(), wandb_id=getattr(self.tracker, "run_id", None),
            eval_history=loop.eval_history, last_logs=loop.last_logs, **self.facts)

    def save(self, loop: Loop) -> None:
        loop.window.check_finite()
        self.state(loop).save(self.run.checkpoint)
