"""The one training loop every family goes through.

It talks to a model only through the interface of :class:`gencompare.models.base.GenerativeModel`
(``configure_optimizers``, ``optimizer_repeats``, ``training_step``, ``on_train_batch_end``,
``sample``, ``log_likelihood``) and never asks which family it runs. What it writes into the
run dir is :mod:`gencompare.record`'s contract; checkpoints are :mod:`gencompare.checkpoint`'s.

Between log steps the loop never reads a tensor on the host: losses, gradient norms and the
finiteness of the loss stay on the device (:class:`LogWindow`) and are read once per
``trainer.log_every`` steps, since every ``.item()`` / ``float()`` is a CPU-GPU sync point
that stalls a GPU (nanoGPT's ``train.py`` makes the same point).
"""
from __future__ import annotations

import json
import math
import signal
import threading
import time
from contextlib import contextmanager, nullcontext
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from gencompare import config as _config
from gencompare.build import build_model, prepare_data, resolve_device, run_dir_of, total_steps
from gencompare.checkpoint import load_checkpoint, rng_state, save_checkpoint, seed_everything, set_rng_state
from gencompare.data import BatchStream, DataBundle, binarize, random_hflip
from gencompare.errors import GencompareError
from gencompare.evaluate import (check_metrics_config, evaluate_after_training, evaluate_and_log, evaluation_samples,
                                 metrics_enabled)
from gencompare.models.base import GenerativeModel, count_parameters
from gencompare.plots import save_samples
from gencompare.record import Evaluation, FamilyStyle, RunDir, RunMetrics, history_line, trim_history, write_metrics
from gencompare.terminal import TrainProgress, console
from gencompare.tracking import Tracker, log_run_artifacts, make_tracker, summary_of

__all__ = ["train", "load_checkpoint"]


