"""Checks of a command line before Hydra starts a run dir (``gencompare <command> ...``):
config-group choices, the schema's values (for every job of a sweep), folders where files
are, and the Hydra plugins a sweeper or launcher needs. Each failure is one
:class:`~gencompare.errors.GencompareError` line; :mod:`gencompare.cli` reports it.

The configs live in the repository's top-level ``conf/`` and ship as the package
``gencompare.conf`` (setup.py maps it), so Hydra reads them as ``pkg://gencompare.conf``
from a wheel and from an editable install alike.
"""
from __future__ import annotations

import importlib.resources
import importlib.util
import itertools
from pathlib import Path

from gencompare.errors import GencompareError

CONF_PACKAGE = "gencompare.conf"


def _config_path() -> str:
    """Where Hydra finds the configs: the installed package ``gencompare.conf`` (a wheel,
    or ``pip install -e .``, whose finder maps it to ``conf/``), else - a checkout put on
    ``sys.path`` without installing it - the checkout's ``conf/`` directory."""
    if importlib.util.find_spec(CONF_PACKAGE) is not None:
        return f"pkg://{CONF_PACKAGE}"
    return str(Path(__file__).resolve().parent.parent / "conf")


CONFIG_PATH = _config_path()  # a Hydra config path: pkg://gencompare.conf or an absolute dir

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
