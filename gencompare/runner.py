"""The one training loop every family goes through.

It talks to a model only through the interface of :class:`gencompare.models.base.GenerativeModel`
(``configure_optimizers``, ``optimizer_repeats``, ``training_step``, ``on_train_batch_end``,
``sample``, ``log_likelihood``) and never asks which family it runs.

A run dir holds::

    .hydra/             the composed config (Hydra)
    checkpoints/last.ckpt   model, optimizers, step, RNG states, config (atomic writes)
    history.jsonl       the train/* scalars of every log step, one JSON object a line
    samples/step_*.png  sample grids (or 2D scatter plots) over training; samples.png at the end
    metrics.json        final losses, steps, wall time, samples/s, parameters, data, metrics
    wandb/              the W&B run files (logger=wandb)
"""
from __future__ import annotations

import json
import math
import os
import random
import signal
import time
import warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from gencompare import config as _config
from gencompare.data import BatchStream, DataBundle, apply_binarization, binarize, load_dataset
from gencompare.errors import GencompareError
from gencompare.models.base import GenerativeModel, count_parameters
from gencompare.plots import save_samples
from gencompare.tracking import Tracker, make_tracker

console = Console(stderr=True, soft_wrap=True)
CHECKPOINT = Path("checkpoints") / "last.ckpt"


# ------------------------------------------------------------------------ helpers
def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU.

    Raises:
        GencompareError: a device that is asked for by name is not available.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise GencompareError("device=cuda but no CUDA GPU is available here; use device=auto or device=cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise GencompareError("device=mps but Apple's MPS backend is not available here; use device=auto or device=cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_torch_save(obj: Any, path: Path) -> None:
    """Write with ``torch.save`` to a temp file in the same folder, then rename, so a
    crash or a signal mid-write never leaves a truncated checkpoint behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def atomic_write_json(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by the runner.

    Raises:
        GencompareError: the file is missing, truncated or not a gencompare checkpoint.
    """
    if not path.is_file():
        raise GencompareError(f"no checkpoint at {path}")
    try:
        # our own file: it holds numpy/python RNG states, which weights_only rejects
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - truncated zip, bad pickle, ...
        raise GencompareError(
            f"checkpoint {path} is unreadable ({type(exc).__name__}; truncated or corrupt); "
            "restore it or start a new run"
        ) from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "family" not in ckpt:
        raise GencompareError(f"{path} is not a gencompare checkpoint")
    return ckpt


class StopRequest:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each step, so an
    interrupted run saves a checkpoint and closes its W&B run before exiting.
    A second SIGINT aborts at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame):  # noqa: ARG002
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    @contextmanager
    def installed(self):
        import threading

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


def save_run_config(cfg: DictConfig, run_dir: Path) -> None:
    """Write ``config.yaml`` (resolved) and ``overrides.yaml`` (the command line) into the
    run dir once; a resumed run keeps the originals."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "config.yaml").exists():
        OmegaConf.save(OmegaConf.create(_config.to_container(cfg)), run_dir / "config.yaml")
    try:
        from hydra.core.hydra_config import HydraConfig

        overrides = list(HydraConfig.get().overrides.task)
    except Exception:  # noqa: BLE001 - outside a Hydra run
        return
    name = "overrides.yaml" if not (run_dir / "overrides.yaml").exists() else "overrides.resume.yaml"
    OmegaConf.save(OmegaConf.create(overrides), run_dir / name)


def keep_history_until(path: Path, step: int) -> None:
    """Drop ``history.jsonl`` lines logged after ``step`` (a resumed run logs them again)."""
    if not path.is_file():
        return
    kept = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
    path.write_text("".join(ln + "\n" for ln in kept))


def build_model(cfg: DictConfig, bundle: DataBundle) -> GenerativeModel:
    """Instantiate ``cfg.model.module`` for the data's shape.

    Raises:
        GencompareError: the family cannot model this dataset (its constructor's
            ValueError, reported in one line).
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


