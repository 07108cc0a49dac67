"""Starting a data-parallel run (issue 22): ``gencompare train trainer.devices=N`` starts N
processes on this node with torch elastic's launcher (``elastic_launch``, the API under
``torchrun``; no launcher of our own), and each process, whether started so or by
``torchrun --nproc_per_node=N -m gencompare train ...``, becomes one rank here. ``gencompare
eval`` and ``gencompare sample`` start and run as ranks the same way (their work spread by
:mod:`gencompare.metrics.ranks`). On SLURM, the tasks of a submitit job
(``hydra.launcher.tasks_per_node``) become the ranks of one run (:func:`join_submitit_tasks`).

The Hydra pitfalls under torchrun (facebookresearch/hydra #2070, lightning-hydra-template
#393) and what this module does about them:

- every rank resolves ``${now:}`` and makes its own run dir: only rank 0 resolves the run
  dir and claims it (the claim of a one-process run); every other rank runs the same
  program into a private scratch dir (``hydra.run.dir=<tmp>``, removed when it ends), so no
  stray or empty dir is left, and learns rank 0's run dir by a broadcast
  (:func:`gencompare.train.distributed.step_strategy`);
- ranks garble ``.hydra/``, ``history.jsonl``, ``metrics.json``: only rank 0 writes the run
  dir; the others have no W&B run (``logger=none``), no progress line, and a silent
  console: they print errors only, each naming its rank (:func:`on_rank`);
- ``--local_rank`` in argv breaks Hydra's parser: :func:`strip_local_rank` turns the legacy
  launcher's ``--local_rank=N`` / ``--local-rank N`` into ``LOCAL_RANK``.

Why the other ranks run the whole program rather than skip its records: the sample grids,
periodic evaluations and the final evaluation draw from the global RNG, and every rank must
advance it alike for the next steps' noise to be the one process's.
"""
from __future__ import annotations

import functools
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

import torch

from gencompare.errors import GencompareError
from gencompare.record import RunDir
from gencompare.train.distributed import elastic_record, gpu_index, launched, rank_info, teardown

__all__ = ["check", "on_rank", "rank_argv", "start_ranks", "strip_local_rank"]

SCRATCH_PREFIX = "gencompare-rank"
#: the exit status of a rank whose collective failed because another rank died or hangs
LOST_RANK_EXIT = 79
#: set in the ranks that trainer.devices=N started: their launcher says which rank failed
LAUNCHER_REPORTS = "GENCOMPARE_LAUNCHER_REPORTS"


def strip_local_rank(args: list[str]) -> list[str]:
    """``args`` without the legacy launcher's ``--local_rank=N`` / ``--local-rank N``
    (``python -m torch.distributed.launch`` without ``--use-env``), whose value goes to
    ``LOCAL_RANK`` as torchrun sets it; Hydra's parser refuses the flag."""
    out, skip = [], False
    for i, a in enumerate(args):
        if skip:
            skip = False
            continue
        key, eq, value = a.partition("=")
        if key in ("--local_rank", "--local-rank"):
            if not eq:
                value, skip = (args[i + 1] if i + 1 < len(args) else "0"), True
            os.environ.setdefault("LOCAL_RANK", value)
            continue
        out.append(a)
    return out


#: what another rank than 0 adds to each command's overrides, besides its scratch run dir:
#: no W&B run, no progress line (the commands that have them)
RANK_OVERRIDES = {"train": ["logger=none", "trainer.progress=false"], "eval": ["logger=none"], "sample": []}


def rank_argv(args: list[str], command: str = "train") -> list[str]:
    """The overrides this process runs ``command`` with: ``args`` itself for one process or
    rank 0; for another rank, ``args`` plus its scratch run dir and :data:`RANK_OVERRIDES`
    (and its console silenced: errors only)."""
    args = resolve_auto_resume(strip_local_rank(args))
    info = rank_info()
    if not launched() or info.main:
        return args
    from gencompare.terminal import console

    console.quiet = True
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the process's life: rank 0 prints the tables
    scratch = scratch_dir(info.rank)
    shutil.rmtree(scratch, ignore_errors=True)  # a restarted job's rank: its earlier attempt's
    scratch.mkdir(parents=True)
    _resume_from_rank0(args, scratch)
    return [*args, f"hydra.run.dir={scratch}", *RANK_OVERRIDES[command]]


