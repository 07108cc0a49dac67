"""Seed batching (``trainer.seed_batch=S``): S independent runs of one family, seeds
``seed, seed+1, ..., seed+S-1``, trained in one process by the step strategy
:class:`~gencompare.train.stacked.StackedSeeds`.

GAN results swing from seed to seed (Lucic et al. 2018, "Are GANs Created Equal?"), so a
comparison needs many seeds; the 2D networks are small enough that S members stacked along
one more dimension train in fewer, larger matrix products than S separate runs.

Member i starts from the weights its own run would build (``seed_everything(seed + i)``
before the family's constructor, :func:`build_members`) and draws its own batches. A member
is not bit-identical to its separate run: its noise comes from one stacked draw, and the
batched matrix products round differently. What is the same (tested): the initial weights,
the order of the batches, and the distribution of the results (``tests/test_seed_batch.py``).

Records: member i writes the run dir its separate run would have had (:func:`member_dir`:
``..._s<seed>``), with its own ``history.jsonl`` during training; at the end an ordinary
checkpoint, ``config.yaml`` and the finish of a resumed run (final grid, evaluation,
``metrics.json``, its own W&B run in the sweep's group with the training curves replayed), so
``compare``, ``eval`` and ``sample`` see S ordinary runs. The job's dir (member 0's) also
holds ``checkpoints/seed_batch.ckpt``, all members with their optimizers and the RNG state,
from which ``trainer.resume=true`` continues the batch bit for bit on CPU.

A model that cannot be stacked (``seed_batch_refusal``, :class:`~gencompare.train.stacked.Stackable`;
``trainer.compile``) trains its members one after another, and says so in one line.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from gencompare import config as _config
from gencompare.build import build_model, prepare_data, resolve_device, run_dir_of, total_steps
from gencompare.checkpoint import load_checkpoint, rng_state, seed_everything
from gencompare.data import StackedStreams
from gencompare.errors import GencompareError
from gencompare.models.base import GenerativeModel, count_parameters
from gencompare.record import RunDir, trim_history
from gencompare.terminal import console
from gencompare.tracking import Tracker
from gencompare.train.loop import Loop
from gencompare.train.seed_records import (Members, StackedCheckpoint, StackedEval, StackedGrid, StackedLog,
                                           member_optimizer_state)
from gencompare.train.signals import StopRequest
from gencompare.train.stacked import StackedSeeds, refusal
from gencompare.train.state import TrainState, check_resume_keys
from gencompare.train.train import RunStart, check_config, claim_run_dir, interruptible, replay_history, \
    resume_hint, saying_where_on_stop, take_run_dir
from gencompare.train.train import train as train_one

__all__ = ["SEED_BATCH_CHECKPOINT", "build_members", "member_dir", "train", "train_seed_batch"]

SEED_BATCH_CHECKPOINT = "checkpoints/seed_batch.ckpt"  # in member 0's run dir: every member, optimizers, RNG


def member_dir(job_dir: Path, seed: int, member_seed: int) -> Path:
    """The run dir a separate run of ``member_seed`` would have had, next to ``job_dir``
    (the run dir of ``seed``): the job dir's name with its seed replaced (``..._s0`` ->
    ``..._s3``, a sweep job's ``...__seed-0`` -> ``...__seed-3``, ``seed=0`` -> ``seed=3``), or
    ``<name>_s<member_seed>`` when the name holds no seed. ``member_seed == seed`` is the job dir itself."""
    job_dir = Path(job_dir)
    if member_seed == seed:
        return job_dir
    name = job_dir.name
    for token in (f"_s{seed}", f"seed-{seed}", f"seed={seed}"):
        at = name.rfind(token)
        end = at + len(token)
        if at >= 0 and (end == len(name) or not name[end].isdigit()):
            new = token[: -len(str(seed))] + str(member_seed)
            return job_dir.with_name(name[:at] + new + name[end:])
    return job_dir.with_name(f"{name}_s{member_seed}")


def _member_config(cfg: DictConfig, seed: int, run_dir: Path, *, resume: bool) -> DictConfig:
    """``cfg`` as the separate run of ``seed`` in ``run_dir`` would have it; outside a sweep
    (whose group W&B uses already) the members' W&B runs share a group named after the batch."""
    member = copy.deepcopy(cfg)
    size = int(cfg.trainer.get("seed_batch") or 1)
    with open_dict(member):
        member.seed = int(seed)
        member.trainer.seed_batch = 1
        member.trainer.resume = resume
        member.paths.output_dir = str(run_dir)
        if member.get("logger") is not None and not member.logger.get("group") and _config.sweep_group() is None:
            member.logger.group = f"seeds-{cfg.model.name}-{cfg.dataset.name}-{int(cfg.seed)}-{int(cfg.seed) + size - 1}"
    return member