def prepare_data(cfg: DictConfig) -> DataBundle:
    """Load the dataset, print fallback warnings as one yellow line, apply the family's binarization."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bundle = load_dataset(cfg.dataset, seed=int(cfg.seed))
    for w in caught:
        if issubclass(w.category, UserWarning) and "offline sample" in str(w.message):
            console.print(f"[bold yellow]warning:[/] {w.message}")
    # a fixed seed (not the run's) for static binarization: every run sees the same binary data
    return apply_binarization(bundle, cfg.model.get("binarize", "none"), seed=0)


def total_steps(cfg: DictConfig, bundle: DataBundle) -> int:
    t = cfg.trainer
    if t.epochs is not None:
        return int(t.epochs) * max(1, len(bundle.train) // int(t.batch_size))
    return int(t.max_steps)


def run_dir_of(cfg: DictConfig) -> Path:
    try:
        return Path(cfg.paths.output_dir)
    except Exception as exc:  # noqa: BLE001 - ${hydra:...} outside a Hydra run
        raise GencompareError("paths.output_dir is not set (outside a Hydra run, set it explicitly)") from exc


def sweep_group() -> str | None:
    """The W&B group of a multirun job: its sweep dir's date and time."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        if hc.mode == RunMode.MULTIRUN:
            p = Path(hc.sweep.dir)
            return f"sweep-{p.parent.name}_{p.name}"
    except Exception:  # noqa: BLE001 - not inside Hydra
        pass
    return None


def grid_samples(model: GenerativeModel, n: int, seed: int) -> torch.Tensor:
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


