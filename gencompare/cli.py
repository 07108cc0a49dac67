"""``gencompare``: a thin command-line front end.

``gencompare <command> [hydra overrides]`` composes ``conf/<command>.yaml`` with Hydra
(so ``-m``, ``--cfg job``, ``--help`` and shell completion work as in any Hydra app) and
hands the config to an importable task function that returns its metrics.

The configs live in the repository's top-level ``conf/`` and ship as the package
``gencompare.conf`` (setup.py maps it), so Hydra reads them as ``pkg://gencompare.conf``
from a wheel and from an editable install alike.
"""
from __future__ import annotations

import functools
import importlib.resources
import importlib.util
import itertools
import os
import sys
import tempfile
from pathlib import Path

from gencompare.errors import GencompareError
from gencompare.record import RunDir, write_failure
from gencompare.terminal import console  # stderr, and the job's log file inside a Hydra job

CONF_PACKAGE = "gencompare.conf"


def _config_path() -> str:
    """Where Hydra finds the configs: the installed package ``gencompare.conf`` (a wheel,
    or ``pip install -e .``, whose finder maps it to ``conf/``), else - a checkout put on
    ``sys.path`` without installing it - the checkout's ``conf/`` directory."""
    if importlib.util.find_spec(CONF_PACKAGE) is not None:
        return f"pkg://{CONF_PACKAGE}"
    return str(Path(__file__).resolve().parent.parent / "conf")


CONFIG_PATH = _config_path()  # a Hydra config path: pkg://gencompare.conf or an absolute dir

USAGE = """usage: gencompare <command> [overrides ...]

commands:
  train     train a family:            gencompare train model=vae dataset=mnist
            sweep (one run per job):   gencompare train -m model=gan,vae seed=0,1
  eval      score a run dir:           gencompare eval run=outputs/runs/<date>/<run>
  sample    draw from a trained run:   gencompare sample run=outputs/runs/<date>/<run> n=64 [out=x.png]
  compare   table of runs or a sweep:  gencompare compare outputs/multirun/<date>/<time>

`gencompare <command> --help` lists config groups and options; `--cfg job` prints the config.
"""


def _report_errors(fn):
    """One line on stderr and exit status 2 for a user error (full traceback with HYDRA_FULL_ERROR=1)."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except GencompareError as exc:
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


FLAGS_WITHOUT_RUN = {"--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i", "--shell-completion", "-sc",
                     "--resolve", "--package", "-p"}


def _group_options(group: str) -> list[str]:
    """The choices of config group ``group`` (``model`` -> ``ddpm, gan, ...``); [] when it is no group."""
    if CONFIG_PATH.startswith("pkg://"):
        root = importlib.resources.files(CONF_PACKAGE)  # a Traversable: a wheel may be a zip
    else:
        root = Path(CONFIG_PATH)
    folder = root.joinpath(*group.split("/"))
    if not folder.is_dir():
        return []
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.is_file() and p.name.endswith(".yaml"))


def _initialize_hydra(job_name: str):
    """Hydra's compose API on the same configs as ``hydra.main(config_path=CONFIG_PATH)``."""
    from hydra import initialize_config_dir, initialize_config_module

    if CONFIG_PATH.startswith("pkg://"):
        return initialize_config_module(config_module=CONF_PACKAGE, version_base="1.3", job_name=job_name)
    return initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3", job_name=job_name)