def _write_member_config(mcfg: DictConfig, run: RunDir, job_overrides: list[str] | None, seed: int) -> None:
    """The member's ``config.yaml`` and ``overrides.yaml`` as its separate run would write
    them (the seed its own, no ``trainer.seed_batch``)."""
    run.path.mkdir(parents=True, exist_ok=True)
    plain = copy.deepcopy(mcfg)
    with open_dict(plain):
        plain.trainer.resume = False
    if not run.config.exists():
        OmegaConf.save(OmegaConf.create(_config.to_container(plain)), run.config)
    if job_overrides is not None and not run.overrides.exists():
        kept = [o for o in job_overrides if o.split("=", 1)[0].lstrip("+~") not in ("seed", "trainer.seed_batch")]
        OmegaConf.save(OmegaConf.create([*kept, f"seed={seed}"]), run.overrides)


class MemberStart(RunStart):
    """A member's finish, not a resume the user asked for: the batch wrote its config files,
    and its W&B run gets the training curves from its ``history.jsonl``."""

    def write_config(self, cfg: DictConfig, run: RunDir) -> None:
        _config.save_hydra_records(cfg, run.path)

    def announce(self, cfg: DictConfig, run: RunDir, step: int, max_steps: int) -> None:  # noqa: ARG002
        console.print(f"seed {cfg.seed} trained in the seed batch ({step} steps): its final grid "
                      f"and evaluation in {run.path}")

    def replay(self, tracker: Tracker, run: RunDir) -> None:
        replay_history(tracker, run.history)


def train(cfg: DictConfig) -> dict[str, Any]:
    """``gencompare train``: :func:`train_seed_batch` when ``trainer.seed_batch > 1``, else
    :func:`gencompare.train.train.train` (one seed)."""
    if int(cfg.trainer.get("seed_batch") or 1) > 1:
        return train_seed_batch(cfg)
    return train_one(cfg)


def train_seed_batch(cfg: DictConfig) -> dict[str, Any]:
    """Train ``trainer.seed_batch`` members (seeds ``seed .. seed+S-1``) as one stacked run
    and finish each as an ordinary run (see the module doc).

    Returns:
        Member 0's ``metrics.json`` dict, with ``seed_batch`` listing every member's run dir
        and metrics.

    Raises:
        GencompareError: bad input as for :func:`gencompare.train.train.train`; a resume whose
            checkpoint is not a seed batch of the same size.
    """
    return interruptible(lambda stop: _train_seed_batch(cfg, stop))


def _in_turn(cfg: DictConfig, size: int, reason: str) -> dict[str, Any]:
    console.print(f"[yellow]trainer.seed_batch={size}: {reason}; training the {size} seeds one after another[/]",
                  highlight=False)
    job_dir, seed = run_dir_of(cfg), int(cfg.seed)
    results = []
    for s in range(seed, seed + size):
        mcfg = _member_config(cfg, s, member_dir(job_dir, seed, s), resume=bool(cfg.trainer.resume))
        results.append(train_one(mcfg))
    return {**results[0], "seed_batch": [{"seed": seed + i, "run_dir": r.get("run_dir")} for i, r in enumerate(results)]}


def build_members(cfg: DictConfig, device: torch.device | str = "cpu"):
    """Every member as its separate run builds it: ``seed_everything(seed)``, its data (its own
    draw where the data is drawn from the run seed, ``DataBundle.seeded``: the 2D mixtures;
    one shared bundle otherwise), then the family's constructor with its own config.

    Returns:
        ``(configs, bundles, models)``, one of each per member, seeds ``seed .. seed+S-1``.
    """
    seed, size = int(cfg.seed), int(cfg.trainer.seed_batch)
    job_dir = run_dir_of(cfg)
    mcfgs = [_member_config(cfg, s, member_dir(job_dir, seed, s), resume=False) for s in range(seed, seed + size)]
    seed_everything(seed)
    bundle = prepare_data(cfg)
    bundles = [bundle]
    for mcfg in mcfgs[1:]:
        seed_everything(int(mcfg.seed))
        bundles.append(prepare_data(mcfg) if bundle.seeded else bundle)
    members = []
    for mcfg, data in zip(mcfgs, bundles):
        seed_everything(int(mcfg.seed))
        members.append(build_model(mcfg, data).to(device))
    return mcfgs, bundles, members