# ------------------------------------------------------------------------ helpers
class Interrupted(BaseException):
    """SIGINT or SIGTERM outside the training loop (start-up, final grid, evaluation), or a
    second Ctrl-C inside it. A BaseException, so that no ``except Exception`` swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        """128 + the signal number: 130 for SIGINT, 143 for SIGTERM (the shell's convention)."""
        return 128 + self.signum


class StopRequest:
    """SIGINT/SIGTERM handling for the whole of ``train``. Inside the loop (:meth:`deferring`)
    a signal only sets a flag that the loop checks after each step, so an interrupted run
    saves a checkpoint and closes its W&B run before exiting; a second SIGINT aborts at
    once. Anywhere else a signal raises :class:`Interrupted` at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.deferred = False
        self.where = "during start-up, before any checkpoint; start the run again"  # said with the message
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame):  # noqa: ARG002
        if not self.deferred or (self.signum is not None and signum == signal.SIGINT):
            raise Interrupted(signum)
        self.signum = signum

    @contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        try:
            yield self
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)

    @contextmanager
    def deferring(self):
        self.deferred = True
        try:
            yield self
        finally:
            self.deferred = False
        if self.signum is not None:  # arrived during the loop: the checkpoint is saved by now
            raise Interrupted(self.signum)


class LogWindow:
    """The ``train/*`` scalars of the steps since the last log step, kept as detached
    tensors where they are: reading them is one host sync per log step, not per step.

    Also watches the loss: :meth:`check_finite` raises on the first non-finite loss of the
    window (with its step), so a diverged run stops at the next log or checkpoint step.
    """

    def __init__(self) -> None:
        self.values: dict[str, list[Tensor | float]] = {}
        self._losses: list[Tensor] = []
        self._first_step = 0

    def add(self, step: int, loss: Tensor, logs: dict[str, Tensor | float]) -> None:
        if not self._losses:
            self._first_step = step
        self._losses.append(loss.detach())
        for key, value in logs.items():
            self.values.setdefault(key, []).append(value.detach() if isinstance(value, Tensor) else value)

    def check_finite(self) -> None:
        """Raises:
            GencompareError: a loss of the window is NaN or infinite (with the step and a hint).
        """
        if not self._losses:
            return
        losses = torch.stack([x.float() for x in self._losses])
        self._losses.clear()
        bad = ~torch.isfinite(losses)
        if bool(bad.any()):  # the host sync, once per window
            i = int(bad.nonzero()[0, 0])
            raise GencompareError(
                f"loss became {float(losses[i])} at step {self._first_step + i}; lower the learning rate "
                "(model.module.*optimizer.lr) or set trainer.grad_clip"
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


def save_run_config(cfg: DictConfig, run: RunDir) -> None:
    """Write ``config.yaml`` (resolved) and ``overrides.yaml`` (the command line) into the
    run dir once; a resumed run keeps the originals and writes ``overrides.resume.yaml``."""
    run.path.mkdir(parents=True, exist_ok=True)
    if not run.config.exists():
        OmegaConf.save(OmegaConf.create(_config.to_container(cfg)), run.config)
    overrides = _config.hydra_overrides()
    if overrides is not None:
        OmegaConf.save(OmegaConf.create(overrides), run.overrides if not run.overrides.exists() else run.overrides_resume)
    _config.save_hydra_records(cfg, run.path)  # .hydra/: config, hydra, overrides, as Hydra users expect


def checkpoint_to_resume(cfg: DictConfig, run: RunDir) -> dict[str, Any] | None:
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
    return checkpoint


def check_resume(checkpoint: dict[str, Any], cfg: DictConfig, bundle: DataBundle, run: RunDir,
                 model: GenerativeModel) -> None:
    """Refuse to continue a checkpoint on other data or another network.

    Raises:
        GencompareError: the dataset variant, the data shape or the architecture differs
            from the checkpoint's (the family is checked on loading).
    """
    variant = checkpoint.get("variant")
    if variant is not None and variant != bundle.variant:
        raise GencompareError(f"{run.checkpoint} was trained on {variant}, not {bundle.variant}; "
                              f"resume with its dataset or start a new run")
    shape = checkpoint.get("data_shape")
    if shape is not None and tuple(shape) != tuple(bundle.shape):
        raise GencompareError(f"{run.checkpoint} was trained on data of shape {tuple(shape)}, not {tuple(bundle.shape)}")
    saved, now = checkpoint.get("arch"), getattr(model, "arch", None)
    if saved is not None and now is not None and saved != now:
        raise GencompareError(f"{run.checkpoint} holds a {saved} network, not {now}; "
                              "resume with the run's own model settings")
    target = ((checkpoint.get("config") or {}).get("model") or {}).get("module", {}).get("_target_")
    if target is not None and target != cfg.model.module.get("_target_"):
        raise GencompareError(f"{run.checkpoint} holds a {target} model, not {cfg.model.module.get('_target_')}")


def claim_run_dir(cfg: DictConfig, run: RunDir) -> RunDir:
    """Make the run dir this run's own (:meth:`RunDir.claim`); when another run started in
    the same second took it, say so and use the distinct dir it got."""
    claimed = run.claim()
    if claimed.path != run.path:
        console.print(f"[yellow]{run.path} is taken by a run that started at the same time; this run uses "
                      f"{claimed.path}[/]")
        cfg.paths.output_dir = str(claimed.path)
    return claimed


# ---------------------------------------------------------------------- the loop
class Trainer:
    """The state of one training run and its loop's duties (log, grid, evaluate,
    checkpoint), each a method, so that :func:`train` reads top to bottom."""

    def __init__(self, cfg: DictConfig, model: GenerativeModel, bundle: DataBundle, run: RunDir,
                 checkpoint: dict[str, Any] | None, *, member: bool = False) -> None:
        self.cfg, self.t, self.model, self.bundle, self.run = cfg, cfg.trainer, model, bundle, run
        self.max_steps = total_steps(cfg, bundle)
        self.optimizers = model.configure_optimizers()
        self.repeats = model.optimizer_repeats()
        self.params_of = {n: [p for g in o.param_groups for p in g["params"]] for n, o in self.optimizers.items()}
        self.max_norm = float(self.t.grad_clip) if self.t.grad_clip is not None else math.inf
        self.config = _config.to_container(cfg)
        self.step, batches_drawn, self.time_before, self.wandb_id = 0, 0, 0.0, None
        self.eval_history: list[dict[str, Any]] = []
        if checkpoint is not None:
            try:
                model.load_state_dict(checkpoint["model"])
            except RuntimeError as exc:
                raise GencompareError(f"{run.checkpoint} does not fit this {cfg.model.name} model: "
                                      f"{str(exc).splitlines()[0]}") from None
            for name, opt in self.optimizers.items():
                opt.load_state_dict(checkpoint["optimizers"][name])
            self.step, batches_drawn = int(checkpoint["step"]), int(checkpoint["batches_drawn"])
            self.time_before = float(checkpoint.get("train_time_s", 0.0))
            set_rng_state(checkpoint["rng"])
            self.wandb_id = checkpoint.get("wandb_id")
            self.eval_history = list(checkpoint.get("eval_history", []))
            self.last_logs = dict(checkpoint.get("last_logs", {}))
            if member:  # a seed-batch member's finish, not a resume the user asked for
                console.print(f"seed {cfg.seed} trained in the seed batch ({self.step} steps): its final grid "
                              f"and evaluation in {run.path}")
            else:
                console.print(f"resuming {run.checkpoint} at step {self.step}/{self.max_steps}")
        self.schedulers = warmup_schedulers(self.optimizers, int(self.t.get("lr_warmup_steps") or 0), self.step)
        self.flip = bool(cfg.dataset.get("random_flip")) and bundle.kind == "image"
        self.stream = BatchStream(bundle.train, int(self.t.batch_size), int(cfg.seed), batches_drawn)
        self.start_batches = batches_drawn
        self.parameters = {name: count_parameters(net) for name, net in model.networks().items()}
        device = model.device
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                         if self.t.precision == "bf16" and device.type == "cuda" else nullcontext())
        self.window = LogWindow()
        # the loop's intervals as plain ints: a DictConfig lookup per step costs more than the check
        metrics_on = bool(cfg.get("metrics") and cfg.metrics.enabled)
        self.every = {"log": int(self.t.log_every), "sample": int(self.t.sample_every),
                      "checkpoint": int(self.t.checkpoint_every),
                      "eval": int(self.t.eval_every) if self.t.eval_every and metrics_on else 0}
        if checkpoint is None:
            self.last_logs: dict[str, float] = {}
        self.tracker: Tracker = Tracker()
        self.grid_seed = int(cfg.seed) + 12345
        self.t0 = time.perf_counter()  # restarted when the loop starts
        self.loop_time = 0.0
        self.label = f"{cfg.model.name}/{bundle.variant}"  # the progress line's

    # -- one step: every optimizer in order (the GAN: k discriminator steps, then the generator)
    def training_step(self) -> None:
        logs: dict[str, Tensor | float] = {}
        measure = self.log_due(self.step + 1)
        for name, opt in self.optimizers.items():
            for _ in range(int(self.repeats.get(name, 1))):
                batch = self.next_batch()
                if self.flip:
                    batch = random_hflip(batch)
                if self.bundle.binarization == "dynamic":
                    batch = binarize(batch, "dynamic")
                with self.autocast:
                    loss, step_logs = self.model_step(batch, name)
                opt.zero_grad(set_to_none=True)
                self.backward(loss)
                norm = self.clip(name, measure)
                opt.step()
            logs.update(step_logs)
            if measure:
                logs[f"grad_norm/{name}"] = norm
                if self.schedulers:  # shaped as the norm: a seed batch logs one per member
                    logs[f"lr/{name}"] = torch.full_like(norm, opt.param_groups[0]["lr"])
        for scheduler in self.schedulers:
            scheduler.step()
        self.model.on_train_batch_end(self.step)
        self.step += 1
        self.window.add(self.step, loss, logs)

    # what a seed batch (gencompare.seeds.SeedBatchTrainer) does otherwise in a step
    def next_batch(self) -> Tensor:
        return next(self.stream)

    def model_step(self, batch: Tensor, name: str) -> tuple[Tensor, dict[str, Tensor | float]]:
        return self.model.training_step(batch, name)

    def backward(self, loss: Tensor) -> None:
        loss.backward()

    def clip(self, name: str, measure: bool) -> Tensor | None:
        return clip_and_measure(self.params_of[name], self.max_norm, measure)

    def due(self, every: int | None) -> bool:
        return bool(every) and self.step % every == 0

    def log_due(self, step: int) -> bool:
        """Whether ``step`` is a log step (every ``trainer.log_every`` and the last)."""
        return step % self.every["log"] == 0 or step == self.max_steps

    # -- the loop's duties
    def log(self, history) -> None:
        self.window.check_finite()
        self.last_logs = self.window.means()
        elapsed = time.perf_counter() - self.t0
        rate = (self.stream.batches_drawn - self.start_batches) * int(self.t.batch_size) / max(elapsed, 1e-9)
        record = {**{f"train/{k}": v for k, v in self.last_logs.items()},
                  "train/samples_per_s": rate, "train/epoch": self.stream.epoch}
        self.tracker.log(record, step=self.step)
        append_history(history, self.run, self.step, record)
        shown = [k for k in self.last_logs if not k.startswith("grad_norm")][:4]
        self.stats = {**{k: self.last_logs[k] for k in shown}, "ex/s": rate}

    def write_grid(self, tag: str, samples: Tensor | None = None):
        """The sample grid (images) or scatter plot (points) ``tag``, of ``samples`` when
        given, else of samples drawn from the grid's fixed seed (:func:`grid_samples`)."""
        n = int(self.t.num_grid_samples) if self.bundle.kind == "image" else 2500
        title = f"{self.cfg.model.name} on {self.bundle.variant}, step {self.step}"
        real = self.bundle.train[:5000] if self.bundle.kind == "points" else None  # drawn faint behind the samples
        if samples is None:
            samples = grid_samples(self.model, n, self.grid_seed)
        path = save_samples(samples, self.run.grid(tag),
                            means=self.bundle.means, std=self.bundle.std, real=real, seed=int(self.cfg.seed),
                            title=title, color=self.model.family_color)
        if self.cfg.logger.get("log_images", True):
            self.tracker.log_image("samples", path, step=self.step, caption=title)
        return path

    def evaluate(self) -> None:
        results = evaluate_and_log(self.cfg, self.model, self.bundle, self.run, self.tracker, self.step, final=False)
        self.eval_history.append({"step": self.step, **results})
        self.model.train()

    def checkpoint_state(self) -> dict[str, Any]:
        """What a checkpoint holds: model, optimizers, step and batch count, RNG, config, ..."""
        return {
            "family": self.cfg.model.name, "variant": self.bundle.variant, "step": self.step,
            "batches_drawn": self.stream.batches_drawn, "model": self.model.state_dict(),
            "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
            "rng": rng_state(), "config": self.config, "train_time_s": self.time_before + self.elapsed(),
            "wandb_id": getattr(self.tracker, "run_id", None), "data_shape": list(self.bundle.shape),
            "eval_history": self.eval_history, "last_logs": self.last_logs,
            "arch": getattr(self.model, "arch", None),
        }

    def save_checkpoint(self) -> None:
        self.window.check_finite()
        save_checkpoint(self.checkpoint_state(), self.run.checkpoint)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def loop(self, stop: StopRequest, history) -> None:
        """Train to ``max_steps`` or until a stop is requested (the checkpoint is then saved)."""
        every, last = self.every, self.max_steps
        self.stats = {}
        self.t0 = time.perf_counter()
        with TrainProgress(self.label, last, self.step,
                           enabled=bool(self.t.progress)) as progress, stop.deferring():
            self.model.train()
            while self.step < last:
                self.training_step()
                if self.log_due(self.step):
                    self.log(history)
                if self.due(every["sample"]) and self.step != last:
                    self.write_grid(f"step_{self.step:07d}")
                if self.due(every["eval"]) and self.step != last:
                    self.evaluate()
                if self.due(every["checkpoint"]) or self.step == last or stop.signum is not None:
                    self.save_checkpoint()
                progress.update(self.step, self.stats)
                if stop.signum is not None:
                    break
            self.loop_time = self.elapsed()  # steps/s counts the loop alone, not the final grid and evaluation

    def record(self, final_grid) -> RunMetrics:
        """The run's facts for ``metrics.json`` (its evaluation is added by :func:`train`)."""
        # rates over the whole run: a run resumed only for its evaluation keeps its own
        train_time = max(self.time_before + self.loop_time, 1e-9)
        return RunMetrics(
            status="finished", model=self.cfg.model.name, family=self.model.family,
            family_style=FamilyStyle.of(self.model), dataset=self.bundle.name,
            variant=self.bundle.variant, seed=int(self.cfg.seed), device=str(self.model.device),
            precision=str(self.t.precision), steps=self.step,
            epochs=self.stream.batches_drawn / max(1, self.stream.per_epoch), batch_size=int(self.t.batch_size),
            train_time_s=self.time_before + self.loop_time, steps_per_s=self.step / train_time,
            samples_per_s=self.stream.batches_drawn * int(self.t.batch_size) / train_time,
            final_losses=self.last_logs, parameters=self.parameters, parameters_total=sum(self.parameters.values()),
            data=self.bundle.describe(), sample_grid=str(final_grid.relative_to(self.run.path)),
            checkpoint=RunDir.CHECKPOINT,
            eval_history=[Evaluation.from_dict(e, "eval_history") for e in self.eval_history] or None,
        )


# ---------------------------------------------------------------------- training
def train(cfg: DictConfig, *, bundle: DataBundle | None = None, member: bool = False,
          stop: StopRequest | None = None) -> dict[str, Any]:
    """Train the family ``cfg.model`` on ``cfg.dataset`` and return the run's metrics.

    The importable entry of ``gencompare train`` for one seed (the CLI only composes ``cfg``;
    ``trainer.seed_batch > 1`` goes through :func:`gencompare.seeds.train`).

    Args:
        cfg: the composed ``conf/train.yaml``.
        bundle: data already prepared on the device (a seed batch's members share theirs).
        member: finish a seed-batch member (:mod:`gencompare.seeds`) from the checkpoint the
            batch left in its run dir: its config files are written already, and its W&B
            run gets the training curves from its ``history.jsonl``.
        stop: the signal handling of a caller that installed it already (a seed batch).

    Returns:
        The dict written to ``<run dir>/metrics.json`` (:class:`gencompare.record.RunMetrics`).
    Raises:
        GencompareError: bad input (values, device, data, resume state), reported by
            the CLI as one line; ``SystemExit(130 | 143)`` after SIGINT / SIGTERM, once
            the checkpoint is saved (anywhere from start-up to metrics.json).
    """
    if stop is not None:
        return _train(cfg, stop, bundle=bundle, member=member)
    stop = StopRequest()
    with stop.installed():  # SIGINT / SIGTERM from here to metrics.json: one line, exit 130 / 143
        try:
            return _train(cfg, stop, bundle=bundle, member=member)
        except Interrupted as exc:
            console.print(f"[yellow]interrupted ({exc}) {stop.where}[/]", highlight=False)
            raise SystemExit(exc.exit_code) from None


def replay_history(tracker: Tracker, path) -> None:
    """Log every record of a ``history.jsonl`` to ``tracker`` at its step (a seed-batch
    member's curves, written while the batch trained without a W&B run per member)."""
    if not path.is_file():
        return
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        step = record.pop("step", None)
        if isinstance(step, int):
            tracker.log(record, step=step)


def _train(cfg: DictConfig, stop: StopRequest, *, bundle: DataBundle | None = None,
           member: bool = False) -> dict[str, Any]:
    # set up or resume: every check before anything is written
    _config.validate(cfg)
    if int(cfg.trainer.get("seed_batch") or 1) > 1:
        raise GencompareError(f"trainer.seed_batch={cfg.trainer.seed_batch} trains several seeds: call "
                              "gencompare.seeds.train (what `gencompare train` does), not gencompare.runner.train")
    if cfg.get("metrics"):
        check_metrics_config(cfg.metrics, cfg.dataset.kind)
    device = resolve_device(cfg.device.name)
    run = RunDir(run_dir_of(cfg))
    run.check_folders()
    checkpoint = checkpoint_to_resume(cfg, run)
    if checkpoint is None:
        run = claim_run_dir(cfg, run)
    if cfg.trainer.precision == "bf16" and device.type != "cuda":
        console.print("[yellow]trainer.precision=bf16 applies on CUDA only; training in float32[/]")
    seed_everything(int(cfg.seed))
    bundle = bundle if bundle is not None else prepare_data(cfg)
    model = build_model(cfg, bundle).to(device)
    if checkpoint is not None:
        check_resume(checkpoint, cfg, bundle, run, model)
    if cfg.trainer.get("compile"):
        model.compile_networks()
    bundle.to(device)
    trainer = Trainer(cfg, model, bundle, run, checkpoint, member=member)
    if member:  # the seed batch wrote its config.yaml and overrides.yaml
        _config.save_hydra_records(cfg, run.path)
    else:
        save_run_config(cfg, run)  # only now that data and model are built: a rejected command leaves no files
    console.print(f"[bold]{cfg.model.name}[/] on [bold]{bundle.variant}[/] ({bundle.sizes()['train']} train) on "
                  f"{device}, {sum(trainer.parameters.values()):,} parameters, run dir {run.path}")
    for line in trim_history(run.history, trainer.step) if checkpoint is not None else []:
        console.print(f"[yellow]warning:[/] {line}")

    resume_hint = f"continue with the same command plus hydra.run.dir={run.path} trainer.resume=true"
    with make_tracker(cfg.logger, run_dir=run.path, config=trainer.config,
                      default_name=f"{cfg.model.name}-{bundle.variant}-s{cfg.seed}", group=_config.sweep_group(),
                      tags=[cfg.model.name, bundle.name, bundle.variant, *cfg.tags],
                      resume_id=trainer.wandb_id) as tracker:
        trainer.tracker = tracker
        if member:
            replay_history(tracker, run.history)
        tracker.summary({"variant": bundle.variant, **{f"parameters/{k}": v for k, v in trainer.parameters.items()}})
        # the loop
        stop.where = f"at step {trainer.step}/{trainer.max_steps}; no new checkpoint; {resume_hint}"
        try:
            with run.history.open("a") as history:
                trainer.loop(stop, history)
        except Interrupted:
            saved = stop.signum is not None  # the first signal: the loop saved the checkpoint
            tracker.summary({"status": "interrupted", "train/steps": trainer.step})
            stop.where = (f"at step {trainer.step}/{trainer.max_steps}; "
                          f"{'checkpoint saved to ' + str(run.checkpoint) if saved else 'no new checkpoint'}; {resume_hint}")
            raise

        # finish: the final grid, the evaluation, metrics.json
        stop.where = (f"after training ({trainer.step} steps, checkpoint saved); {resume_hint} "
                      "to draw the final grid and evaluate")
        # 2D points: the final scatter plot shows the samples the evaluation scores, drawn
        # once (a DDPM's 2,500 ancestral samples cost ~30 s of a CPU core: drawn twice before)
        drawn = None
        if bundle.kind == "points" and metrics_enabled(cfg):
            drawn = evaluation_samples(cfg.metrics, model, bundle.kind, int(cfg.seed))
        metrics = trainer.record(trainer.write_grid("samples", None if drawn is None else drawn[0]))
        if checkpoint is not None and checkpoint.get("seed_batch_member"):  # which batch trained this run
            metrics.extra["seed_batch"] = {k: v for k, v in checkpoint["seed_batch_member"].items() if k != "checkpoint"}
        results = evaluate_after_training(cfg, model, bundle, run, tracker, trainer.step, drawn=drawn)
        metrics.evaluation = Evaluation.from_dict(results, "evaluation") if results else None
        metrics.wandb = tracker.reference()
        write_metrics(metrics, run.metrics)
        out = metrics.to_dict()
        tracker.summary(summary_of(out))
        log_run_artifacts(tracker, run, out, model=bool(cfg.logger.get("log_model", True)))
        console.print(f"[green]done[/]: {trainer.step} steps in {metrics.train_time_s:.1f} s; {run.metrics}")
    return out