def resolve_auto_resume(args: list[str]) -> list[str]:
    """``trainer.resume=auto`` on the command line: ``trainer.resume=true`` with the run dir
    when it holds a checkpoint (``hydra.run.dir``, or, in a job torchrun restarted, the run
    dir rank 0 noted for the job, :func:`gencompare.train.distributed.note_run_dir`), else
    ``trainer.resume=false``: torchrun ``--max-restarts`` then brings a job back where its
    last checkpoint left it."""
    if "trainer.resume=auto" not in args:
        return args
    rest = [a for a in args if a != "trainer.resume=auto"]
    given = [a.split("=", 1)[1] for a in rest if a.startswith("hydra.run.dir=")]
    run_dir = given[-1] if given else None
    if run_dir is None and launched():
        record = elastic_record(str(_composed(rest).paths.log_dir))
        run_dir = record.read_text().strip() if record is not None and record.is_file() else None
    if run_dir is not None and (Path(run_dir) / RunDir.CHECKPOINT).is_file():
        return [*(a for a in rest if not a.startswith("hydra.run.dir=")), f"hydra.run.dir={run_dir}",
                "trainer.resume=true"]
    return [*rest, "trainer.resume=false"]


def scratch_dir(rank: int, run_id: str | None = None) -> Path:
    """The scratch run dir of ``rank`` in the torch elastic job ``run_id`` (this one's by
    default), named so that the launcher can remove those of ranks that were killed."""
    return Path(tempfile.gettempdir()) / f"{SCRATCH_PREFIX}{rank}-{run_id or os.environ.get('TORCHELASTIC_RUN_ID', 'x')}"


