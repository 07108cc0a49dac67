"""What a config read from a run dir may instantiate: only what the user's own configs could.

``gencompare eval`` and ``sample`` rebuild a model from a run dir's ``config.yaml``, a file
that may have come from anyone. Instantiating it runs whatever callable its ``_target_``s
name, so each one must be a ``_target_`` of a YAML that Hydra finds on the config search
path of the command being run: the config groups gencompare ships (``conf/``) and the
user's ``hydra.searchpath``, where a new family's YAML lives. torch's optimizers and
learning-rate schedulers are allowed by class. The decision reads YAML files only: no module
named by a run dir's file is imported to make it.

A run dir's config holds no interpolation (``${...}``): gencompare writes it resolved, and a
resolver runs code when it is resolved (``${oc.create:{_target_: ...}}`` makes a
``_target_`` that no check of the file's text sees), so :func:`check_no_interpolation`
refuses any before anything is resolved or built.
"""
from __future__ import annotations

import functools
import importlib.util
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from gencompare.errors import GencompareError

# Where the user's own configs come from: gencompare's conf/ (Hydra's "main" provider) and
# hydra.searchpath ("hydra.searchpath in command-line" / "... in main"). Hydra's own configs
# and plugins' search paths are no configs of the user's.
_USER_PROVIDERS = ("main", "hydra.searchpath")
# Hydra's own settings (the hydra/ group, a `hydra:` key of a global config such as an Optuna
# sweeper's) are instantiated by Hydra at launch, never from a run dir's config.
_HYDRA_KEY = "hydra"


def search_path(extra: Sequence[str] = ()) -> tuple[tuple[str, str], ...]:
    """``(provider, "scheme://path")`` of each user config source of the command being run:
    Hydra's record of its search path inside a Hydra job, else (the Python API, ``compare``)
    the configs gencompare ships; then ``extra``, folders given as ``hydra.searchpath``
    gives them (``file:///path``, ``pkg://module``; a plain path is a folder), for a command
    that is no Hydra app."""
    from hydra.core.hydra_config import HydraConfig

    added = tuple(("hydra.searchpath", p if "://" in p else f"file://{Path(p).expanduser().resolve()}")
                  for p in map(str, extra))
    try:
        sources = HydraConfig.get().runtime.config_sources
    except ValueError:  # not inside a Hydra job
        return (("main", _shipped_configs()), *added)
    return (*((s.provider, f"{s.schema}://{s.path}") for s in sources if s.provider.startswith(_USER_PROVIDERS)),
            *added)


def _shipped_configs() -> str:
    """Where gencompare's own configs are, as ``gencompare.cli.CONFIG_PATH`` finds them: the
    installed package ``gencompare.conf``, else a checkout's ``conf/``."""
    if importlib.util.find_spec("gencompare.conf") is not None:
        return "pkg://gencompare.conf"
    return f"file://{Path(__file__).resolve().parent.parent / 'conf'}"


@functools.lru_cache(maxsize=8)
def trusted_targets(path: tuple[tuple[str, str], ...]) -> frozenset[str]:
    """Every ``_target_`` string in every YAML of the config sources ``path`` (see
    :func:`search_path`), Hydra's own settings aside. A source that does not exist, or a file
    that is no readable YAML, adds none."""
    from hydra._internal.config_repository import ConfigRepository
    from hydra._internal.config_search_path_impl import ConfigSearchPathImpl
    from hydra.core.plugins import Plugins

    Plugins.instance()  # registers Hydra's config sources (file://, pkg://)
    csp = ConfigSearchPathImpl()
    for provider, where in path:
        csp.append(provider, where)
    found: set[str] = set()
    for source in ConfigRepository(csp).get_sources():
        if not source.available():
            continue
        for name in _configs(source, ""):
            try:
                node = OmegaConf.to_container(source.load_config(name).config, resolve=False)
            except Exception:  # noqa: BLE001 - a YAML Hydra cannot read builds nothing either
                continue
            found.update(_targets_in(node))
    return frozenset(found)