def precheck(config_name: str, args: list[str]) -> None:
    """Fail in one line, before Hydra starts a run dir, on an unknown config-group choice
    (``model=nope``, also inside a sweep ``model=gan,nope``) or, for a single run, on any
    override the schema rejects (``trainer.batch_size=abc``, ``trainer.max_stpes=3``).

    Raises:
        GencompareError: the override and what is wrong with it (valid choices listed).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    if any(a.split("=", 1)[0] in FLAGS_WITHOUT_RUN for a in args):
        return
    overrides = [a for a in args if not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as exc:
        raise GencompareError(f"cannot parse overrides: {str(exc).splitlines()[0]}") from None
    if any(o.key_or_group.startswith("hydra.searchpath") for o in parsed):
        return  # extra config dirs: leave group checks to Hydra
    for o in parsed:
        group = o.key_or_group
        options = _group_options(group)
        if not options or o.is_delete():
            continue
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        for value in values:
            if value not in options and value != "null":
                raise GencompareError(f"{group}={value} is not a {group} config; choose one of: {', '.join(options)}")
    _check_plugins(parsed)
    for o in parsed:  # a file where Hydra will make the run or sweep dir
        if o.key_or_group in ("hydra.run.dir", "hydra.sweep.dir") and not o.is_sweep_override():
            _check_folder(Path(o.get_value_element_as_str()), o.key_or_group)
    if _is_multirun(args):
        jobs = _sweep_jobs(parsed)
        if jobs is None:
            return  # a sweeper other than the basic one chooses the values (Optuna): it checks its own
        bad = []
        for job in jobs:
            try:
                cfg = _compose_checked(config_name, job)
                if config_name == "train":
                    _check_train_values(cfg)
            except GencompareError as exc:
                bad.append(f"  {' '.join(job) or '(no overrides)'}: {exc}")
        if bad:
            raise GencompareError(f"{len(bad)} of {len(jobs)} sweep jobs have bad values; nothing launched:\n"
                                  + "\n".join(bad))
        return
    cfg = _compose_checked(config_name, overrides)
    if config_name == "train":
        _check_folder(Path(str(cfg.paths.log_dir)), "paths.log_dir")


def _compose_checked(config_name: str, overrides: list[str]):
    """Compose ``config_name`` with ``overrides`` (``hydra.*`` left to Hydra), turning a
    schema error into one line.

    Raises:
        GencompareError: the key and what is wrong with its value; a missing value.
    """
    from hydra import compose
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        with _initialize_hydra(config_name):
            cfg = compose(config_name=config_name,
                          overrides=[a for a in overrides if not a.startswith(("hydra.", "hydra/"))])
    except (HydraException, OmegaConfBaseException) as exc:
        # the useful words are in the innermost OmegaConf error: "Value 'abc' of type 'str'
        # could not be converted to Integer" / "Key 'max_stpes' not in 'TrainerConfig'"
        root = exc
        while root.__cause__ is not None:
            root = root.__cause__
        lines = [ln.strip() for ln in str(root).splitlines() if ln.strip()]
        key = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("full_key:")), None)
        message = lines[0] if lines else type(root).__name__
        raise GencompareError(f"{key}: {message}" if key else message) from None
    # top-level only: deeper nodes hold ${hydra:...} interpolations that resolve only in a run
    missing = sorted(str(k) for k in cfg if OmegaConf.is_missing(cfg, k))
    if missing:
        raise GencompareError(f"missing value for {', '.join(missing)}: pass {missing[0]}=...")
    return cfg


def _check_train_values(cfg) -> None:
    """The value checks ``train`` makes first (batch size, steps, learning rates, metrics)."""
    from gencompare.config import validate
    from gencompare.evaluate import check_metrics_config

    validate(cfg)
    if cfg.get("metrics"):
        check_metrics_config(cfg.metrics, cfg.dataset.kind)


def _sweep_jobs(parsed) -> list[list[str]] | None:
    """The overrides of every job of a basic-sweeper multirun (the cartesian product of the
    swept values, as Hydra's BasicSweeper forms it); None when another sweeper is chosen or
    a sweep cannot be expanded here (ranges, intervals)."""
    if any(o.key_or_group in ("hparams_search", "hydra/sweeper") for o in parsed):
        return None
    axes: list[list[str]] = []
    for o in parsed:
        key = o.get_key_element()
        if o.key_or_group.startswith(("hydra.", "hydra/")):
            continue
        if o.is_sweep_override():
            try:
                values = list(o.sweep_string_iterator())
            except Exception:  # noqa: BLE001 - range/interval sweeps: Hydra expands them
                return None
            axes.append([f"{key}={v}" for v in values])
        else:
            axes.append([o.input_line])
    return [list(job) for job in itertools.product(*axes)]


def _check_folder(path: Path, what: str) -> None:
    """Refuse, in one line, a path whose own or parent entry is a file where gencompare needs a folder.

    Raises:
        GencompareError: naming the file.
    """
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                raise GencompareError(f"{what}: {p} is a file, but gencompare needs a folder there; "
                                      "move it away or choose another path")
            return


def _remove_empty_run_dir(cfg) -> None:
    """Hydra makes the run dir before the task starts; a run that failed on bad input
    leaves nothing in it but an empty log (and its claim), so remove it rather than leave clutter."""
    try:
        run_dir = Path(cfg.paths.output_dir)
    except Exception:  # noqa: BLE001 - not a train/eval config
        return
    if not run_dir.is_dir():
        return
    files = [p for p in run_dir.rglob("*") if p.is_file() and p.name != RunDir.CLAIM]
    if all(p.suffix == ".log" and p.parent == run_dir for p in files):  # the log holds only the error
        import shutil

        shutil.rmtree(run_dir, ignore_errors=True)


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


def _is_multirun(args: list[str]) -> bool:
    """``-m``, or an ``experiment=`` / ``hparams_search=`` whose config sets ``hydra.mode: MULTIRUN``."""
    if "-m" in args or "--multirun" in args:
        return True
    return any(_chosen_config(a).get("hydra", {}).get("mode") == "MULTIRUN"
               for a in args if a.split("=", 1)[0] in ("experiment", "hparams_search", "+experiment"))


def _chosen_config(override: str) -> dict:
    """The raw YAML of config ``group=name`` (``{}`` when there is none or it is unreadable)."""
    import yaml

    group, _, name = override.lstrip("+").partition("=")
    if CONFIG_PATH.startswith("pkg://"):
        root = importlib.resources.files(CONF_PACKAGE)
    else:
        root = Path(CONFIG_PATH)
    f = root.joinpath(*group.split("/"), f"{name}.yaml")
    try:
        data = yaml.safe_load(f.read_text()) if f.is_file() else None
    except Exception:  # noqa: BLE001 - Hydra reports a broken config itself
        return {}
    return data if isinstance(data, dict) else {}


PLUGIN_GROUPS = ("hydra/sweeper", "hydra/launcher")
PLUGIN_EXTRA = "pip install 'gencompare[sweep]'"  # pyproject's sweep extra: the Optuna sweeper, submitit launchers


def _check_plugins(parsed) -> None:
    """Fail in one line when a sweeper or launcher the command chooses (``hydra/sweeper=``,
    ``hydra/launcher=``, or an ``experiment`` / ``hparams_search`` config's defaults) has
    no installed Hydra plugin, naming the extra that installs it.

    Raises:
        GencompareError: the missing plugin and ``pip install 'gencompare[sweep]'``.
    """
    wanted: list[tuple[str, str, str]] = []  # (group, name, where it was chosen)
    for o in parsed:
        if o.is_delete():
            continue
        if o.key_or_group in PLUGIN_GROUPS:
            wanted.append((o.key_or_group, o.get_value_element_as_str(), o.input_line))
        elif o.key_or_group.lstrip("+") in ("experiment", "hparams_search") and not o.is_sweep_override():
            line = f"{o.key_or_group}={o.get_value_element_as_str()}"
            for entry in _chosen_config(line).get("defaults") or []:
                if isinstance(entry, dict):
                    for key, value in entry.items():
                        group = key.removeprefix("override").strip().lstrip("/")
                        if group in PLUGIN_GROUPS and isinstance(value, str):
                            wanted.append((group, value, line))
    if not wanted:
        return
    installed = _installed_plugins()
    for group, name, where in wanted:
        if name not in installed.get(group, set()):
            kind = group.split("/")[1]
            raise GencompareError(f"{where}: the Hydra {kind} '{name}' is not installed (installed: "
                                  f"{', '.join(sorted(installed.get(group, ()))) or 'none'}); {PLUGIN_EXTRA}")


def _installed_plugins() -> dict[str, set[str]]:
    """The sweeper and launcher configs Hydra can find: its own and those its plugins register."""
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins

    Plugins.instance()  # imports the hydra_plugins.* packages, which register their configs
    store = ConfigStore.instance()
    return {g: {n.removesuffix(".yaml") for n in store.list(g) if n.endswith(".yaml")} for g in PLUGIN_GROUPS}


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
    from gencompare.train.seeds import train  # one seed, or trainer.seed_batch seeds stacked

    _report_errors(precheck)("train", sys.argv[1:])
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


def eval_command() -> None:
    from gencompare import config  # noqa: F401
    from gencompare.evaluate import evaluate_run

    _report_errors(precheck)("eval", sys.argv[1:])
    _hydra_command("eval", evaluate_run)()


def sample_command() -> None:
    from gencompare import config  # noqa: F401
    from gencompare.sample import sample_run

    _report_errors(precheck)("sample", sys.argv[1:])
    _hydra_command("sample", sample_run)()


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
    COMMANDS[command]()


if __name__ == "__main__":
    # import by module name: under `python -m`, functions defined in __main__ cannot be
    # pickled by the joblib / submitit launchers
    from gencompare.cli import main as _main

    _main()
