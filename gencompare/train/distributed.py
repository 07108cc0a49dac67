"""Data-parallel training (issue 22): the process group, this process's rank, and
:class:`DataParallel`, the step strategy that trains one model on several processes with
``torch.nn.parallel.DistributedDataParallel``.

How N ranks train the model one process trains (up to the order of float sums):

- every rank builds the same model and data from the same seed, and draws the *global*
  batch (``trainer.batch_size``) from its own copy of the batch stream (a pure function of
  the seed and the batches drawn; its draw-time transforms draw from the global RNG, which
  every rank advances alike), keeping rows ``[rank * b, (rank + 1) * b)``, ``b = B / N``;
- a step's per-example noise (a GAN's z, a VAE's epsilon, a DDPM's t and noise, RNADE's
  dequantization) goes through :func:`gencompare.models.base.draw_examples`: under the
  step's :class:`~gencompare.models.base.BatchShard`, each rank draws the global batch's
  noise and keeps its rows, so the RNG stays in step on every rank and equal to one
  process's;
- DDP averages the gradients (its bucketed all-reduce, nothing hand-written): the mean of
  the ranks' mean losses over ``b`` examples is the one process's mean over ``B``.

One DDP wrapper per optimizer, each over exactly that optimizer's parameters (the others
are DDP's ignored parameters): the GAN's discriminator step reaches no generator weight and
its generator step no discriminator weight, so each wrapper sees every one of its
parameters used in every step and needs no ``find_unused_parameters`` (an extra traversal
of the autograd graph per step), and the family is never asked which networks it has.

Buffers are not broadcast (``broadcast_buffers=False``): the buffers a step updates
deterministically (the DDPM's EMA, RNADE's initialised flag) are equal on every rank
anyway, and batch-norm running statistics stay per rank (rank 0's are checkpointed and
evaluated), as DDP users expect; ``trainer.sync_batchnorm=true`` converts batch norm to
``torch.nn.SyncBatchNorm`` (CUDA only: torch's SyncBatchNorm refuses CPU tensors).
"""
from __future__ import annotations

import datetime
import inspect
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from gencompare.data import BatchStream
from gencompare.errors import GencompareError
from gencompare.metrics.ranks import AcrossRanks, OneProcess
from gencompare.models.base import BatchShard, GenerativeModel, batch_shard
from gencompare.train.loop import OneModel, TrainingStep, clip_and_measure

__all__ = ["DataParallel", "RankInfo", "StopAgreement", "evaluation_ranks", "launched", "rank_info", "record_facts",
           "setup", "step_strategy", "teardown"]

#: seconds a collective waits for the other ranks before the job fails (a rank that died
#: or hangs ends the run in one line instead of a hang); ``GENCOMPARE_COLLECTIVE_TIMEOUT_S``.
COLLECTIVE_TIMEOUT_S = 600


@dataclass(frozen=True)
class RankInfo:
    """Where this process stands in the job (torchrun's environment variables)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes the run dir, prints and logs."""
        return self.rank == 0


def launched() -> bool:
    """Whether torch elastic (torchrun, or ``trainer.devices=N``) started this process."""
    return "TORCHELASTIC_RUN_ID" in os.environ or ("RANK" in os.environ and "WORLD_SIZE" in os.environ)


def rank_info() -> RankInfo:
    """This process's rank facts from torchrun's environment (one process: rank 0 of 1)."""
    if not launched():
        return RankInfo()
    env = os.environ
    world = int(env.get("WORLD_SIZE", "1"))
    return RankInfo(rank=int(env.get("RANK", "0")), world_size=world, local_rank=int(env.get("LOCAL_RANK", "0")),
                    local_world_size=int(env.get("LOCAL_WORLD_SIZE", str(world))))