def _resume_from_rank0(args: list[str], scratch: Path) -> None:
    """A resumed run (``trainer.resume=true hydra.run.dir=<run>``): this rank continues
    rank 0's checkpoint, copied into its scratch dir. Rank 0's checkpoint is every rank's
    state: the ranks' weights and optimizer states are equal after each averaged step, and
    their global RNGs too (every rank draws the global batch's noise)."""
    values = dict(a.split("=", 1) for a in args if "=" in a and not a.startswith("-"))
    if values.get("trainer.resume", "false").lower() != "true" or "hydra.run.dir" not in values:
        return
    checkpoint = Path(values["hydra.run.dir"]) / RunDir.CHECKPOINT
    if checkpoint.is_file():
        (scratch / checkpoint.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(checkpoint, scratch / RunDir.CHECKPOINT)


def _composed(args: list[str], command: str = "train"):
    from gencompare.precheck import _compose_checked

    return _compose_checked(command, [a for a in args if not a.startswith("-")])


def check(args: list[str], devices: int) -> None:
    """Refuse in one line, before any process starts, what data parallelism does not train
    (:func:`check_config` of the config ``args`` compose)."""
    check_config(_composed(args), devices)


def check_config(cfg, devices: int) -> None:
    """Refuse in one line what ``devices`` data-parallel processes do not train with ``cfg``.

    Raises:
        GencompareError: a global batch that does not split evenly,
            ``trainer.sync_batchnorm`` off CUDA, a seed batch, the unrolled GAN.
    """
    if int(cfg.trainer.batch_size) % devices:
        raise GencompareError(f"trainer.batch_size={cfg.trainer.batch_size} does not split over {devices} processes; "
                              f"choose a multiple of {devices} (it is the global batch)")
    if bool(cfg.trainer.get("sync_batchnorm")) and (cfg.device.name == "cpu" or not _cuda_device(cfg.device.name)):
        raise GencompareError("trainer.sync_batchnorm=true needs CUDA: torch's SyncBatchNorm refuses CPU tensors "
                              "(on CPU each rank normalises with its own batch statistics: leave it false)")
    if int(cfg.trainer.get("seed_batch") or 1) > 1:
        raise GencompareError(f"trainer.seed_batch={cfg.trainer.seed_batch} with {devices} processes is not "
                              "supported: stacked seeds train in one process (set trainer.devices=1)")
    module = cfg.model.get("module") or {}
    if int(module.get("unrolled_steps") or 0) > 0:
        raise GencompareError(f"model.module.unrolled_steps={module.unrolled_steps} with {devices} processes is "
                              "not supported: the unrolled discriminator steps would see one rank's batch")


def _sets_devices(args: list[str]) -> bool:
    """Whether a config the command names (an experiment) may set ``trainer.devices``: only
    then is the config composed before Hydra runs to learn it."""
    from pathlib import Path

    conf = Path(__file__).resolve().parent.parent / "conf" / "experiment"
    for a in args:
        key, _, value = a.partition("=")
        if key.lstrip("+") == "experiment":
            f = conf / f"{value}.yaml"
            return not f.is_file() or "devices" in f.read_text()
    return False


def _cuda_device(name: str) -> bool:
    import torch

    return name in ("cuda", "auto") and torch.cuda.is_available()


def start_ranks(args: list[str], command: str = "train") -> bool:
    """``trainer.devices=N > 1`` in a process torch elastic did not start: start N ranks of
    ``command`` (train, eval, sample) on this node with torch elastic's ``elastic_launch`` (c10d rendezvous on a
    free local port, as ``torchrun --standalone``), wait for them, and return True; a rank's
    failure ends the job with its exit status. In a rank, check what it was started with
    and return False: this process trains.

    Raises:
        GencompareError: what :func:`check` refuses; ``trainer.devices`` other than the
            processes torchrun started on this node.
    """
    from gencompare.precheck import FLAGS_WITHOUT_RUN

    if any(a.split("=", 1)[0] in FLAGS_WITHOUT_RUN for a in args):  # --cfg, --help, shell completion: no run
        return False
    from gencompare.precheck import _is_multirun

    if _is_multirun(args):  # a sweep's values do not compose as one config; its jobs train one process each
        devices_given = [a.split("=", 1)[1] for a in args if a.split("=", 1)[0] == "trainer.devices"]
        if launched() or any(d.strip() != "1" for d in devices_given):
            raise GencompareError("a sweep (-m) trains each job in one process: several processes per job "
                                  "(trainer.devices > 1, torchrun) are not supported; sweep with trainer.devices=1")
        return False
    given = [a.split("=", 1)[1] for a in args if a.split("=", 1)[0].lstrip("+") == "trainer.devices"]
    if not launched() and all(d.strip() == "1" for d in given) and not _sets_devices(args):
        return False  # one process: nothing to compose here (Hydra composes the run, search path and all)
    devices = int(_composed(args, command).trainer.get("devices") or 1)
    refuse = CHECKS.get(command, lambda args, devices: None)
    if devices < 1:
        raise GencompareError(f"trainer.devices must be >= 1 (processes on this node), got {devices}")
    if launched():
        info = rank_info()
        if devices not in (1, info.local_world_size):
            raise GencompareError(f"trainer.devices={devices} but torchrun started {info.local_world_size} "
                                  "processes on this node; leave trainer.devices out under torchrun")
        refuse(args, info.world_size)
        return False
    if devices <= 1:
        return False
    refuse(args, devices)
    _elastic_launch(args, devices, command)
    return True


#: what each command refuses before its ranks start (eval and sample: nothing)
CHECKS = {"train": check}


def _elastic_launch(args: list[str], devices: int, command: str) -> None:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    import logging

    # torchrun's default with several processes: one thread each, not all threads each
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ[LAUNCHER_REPORTS] = "1"
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # its failure report: ours below
    for name, logger in list(logging.root.manager.loggerDict.items()):  # torch sets each one's level
        if name.startswith("torch.distributed.elastic") and isinstance(logger, logging.Logger):
            logger.setLevel(logging.CRITICAL)
    run_id = str(uuid.uuid4())
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=devices, run_id=run_id,
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1)
    try:
        elastic_launch(config, sys.executable)("-m", "gencompare", command, *args)
    except SignalException as exc:  # SIGINT / SIGTERM: the ranks finished their step and rank 0 said where
        raise SystemExit(128 + int(exc.sigval)) from None
    except ChildFailedError as exc:
        # the rank that failed, not one that lost it; its own line said why unless it died
        # without one (a signal, a crash)
        failures = sorted(exc.failures.items(), key=lambda kv: (kv[1].exitcode == LOST_RANK_EXIT, kv[1].timestamp))
        rank, failure = failures[0]
        code = int(failure.exitcode)
        if code < 0 or code not in (2, 130, 143):
            import signal

            from gencompare.terminal import console

            how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"ended with exit status {code}"
            console.print(f"[bold red]error:[/] rank {rank} {how}; the job stopped", highlight=False)
        raise SystemExit(code if code > 0 else 1) from None
    finally:
        for rank in range(devices):  # a rank that was killed could not remove its own
            shutil.rmtree(scratch_dir(rank, run_id), ignore_errors=True)


