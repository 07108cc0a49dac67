"""How a sweep's folders are named and what is recorded at the top of one.

A sweep job's dir (``hydra.sweep.subdir``) is its job number and the values it was swept
with, from Hydra's ``hydra.job.override_dirname``, the seed always last::

    outputs/multirun/2026-11-28/18-10-00/0_model-gan__seed-0
    outputs/multirun/2026-11-28/18-10-00/5_dataset-grid25__model-vae__seed-2

Hydra's default separators (``model=gan,seed=0``) are not used: a Hydra override cannot
hold an unquoted ``=`` or ``,``, and these dirs go back into overrides
(``gencompare eval run=<dir>``, ``hydra.run.dir=<dir> trainer.resume=true``). The job
number keeps two jobs out of one dir (also when they differ only in an excluded key, or
an Optuna trial repeats another's values). Keys that are noise in a name
(``paths.*``, ``logger.*``, ``trainer.progress``, ...) are Hydra's
``hydra.job.config.override_dirname.exclude_keys`` (``conf/hydra/default.yaml``);
``gencompare train -m`` adds the command line's fixed (not swept) overrides to them
(:func:`exclude_fixed_overrides`), so the name holds what differs between the jobs.

Hydra's basic sweeper writes the sweep's config to ``<sweep dir>/multirun.yaml``; the
Optuna sweeper does not. :class:`SweepRecord` (a Hydra callback, ``hydra.callbacks``)
writes it for every sweeper, so ``compare`` and users find the sweep's command line in
each sweep dir.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

KV_SEP = "-"     # hydra.job.config.override_dirname.kv_sep (conf/hydra/default.yaml)
ITEM_SEP = "__"  # hydra.job.config.override_dirname.item_sep
MAX_NAME = 240   # characters; NAME_MAX is 255 bytes, and a run dir claimed twice adds "_1"
RESOLVER = "gencompare.job_dir"
MULTIRUN_FILE = "multirun.yaml"  # Hydra's name, read by gencompare.report.runs

# what a dir name keeps as is: characters safe in file names, in shells and unquoted in a
# Hydra override value (OverrideLexer's ID and UNQUOTED_CHAR, less / \ $ * ? | :)
_UNSAFE = re.compile(r"[^A-Za-z0-9._+@%-]")
_FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?")


def _item(item: str) -> str:
    """One ``key-value`` of a dir name: unsafe characters as ``_``; a float with more than 8
    characters (Optuna's ``0.00012345678901234``) to 4 significant digits (``0.0001235``),
    its exact value being in the job's ``.hydra/overrides.yaml``."""
    key, sep, value = item.partition(KV_SEP)
    if sep and len(value) > 8 and _FLOAT.fullmatch(value):
        value = f"{float(value):.4g}"
    return _UNSAFE.sub("_", f"{key}{sep}{value}")


def job_dirname(num: Any, override_dirname: Any, seed: Any) -> str:
    """The dir name of sweep job ``num``: ``<num>_<key>-<value>__...__seed-<seed>``.

    Args:
        num: ``hydra.job.num``.
        override_dirname: ``hydra.job.override_dirname`` (items joined by ``__``, key and
            value by ``-``); characters outside ``[A-Za-z0-9._+@%-]`` become ``_``, long
            floats are cut to 4 significant digits.
        seed: the job's ``seed``, always the last item.
    Returns:
        At most 240 characters (a longer name keeps its start, ``...`` and the seed).
    """
    seed_item = f"seed{KV_SEP}{_UNSAFE.sub('_', str(seed))}"
    items = [_item(i) for i in str(override_dirname or "").split(ITEM_SEP) if i]
    body = ITEM_SEP.join(i for i in items if not i.startswith(f"seed{KV_SEP}"))
    prefix, tail = f"{num}_", seed_item if not body else f"{ITEM_SEP}{seed_item}"
    room = MAX_NAME - len(prefix) - len(tail)
    if len(body) > room:
        body = body[: room - 3] + "..."
    return f"{prefix}{body}{tail}"


def register_resolver() -> None:
    """Make ``${gencompare.job_dir:num,override_dirname,seed}`` available to configs (idempotent)."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, job_dirname)


register_resolver()  # importing this module (conf/hydra's callback does) is enough


def exclude_fixed_overrides(args: list[str], exclude_keys: list[str]) -> list[str]:
    """``args`` (a multirun's command line) plus one Hydra override that adds the keys of
    its fixed (not swept) task overrides to ``exclude_keys``, so that a job's dir name
    holds the swept values only. ``args`` unchanged when it sets the exclusion itself or
    fixes nothing.

    Raises:
        hydra.errors.HydraException: ``args`` does not parse (the CLI checks that first).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    setting = "hydra.job.config.override_dirname.exclude_keys"
    parsed = OverridesParser.create().parse_overrides([a for a in args if not a.startswith("-")])
    if any(o.key_or_group == setting for o in parsed):
        return list(args)
    fixed = [o.key_or_group for o in parsed
             if not o.key_or_group.startswith(("hydra.", "hydra/")) and not o.is_sweep_override()]
    keys = list(dict.fromkeys([*exclude_keys, *fixed]))
    if len(keys) == len(exclude_keys):
        return list(args)
    return [*args, f"{setting}=[{','.join(repr(k) for k in keys)}]"]


class SweepRecord(Callback):
    """Hydra callback (``hydra.callbacks``): write the sweep's composed config, unresolved,
    to ``<sweep dir>/multirun.yaml`` when the multirun starts, as Hydra's basic sweeper
    does (it rewrites the same file), so that sweeps of any sweeper (Optuna) have one."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:  # noqa: ARG002 - Hydra's signature
        sweep_dir = Path(str(config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(config, sweep_dir / MULTIRUN_FILE)