def setup(device: torch.device) -> RankInfo:
    """Join the process group (once): nccl for a CUDA model, gloo otherwise, with a timeout
    on every collective; a CUDA rank uses its own GPU (``cuda:<local rank>``).

    Raises:
        GencompareError: not started by torch elastic.
    """
    info = rank_info()
    if not launched():
        raise GencompareError("data-parallel training needs processes started by torchrun or trainer.devices=N")
    if not dist.is_initialized():
        timeout = float(os.environ.get("GENCOMPARE_COLLECTIVE_TIMEOUT_S", COLLECTIVE_TIMEOUT_S))
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {}
        if device.type == "cuda":
            index = gpu_index(info)
            torch.cuda.set_device(index)
            kwargs["device_id"] = torch.device("cuda", index)
        limit = datetime.timedelta(seconds=timeout)
        dist.init_process_group(backend, store=_attempt_store(info, limit), rank=info.rank,
                                world_size=info.world_size, timeout=limit, **kwargs)
    return info


def gpu_index(info: RankInfo) -> int:
    """The GPU of a rank: ``cuda:<local rank>``, or the one GPU a rank sees (SLURM binding a
    GPU per task)."""
    return info.local_rank if torch.cuda.device_count() > 1 else 0


def _attempt_store(info: RankInfo, timeout: datetime.timedelta) -> dist.Store:
    """The rendezvous store at ``MASTER_ADDR:MASTER_PORT`` (torch elastic's agent serves
    it; otherwise rank 0), its keys prefixed with the job's attempt: a job that torchrun
    restarted reuses the agent's store, and without the prefix a rank may read the address a
    dead rank of the earlier attempt published there (seen: gloo "connection refused", then
    a hang, in 3 of 5 restarts)."""
    env = os.environ
    agent_serves = env.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(env.get("MASTER_ADDR", "localhost"), int(env.get("MASTER_PORT", "29500")),
                          info.world_size, is_master=not agent_serves and info.main, timeout=timeout,
                          multi_tenant=True)
    attempt = f"{env.get('TORCHELASTIC_RUN_ID', 'job')}/attempt_{env.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    return dist.PrefixStore(f"gencompare/{attempt}/", store)


#: the collective :class:`StopAgreement` left running, finished before leaving
_PENDING: list[Any] = []


def teardown(*, finished: bool = True) -> None:
    """Leave the process group (a no-op when none was joined): after a run that finished,
    once the last stop agreement's all-reduce did; after a failure, at once (another rank may be
    gone)."""
    while _PENDING:
        work = _PENDING.pop()
        if finished:
            work.wait()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _wrap_optimizer_params(model: GenerativeModel, params: list[Tensor], device: torch.device) -> nn.Module:
    """A DDP over ``model``'s training step that all-reduces ``params`` alone."""
    step = TrainingStep(model)
    mine = {id(p) for p in params}
    ignored = [n for n, p in step.named_parameters() if id(p) not in mine] + [n for n, _ in step.named_buffers()]
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(step, ignored)
    device_ids = [device] if device.type == "cuda" else None
    # gradients as views of the all-reduce buckets: no copy back from the bucket after the
    # all-reduce (benchmarks/results/ddp-cpu.md); the averaged values are the same
    return DistributedDataParallel(step, device_ids=device_ids, gradient_as_bucket_view=True, **_NO_BUFFER_SYNC)


# no buffer broadcast before each forward; torch >= 2.14 names it forward_sync_buffers
_NO_BUFFER_SYNC = ({"forward_sync_buffers": False}
                   if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
                   else {"broadcast_buffers": False})