def _batch_to_resume(cfg: DictConfig, job: RunDir, size: int) -> tuple[TrainState | None, list[RunDir]]:
    """The batch checkpoint ``trainer.resume=true`` continues and its members' run dirs, or
    ``(None, [])`` for a new batch.

    Raises:
        GencompareError: resume without the batch checkpoint, or one of other seeds or
            another family; a new batch pointed at a dir that holds a run.
    """
    seed, batch_ckpt = int(cfg.seed), job.path / SEED_BATCH_CHECKPOINT
    if not cfg.trainer.resume:
        if job.holds_run() or batch_ckpt.exists():
            raise GencompareError(f"{job.path} already holds a run; pass trainer.resume=true to continue it "
                                  "or choose another hydra.run.dir")
        return None, []
    if not batch_ckpt.is_file():
        raise GencompareError(f"trainer.resume=true with trainer.seed_batch={size} but {batch_ckpt} does not "
                              "exist; point hydra.run.dir at member 0's run dir (the first seed's)")
    take_run_dir(job)  # before the checkpoint is read: no other process may be writing it
    state = TrainState.from_dict(load_checkpoint(batch_ckpt, trust=bool(cfg.get("trust_checkpoint", False))))
    saved = state.seed_batch or {}
    if state.family != cfg.model.name or saved.get("seeds") != list(range(seed, seed + size)):
        raise GencompareError(f"{batch_ckpt} holds seeds {saved.get('seeds')} of a {state.family} "
                              f"model, not seeds {seed}..{seed + size - 1} of {cfg.model.name}")
    check_resume_keys(state.config or {}, _config.to_container(cfg), batch_ckpt)
    runs = [RunDir(p) for p in saved["dirs"]]
    for run in runs:
        take_run_dir(run)
    return state, runs


def _stacked_loop(cfg: DictConfig, members: Members, state: TrainState | None) -> Loop:
    """The loop of the stacked members, continuing the batch ``state`` where given."""
    stack, bundle = members.stack, members.bundles[0]
    max_steps = total_steps(cfg, bundle)
    optimizers = stack.model.configure_optimizers()
    if state is not None:
        state.restore(stack.model, optimizers, members.runs[0].checkpoint)
        RunStart().announce(cfg, members.runs[0], state.step, max_steps)
    step, drawn = (state.step, state.batches_drawn) if state is not None else (0, 0)
    stack.stream = StackedStreams([b.batches(int(cfg.trainer.batch_size), s, drawn)
                                   for b, s in zip(members.bundles, members.seeds)], bundle.transforms)
    loop = Loop(stack, optimizers, cfg.trainer, max_steps=max_steps, step=step)
    if state is not None:
        loop.time_before, loop.last_logs = float(state.train_time_s), dict(state.last_logs)
        loop.eval_history = list(state.eval_history)
        members.logs = (state.seed_batch or {}).get("member_logs") or members.logs
        members.evals = (state.seed_batch or {}).get("member_evals") or members.evals
    stack.read_host_state()  # after the checkpoint loaded: loading forgets the host copies
    return loop


def _set_up(cfg: DictConfig) -> tuple[Members, Loop, TrainState | None, torch.device] | dict[str, Any]:
    """Check, build and restore everything a stacked batch trains; the in-turn results
    instead when the model cannot be stacked."""
    size, seed = int(cfg.trainer.seed_batch), int(cfg.seed)
    check_config(cfg)
    device = resolve_device(cfg.device.name)
    job = RunDir(run_dir_of(cfg))
    job.check_folders()
    state, runs = _batch_to_resume(cfg, job, size)
    mcfgs, bundles, models = build_members(cfg, device)
    reason = refusal(models[0])
    if cfg.trainer.get("compile"):
        reason = reason or "trainer.compile compiles one network at a time"
    if reason is not None:
        return _in_turn(cfg, size, reason)
    shells = [build_model(mcfg, data).to(device) for mcfg, data in zip(mcfgs, bundles)]  # receive a member for its grid/eval
    if state is None:
        runs = [claim_run_dir(cfg, job)]
        runs += [RunDir(member_dir(runs[0].path, seed, s)).claim() for s in range(seed + 1, seed + size)]
        for run in runs:
            take_run_dir(run)
    stack = StackedSeeds(models)
    for data in {id(b): b for b in bundles}.values():
        data.to(device)
    seeds = [seed + i for i in range(size)]
    members = Members(stack, shells, bundles, runs, seeds, [_member_config(cfg, s, r.path, resume=True)
                                                            for s, r in zip(seeds, runs)])
    loop = _stacked_loop(cfg, members, state)
    overrides = _config.hydra_overrides()
    for s, run, mcfg in zip(seeds, runs, members.cfgs):
        _write_member_config(mcfg, run, overrides, s)
    return members, loop, state, device


