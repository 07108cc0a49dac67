"""``train(cfg)``: one training run, read top to bottom (lightning-hydra-template's
``train.py`` shape): check the config, build each part (run dir, data, model, step strategy,
callbacks, tracker), hand them to the loop, then finish (final grid, evaluation,
``metrics.json``). What it writes into the run dir is :mod:`gencompare.record`'s contract;
checkpoints are :class:`gencompare.train.state.TrainState`'s.
"""
from __future__ import annotations

import json
import logging
import re
import shlex
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from rich.markup import escape

from gencompare import config as _config
from gencompare.build import build_model, prepare_data, resolve_device, run_dir_of, total_steps
from gencompare.checkpoint import seed_everything
from gencompare.data import DataBundle
from gencompare.evaluate import check_metrics_config, evaluate_after_training, evaluation_samples, metrics_enabled
from gencompare.models.base import GenerativeModel, count_parameters
from gencompare.record.lock import lock_run_dir, run_locks
from gencompare.record import Evaluation, FamilyStyle, RunDir, RunMetrics, trim_history, write_metrics
from gencompare.terminal import console
from gencompare.tracking import Tracker, log_run_artifacts, make_tracker, summary_of
from gencompare.train.callbacks import CheckpointCallback, EvalCallback, GridCallback, LogCallback
from gencompare.train.distributed import record_facts, step_strategy
from gencompare.train.loop import Loop
from gencompare.train.signals import Interrupted, StopRequest
from gencompare.train.stacked import check_one_seed
from gencompare.train.state import TrainState, check_resume, checkpoint_to_resume

__all__ = ["RunStart", "train"]

T = TypeVar("T")


def train(cfg: DictConfig, *, bundle: DataBundle | None = None, stop: StopRequest | None = None,
          start: RunStart | None = None) -> dict[str, Any]:
    """Train the family ``cfg.model`` on ``cfg.dataset`` (one seed) and return the run's metrics.

    Args:
        cfg: the composed ``conf/train.yaml``.
        bundle: data already prepared on the device (stacked seeds share theirs).
        stop: the signal handling of a caller that installed it already.
        start: how the run begins (:class:`RunStart` unless a caller hands over a run it trained).
    Returns:
        The dict written to ``<run dir>/metrics.json`` (:class:`gencompare.record.RunMetrics`).
    Raises:
        GencompareError: bad input (values, device, data, resume state), one line in the CLI;
            ``SystemExit(130 | 143)`` after SIGINT / SIGTERM, once the checkpoint is saved.
    """
    if stop is None:
        return interruptible(lambda stop: train(cfg, bundle=bundle, stop=stop, start=start))
    start = start or RunStart()
    # set up or resume: every check before anything is written
    check_config(cfg)
    check_one_seed(cfg)
    device = resolve_device(cfg.device.name)
    run, state = open_run_dir(cfg)
    warn_precision(cfg, device)
    seed_everything(int(cfg.seed))
    bundle = bundle if bundle is not None else prepare_data(cfg)
    model = build_model(cfg, bundle).to(device)
    if state is not None:
        check_resume(state, cfg, bundle, run, model)
    compiled = compile_model(cfg, model)
    bundle.to(device)
    loop = build_loop(cfg, model, bundle, state, run, start)
    loop.compile = compiled
    start.write_config(cfg, run)  # only now that data and model are built: a rejected command leaves no files
    parameters = announce(cfg, model, bundle, run, device, trimmed=state is not None, step=loop.step)

    hint = resume_hint(run.path)
    config = _config.to_container(cfg)
    with make_tracker(cfg.logger, run_dir=run.path, config={**config, "ran": ran_with(loop)},
                      default_name=f"{cfg.model.name}-{bundle.variant}-s{cfg.seed}", group=_config.sweep_group(),
                      tags=[cfg.model.name, bundle.name, bundle.variant, *cfg.tags],
                      resume_id=state.wandb_id if state is not None else None) as tracker:
        start.replay(tracker, run)
        tracker.summary({"variant": bundle.variant, **{f"parameters/{k}": v for k, v in parameters.items()}})
        grid = GridCallback(cfg, bundle, run, tracker)
        checkpoint = CheckpointCallback(run, tracker, int(cfg.trainer.checkpoint_every), family=cfg.model.name,
                                        variant=bundle.variant, config=config, data_shape=list(bundle.shape),
                                        arch=getattr(model, "arch", None))
        # the loop
        stop.where = f"at step {loop.step}/{loop.max_steps}; no new checkpoint; {hint}"
        with run.history.open("a") as history, saying_where_on_stop(stop, loop, run.checkpoint, hint, tracker):
            loop.callbacks = [LogCallback(run, history, tracker, int(cfg.trainer.batch_size)), grid,
                              EvalCallback(cfg, bundle, run, tracker), checkpoint]
            loop.run(stop, f"{cfg.model.name}/{bundle.variant}", progress=bool(cfg.trainer.progress))

        # finish: the final grid, the evaluation, metrics.json
        stop.where = f"after training ({loop.step} steps, checkpoint saved); {hint} to draw the final grid and evaluate"
        return finish(cfg, loop, bundle, run, tracker, grid, parameters, state)


