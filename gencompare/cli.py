"""``gencompare``: a thin command-line front end.

``gencompare <command> [hydra overrides]`` composes ``conf/<command>.yaml`` with Hydra
(so ``-m``, ``--cfg job``, ``--help`` and shell completion work as in any Hydra app) and
hands the config to an importable task function that returns its metrics. The command
line is checked first (:mod:`gencompare.precheck`), so that bad input fails in one line
before Hydra makes a run dir.
"""
from __future__ import annotations

import sys

STARTUP_INTERRUPTED = "interrupted (SIGINT) during start-up, before the run began; start the command again"


def _interrupted_at_startup() -> None:
    """Ctrl-C before a command's own handling is in place (imports, Hydra's composition,
    the data loading): one line, exit 130, as after an interrupted run.

    ``os._exit``, not ``SystemExit``: a KeyboardInterrupt raised inside code that an
    extension ran through ``PyRun_String`` while a module loaded leaves CPython's "unhandled
    KeyboardInterrupt" flag set, and the interpreter then ends itself by SIGINT (status -2)
    whatever was raised after. Nothing is open to close at this point."""
    import os

    sys.stderr.write(STARTUP_INTERRUPTED + "\n")
    sys.stderr.flush()
    os._exit(130)


try:  # Ctrl-C while the modules load (a fraction of a second, longer on a cold disk)
    import functools
    import os
    import tempfile
    from pathlib import Path

    from gencompare.errors import GencompareError
    from gencompare.precheck import (CONF_PACKAGE, CONFIG_PATH, FLAGS_WITHOUT_RUN, _chosen_config,  # noqa: F401
                                     _group_options, _initialize_hydra, _is_multirun, precheck)
    from gencompare.record import RunDir, write_failure
    from gencompare.record.lock import RunDirInUse
    from gencompare.terminal import console  # stderr, and the job's log file inside a Hydra job
except KeyboardInterrupt:
    _interrupted_at_startup()

# the checkout's README when gencompare runs from one (`make setup` installs it editable)
_README = Path(__file__).resolve().parent.parent / "README.md"
USAGE = f"""usage: gencompare <command> [overrides ...]

commands:
  train     train a family:            gencompare train model=vae dataset=mnist
            sweep (one run per job):   gencompare train -m model=gan,vae seed=0,1
  eval      score a run dir:           gencompare eval run=outputs/runs/<date>/<run>
  sample    draw from a trained run:   gencompare sample run=outputs/runs/<date>/<run> n=64 [out=x.png]
  compare   table of runs or a sweep:  gencompare compare outputs/multirun/<date>/<time>

`gencompare <command> --help` lists config groups and options; `--cfg job` prints the config.
Guide: {_README if _README.is_file() else "README.md of the gencompare repository"}
(set-up, a first run, a sweep, a comparison) and the docs/ pages it links for the rest.
"""


def _report_errors(fn):
    """One line on stderr and exit status 2 for a user error (full traceback with HYDRA_FULL_ERROR=1)."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:  # before the task's own signal handling (train: StopRequest)
            _remove_empty_run_dir(args[0] if args else None)
            _interrupted_at_startup()
        except GencompareError as exc:
            if isinstance(exc, RunDirInUse):  # the dir is another process's: write nothing there
                _close_job_log()
            else:
                _remove_empty_run_dir(args[0] if args else None)
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            from rich.markup import escape  # a message may hold brackets: gencompare[sweep], a[0]

            console.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True, highlight=False)
            raise SystemExit(2) from None
        except SystemExit as exc:
            if exc.code in (130, 143):  # interrupted during start-up: nothing worth keeping yet
                _remove_empty_run_dir(args[0] if args else None)
            raise

    return wrapped


def _remove_empty_run_dir(cfg) -> None:
    """Hydra makes the run dir before the task starts; a run that failed on bad input
    leaves nothing in it but an empty log (and its claim), so remove it rather than leave clutter."""
    try:
        run_dir = Path(cfg.paths.output_dir)
    except Exception:  # noqa: BLE001 - not a train/eval config
        return
    if not run_dir.is_dir():
        return
    files = [p for p in run_dir.rglob("*") if p.is_file() and p.name not in (RunDir.CLAIM, RunDir.LOCK)]
    if all(p.suffix == ".log" and p.parent == run_dir for p in files):  # the log holds only the error
        import shutil

        shutil.rmtree(run_dir, ignore_errors=True)


def _close_job_log() -> None:
    """Detach Hydra's job log file (in a run dir another process holds) before the error is
    printed, so that the refused command leaves no line in that run's log."""
    import logging

    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
        root.removeHandler(handler)
        handler.close()