# ---------------------------------------------------------------------- training
def train(cfg: DictConfig) -> dict[str, Any]:
    """Train the family ``cfg.model`` on ``cfg.dataset`` and return the run's metrics.

    The importable entry of ``gencompare train`` (the CLI only composes ``cfg``).

    Returns:
        The dict written to ``<run dir>/metrics.json``.
    Raises:
        GencompareError: bad input (values, device, data, resume state), reported by
            the CLI as one line; ``SystemExit(130 | 143)`` after SIGINT / SIGTERM, once
            the checkpoint is saved.
    """
    _config.validate(cfg)
    if cfg.get("metrics"):
        from gencompare.evaluate import check_metrics_config

        check_metrics_config(cfg.metrics, cfg.dataset.kind)
    device = resolve_device(cfg.device.name)
    run_dir = run_dir_of(cfg)
    ckpt_path = run_dir / CHECKPOINT
    resume = bool(cfg.trainer.resume)
    checkpoint = None
    if resume:
        if not ckpt_path.is_file():
            raise GencompareError(
                f"trainer.resume=true but {ckpt_path} does not exist; "
                "point hydra.run.dir at the run dir to continue"
            )
        checkpoint = load_checkpoint(ckpt_path)
        if checkpoint["family"] != cfg.model.name:
            raise GencompareError(f"{ckpt_path} holds a {checkpoint['family']} model, not {cfg.model.name}")
    elif ckpt_path.exists() or (run_dir / "metrics.json").exists():
        raise GencompareError(
            f"{run_dir} already holds a run; pass trainer.resume=true to continue it or choose another hydra.run.dir"
        )
    if cfg.trainer.precision == "bf16" and device.type != "cuda":
        console.print("[yellow]trainer.precision=bf16 applies on CUDA only; training in float32[/]")

    seed_everything(int(cfg.seed))
    bundle = prepare_data(cfg)
    max_steps = total_steps(cfg, bundle)
    stream_seed = int(cfg.seed)
    model = build_model(cfg, bundle).to(device)
    bundle.to(device)
    optimizers = model.configure_optimizers()
    repeats = model.optimizer_repeats()
    step, batches_drawn, elapsed_before, wandb_id = 0, 0, 0.0, None
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        for name, opt in optimizers.items():
            opt.load_state_dict(checkpoint["optimizers"][name])
        step, batches_drawn = int(checkpoint["step"]), int(checkpoint["batches_drawn"])
        elapsed_before = float(checkpoint.get("train_time_s", 0.0))
        set_rng_state(checkpoint["rng"])
        wandb_id = checkpoint.get("wandb_id")
        console.print(f"resuming {ckpt_path} at step {step}/{max_steps}")

    # only now that data and model are built: a rejected command leaves no files behind
    save_run_config(cfg, run_dir)
    config_dict = _config.to_container(cfg)
    parameters = {name: count_parameters(net) for name, net in model.networks().items()}
    tracker = make_tracker(
        cfg.logger, run_dir=run_dir, config=config_dict,
        default_name=f"{cfg.model.name}-{bundle.variant}-s{cfg.seed}", group=sweep_group(),
        tags=[cfg.model.name, bundle.name, bundle.variant, *cfg.tags], resume_id=wandb_id,
    )
    tracker.summary({"data/variant": bundle.variant, **{f"parameters/{k}": v for k, v in parameters.items()}})
    stream = BatchStream(bundle.train, int(cfg.trainer.batch_size), stream_seed, batches_drawn)
    dynamic = bundle.binarization == "dynamic"
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if cfg.trainer.precision == "bf16" and device.type == "cuda" else nullcontext()
    )
    params_of = {name: [p for g in opt.param_groups for p in g["params"]] for name, opt in optimizers.items()}
    clip = float(cfg.trainer.grad_clip) if cfg.trainer.grad_clip is not None else math.inf
    t = cfg.trainer
    window: dict[str, list[float]] = {}
    last_logs: dict[str, float] = {}
    stop = StopRequest()
    exit_code = 0
    grid_seed = int(cfg.seed) + 12345

    def save_checkpoint() -> None:
        atomic_torch_save({
            "family": cfg.model.name, "variant": bundle.variant, "step": step,
            "batches_drawn": stream.batches_drawn, "model": model.state_dict(),
            "optimizers": {n: o.state_dict() for n, o in optimizers.items()},
            "rng": rng_state(), "config": config_dict, "train_time_s": elapsed_before + (time.perf_counter() - t0),
            "wandb_id": getattr(tracker, "run_id", None), "data_shape": list(bundle.shape),
            "eval_history": eval_history,
        }, ckpt_path)

    def write_grid(tag: str) -> Path:
        s = grid_samples(model, int(t.num_grid_samples) if bundle.kind == "image" else 2500, grid_seed)
        title = f"{cfg.model.name} on {bundle.variant}, step {step}"
        path = save_samples(s, run_dir / "samples" / f"{tag}.png", means=bundle.means, title=title)
        if cfg.logger.get("log_images", True):
            tracker.log_image("samples", path, step=step, caption=title)
        return path

    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
        console=console, disable=not t.progress, transient=False,
    )
    console.print(
        f"[bold]{cfg.model.name}[/] on [bold]{bundle.variant}[/] ({bundle.sizes()['train']} train) "
        f"on {device}, {sum(parameters.values()):,} parameters, run dir {run_dir}"
    )
    history_path = run_dir / "history.jsonl"
    if checkpoint is not None:
        keep_history_until(history_path, step)
    history = history_path.open("a")
    eval_history: list[dict[str, Any]] = list(checkpoint.get("eval_history", [])) if checkpoint else []
    t0 = time.perf_counter()
    start_step, start_batches = step, stream.batches_drawn
    try:
        with stop.installed(), progress:
            task = progress.add_task(f"{cfg.model.name}/{bundle.variant}", total=max_steps, completed=step, stats="")
            model.train()
            while step < max_steps:
                logs: dict[str, float] = {}
                for name, opt in optimizers.items():
                    for _ in range(int(repeats.get(name, 1))):
                        batch = next(stream)
                        if dynamic:
                            batch = binarize(batch, "dynamic")
                        with autocast:
                            loss, step_logs = model.training_step(batch, name)
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        grad_norm = torch.nn.utils.clip_grad_norm_(params_of[name], clip)
                        opt.step()
                    logs.update(step_logs)
                    logs[f"grad_norm/{name}"] = float(grad_norm)
                model.on_train_batch_end(step)
                step += 1
                if not math.isfinite(float(loss.detach())):
                    raise GencompareError(
                        f"loss became {float(loss.detach())} at step {step}; lower the learning rate "
                        "(model.module.*optimizer.lr) or set trainer.grad_clip"
                    )
                for k, v in logs.items():
                    window.setdefault(k, []).append(float(v))
                if step % t.log_every == 0 or step == max_steps:
                    last_logs = {k: float(np.mean(v)) for k, v in window.items()}
                    window.clear()
                    elapsed = time.perf_counter() - t0
                    rate = (stream.batches_drawn - start_batches) * int(t.batch_size) / max(elapsed, 1e-9)
                    record = {**{f"train/{k}": v for k, v in last_logs.items()},
                              "train/samples_per_s": rate, "train/epoch": stream.epoch}
                    tracker.log(record, step=step)
                    history.write(json.dumps({"step": step, **record}) + "\n")
                    history.flush()
                    shown = [k for k in last_logs if not k.startswith("grad_norm")][:4]
                    progress.update(task, stats=" ".join(f"{k}={last_logs[k]:.3f}" for k in shown) + f" {rate:,.0f} ex/s")
                if step % t.sample_every == 0 and step != max_steps:
                    write_grid(f"step_{step:07d}")
                if t.eval_every and step % t.eval_every == 0 and step != max_steps and cfg.metrics.enabled:
                    results = run_evaluation(cfg, model, bundle, run_dir, tracker, step, final=False)
                    eval_history.append({"step": step, **results})
                    model.train()
                if step % t.checkpoint_every == 0 or step == max_steps or stop.signum is not None:
                    save_checkpoint()
                progress.update(task, completed=step)
                if stop.signum is not None:
                    break
    except KeyboardInterrupt:
        stop.signum = signal.SIGINT
        exit_code = 130
    except BaseException:
        tracker.finish(exit_code=1)
        raise
    finally:
        history.close()
    session_time = time.perf_counter() - t0  # the loop alone: steps/s excludes the final grid and evaluation
    train_time = elapsed_before + session_time

    if stop.signum is not None:
        exit_code = 128 + int(stop.signum)
        tracker.summary({"status": "interrupted", "train/steps": step})
        tracker.finish(exit_code=exit_code)
        console.print(
            f"[yellow]interrupted at step {step}/{max_steps}; checkpoint saved to {ckpt_path}; continue with "
            f"the same command plus hydra.run.dir={run_dir} trainer.resume=true[/]"
        )
        raise SystemExit(exit_code)

    try:
        final_grid = write_grid("samples")
        new_steps = step - start_step
        metrics: dict[str, Any] = {
            "status": "finished",
            "model": cfg.model.name,
            "family": model.family,
            "dataset": bundle.name,
            "variant": bundle.variant,
            "seed": int(cfg.seed),
            "device": str(device),
            "precision": str(cfg.trainer.precision),
            "steps": step,
            "epochs": stream.batches_drawn / max(1, stream.per_epoch),
            "batch_size": int(t.batch_size),
            "train_time_s": train_time,
            "steps_per_s": new_steps / max(session_time, 1e-9),
            "samples_per_s": (stream.batches_drawn - start_batches) * int(t.batch_size) / max(session_time, 1e-9),
            "final_losses": last_logs,
            "parameters": parameters,
            "parameters_total": sum(parameters.values()),
            "data": bundle.describe(),
            "sample_grid": str(final_grid.relative_to(run_dir)),
            "checkpoint": str(CHECKPOINT),
        }
        if eval_history:
            metrics["eval_history"] = eval_history
        metrics.update(evaluate_after_training(cfg, model, bundle, run_dir, tracker, step))
        atomic_write_json(metrics, run_dir / "metrics.json")
        tracker.summary(flatten_for_summary(metrics))
        console.print(f"[green]done[/]: {step} steps in {train_time:.1f} s; {run_dir / 'metrics.json'}")
    except BaseException:
        tracker.finish(exit_code=1)
        raise
    tracker.finish(exit_code=0)
    return metrics