class RunStart:
    """How a run begins: its config files, the line that says it resumes, and what its
    tracker is given first. A new or resumed run: the config files written once
    (:func:`save_run_config`), "resuming ... at step ...", nothing replayed."""

    def write_config(self, cfg: DictConfig, run: RunDir) -> None:
        save_run_config(cfg, run)

    def announce(self, cfg: DictConfig, run: RunDir, step: int, max_steps: int) -> None:
        """Said when the run continues a checkpoint."""
        console.print(f"resuming {run.checkpoint} at step {step}/{max_steps}")

    def replay(self, tracker: Tracker, run: RunDir) -> None:
        """Log what the tracker has not seen yet (nothing, for a run that logged its own)."""


def interruptible(run: Callable[[StopRequest], T]) -> T:
    """``run(stop)`` with SIGINT / SIGTERM handled from here to its end: one line saying
    where the run stopped (``stop.where``), then exit 130 / 143."""
    stop = StopRequest()
    with stop.installed(), run_locks():  # the run dirs locked inside are released when the run ends
        try:
            return run(stop)
        except Interrupted as exc:
            console.print(f"[yellow]interrupted ({exc}) {escape(stop.where)}[/]", highlight=False)
            raise SystemExit(exc.exit_code) from None


def resume_hint(run_dir: Path) -> str:
    """``continue with the same command plus hydra.run.dir=... trainer.resume=true``, the
    override quoted for Hydra (a dir name with a space, quote, ``$``, ``=`` or bracket) and
    for the shell (:func:`shlex.quote`), so the line pastes as it is."""
    return f"continue with the same command plus {shell_override('hydra.run.dir', run_dir)} trainer.resume=true"