def _configs(source, group: str) -> Iterator[str]:
    """The config names (``model/gan``) under ``group`` of a Hydra config source, recursively."""
    from hydra.core.object_type import ObjectType

    for name in source.list(group, ObjectType.CONFIG):
        yield f"{group}/{name}" if group else name
    for sub in source.list(group, ObjectType.GROUP):
        if not group and sub == _HYDRA_KEY:
            continue
        yield from _configs(source, f"{group}/{sub}" if group else sub)


def _targets_in(node: Any, top: bool = True) -> Iterator[str]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "_target_" and isinstance(value, str):
                yield value
            elif not (top and key == _HYDRA_KEY):
                yield from _targets_in(value, top=False)
    elif isinstance(node, list):
        for value in node:
            yield from _targets_in(value, top=False)


def is_safe_target(target: str, trusted: frozenset[str] | None = None) -> bool:
    """True for a ``_target_`` of the user's configs (``trusted``; default: those on the
    command's search path, :func:`trusted_targets`) or a ``torch.optim`` optimizer /
    scheduler class."""
    if target in (trusted_targets(search_path()) if trusted is None else trusted):
        return True
    module, _, name = target.rpartition(".")
    if module == "torch.optim":
        obj = getattr(torch.optim, name, None)
        return isinstance(obj, type) and issubclass(obj, torch.optim.Optimizer)
    if module == "torch.optim.lr_scheduler":
        obj = getattr(torch.optim.lr_scheduler, name, None)
        return isinstance(obj, type) and issubclass(obj, torch.optim.lr_scheduler.LRScheduler)
    return False


def check_no_interpolation(cfg: DictConfig | ListConfig, where: str) -> None:
    """Refuse a config read from a run dir (``config.yaml``, or the config inside a
    checkpoint) that holds an interpolation anywhere: a ``${...}`` value, a string with one
    inside, or an escaped ``\\${...}``. Nothing is resolved to decide: each node is asked
    :meth:`OmegaConf.is_interpolation` and only plain nodes are descended into.

    Raises:
        GencompareError: the first interpolation, with its key, in one line.
    """
    def walk(node: DictConfig | ListConfig, path: str) -> None:
        keys = list(node.keys()) if isinstance(node, DictConfig) else range(len(node))
        for key in keys:
            here = f"{path}[{key}]" if isinstance(node, ListConfig) else (f"{path}.{key}" if path else str(key))
            if OmegaConf.is_interpolation(node, key):
                raise GencompareError(
                    f"{where}: {here} is an interpolation (${{...}}); a run dir's config is written resolved, "
                    "and resolving one from a file you were sent could run code, so it is not read (train the "
                    "run again, or write the value itself)")
            if OmegaConf.is_missing(node, key):
                continue
            sub = node[key]  # not an interpolation: a plain value or a container, nothing resolved
            if isinstance(sub, (DictConfig, ListConfig)):
                walk(sub, here)

    walk(cfg, "")


def check_targets(node: Any, where: str) -> None:
    """Refuse a config (one read from a run dir) whose ``_target_`` anywhere is not
    :func:`is_safe_target`: instantiating it would run whatever callable it names.

    Raises:
        GencompareError: the first unsafe target, with its key, in one line.
    """
    trusted = trusted_targets(search_path())

    def walk(value: Any, path: str) -> None:
        if isinstance(value, Mapping):
            for key, sub in value.items():
                if key == "_target_" and not (isinstance(sub, str) and is_safe_target(sub, trusted)):
                    raise GencompareError(
                        f"{where}: {path + '.' if path else ''}_target_={sub} is not a gencompare family, optimizer "
                        "or scheduler, nor named by a config on this command's search path (hydra.searchpath); a "
                        "run dir's config may only build what your own configs can (train it again from your own "
                        "config, or add its config's folder with hydra.searchpath=[file://...])")
                walk(sub, f"{path}.{key}" if path else str(key))
        elif isinstance(value, (list, tuple)):
            for i, sub in enumerate(value):
                walk(sub, f"{path}[{i}]")

    walk(OmegaConf.to_container(node, resolve=False) if isinstance(node, (DictConfig, ListConfig)) else node, "")
