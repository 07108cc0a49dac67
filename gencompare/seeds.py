"""Seed batching (``trainer.seed_batch=S``): S independent members of one family, seeds
``seed, seed+1, ..., seed+S-1``, trained in one process as one stacked model.

GAN results swing from seed to seed (Lucic et al. 2018, "Are GANs Created Equal?"), so a
comparison needs many seeds; the 2D networks are small enough that S members stacked along
one more dimension train in fewer, larger matrix products than S separate runs.

How a member stays an independent run:

- every parameter and buffer gets a leading member dimension ``(S, ...)``; member i starts
  from the weights its own run would build (``seed_everything(seed + i)`` before the family's
  constructor, as :func:`gencompare.runner.train` does);
- one step runs the family's own ``training_step`` once per member under
  ``torch.func.vmap`` (``functional_call`` over the member's slices), on the member's own
  batch (its own :class:`~gencompare.data.BatchStream`, seeded as its separate run's, so the
  same order of examples) and its own noise (``randomness="different"``);
- the S losses are summed before ``backward``: member i's gradient is that of its own loss
  alone; the family's optimizers over the stacked tensors are S independent optimizers, since
  every torch optimizer the configs use (SGD, Adam, AdamW, RMSprop) updates element-wise;
  gradient clipping and the logged gradient norms are per member (:func:`clip_members`);
- ``on_train_batch_end`` runs once on the stacked tensors (the DDPM's EMA is element-wise).

A member is not bit-identical to its separate run: its noise comes from one stacked draw,
and the batched matrix products round differently. What is the same (tested): the initial
weights, the order of the batches, and the distribution of the results
(``tests/test_seed_batch.py``).

Records: member i writes the run dir its separate run would have had (:func:`member_dir`:
``..._s<seed>``), with its own ``history.jsonl`` during training; at the end an ordinary
checkpoint, ``config.yaml`` and the finish of a resumed run (final grid, evaluation,
``metrics.json``, its own W&B run in the sweep's group with the training curves replayed), so
``compare``, ``eval`` and ``sample`` see S ordinary runs. The job's dir (member 0's) also
holds ``checkpoints/seed_batch.ckpt``, all members with their optimizers and the RNG state,
from which ``trainer.resume=true`` continues the batch bit for bit on CPU.

A model whose step reads per-member state beyond its parameters and buffers hands it over
as :meth:`GenerativeModel.member_inputs` (the unrolled GAN: its discriminator's Adam
moments, which the vmap slices per member). A model that cannot be stacked
(:meth:`GenerativeModel.seed_batch_refusal`; ``trainer.compile``) trains its members one
after another, and says so in one line.
"""
from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import Tensor, nn
from torch.func import functional_call, vmap

from gencompare import config as _config
from gencompare.build import build_model, prepare_data, resolve_device, run_dir_of
from gencompare.checkpoint import load_checkpoint, rng_state, save_checkpoint, seed_everything
from gencompare.data import BatchStream, DataBundle
from gencompare.errors import GencompareError
from gencompare.evaluate import check_metrics_config, evaluate_and_log
from gencompare.models.base import GenerativeModel
from gencompare.plots import save_samples
from gencompare.record import RunDir, trim_history
from gencompare.runner import Interrupted, StopRequest, Trainer, append_history, claim_run_dir, grid_samples
from gencompare.runner import train as run_training
from gencompare.terminal import console
from gencompare.tracking import Tracker

__all__ = ["MemberStack", "clip_members", "member_dir", "train", "train_seed_batch", "SEED_BATCH_CHECKPOINT"]

SEED_BATCH_CHECKPOINT = "checkpoints/seed_batch.ckpt"  # in member 0's run dir: every member, optimizers, RNG


def member_dir(job_dir: Path, seed: int, member_seed: int) -> Path:
    """The run dir a separate run of ``member_seed`` would have had, next to ``job_dir``
    (the run dir of ``seed``): the job dir's name with its seed replaced (``..._s0`` ->
    ``..._s3``, a sweep job's ``...__seed-0`` -> ``...__seed-3``, ``seed=0`` -> ``seed=3``), or ``<name>_s<member_seed>`` when the name holds
    no seed. ``member_seed == seed`` is the job dir itself."""
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


def _set_tensor(module: nn.Module, name: str, value: Tensor, *, parameter: bool) -> None:
    *path, last = name.split(".")
    owner = module.get_submodule(".".join(path)) if path else module
    (owner._parameters if parameter else owner._buffers)[last] = value