def shell_override(key: str, value: Any) -> str:
    """``key=value`` as one shell word that Hydra reads back as ``value``: the value in
    Hydra's double quotes when its grammar would split or interpret it, then quoted for
    the shell. A plain path stays as it is (``hydra.run.dir=outputs/runs/...``)."""
    text = str(value)
    if not re.fullmatch(r"[\w./+@%:-]*", text):
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${") + '"'
    return shlex.quote(f"{key}={text}")


@contextmanager
def saying_where_on_stop(stop: StopRequest, loop: Loop, checkpoint: Path, hint: str, tracker: Tracker | None = None):
    """Around the loop: on :class:`Interrupted`, record the status on the tracker and say in
    ``stop.where`` whether the checkpoint was saved (the first signal: the loop saved it)."""
    try:
        yield
    except Interrupted:
        # saved only when the checkpoint of this very step was written: a second Ctrl-C may
        # cut the loop before the checkpoint callback ran, or in the middle of its write
        saved = loop.saved_step == loop.step
        if tracker is not None:
            tracker.summary({"status": "interrupted", "train/steps": loop.step})
        stop.where = (f"at step {loop.step}/{loop.max_steps}; "
                      f"{'checkpoint saved to ' + shlex.quote(str(checkpoint)) if saved else 'no new checkpoint'}; "
                      f"{hint}")
        raise


def open_run_dir(cfg: DictConfig) -> tuple[RunDir, TrainState | None]:
    """The run dir and the state it continues (``trainer.resume=true``), or the dir claimed
    for a new run and None (see :func:`checkpoint_to_resume`, :func:`claim_run_dir`)."""
    run = RunDir(run_dir_of(cfg))
    run.check_folders()
    if cfg.trainer.resume and run.path.is_dir():
        take_run_dir(run)  # before the checkpoint is read: no other process may be writing it
    state = checkpoint_to_resume(cfg, run)
    if state is None:
        run = claim_run_dir(cfg, run)
        take_run_dir(run)
    return run, state


def take_run_dir(run: RunDir) -> None:
    """Lock ``run`` for this process (:func:`gencompare.record.lock.lock_run_dir`), then sweep
    the temp files a killed writer left there (no other writer can be alive now)."""
    lock_run_dir(run.path, "train")
    run.sweep_temp_files()


def warn_precision(cfg: DictConfig, device) -> None:
    if cfg.trainer.precision == "bf16" and device.type != "cuda":
        console.print("[yellow]trainer.precision=bf16 applies on CUDA only; training in float32[/]")


def compile_model(cfg: DictConfig, model: GenerativeModel) -> str:
    """``trainer.compile=true``: ``torch.compile`` the family's networks where TorchDynamo
    runs on this Python and platform (said in one line where it does not). Returns the
    compile state the record starts from: ``off``, ``on``, or ``eager (<why>)``."""
    if not cfg.trainer.get("compile"):
        return "off"
    try:
        import torch._dynamo

        supported = bool(torch._dynamo.is_dynamo_supported())
    except Exception:  # noqa: BLE001 - an import or platform failure means the same: no compiler
        supported = False
    if not supported:
        console.print("[yellow]trainer.compile=true: torch.compile is not available here; training eagerly[/]")
        return "eager (torch.compile unavailable)"
    from torch._dynamo.utils import counters

    _COMPILED_BEFORE[id(model)] = counters["stats"]["unique_graphs"]  # the process's count: earlier runs' too
    model.compile_networks()
    return "on"


_COMPILED_BEFORE: dict[int, int] = {}  # id(model) -> graphs TorchDynamo had compiled when it was compiled


def compile_ran(requested: str, model: GenerativeModel) -> str:
    """The compile state after training: ``on`` only when TorchDynamo compiled a graph since
    ``model`` was compiled (it falls back to eager on an error it suppresses), else
    ``eager (torch.compile fell back)``."""
    if requested != "on":
        return requested
    from torch._dynamo.utils import counters

    before = _COMPILED_BEFORE.pop(id(model), 0)
    return "on" if counters["stats"]["unique_graphs"] > before else "eager (torch.compile fell back)"


def ran_with(loop: Loop) -> dict[str, str]:
    """What the run uses, as opposed to what was asked: device, precision, compile state
    (the W&B config's ``ran`` block; ``metrics.json`` records the same at the end)."""
    return {"device": str(loop.model.device), "precision": loop.precision, "compile": loop.compile}


def announce(cfg: DictConfig, model: GenerativeModel, bundle: DataBundle, run: RunDir, device, *, trimmed: bool,
             step: int) -> dict[str, int]:
    """Say what trains where; on a resumed run, drop the history lines logged after its
    checkpoint (warning of any partial one). Returns the parameter count of each network."""
    parameters = {name: count_parameters(net) for name, net in model.networks().items()}
    console.print(f"[bold]{cfg.model.name}[/] on [bold]{bundle.variant}[/] ({bundle.sizes()['train']} train) on "
                  f"{device}, {sum(parameters.values()):,} parameters, run dir {run.path}")
    for line in trim_history(run.history, step) if trimmed else []:
        console.print(f"[yellow]warning:[/] {line}")
    return parameters


def check_config(cfg: DictConfig) -> None:
    """The config's values (:func:`gencompare.config.validate`) and metrics, before anything runs."""
    _config.validate(cfg)
    if cfg.get("metrics"):
        check_metrics_config(cfg.metrics, cfg.dataset.kind)


def build_loop(cfg: DictConfig, model: GenerativeModel, bundle: DataBundle, state: TrainState | None, run: RunDir,
               start: RunStart) -> Loop:
    """The loop of one model on its own batch stream, continuing ``state`` where given."""
    max_steps = total_steps(cfg, bundle)
    optimizers = model.configure_optimizers()
    if state is not None:
        state.restore(model, optimizers, run.checkpoint)
        start.announce(cfg, run, state.step, max_steps)
    step, drawn = (state.step, state.batches_drawn) if state is not None else (0, 0)
    stream = bundle.batches(int(cfg.trainer.batch_size), int(cfg.seed), drawn, transforms=bundle.transforms)
    # one process: OneModel; under torchrun / trainer.devices=N: DataParallel (gencompare.train.distributed)
    loop = Loop(step_strategy(cfg, model, stream, optimizers, run.path), optimizers, cfg.trainer, max_steps=max_steps,
                step=step)
    if state is not None:
        loop.time_before, loop.last_logs = float(state.train_time_s), dict(state.last_logs)
        loop.eval_history = list(state.eval_history)
    return loop


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


def claim_run_dir(cfg: DictConfig, run: RunDir) -> RunDir:
    """Make the run dir this run's own (:meth:`RunDir.claim`); when another run started in
    the same second took it, say so and use the distinct dir it got."""
    claimed = run.claim()
    if claimed.path != run.path:
        repoint_job_log(run.path, claimed.path)  # first: the line below goes to the claimed dir's log
        console.print(f"[yellow]{escape(str(run.path))} is taken by a run that started at the same time; this run "
                      f"uses {escape(str(claimed.path))}[/]")
        cfg.paths.output_dir = str(claimed.path)
    return claimed


def repoint_job_log(old: Path, new: Path) -> None:
    """Move Hydra's job log (``hydra.job_logging``'s file handler, ``<run dir>/train.log``)
    from the dir Hydra made to the dir the run claimed: from now on its lines go there."""
    old = Path(old).resolve()
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == old:
            with _handler_lock(handler):
                handler.close()
                handler.baseFilename = str(Path(new).resolve() / Path(handler.baseFilename).name)
                handler.stream = handler._open()


@contextmanager
def _handler_lock(handler: logging.Handler):
    handler.acquire()
    try:
        yield
    finally:
        handler.release()


def replay_history(tracker: Tracker, path) -> None:
    """Log every record of a ``history.jsonl`` to ``tracker`` at its step (curves written
    while the run trained without a tracker of its own)."""
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


def run_metrics(cfg: DictConfig, loop: Loop, bundle: DataBundle, run: RunDir, parameters: dict[str, int],
                final_grid) -> RunMetrics:
    """The run's facts for ``metrics.json`` (its evaluation is added by :func:`finish`)."""
    # rates over the whole run: a run resumed only for its evaluation keeps its own
    train_time = max(loop.time_before + loop.loop_time, 1e-9)
    stream, batch_size = loop.stream, int(cfg.trainer.batch_size)
    return RunMetrics(
        status="finished", model=cfg.model.name, family=loop.model.family,
        family_style=FamilyStyle.of(loop.model), dataset=bundle.name,
        variant=bundle.variant, seed=int(cfg.seed), device=str(loop.model.device),
        precision=loop.precision, compile=compile_ran(loop.compile, loop.model), steps=loop.step,
        epochs=stream.batches_drawn / max(1, stream.per_epoch), batch_size=batch_size,
        train_time_s=loop.time_before + loop.loop_time, steps_per_s=loop.step / train_time,
        samples_per_s=stream.batches_drawn * batch_size / train_time,
        final_losses=loop.last_logs, parameters=parameters, parameters_total=sum(parameters.values()),
        data=bundle.describe(), sample_grid=str(final_grid.relative_to(run.path)),
        checkpoint=RunDir.CHECKPOINT,
        eval_history=[Evaluation.from_dict(e, "eval_history") for e in loop.eval_history] or None,
    )


def finish(cfg: DictConfig, loop: Loop, bundle: DataBundle, run: RunDir, tracker: Tracker, grid: GridCallback,
           parameters: dict[str, int], state: TrainState | None) -> dict[str, Any]:
    """The final grid, the final evaluation and ``metrics.json``; the summary and the run's
    files to the tracker. Returns the dict written."""
    model = loop.model
    # 2D points: the final scatter plot shows the samples the evaluation scores, drawn
    # once (a DDPM's 2,500 ancestral samples cost ~30 s of a CPU core: drawn twice before)
    drawn = None
    if bundle.kind == "points" and metrics_enabled(cfg):
        drawn = evaluation_samples(cfg.metrics, model, bundle.kind, int(cfg.seed))
    metrics = run_metrics(cfg, loop, bundle, run, parameters,
                          grid.write(loop, "samples", None if drawn is None else drawn[0]))
    metrics.extra.update(state.provenance() if state is not None else {})
    metrics.extra.update(record_facts(cfg))  # world_size, batch_size_per_rank of a data-parallel run
    results = evaluate_after_training(cfg, model, bundle, run, tracker, loop.step, drawn=drawn)
    metrics.evaluation = Evaluation.from_dict(results, "evaluation") if results else None
    metrics.wandb = tracker.reference()
    write_metrics(metrics, run.metrics)
    out = metrics.to_dict()
    tracker.summary(summary_of(out))
    log_run_artifacts(tracker, run, out, model=bool(cfg.logger.get("log_model", True)))
    console.print(f"[green]done[/]: {loop.step} steps in {metrics.train_time_s:.1f} s; {run.metrics}")
    return out