class StopAgreement:
    """Whether any rank has been asked to stop (SIGINT / SIGTERM), agreed by all: called
    after every step on every rank, it returns True on every rank after the same step, so
    rank 0's checkpoint is every rank's state.

    An agreement is one all-reduce (MAX) of ``(stop requested, interval)``, launched after a
    step and read after the next, which it overlaps. Rank 0 spaces the agreements about
    ``every_s`` apart (``interval``: the steps to the next one, from its measured step time,
    at most ``max_steps``; the other ranks send 0), since one every step cost 1.2 ms a step
    of the 2D GAN, whose step takes 2.5-2.7 ms in one process, on 2 CPU cores
    (benchmarks/results/ddp-cpu.md). A stop comes at most about ``every_s`` plus a step
    after the request. The all-reduce goes over gloo on the host (a new group under
    nccl, where it would sync the GPU every time).
    """

    def __init__(self, info: RankInfo, *, every_s: float = 0.05, max_steps: int = 100) -> None:
        self.info, self.every_s, self.max_steps = info, every_s, max_steps
        self.group = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else None
        self.step = 0  # calls so far
        self.agreements = 0  # all-reduces launched
        self._pending: tuple[Tensor, Any] | None = None  # the all-reduce in flight, read at the next call
        self._launch_at = 1  # the step the next one is launched after
        self._launched: tuple[int, float] | None = None  # the last launch's (step, time)

    def __call__(self, requested: bool) -> bool:
        """Whether to stop after this step; ``requested``: this rank has been asked to."""
        self.step += 1
        if self._pending is not None:  # launched after the previous step
            flags, work = self._pending
            work.wait()
            self._pending = None
            if bool(flags[0]):
                return True
            self._launch_at = self.step - 1 + int(flags[1])
        if self.step >= self._launch_at:
            self._launch(requested)
        return False

    def _launch(self, requested: bool) -> None:
        now = time.perf_counter()
        interval = 1
        if self.info.main and self._launched is not None:
            step_s = (now - self._launched[1]) / max(self.step - self._launched[0], 1)
            interval = int(min(max(self.every_s / max(step_s, 1e-9), 1), self.max_steps))
        self._launched = (self.step, now)
        flags = torch.tensor([int(requested), interval if self.info.main else 0], dtype=torch.int64)
        work = dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=self.group, async_op=True)
        self._pending = (flags, work)
        self.agreements += 1
        _PENDING.append(work)
        del _PENDING[:-1]


class DataParallel:
    """The step strategy of one model trained on ``world_size`` ranks (see the module doc).

    Args:
        model: the family's model on this rank's device, built from the run's seed.
        stream: the global batches (``trainer.batch_size``), as one process draws them.
        optimizers: the model's optimizers (each gets its own DDP over its parameters).
        info: this rank's facts.
        sync_batchnorm: convert batch norm to ``torch.nn.SyncBatchNorm`` first.

    Raises:
        GencompareError: a global batch that does not split evenly over the ranks, two
            optimizers sharing a parameter, or ``sync_batchnorm`` off CUDA.
    """

    def __init__(self, model: GenerativeModel, stream: BatchStream, optimizers: dict[str, torch.optim.Optimizer],
                 info: RankInfo, *, sync_batchnorm: bool = False) -> None:
        if stream.batch_size % info.world_size:
            raise GencompareError(f"trainer.batch_size={stream.batch_size} does not split over {info.world_size} "
                                  f"ranks; choose a multiple of {info.world_size} (the batch is the global one)")
        self.model, self.stream, self.info = model, stream, info
        self.shard = BatchShard(info.rank, info.world_size)
        self.per_rank = stream.batch_size // info.world_size
        device = model.device
        if sync_batchnorm:
            if device.type != "cuda":
                raise GencompareError("trainer.sync_batchnorm=true needs CUDA: torch's SyncBatchNorm refuses CPU "
                                      "tensors (on CPU every rank keeps its own batch statistics)")
            nn.SyncBatchNorm.convert_sync_batchnorm(model)  # in place below the top module; parameters kept
        groups = {name: [p for g in opt.param_groups for p in g["params"]] for name, opt in optimizers.items()}
        seen: set[int] = set()
        for name, params in groups.items():
            if seen & {id(p) for p in params}:
                raise GencompareError(f"optimizer {name!r} shares parameters with another one: not data-parallel")
            seen |= {id(p) for p in params}
        self.ddp = {name: _wrap_optimizer_params(model, params, device) for name, params in groups.items()}
        self.run_dir: str | None = None  # rank 0's run dir, once :func:`step_strategy` shared it
        self.stop_agreement = StopAgreement(info)

    def agree_stop(self, requested: bool) -> bool:
        """Whether every rank stops after this step (:class:`StopAgreement`)."""
        return self.stop_agreement(requested)

    def next_batch(self) -> Tensor:
        batch = next(self.stream)  # (B, ...): the global batch, as one process draws it
        return batch[self.info.rank * self.per_rank : (self.info.rank + 1) * self.per_rank]

    def loss(self, batch: Tensor, name: str) -> tuple[Tensor, dict[str, Tensor | float]]:
        with batch_shard(self.shard):
            return self.ddp[name](batch, name)

    def backward(self, loss: Tensor) -> None:
        loss.backward()  # DDP's hooks average the gradients over the ranks

    def clip(self, params: list[Tensor], max_norm: float, measure: bool) -> Tensor | None:
        return clip_and_measure(params, max_norm, measure)  # averaged gradients: the same on every rank