class _Step(nn.Module):
    """``functional_call`` calls ``forward``: this one is the family's ``training_step``."""

    def __init__(self, model: GenerativeModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Tensor, name: str):
        return self.model.training_step(batch, name)


class MemberStack:
    """S models of one family as one: ``members[0]`` becomes the host whose parameters and
    buffers are the members' stacked along a new first dimension of size S.

    Args:
        members: S models built with the same config (and their own seeds), on one device.

    Raises:
        GencompareError: fewer than 2 members, or a member whose parameters differ in name
            or shape from the first's.
    """

    def __init__(self, members: list[GenerativeModel]) -> None:
        if len(members) < 2:
            raise GencompareError("a seed batch needs at least 2 members (trainer.seed_batch >= 2)")
        self.size = len(members)
        self.model = host = members[0]
        with torch.no_grad():
            for name, p in list(host.named_parameters()):
                try:
                    stacked = torch.stack([m.get_parameter(name).detach() for m in members])
                except (AttributeError, RuntimeError) as exc:
                    raise GencompareError(f"seed batch members differ at parameter {name}: {exc}") from None
                _set_tensor(host, name, nn.Parameter(stacked, requires_grad=p.requires_grad), parameter=True)
            for name, _ in list(host.named_buffers()):
                _set_tensor(host, name, torch.stack([m.get_buffer(name) for m in members]), parameter=False)
        for m in host.modules():  # read by the family code that must behave under vmap
            m.vmapped = True
        self._step = _Step(host)

    def training_step(self, batches: Tensor, name: str) -> tuple[Tensor, dict[str, Tensor]]:
        """The family's ``training_step`` of every member at once.

        Args:
            batches: ``(S, B, *data_shape)``, member i's batch at ``[i]``.
            name: the optimizer, as for :meth:`GenerativeModel.training_step`.

        Returns:
            ``(losses, logs)``: ``(S,)`` losses (sum them for ``backward``) and the family's
            logs, each a ``(S,)`` tensor.
        """
        params = {f"model.{k}": v for k, v in self.model.named_parameters()}
        buffers = {f"model.{k}": v for k, v in self.model.named_buffers()}
        extra = self.model.member_inputs()  # e.g. the unrolled GAN's Adam moments, (S, ...) each

        def member(p: dict[str, Tensor], b: dict[str, Tensor], e: dict[str, Tensor], x: Tensor):
            self.model.member_slices = e
            try:
                return functional_call(self._step, (p, b), (x, name))
            finally:
                self.model.member_slices = None

        return vmap(member, randomness="different")(params, buffers, extra, batches)

    def member_state(self, i: int) -> dict[str, Tensor]:
        """Member ``i``'s ``state_dict``: the keys and shapes of one model of the family."""
        return {k: v[i].clone() for k, v in self.model.state_dict().items()}

    def load_member(self, i: int, model: GenerativeModel) -> GenerativeModel:
        """Copy member ``i`` into ``model`` (an ordinary model of the same config); returns it."""
        model.load_state_dict(self.member_state(i))
        return model


def clip_members(params: list[Tensor], size: int, max_norm: float, measure: bool) -> Tensor | None:
    """Per-member gradient clipping of stacked ``params`` (each ``(S, ...)``): member i's
    gradients are scaled by ``min(1, max_norm / (norm_i + 1e-6))`` with ``norm_i`` the total
    L2 norm of its own gradients, as ``torch.nn.utils.clip_grad_norm_`` does for one model.

    Returns:
        The ``(S,)`` norms before clipping when ``measure`` or clipping (a device tensor:
        no host sync), else None.
    """
    clipping = not math.isinf(max_norm)
    if not clipping and not measure:
        return None
    grads = [p.grad for p in params if p.grad is not None]
    norms = torch.stack([g.reshape(size, -1).norm(dim=1) for g in grads]).norm(dim=0)  # (S,)
    if clipping:
        coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(coef.view(size, *([1] * (g.dim() - 1))))
    return norms


def member_optimizer_state(state: dict[str, Any], i: int, size: int) -> dict[str, Any]:
    """Member ``i``'s share of a stacked optimizer's ``state_dict``: every per-parameter
    tensor of the stacked shape ``(S, ...)`` sliced, the rest (Adam's step count) copied."""
    def pick(v: Any) -> Any:
        return v[i].clone() if torch.is_tensor(v) and v.dim() >= 1 and v.shape[0] == size else copy.deepcopy(v)

    return {"state": {idx: {k: pick(v) for k, v in s.items()} for idx, s in state["state"].items()},
            "param_groups": copy.deepcopy(state["param_groups"])}


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