def _train_seed_batch(cfg: DictConfig, stop: StopRequest) -> dict[str, Any]:
    built = _set_up(cfg)
    if isinstance(built, dict):
        return built
    members, loop, state, device = built
    runs, size, seed, bundles = members.runs, members.stack.size, int(cfg.seed), members.bundles
    parameters = {k: v // size for k, v in _parameters(members.stack.model).items()}  # one member's
    own_data = " (each its own draw of the data)" if bundles[0].seeded else ""
    console.print(f"[bold]{cfg.model.name}[/] on [bold]{bundles[0].variant}[/], {size} seeds ({seed}..{seed + size - 1}) "
                  f"stacked{own_data}, {sum(parameters.values()):,} parameters each, on {device}; "
                  f"run dirs {runs[0].path} .. {runs[-1].path.name}")

    hint = resume_hint(runs[0].path)
    batch_ckpt = runs[0].path / SEED_BATCH_CHECKPOINT
    stop.where = f"at step {loop.step}/{loop.max_steps}; no new checkpoint; {hint}"
    trained = loop.step < loop.max_steps
    if trained:
        for run in runs if state is not None else []:
            for line in trim_history(run.history, loop.step):  # lines logged after the checkpoint
                console.print(f"[yellow]warning:[/] {line}")
        files = [run.history.open("a") for run in runs]
        try:
            with saying_where_on_stop(stop, loop, batch_ckpt, hint):
                loop.callbacks = [StackedLog(members, files, int(cfg.trainer.batch_size)), StackedGrid(cfg, members),
                                  StackedEval(cfg, members), StackedCheckpoint(cfg, members, batch_ckpt)]
                loop.run(stop, f"{cfg.model.name}/{bundles[0].variant} x{size} seeds", progress=bool(cfg.trainer.progress))
        finally:
            for f in files:
                f.close()
        _save_member_checkpoints(cfg, members, loop, batch_ckpt)

    # finish: each member as a resumed run at its last step (grid, evaluation, metrics.json, W&B)
    stop.where = f"after training ({loop.step} steps, checkpoints saved); {hint} to finish the members"
    results = []
    for s, run, mcfg, data in zip(members.seeds, runs, members.cfgs, bundles):
        if run.metrics.is_file() and not trained:  # finished by the interrupted invocation
            results.append({"seed": s, "run_dir": str(run.path), "finished": "before"})
            continue
        if not run.checkpoint.is_file():  # resumed at max_steps from a batch checkpoint
            _save_member_checkpoints(cfg, members, loop, batch_ckpt)
        if trained and run.metrics.is_file():
            run.metrics.unlink()  # a longer run than the one that wrote it: finish again
        out = train_one(mcfg, bundle=data, stop=stop, start=MemberStart())
        results.append({"seed": s, "run_dir": str(run.path), "metrics": out})
    first = results[0].get("metrics") or {}
    return {**first, "seed_batch": results}


def _parameters(model: GenerativeModel) -> dict[str, int]:
    return {name: count_parameters(net) for name, net in model.networks().items()}


def _save_member_checkpoints(cfg: DictConfig, members: Members, loop: Loop, batch_ckpt: Path) -> None:
    """An ordinary checkpoint in every member's run dir, as its separate run would leave
    after its last step: what ``eval``, ``sample`` and the member's finish read. Its
    ``train_time_s`` is the member's share of the batch's loop (1/S of it), so rates and
    times in ``metrics.json`` are a run's cost; ``seed_batch.batch_train_time_s`` is the whole."""
    size, bundle = members.stack.size, members.bundles[0]
    optimizers = {n: o.state_dict() for n, o in loop.optimizers.items()}
    train_time = loop.time_before + loop.loop_time
    for i, seed, run, mcfg, model, _ in members.each():
        seed_everything(seed)  # the member's finish draws its grid and evaluation from its own seed
        TrainState(
            family=cfg.model.name, variant=bundle.variant, step=loop.step, batches_drawn=loop.stream.batches_drawn,
            model=model.state_dict(), optimizers={n: member_optimizer_state(s, i, size) for n, s in optimizers.items()},
            rng=rng_state(), config=_config.to_container(mcfg), train_time_s=train_time / size, wandb_id=None,
            data_shape=list(bundle.shape), eval_history=members.evals[i], last_logs=members.logs[i],
            arch=getattr(model, "arch", None),
            seed_batch_member={"size": size, "seeds": members.seeds, "index": i, "batch_train_time_s": train_time,
                               "checkpoint": str(batch_ckpt)},
        ).save(run.checkpoint)