def step_strategy(cfg: Any, model: GenerativeModel, stream: BatchStream,
                  optimizers: dict[str, torch.optim.Optimizer], run_dir: Path | None = None):
    """The step strategy of a run: :class:`~gencompare.train.loop.OneModel` for a process
    that torch elastic did not start (exactly the step of before), else :class:`DataParallel`
    after joining the process group; every rank then learns rank 0's run dir
    (:attr:`DataParallel.run_dir`)."""
    if not launched():
        return OneModel(model, stream)
    info = setup(model.device)
    strategy = DataParallel(model, stream, optimizers, info,
                            sync_batchnorm=bool(cfg.trainer.get("sync_batchnorm") or False))
    shared = [str(run_dir) if run_dir is not None else None]
    dist.broadcast_object_list(shared, src=0)  # rank 0 claimed it; the others write into a scratch dir
    strategy.run_dir = shared[0]
    if info.main and run_dir is not None:
        note_run_dir(str(cfg.paths.log_dir), run_dir)
    return strategy


#: under ``<paths.log_dir>``: the run dir of each torch elastic job (its run id), read by
#: ``trainer.resume=auto`` when torchrun restarts the job (``--max-restarts``)
ELASTIC_RECORDS = ".elastic"


def elastic_record(log_dir: str) -> Path | None:
    """Where this torch elastic job's run dir is noted (None outside one)."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    return Path(log_dir) / ELASTIC_RECORDS / f"{run_id}.txt" if run_id else None


def note_run_dir(log_dir: str, run_dir: Path) -> None:
    """Rank 0: note the run dir it claimed under the job's run id, so that a restarted job
    (``trainer.resume=auto``) continues it rather than claiming another."""
    record = elastic_record(log_dir)
    if record is not None:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(str(Path(run_dir).resolve()) + "\n")


def evaluation_ranks(device: torch.device) -> OneProcess:
    """The processes an evaluation (or ``gencompare sample``) runs on
    (:mod:`gencompare.metrics.ranks`): :class:`~gencompare.metrics.ranks.OneProcess` for a
    process torch elastic did not start, else :class:`~gencompare.metrics.ranks.AcrossRanks`
    after joining the process group (:func:`setup`; a training run has joined it already)."""
    if not launched():
        return OneProcess()
    info = setup(device)
    return AcrossRanks(info.rank, info.world_size)


def record_facts(cfg: Any) -> dict[str, int]:
    """What ``metrics.json`` adds for a data-parallel run (nothing for one process):
    ``world_size`` and the per-rank batch (``batch_size`` stays the global one)."""
    if not launched():
        return {}
    info = rank_info()
    return {"world_size": info.world_size, "batch_size_per_rank": int(cfg.trainer.batch_size) // info.world_size}