class SeedBatchTrainer(Trainer):
    """:class:`~gencompare.runner.Trainer` for a :class:`MemberStack`: S batch streams, one
    vmapped step, per-member logs, grids, evaluations and histories, one checkpoint of all."""

    def __init__(self, cfg: DictConfig, stack: MemberStack, shells: list[GenerativeModel],
                 bundles: list[DataBundle], runs: list[RunDir], checkpoint: dict[str, Any] | None) -> None:
        super().__init__(cfg, stack.model, bundles[0], runs[0], checkpoint)
        self.bundles = bundles  # member i's data: its own draw where the data is drawn from the seed
        self.stack, self.shells, self.runs, self.size = stack, shells, runs, stack.size
        self.seeds = [int(cfg.seed) + i for i in range(self.size)]
        self.member_cfgs = [_member_config(cfg, s, r.path, resume=True) for s, r in zip(self.seeds, runs)]
        drawn = self.stream.batches_drawn
        self.streams = [BatchStream(b.train, int(self.t.batch_size), s, drawn) for b, s in zip(bundles, self.seeds)]
        self.stream = self.streams[0]  # batches_drawn, epoch and per_epoch are every member's
        self.parameters = {k: v // self.size for k, v in self.parameters.items()}  # one member's
        self.label = f"{cfg.model.name}/{bundles[0].variant} x{self.size} seeds"
        state = checkpoint.get("seed_batch", {}) if checkpoint is not None else {}
        self.member_logs: list[dict[str, float]] = state.get("member_logs") or [{} for _ in self.seeds]
        self.member_evals: list[list[dict[str, Any]]] = state.get("member_evals") or [[] for _ in self.seeds]

    # the runner's step (Trainer.training_step) with these four parts per member
    def next_batch(self) -> Tensor:
        return torch.stack([next(s) for s in self.streams])  # (S, B, *data_shape): member i's at [i]

    def model_step(self, batch: Tensor, name: str) -> tuple[Tensor, dict[str, Tensor]]:
        return self.stack.training_step(batch, name)  # (S,) losses, (S,) logs

    def backward(self, loss: Tensor) -> None:
        loss.sum().backward()  # member i's gradient is its own loss's alone

    def clip(self, name: str, measure: bool) -> Tensor | None:
        return clip_members(self.params_of[name], self.size, self.max_norm, measure)

    def log(self, histories) -> None:
        self.window.check_finite()
        values = {k: torch.stack([v.float() for v in vs]).mean(dim=0).tolist() for k, vs in self.window.values.items()}
        self.window.values.clear()  # one host read for every member's means
        self.member_logs = [{k: v[i] for k, v in values.items()} for i in range(self.size)]
        self.last_logs = {k: sum(v) / self.size for k, v in values.items()}  # the progress line shows the mean
        elapsed = time.perf_counter() - self.t0
        rate = (self.stream.batches_drawn - self.start_batches) * int(self.t.batch_size) / max(elapsed, 1e-9)
        for run, history, logs in zip(self.runs, histories, self.member_logs):
            record = {**{f"train/{k}": v for k, v in logs.items()}, "train/samples_per_s": rate,
                      "train/epoch": self.stream.epoch}
            append_history(history, run, self.step, record)
        shown = [k for k in self.last_logs if not k.startswith("grad_norm")][:4]
        self.stats = {**{k: self.last_logs[k] for k in shown}, "ex/s": rate * self.size}

    def members(self):
        """``(i, seed, run, member cfg, ordinary model holding member i, its data)`` for every member."""
        for i, (seed, run, mcfg, shell) in enumerate(zip(self.seeds, self.runs, self.member_cfgs, self.shells)):
            yield i, seed, run, mcfg, self.stack.load_member(i, shell), self.bundles[i]

    def write_grid(self, tag: str):
        n = int(self.t.num_grid_samples) if self.bundle.kind == "image" else 2500
        path = None
        for _, seed, run, _, model, data in self.members():
            real = data.train[:5000] if data.kind == "points" else None
            title = f"{self.cfg.model.name} on {data.variant}, step {self.step}"
            path = save_samples(grid_samples(model, n, seed + 12345), run.grid(tag), means=data.means,
                                std=data.std, real=real, seed=seed, title=title, color=model.family_color)
        return path

    def evaluate(self) -> None:
        for i, _, run, mcfg, model, data in self.members():
            results = evaluate_and_log(mcfg, model, data, run, Tracker(), self.step, final=False)
            self.member_evals[i].append({"step": self.step, **results})

    def save_checkpoint(self) -> None:
        """The runner's checkpoint of the stacked model, with the members' records, in
        :data:`SEED_BATCH_CHECKPOINT` of member 0's dir."""
        self.window.check_finite()
        state = self.checkpoint_state()
        state["seed_batch"] = {"size": self.size, "seeds": self.seeds, "dirs": [str(r.path) for r in self.runs],
                               "member_logs": self.member_logs, "member_evals": self.member_evals}
        save_checkpoint(state, self.run.path / SEED_BATCH_CHECKPOINT)

    def save_member_checkpoints(self) -> None:
        """An ordinary checkpoint in every member's run dir, as its separate run would leave
        after its last step: what ``eval``, ``sample`` and the member's finish read. Its
        ``train_time_s`` is the member's share of the batch's loop (1/S of it), so rates and
        times in ``metrics.json`` are a run's cost; ``seed_batch.batch_train_time_s`` is the whole."""
        optimizers = {n: o.state_dict() for n, o in self.optimizers.items()}
        train_time = self.time_before + self.loop_time
        for i, seed, run, mcfg, model, _ in self.members():
            seed_everything(seed)  # the member's finish draws its grid and evaluation from its own seed
            save_checkpoint({
                "family": self.cfg.model.name, "variant": self.bundle.variant, "step": self.step,
                "batches_drawn": self.stream.batches_drawn, "model": model.state_dict(),
                "optimizers": {n: member_optimizer_state(s, i, self.size) for n, s in optimizers.items()},
                "rng": rng_state(), "config": _config.to_container(mcfg), "train_time_s": train_time / self.size,
                "wandb_id": None, "data_shape": list(self.bundle.shape), "eval_history": self.member_evals[i],
                "last_logs": self.member_logs[i], "arch": getattr(model, "arch", None),
                "seed_batch_member": {"size": self.size, "seeds": self.seeds, "index": i,
                                      "batch_train_time_s": train_time,
                                      "checkpoint": str(self.run.path / SEED_BATCH_CHECKPOINT)},
            }, run.checkpoint)


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


def train(cfg: DictConfig) -> dict[str, Any]:
    """``gencompare train``: :func:`train_seed_batch` when ``trainer.seed_batch > 1``, else
    :func:`gencompare.runner.train` (one seed)."""
    if int(cfg.trainer.get("seed_batch") or 1) > 1:
        return train_seed_batch(cfg)
    return run_training(cfg)


def train_seed_batch(cfg: DictConfig) -> dict[str, Any]:
    """Train ``trainer.seed_batch`` members (seeds ``seed .. seed+S-1``) as one stacked run
    and finish each as an ordinary run (see the module doc).

    Returns:
        Member 0's ``metrics.json`` dict, with ``seed_batch`` listing every member's run dir
        and metrics.

    Raises:
        GencompareError: bad input as for :func:`gencompare.runner.train`; a resume whose
            checkpoint is not a seed batch of the same size.
    """
    stop = StopRequest()
    with stop.installed():
        try:
            return _train_seed_batch(cfg, stop)
        except Interrupted as exc:
            console.print(f"[yellow]interrupted ({exc}) {stop.where}[/]", highlight=False)
            raise SystemExit(exc.exit_code) from None


def _in_turn(cfg: DictConfig, size: int, reason: str) -> dict[str, Any]:
    console.print(f"[yellow]trainer.seed_batch={size}: {reason}; training the {size} seeds one after another[/]",
                  highlight=False)
    job_dir, seed = run_dir_of(cfg), int(cfg.seed)
    results = []
    for s in range(seed, seed + size):
        mcfg = _member_config(cfg, s, member_dir(job_dir, seed, s), resume=bool(cfg.trainer.resume))
        results.append(run_training(mcfg))
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


def _train_seed_batch(cfg: DictConfig, stop: StopRequest) -> dict[str, Any]:
    size = int(cfg.trainer.seed_batch)
    _config.validate(cfg)
    if cfg.get("metrics"):
        check_metrics_config(cfg.metrics, cfg.dataset.kind)
    device = resolve_device(cfg.device.name)
    seed = int(cfg.seed)
    job = RunDir(run_dir_of(cfg))
    job.check_folders()
    batch_ckpt = job.path / SEED_BATCH_CHECKPOINT
    checkpoint = None
    if cfg.trainer.resume:
        if not batch_ckpt.is_file():
            raise GencompareError(f"trainer.resume=true with trainer.seed_batch={size} but {batch_ckpt} does not "
                                  "exist; point hydra.run.dir at member 0's run dir (the first seed's)")
        checkpoint = load_checkpoint(batch_ckpt, trust=bool(cfg.get("trust_checkpoint", False)))
        saved = checkpoint.get("seed_batch", {})
        if checkpoint["family"] != cfg.model.name or saved.get("seeds") != list(range(seed, seed + size)):
            raise GencompareError(f"{batch_ckpt} holds seeds {saved.get('seeds')} of a {checkpoint['family']} "
                                  f"model, not seeds {seed}..{seed + size - 1} of {cfg.model.name}")
        runs = [RunDir(p) for p in saved["dirs"]]
    elif job.holds_run() or batch_ckpt.exists():
        raise GencompareError(f"{job.path} already holds a run; pass trainer.resume=true to continue it "
                              "or choose another hydra.run.dir")
    else:
        runs = []

    mcfgs, bundles, members = build_members(cfg, device)
    shells = []
    reason = members[0].seed_batch_refusal()
    if cfg.trainer.get("compile"):
        reason = reason or "trainer.compile compiles one network at a time"
    if reason is not None:
        return _in_turn(cfg, size, reason)
    for mcfg, data in zip(mcfgs, bundles):
        shells.append(build_model(mcfg, data).to(device))  # ordinary models that receive a member for its grid/eval
    if checkpoint is None:
        runs = [claim_run_dir(cfg, job)]
        for s in range(seed + 1, seed + size):
            claimed = RunDir(member_dir(runs[0].path, seed, s)).claim()
            runs.append(claimed)
    stack = MemberStack(members)
    for data in {id(b): b for b in bundles}.values():
        data.to(device)
    trainer = SeedBatchTrainer(cfg, stack, shells, bundles, runs, checkpoint)
    stack.model.read_host_state()  # after the checkpoint loaded: loading forgets the host copies
    overrides = _config.hydra_overrides()
    for s, run, mcfg in zip(trainer.seeds, runs, trainer.member_cfgs):
        _write_member_config(mcfg, run, overrides, s)
    own_data = " (each its own draw of the data)" if bundles[0].seeded else ""
    console.print(f"[bold]{cfg.model.name}[/] on [bold]{bundles[0].variant}[/], {size} seeds ({seed}..{seed + size - 1}) "
                  f"stacked{own_data}, {sum(trainer.parameters.values()):,} parameters each, on {device}; run dirs "
                  f"{runs[0].path} .. {runs[-1].path.name}")

    resume_hint = (f"continue with the same command plus hydra.run.dir={runs[0].path} trainer.resume=true")
    stop.where = f"at step {trainer.step}/{trainer.max_steps}; no new checkpoint; {resume_hint}"
    trained = trainer.step < trainer.max_steps
    if trained:
        for run in runs if checkpoint is not None else []:
            for line in trim_history(run.history, trainer.step):  # lines logged after the checkpoint
                console.print(f"[yellow]warning:[/] {line}")
        files = [run.history.open("a") for run in runs]
        try:
            trainer.loop(stop, files)
        except Interrupted:
            saved = stop.signum is not None
            stop.where = (f"at step {trainer.step}/{trainer.max_steps}; "
                          f"{'checkpoint saved to ' + str(batch_ckpt) if saved else 'no new checkpoint'}; {resume_hint}")
            raise
        finally:
            for f in files:
                f.close()
        trainer.save_member_checkpoints()

    # finish: each member as a resumed run at its last step (grid, evaluation, metrics.json, W&B)
    stop.where = f"after training ({trainer.step} steps, checkpoints saved); {resume_hint} to finish the members"
    results = []
    for s, run, mcfg, data in zip(trainer.seeds, runs, trainer.member_cfgs, bundles):
        if run.metrics.is_file() and not trained:  # finished by the interrupted invocation
            results.append({"seed": s, "run_dir": str(run.path), "finished": "before"})
            continue
        if not run.checkpoint.is_file():  # resumed at max_steps from a batch checkpoint
            trainer.save_member_checkpoints()
        if trained and run.metrics.is_file():
            run.metrics.unlink()  # a longer run than the one that wrote it: finish again
        out = run_training(mcfg, bundle=data, member=True, stop=stop)
        results.append({"seed": s, "run_dir": str(run.path), "metrics": out})
    first = results[0].get("metrics") or {}
    return {**first, "seed_batch": results}