def join_submitit_tasks(cfg, check_run=check_config):
    """In a submitit job of several tasks (``hydra/launcher=submitit_slurm
    hydra.launcher.tasks_per_node=N``, also ``nodes=M``; or ``submitit_local``), this task as
    one rank of one run: torch's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR``, ``MASTER_PORT``) exported by submitit's own helper
    (``submitit.helpers.TorchDistributedEnvironment``: rank and world size from the job, the
    master the job's first node), and, for a rank other than 0, what :func:`rank_argv` gives
    the other ranks under torchrun: a scratch run dir, no W&B run, no progress line, a silent
    console. ``cfg`` itself outside such a job.

    Raises:
        GencompareError: what ``check_run(cfg, world_size)`` refuses.
    """
    if "SUBMITIT_EXECUTOR" not in os.environ:
        return cfg
    import submitit
    from submitit.helpers import TorchDistributedEnvironment

    if submitit.JobEnvironment().num_tasks <= 1:
        return cfg
    # the rank picks its GPU itself (cuda:<local rank>, train.distributed.setup)
    TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    info = rank_info()
    check_run(cfg, info.world_size)
    if info.main:
        return cfg
    from omegaconf import open_dict

    from gencompare.terminal import console

    console.quiet = True
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the process's life: rank 0 prints the tables
    scratch = scratch_dir(info.rank, f"submitit{submitit.JobEnvironment().job_id}")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.paths.output_dir = str(scratch)
        cfg.logger.name = "none"
        cfg.trainer.progress = False
    return cfg


def on_rank(task, join=lambda cfg: cfg):
    """``task`` (one process: itself) run as one rank: its errors say which rank (the other
    ranks' consoles are silent, so theirs go straight to stderr), and the process group is
    left and a scratch run dir removed when it ends. ``join(cfg)`` first, in the process
    that runs the task (``train``'s: :func:`join_submitit_tasks`, where a submitit job's
    tasks become ranks)."""

    @functools.wraps(task)
    def run(cfg):
        cfg = join(cfg)
        if not launched():
            return task(cfg)
        info = rank_info()
        if torch.cuda.is_available():  # "cuda" is this rank's GPU from now on (the model is built on it)
            torch.cuda.set_device(gpu_index(info))
        finished = False
        try:
            result = task(cfg)
            finished = True
            return result
        except GencompareError as exc:
            if info.main:
                raise GencompareError(f"rank 0: {exc}") from None
            print(f"error: rank {info.rank}: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        except Exception as exc:
            if lost_another_rank(exc):  # a rank died or hangs: one line (the launcher's, when it is ours)
                if not os.environ.get(LAUNCHER_REPORTS):
                    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
                    print(f"error: rank {info.rank}: another rank stopped answering ({first}); the job stopped",
                          file=sys.stderr, flush=True)
                raise SystemExit(LOST_RANK_EXIT) from None
            print(f"error: rank {info.rank}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            raise
        finally:
            teardown(finished=finished)
            if not info.main:
                _remove_scratch(cfg)

    return run


def lost_another_rank(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective that failed because another rank died, or timed out
    (``GENCOMPARE_COLLECTIVE_TIMEOUT_S``) because one hangs."""
    import torch.distributed as dist

    text = str(exc)
    return isinstance(exc, getattr(dist, "DistError", ())) or (
        isinstance(exc, RuntimeError) and any(w in text for w in ("gloo", "NCCL", "Connection reset", "Timed out")))


def _remove_scratch(cfg) -> None:
    path = Path(str(cfg.paths.output_dir or ""))
    if path.name.startswith(SCRATCH_PREFIX) and str(path.parent) == tempfile.gettempdir():
        shutil.rmtree(path, ignore_errors=True)