def run_evaluation(cfg, model, bundle, run_dir, tracker, step, *, final: bool) -> dict[str, Any]:
    """Evaluate with ``cfg.metrics`` in a forked RNG (training's random stream is untouched,
    so evaluating never changes the trained weights) and log the scalars as ``eval/*``."""
    from gencompare.evaluate import evaluate_model

    devices = [model.device] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        results = evaluate_model(cfg.metrics, model, bundle, run_dir=run_dir, cache_dir=Path(cfg.paths.cache_dir),
                                 seed=int(cfg.seed), final=final)
    scalars = {f"eval/{k}": v for k, v in flatten_for_summary(results).items() if isinstance(v, (int, float))}
    tracker.log(scalars, step=step)
    if final and (run_dir / "parzen_sigma.png").is_file():
        tracker.log_image("eval/parzen_sigma", run_dir / "parzen_sigma.png", step=step)
    return results


def evaluate_after_training(cfg, model, bundle, run_dir, tracker, step) -> dict[str, Any]:
    """The final evaluation (``metrics`` group), printed as a table."""
    if not cfg.get("metrics") or not cfg.metrics.enabled:
        return {}
    from gencompare.evaluate import metrics_table, table_console

    console.print("evaluating ...")
    results = run_evaluation(cfg, model, bundle, run_dir, tracker, step, final=True)
    table_console().print(metrics_table(results, f"{cfg.model.name} on {bundle.variant}, step {step}"))
    return results


def flatten_for_summary(metrics: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested metrics into slash-separated W&B summary keys (``final_losses/d_loss``)."""
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_for_summary(value, f"{name}/"))
        elif isinstance(value, (int, float, str, bool)) or value is None:
            flat[name] = value
        elif isinstance(value, list) and all(isinstance(v, (int, float, str)) for v in value):
            flat[name] = value
    return flat
