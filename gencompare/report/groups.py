"""Grouping runs: one group per (model, dataset, variant) and config, seeds aside.

Runs of different dataset variants (``mnist`` and ``mnist-5k``) are never averaged
together, nor runs whose configs differ in anything but the seed and bookkeeping (the
trials of a hyperparameter sweep stay separate groups, labelled with what differs).
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gencompare.record import flatten, lookup
from gencompare.report.runs import Run
from gencompare.report.stats import Stat, summarize

#: The table order of runs whose metrics.json predates ``data.table_order`` (the bundle's,
#: gencompare.data.DataBundle): the built-in datasets' orders then.
_LEGACY_TABLE_ORDER = {"mnist": 10, "mnist-5k": 11, "fashion_mnist": 20, "stacked_mnist": 30, "stacked_mnist-5k": 31,
                       "ring8": 40, "grid25": 50}
BASELINES = (("train_images", "train images (baseline)"), ("kmeans_centroids", "k-means centroids (baseline)"))

# Config values that change bookkeeping, speed or memory but not the trained model or
# the metrics' protocol: runs that differ only in these are seeds of one experiment.
_IGNORED_CONFIG = ("seed", "paths.", "logger.", "hydra.", "tags", "task_name", "device.", "optimized_metric",
                   "trainer.progress", "trainer.resume", "trainer.log_every", "trainer.sample_every",
                   "trainer.checkpoint_every", "trainer.num_grid_samples", "trainer.eval_every",
                   "dataset.data_dir", "dataset.download", "dataset.system_dirs", "model.experiment_max_steps.",
                   "model.experiment_eval_every.")
_IGNORED_SUFFIXES = ("memory_budget_mb", "sample_batch_size", "bound_batch_size", "iwae_chunk",
                     "likelihood.batch_size")


def config_signature(config: dict[str, Any] | None) -> dict[str, Any] | None:
    """The config values that make runs different experiments: dotted keys, list values
    as JSON text (comparable and shown as written); None for a run without a config."""
    if config is None:
        return None
    flat = flatten(config, sep=".")
    return {k: json.dumps(v, sort_keys=True) if isinstance(v, list) else v for k, v in flat.items()
            if not any(k == p or (p.endswith(".") and k.startswith(p)) for p in _IGNORED_CONFIG)
            and not k.endswith(_IGNORED_SUFFIXES)}


@dataclass
class Group:
    """Runs of one family on one dataset variant with one config (seeds aside)."""

    model: str
    dataset: str
    variant: str
    runs: list[Run]
    differs: dict[str, Any] = field(default_factory=dict)  # config values that set this group apart

    @property
    def label(self) -> str:
        name, shown = gan_method(self.model, self.differs)
        if not shown:
            return name
        return f"{name} ({', '.join(f'{k}={v}' for k, v in shown.items())})"

    @property
    def family(self) -> str:
        return self.runs[0].family

    @property
    def color(self) -> str:
        """The family's colour in every figure (its class's ``family_color``, recorded)."""
        return self.runs[0].color

    @property
    def family_rank(self) -> tuple[int, str]:
        """Where the family sorts among the others (its class's ``family_order``, recorded)."""
        return self.runs[0].family_rank

    @property
    def coverage(self) -> str:
        """How the variant's mode coverage is scored (``mixture``, ``classes``, ``stacked``)."""
        return self.runs[0].coverage

    def stat(self, key: str, scale: float = 1.0) -> Stat | None:
        vals = [v * scale for v in (r.value(key) for r in self.runs) if v is not None]
        return summarize(vals)

    def strings(self, key: str) -> list[str]:
        return sorted({str(lookup(r.metrics, key)) for r in self.runs if lookup(r.metrics, key) is not None})

    @property
    def seeds(self) -> list[Any]:
        return sorted((r.seed for r in self.runs), key=str)


# The GAN options that make a remedy for mode collapse (gencompare/models/gan_remedies.py).
_PACK, _MINIBATCH, _UNROLLED = "model.module.pack", "model.module.minibatch_kernels", "model.module.unrolled_steps"
_REMEDY_KEYS = (_PACK, _MINIBATCH, _UNROLLED)


def gan_method(model: str, differs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A GAN group's name in the papers' terms, when its runs differ from others in a remedy
    for mode collapse, and the config values still to show beside it.

    ``PacGAN<m>`` for packing m > 1 (Lin et al. 2018; the batch size that gives m-point
    packs is then not shown), ``+ minibatch discrimination`` (Salimans et al. 2016),
    ``unrolled GAN (k=<k>)`` (Metz et al. 2017), plain ``GAN``; other families and GAN
    groups that differ in nothing of the kind keep their model name. The remedies are options
    of the GAN's config (conf/model/gan.yaml): only its groups can differ in them.
    """
    if not any(k in differs for k in _REMEDY_KEYS):
        return model, differs
    m, kernels, k = (int(differs.get(key) or (1 if key == _PACK else 0)) for key in _REMEDY_KEYS)
    name = f"PacGAN{m}" if m > 1 else "GAN"
    if k > 0:
        name = f"unrolled {name} (k={k})"
    if kernels > 0:
        name += " + minibatch discrimination"
    hidden = set(_REMEDY_KEYS) | ({"trainer.batch_size"} if _PACK in differs else set())
    return name, {key: v for key, v in differs.items() if key not in hidden}


def method_rank(g: Group) -> tuple:
    """Families in their order; a family's GAN remedies after the plain GAN: packing by m,
    then minibatch discrimination, then the unrolled GAN."""
    d = g.differs
    m, kernels, k = (int(d.get(key) or (1 if key == _PACK else 0)) for key in _REMEDY_KEYS)
    return (*g.family_rank, k > 0, kernels > 0, m, g.label)


def _variant_rank(group: "Group") -> tuple[float, str]:
    """Tables in the order the data's loader gave (``data.table_order``), then by variant name."""
    order = lookup(group.runs[0].metrics, "data.table_order")
    if not isinstance(order, (int, float)):
        from gencompare.data import DEFAULT_TABLE_ORDER

        order = _LEGACY_TABLE_ORDER.get(group.variant, DEFAULT_TABLE_ORDER)
    return (order, group.variant)


def group_runs(runs: Sequence[Run]) -> list[Group]:
    """Group by (model, dataset, variant), then split by any config value (other than
    the seed and bookkeeping) that differs within that group; ordered by variant, then
    by the families' declared order (``family_order``)."""
    by_key: dict[tuple[str, str, str], list[Run]] = {}
    for r in runs:
        by_key.setdefault((r.model, r.dataset, r.variant), []).append(r)
    groups: list[Group] = []
    for (model, dataset, variant), members in by_key.items():
        sigs = [config_signature(r.config) for r in members]
        buckets: dict[str, list[int]] = {}
        for i, s in enumerate(sigs):
            buckets.setdefault(json.dumps(s, sort_keys=True, default=str), []).append(i)
        if len(buckets) == 1:
            groups.append(Group(model, dataset, variant, sorted(members, key=lambda r: str(r.seed))))
            continue
        known = [sigs[idx[0]] for idx in buckets.values() if sigs[idx[0]] is not None]
        keys = sorted({k for s in known for k in s})
        varying = [k for k in keys if len({json.dumps(s.get(k), default=str) for s in known}) > 1]
        for idx in buckets.values():
            sig = sigs[idx[0]]
            differs = {"config": "missing"} if sig is None else {k: sig.get(k) for k in varying}
            groups.append(Group(model, dataset, variant, sorted((members[i] for i in idx), key=lambda r: str(r.seed)),
                                differs))
    groups.sort(key=lambda g: (_variant_rank(g), g.family_rank, g.label))
    return groups


def by_variant(groups: Sequence[Group]) -> dict[str, list[Group]]:
    """The groups of each dataset variant, variants in first-seen order."""
    out: dict[str, list[Group]] = {}
    for g in groups:
        out.setdefault(g.variant, []).append(g)
    return out


def baseline_rows(groups: Sequence[Group]) -> list[tuple[str, Stat, Stat | None, Stat | None]]:
    """The Parzen sanity baselines of one variant (Theis et al. 2016) as ``(label, mean,
    stderr, sigma)``: identical for every run of the variant (cached per variant by the
    evaluation), so averaged only to absorb float noise."""
    runs = [r for g in groups for r in g.runs]

    def over_runs(key: str) -> Stat | None:
        return summarize([v for v in (r.value(key) for r in runs) if v is not None])

    out = []
    for key, label in BASELINES:
        mean = over_runs(f"parzen_baselines.{key}.mean")
        if mean is None:
            continue
        out.append((label, Stat(mean.mean, math.nan, math.nan, 1), over_runs(f"parzen_baselines.{key}.stderr"),
                    over_runs(f"parzen_baselines.{key}.sigma")))
    return out
