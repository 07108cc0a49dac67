"""One training step and the loop, the same for every family and every step strategy.

The loop is handed a *step strategy*: where a step's batch comes from, how its loss is
computed and differentiated, and how its gradients are clipped. :class:`OneModel` is one
model's; :class:`gencompare.train.stacked.StackedSeeds` trains several seeds as one. The
loop's duties after a step (log, sample grid, evaluation, checkpoint) are callbacks
(:mod:`gencompare.train.callbacks`).

Between log steps the loop never reads a tensor on the host: losses, gradient norms and the
finiteness of the losses stay on the device (:class:`LogWindow`) and are read once per
``trainer.log_every`` steps, since every ``.item()`` / ``float()`` is a CPU-GPU sync point
that stalls a GPU (nanoGPT's ``train.py`` makes the same point).
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from gencompare.data import BatchStream
from gencompare.errors import GencompareError
from gencompare.models.base import GenerativeModel
from gencompare.terminal import TrainProgress
from gencompare.train.signals import StopRequest

__all__ = ["Loop", "LogWindow", "OneModel", "StepStrategy", "clip_and_measure", "warmup_schedulers"]


class LogWindow:
    """The ``train/*`` scalars of the steps since the last log step, kept as detached
    tensors where they are: reading them is one host sync per log step, not per step.

    Also watches every optimizer's loss of every step: :meth:`check_finite` raises on the
    first non-finite one of the window (with its step), so a diverged run stops at the next
    log or checkpoint step.
    """

    def __init__(self) -> None:
        self.values: dict[str, list[Tensor | float]] = {}
        self._losses: list[Tensor] = []
        self._steps: list[int] = []

    def add(self, step: int, losses: list[Tensor], logs: dict[str, Tensor | float]) -> None:
        """Step ``step``'s losses (detached; each ``()``, or ``(S,)`` for S stacked seeds) and logs."""
        self._losses.extend(losses)
        self._steps.extend([step] * len(losses))
        for key, value in logs.items():
            self.values.setdefault(key, []).append(value.detach() if isinstance(value, Tensor) else value)

    def check_finite(self) -> None:
        """Raises:
            GencompareError: a loss of the window is NaN or infinite (with the step and a hint).
        """
        if not self._losses:
            return
        losses = torch.stack([x.float() for x in self._losses])  # (n,) or (n, S)
        steps = self._steps
        self._losses, self._steps = [], []
        bad = ~torch.isfinite(losses)
        if bool(bad.any()):  # the host sync, once per window
            first = bad.nonzero()[0]
            raise GencompareError(
                f"loss became {float(losses[tuple(first.tolist())])} at step {steps[int(first[0])]}; lower the "
                "learning rate (model.module.*optimizer.lr) or set trainer.grad_clip"
            )

    def means(self) -> dict[str, float]:
        """Mean of each scalar over the window (read on the host); empties the window."""
        out = {k: float(np.mean(_host_floats(v))) for k, v in self.values.items()}
        self.values.clear()
        return out


def _host_floats(values: list[Tensor | float]) -> list[float]:
    if all(isinstance(v, Tensor) for v in values):
        return torch.stack(values).tolist()  # type: ignore[arg-type]
    return [float(v) for v in values]


def clip_and_measure(params: list[Tensor], max_norm: float, measure: bool) -> Tensor | None:
    """Clip the gradients of ``params`` to total L2 norm ``max_norm`` (``trainer.grad_clip``;
    infinite: no clipping) and return their norm before clipping when ``measure`` or when
    clipping computed it anyway (a device tensor: no sync), else None.

    The norm is measured at log steps only: on the small 2D networks the norm of every
    step cost ~20 % of the step (benchmarks/runner.py), so the logged ``grad_norm/*`` is
    the norm at the log step, not a mean over the steps since the last one.
    """
    if not math.isinf(max_norm):
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    if not measure:
        return None
    return torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])


def warmup_schedulers(optimizers: dict[str, torch.optim.Optimizer], warmup: int,
                      step: int) -> list[torch.optim.lr_scheduler.LambdaLR]:
    """``trainer.lr_warmup_steps``: every optimizer's learning rates times
    ``min(s / warmup, 1)`` for the update after ``s`` steps, so the first update has rate 0,
    as the DDPM code (Ho et al. 2020, diffusion_tf/utils.py ``get_warmed_up_lr``, 5,000
    steps on CIFAR-10). ``step``: steps already taken (a resumed run continues the ramp
    from the optimizers' ``initial_lr``). Stepped once per training step; none for 0."""
    if warmup <= 0:
        return []
    out = []
    for opt in optimizers.values():
        for group in opt.param_groups:
            group.setdefault("initial_lr", group["lr"])
        out.append(torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(s / warmup, 1.0), last_epoch=step - 1))
    return out


class StepStrategy(Protocol):
    """What the loop asks of a step strategy."""

    model: GenerativeModel  # the module whose parameters the optimizers step
    stream: BatchStream     # batches drawn, epoch and epoch length, for the logs and the checkpoint

    def next_batch(self) -> Tensor: ...
    def loss(self, batch: Tensor, name: str) -> tuple[Tensor, dict[str, Tensor | float]]: ...
    def backward(self, loss: Tensor) -> None: ...
    def clip(self, params: list[Tensor], max_norm: float, measure: bool) -> Tensor | None: ...


class TrainingStep(nn.Module):
    """The family's ``training_step`` as a module's ``forward``, for what calls ``forward``:
    ``torch.func.functional_call`` (stacked seeds) and ``DistributedDataParallel``."""

    def __init__(self, model: GenerativeModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Tensor, name: str):
        return self.model.training_step(batch, name)


class OneModel:
    """The step of one model: its batch from its stream, its own ``training_step``, its
    gradient norm (:func:`clip_and_measure`)."""

    def __init__(self, model: GenerativeModel, stream: BatchStream) -> None:
        self.model, self.stream = model, stream

    def next_batch(self) -> Tensor:
        return next(self.stream)

    def loss(self, batch: Tensor, name: str) -> tuple[Tensor, dict[str, Tensor | float]]:
        return self.model.training_step(batch, name)

    def backward(self, loss: Tensor) -> None:
        loss.backward()

    def clip(self, params: list[Tensor], max_norm: float, measure: bool) -> Tensor | None:
        return clip_and_measure(params, max_norm, measure)


class Loop:
    """The training loop: :meth:`training_step` steps every optimizer in order (the GAN: k
    discriminator steps, then the generator), then each callback does its duty.

    Args:
        strategy: the step strategy (:class:`OneModel`, or a stack of seeds).
        optimizers: ``configure_optimizers()`` of ``strategy.model``, state restored.
        trainer: ``cfg.trainer`` (``grad_clip``, ``lr_warmup_steps``, ``log_every``, ``precision``).
        max_steps: the step the loop stops at.
        step: steps already taken (a resumed run's).
    """

    def __init__(self, strategy: StepStrategy, optimizers: dict[str, torch.optim.Optimizer], trainer: Any, *,
                 max_steps: int, step: int) -> None:
        self.strategy, self.model, self.optimizers = strategy, strategy.model, optimizers
        repeats = self.model.optimizer_repeats()
        self.schedule = [(name, opt, int(repeats.get(name, 1)), [p for g in opt.param_groups for p in g["params"]])
                         for name, opt in optimizers.items()]
        self.max_norm = float(trainer.grad_clip) if trainer.grad_clip is not None else math.inf
        self.schedulers = warmup_schedulers(optimizers, int(trainer.get("lr_warmup_steps") or 0), step)
        self.max_steps, self.step = max_steps, step
        self.log_every = int(trainer.log_every)  # a plain int: a DictConfig lookup per step costs more than the check
        bf16 = trainer.precision == "bf16" and self.model.device.type == "cuda"  # bf16 autocast on CUDA only
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else nullcontext()
        self.precision = "bf16" if bf16 else "32"  # the precision that runs, recorded in metrics.json
        self.compile = "off"  # the compile state (gencompare.train.train.compile_model), recorded likewise
        self.window = LogWindow()
        self.stream = strategy.stream
        self.start_batches = self.stream.batches_drawn
        self.callbacks: list[Any] = []
        self.last_logs: dict[str, float] = {}  # the last log step's train/* means (a resumed run: its checkpoint's)
        self.eval_history: list[dict[str, Any]] = []  # the periodic evaluations so far
        self.time_before = 0.0  # seconds of loop before this invocation (a resumed run's)
        self.stats: dict[str, float] = {}  # the progress line's, set at log steps
        self.stopping = False  # a stop was requested: the checkpoint callback saves now
        self.saved_step: int | None = None  # the step of the last checkpoint this loop wrote
        self.t0 = time.perf_counter()  # restarted when the loop starts
        self.loop_time = 0.0

    def log_due(self, step: int) -> bool:
        """Whether ``step`` is a log step (every ``trainer.log_every`` and the last)."""
        return step % self.log_every == 0 or step == self.max_steps

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def training_step(self) -> None:
        strategy, logs, losses = self.strategy, {}, []
        measure = self.log_due(self.step + 1)
        for name, opt, repeats, params in self.schedule:
            for _ in range(repeats):
                batch = strategy.next_batch()
                with self.autocast:
                    loss, step_logs = strategy.loss(batch, name)
                opt.zero_grad(set_to_none=True)
                strategy.backward(loss)
                norm = strategy.clip(params, self.max_norm, measure)
                opt.step()
                losses.append(loss.detach())  # every optimizer's: a NaN of any is caught at its own step
            logs.update(step_logs)
            if measure:
                logs[f"grad_norm/{name}"] = norm
                if self.schedulers:  # shaped as the norm: stacked seeds log one per seed
                    logs[f"lr/{name}"] = torch.full_like(norm, opt.param_groups[0]["lr"])
        for scheduler in self.schedulers:
            scheduler.step()
        self.model.on_train_batch_end(self.step)
        self.step += 1
        self.window.add(self.step, losses, logs)

    def run(self, stop: StopRequest, label: str, *, progress: bool) -> None:
        """Train to ``max_steps`` or until a stop is requested (the checkpoint callback then
        saves); ``label`` and ``progress``: the progress line's."""
        self.stats = {}
        self.t0 = time.perf_counter()
        with TrainProgress(label, self.max_steps, self.step, enabled=progress) as line, stop.deferring():
            self.model.train()
            # several ranks stop at the same step: each asks the others (DataParallel.agree_stop)
            agree = getattr(self.strategy, "agree_stop", bool)
            while self.step < self.max_steps:
                self.training_step()
                self.stopping = agree(stop.signum is not None)
                for callback in self.callbacks:
                    callback.after_step(self)
                line.update(self.step, self.stats)
                if self.stopping:
                    break
            self.loop_time = self.elapsed()  # steps/s counts the loop alone, not the final grid and evaluation