def _hydra_command(config_name: str, task):
    import hydra

    @hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=config_name)
    def _main(cfg):
        if _in_sweep():
            result = _sweep_job(task, cfg)
            if result is None:
                return float("nan") if cfg.get("optimized_metric") else None  # Optuna: a failed trial
        else:
            result = _report_errors(task)(cfg)
        if cfg.get("optimized_metric") and isinstance(result, dict):
            # a sweeper (Optuna) needs one float back
            from gencompare.report import select_metric

            return _report_errors(select_metric)(result, cfg.optimized_metric)
        return result

    return _main


SWEEP_FAILURES_ENV = "GENCOMPARE_SWEEP_FAILURES"  # a file each failed sweep job appends its line to


def _in_sweep() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:  # not inside a Hydra job
        return False


def _sweep_job(task, cfg):
    """Run one job of a sweep so that its failure does not end the sweep: the one-line
    error goes to the job's ``failed.json`` and stderr, and None is returned. Interrupts
    (SIGINT, SIGTERM) still stop the whole sweep."""
    from gencompare.config import hydra_overrides

    try:
        return task(cfg)
    except RunDirInUse as exc:  # its dir is another process's: no failed.json there
        _close_job_log()
        console.print(f"[bold red]job failed:[/] {exc}", highlight=False)
        return None
    except Exception as exc:  # noqa: BLE001 - any failure of one job: record it, run the others
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        message = str(exc) if isinstance(exc, GencompareError) else f"{type(exc).__name__}: {exc}"
        message = " ".join(message.split())
    try:
        run = RunDir(cfg.paths.output_dir)
        write_failure(run, message, hydra_overrides())
        where = str(run.path)
    except Exception:  # noqa: BLE001 - no run dir to write into: stderr still says it
        where = "(no run dir)"
    console.print(f"[bold red]job failed:[/] {where}: {message}", highlight=False)
    failures = os.environ.get(SWEEP_FAILURES_ENV)
    if failures:
        with open(failures, "a") as f:  # one short append per job: whole lines even from parallel workers
            f.write(where + "\n")
    return None


def _name_jobs_by_swept_values(args: list[str]) -> list[str]:
    """A multirun's command line with the fixed overrides' keys added to Hydra's
    ``override_dirname`` exclusions, so that each job dir is named by its swept values
    (:mod:`gencompare.sweep_dirs`)."""
    from gencompare.sweep_dirs import exclude_fixed_overrides

    if any(a.split("=", 1)[0] in FLAGS_WITHOUT_RUN for a in args):
        return list(args)  # --cfg, --help, completion: nothing runs
    job = (_chosen_config("hydra=default").get("job") or {}).get("config") or {}
    static = list((job.get("override_dirname") or {}).get("exclude_keys") or [])
    return exclude_fixed_overrides(args, static)


def train_command() -> None:
    from gencompare import config  # noqa: F401 - registers the schemas
    from gencompare import sweep_dirs  # noqa: F401 - the resolver hydra.sweep.subdir uses
    from gencompare import launch  # several processes: trainer.devices=N, torchrun (issue 22)
    from gencompare.train.seeds import train  # one seed, or trainer.seed_batch seeds stacked

    sys.argv = [sys.argv[0], *launch.rank_argv(sys.argv[1:])]  # a rank > 0: scratch run dir, silent
    _report_errors(precheck)("train", sys.argv[1:])
    if _report_errors(launch.start_ranks)(sys.argv[1:]):  # trainer.devices=N: N ranks ran through torch elastic
        return
    # under torchrun, or a submitit job's tasks: errors name the rank; the process group left at the end
    train = launch.on_rank(train, join=launch.join_submitit_tasks)
    if not _is_multirun(sys.argv[1:]):
        _hydra_command("train", train)()
        return
    sys.argv = [sys.argv[0], *_name_jobs_by_swept_values(sys.argv[1:])]
    with tempfile.NamedTemporaryFile("r", prefix="gencompare-sweep-", suffix=".txt") as failures:
        os.environ[SWEEP_FAILURES_ENV] = failures.name  # the launchers' worker processes inherit it
        _hydra_command("train", train)()
        failed = [ln for ln in Path(failures.name).read_text().splitlines() if ln.strip()]
    if failed:
        console.print(f"[bold red]error:[/] {len(failed)} sweep job(s) failed (each says why in its "
                      f"{RunDir.FAILURE}): {', '.join(failed)}", highlight=False)
        raise SystemExit(1)


def _on_ranks(command: str, task) -> None:
    """Run ``task`` as ``gencompare <command>``: in one process, or, with
    ``trainer.devices=N`` or under torchrun, as one rank of N (issue 22)."""
    from gencompare import launch

    sys.argv = [sys.argv[0], *launch.rank_argv(sys.argv[1:], command)]  # a rank > 0: scratch run dir, silent
    _report_errors(precheck)(command, sys.argv[1:])
    if _report_errors(launch.start_ranks)(sys.argv[1:], command):  # trainer.devices=N: the ranks ran
        return
    _hydra_command(command, launch.on_rank(task))()


def eval_command() -> None:
    from gencompare import config  # noqa: F401
    from gencompare.evaluate import evaluate_run
    from gencompare.record.lock import lock_run_dir, run_locks
    from gencompare.train.distributed import rank_info

    def evaluate_locked(cfg):
        """``eval`` writes into the run dir (metrics.json, plots): it holds the dir's lock
        (rank 0 of several: the one that writes)."""
        with run_locks():
            if Path(str(cfg.run)).is_dir() and rank_info().main:
                lock_run_dir(Path(str(cfg.run)), "eval")
            return evaluate_run(cfg)

    _on_ranks("eval", evaluate_locked)


def sample_command() -> None:
    from gencompare import config  # noqa: F401
    from gencompare.sample import sample_run

    _on_ranks("sample", sample_run)


def compare_command() -> None:
    from gencompare.report import compare_main

    _report_errors(compare_main)(sys.argv[1:])


COMMANDS = {"train": train_command, "eval": eval_command, "sample": sample_command, "compare": compare_command}
HYDRA_COMMANDS = ("train", "eval", "sample")  # the commands whose overrides Hydra completes


def complete(argv: list[str]) -> None:
    """Shell completion with subcommands. Hydra's completion script (installed with
    ``eval "$(gencompare train -sc install=bash)"``) calls ``gencompare -sc query=bash``
    with the typed line in ``COMP_LINE``, not knowing about subcommands: complete the
    command name, or drop it from ``COMP_LINE`` and let that command's Hydra app
    complete the overrides (config groups, keys, values)."""
    line = os.environ.get("COMP_LINE", "")
    words = line.split()
    typing_command = len(words) < 2 or (len(words) == 2 and not line.endswith(" "))
    if typing_command:
        prefix = words[1] if len(words) == 2 else ""
        print(" ".join(c for c in COMMANDS if c.startswith(prefix)))
        return
    if words[1] not in HYDRA_COMMANDS:
        print("")
        return
    os.environ["COMP_LINE"] = " ".join([words[0], *words[2:]]) + (" " if line.endswith(" ") else "")
    sys.argv = [sys.argv[0], *argv]
    COMMANDS[words[1]]()


def main() -> None:
    argv = sys.argv[1:]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    if argv[0] in ("-sc", "--shell-completion") and any(a.startswith("query") for a in argv[1:]):
        complete(argv)
        return
    command = argv[0]
    if command not in COMMANDS:
        console.print(f"[bold red]error:[/] unknown command {command!r}; choose one of {', '.join(COMMANDS)}")
        raise SystemExit(2)
    # Hydra reads sys.argv: present the subcommand as the program
    sys.argv = [sys.argv[0], *argv[1:]]
    try:
        COMMANDS[command]()
    except KeyboardInterrupt:  # imports, the command line's checks, Hydra's composition
        _interrupted_at_startup()


if __name__ == "__main__":
    # import by module name: under `python -m`, functions defined in __main__ cannot be
    # pickled by the joblib / submitit launchers
    try:
        from gencompare.cli import main as _main
    except KeyboardInterrupt:
        _interrupted_at_startup()
    _main()
