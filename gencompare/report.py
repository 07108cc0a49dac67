"""``gencompare compare``: turn run dirs into the table a researcher came for.

Reads each run's ``config.yaml`` and ``metrics.json`` (and ``history.jsonl`` for the
training diagnostics), groups runs by (model, dataset, variant) and by any config
value other than the seed that differs between them, aggregates over seeds and
writes, into the output folder:

- ``comparison.md``: one table per dataset variant (families as rows, the Parzen
  sanity baselines of Theis et al. 2016 as their own rows), the PacGAN-style table
  (mean +- standard error over seeds) for the 2D mixtures, the training
  diagnostics, the published numbers to hold them against, and the problems met;
- ``comparison.csv``: one row per group with mean, std, stderr and count of every
  metric (``<metric>_mean``, ``_std``, ``_stderr``, ``_n``);
- ``diagnostics.csv``: the training diagnostics, one row per run;
- ``comparison.png``: the metrics side by side (bar charts, error bars);
- ``samples_mosaic.png``: each group's first run's final samples, one row per
  family and one column per dataset variant.

Runs of different dataset variants (``mnist`` and ``mnist-5k``) are never averaged
together, nor runs whose configs differ in anything but the seed (the trials of a
hyperparameter sweep stay separate rows, labelled with what differs).

Statistics over seeds: ``std`` is the sample standard deviation (ddof = 1) and
``stderr = std / sqrt(n)`` (the "mean +- standard error over 10 trials" of PacGAN,
Lin et al. 2018); with a single run the table shows the metric's own
standard error over test examples instead (Parzen, NLL), as Goodfellow et al. 2014
Table 1 does.
"""
from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import math
import os
import shlex
import statistics
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from gencompare.errors import GencompareError

FAMILY_ORDER = ("gan", "vae", "nade", "ddpm")
POINT_DATASETS = ("ring8", "grid25")
VARIANT_ORDER = ("mnist", "mnist-5k", "fashion_mnist", "stacked_mnist", "stacked_mnist-5k", "ring8", "grid25")
NLL_KIND_LABEL = {"nll_exact": "exact", "nll_iwae": "IWAE", "nll_bound": "bound", None: "none"}
BASELINES = (("train_images", "train images (baseline)"), ("kmeans_centroids", "k-means centroids (baseline)"))
DIAGNOSTIC_TAIL = 0.2  # share of the logged steps, at the end of training, that the oscillation is measured on
DASH = "—"

# Folders inside a run dir (or a sweep dir) that never hold a run of their own.
_SKIP_DIRS = {"wandb", ".submitit", ".hydra", "checkpoints", "samples", "__pycache__"}
# Config values that change bookkeeping, speed or memory but not the trained model or
# the metrics' protocol: runs that differ only in these are seeds of one experiment.
_IGNORED_CONFIG = ("seed", "paths.", "logger.", "hydra.", "tags", "task_name", "device.", "optimized_metric",
                   "trainer.progress", "trainer.resume", "trainer.log_every", "trainer.sample_every",
                   "trainer.checkpoint_every", "trainer.num_grid_samples", "trainer.eval_every",
                   "dataset.data_dir", "dataset.download", "dataset.system_dirs", "model.experiment_max_steps.")
_IGNORED_SUFFIXES = ("memory_budget_mb", "sample_batch_size", "bound_batch_size", "iwae_chunk",
                     "likelihood.batch_size")


# ------------------------------------------------------------------ statistics
@dataclass(frozen=True)
class Stat:
    """A metric aggregated over seeds.

    Attributes:
        mean: mean over the runs that report the metric.
        std: sample standard deviation (ddof = 1); NaN for a single run.
        stderr: ``std / sqrt(n)``; NaN for a single run.
        n: number of runs that report the metric.
    """

    mean: float
    std: float
    stderr: float
    n: int


def summarize(values: Sequence[float]) -> Stat | None:
    """Mean, sample std (ddof = 1), standard error and count of ``values``.

    Non-finite values (an infinite reverse KL when a run has no high-quality sample)
    make the mean infinite and the spread NaN rather than being dropped.
    Returns None for no values.
    """
    vals = [float(v) for v in values]
    if not vals:
        return None
    n = len(vals)
    if not all(math.isfinite(v) for v in vals):
        mean = sum(vals) / n if not any(math.isnan(v) for v in vals) else math.nan
        return Stat(mean, math.nan, math.nan, n)
    mean = statistics.fmean(vals)
    if n < 2:
        return Stat(mean, math.nan, math.nan, n)
    std = statistics.stdev(vals)
    return Stat(mean, std, std / math.sqrt(n), n)


def _lookup(metrics: Mapping[str, Any], key: str) -> Any:
    node: Any = metrics
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def select_metric(metrics: Mapping[str, Any], key: str) -> float:
    """The scalar at dotted ``key`` in a run's metrics (``train`` return value, metrics.json).

    For Hydra's Optuna sweeper, which needs the task function to return a float:
    ``select_metric(metrics, cfg.optimized_metric)``. Keys may contain ``/``
    (``final_losses.grad_norm/generator``); dots separate levels.

    Args:
        metrics: the nested dict ``train(cfg)`` returns.
        key: e.g. ``"mode_coverage.reverse_kl"``, ``"likelihood.nll_nats"``, ``"final_losses.loss"``.
    Returns:
        The value as a float; infinities and NaN are passed through (Optuna treats
        NaN as a failed trial and infinity as the worst value).
    Raises:
        GencompareError: the key is absent (the keys available at that level are
            listed) or its value is not a number.
    """
    node: Any = metrics
    seen: list[str] = []
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            where = ".".join(seen) or "the run's metrics"
            options = ", ".join(sorted(map(str, node))) if isinstance(node, Mapping) else f"a {type(node).__name__}"
            raise GencompareError(f"optimized_metric={key}: no {part!r} in {where} (has: {options})")
        node = node[part]
        seen.append(part)
    value = _number(node)
    if value is None:
        raise GencompareError(f"optimized_metric={key} is {node!r}, not a number")
    return value


# ---------------------------------------------------------------------- loading
@dataclass
class Run:
    """One run dir as ``compare`` reads it."""

    path: Path
    metrics: dict[str, Any]
    config: dict[str, Any] | None
    history: list[dict[str, Any]] | None

    @property
    def model(self) -> str:
        return str(self.metrics["model"])

    @property
    def dataset(self) -> str:
        return str(self.metrics["dataset"])

    @property
    def variant(self) -> str:
        return str(self.metrics["variant"])

    @property
    def seed(self) -> Any:
        return self.metrics.get("seed")

    def value(self, key: str) -> float | None:
        return _number(_lookup(self.metrics, key))

    @property
    def sample_path(self) -> Path:
        return self.path / str(self.metrics.get("sample_grid") or Path("samples") / "samples.png")


def _is_run_dir(d: Path) -> bool:
    return (d / "metrics.json").is_file() or (d / "config.yaml").is_file() or (d / "checkpoints").is_dir()


def find_run_dirs(paths: Sequence[Path]) -> tuple[list[Path], list[str]]:
    """Run dirs under ``paths`` (run dirs, sweep dirs or metrics.json files), searched
    recursively, and one problem line per path that holds none.

    A run dir is a folder with a ``metrics.json``, a ``config.yaml`` or a
    ``checkpoints/`` folder (an unfinished run is found, so that it can be reported).
    """
    found: dict[Path, None] = {}
    problems: list[str] = []
    for p in paths:
        if not p.exists():
            problems.append(f"{p}: no such file or directory")
            continue
        if p.is_file():
            if p.name == "metrics.json":
                found[p.parent] = None
            else:
                problems.append(f"{p}: not a run dir (give a run dir, a sweep dir or a metrics.json)")
            continue
        below: list[Path] = []
        for root, dirs, _files in os.walk(p):
            d = Path(root)
            if _is_run_dir(d):
                below.append(d)
                dirs[:] = []  # a run dir's subfolders are its own files
                continue
            dirs[:] = sorted(x for x in dirs if x not in _SKIP_DIRS)
        if below:
            found.update(dict.fromkeys(below))
        elif not any(p.iterdir()):
            problems.append(f"{p}: empty directory, no runs to compare")
        else:
            problems.append(f"{p}: no run dirs below it (no metrics.json, config.yaml or checkpoints/)")
    return list(found), problems


def _read_history(path: Path) -> list[dict[str, Any]] | None:
    if not path.is_file():
        return None
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a run killed mid-write leaves a partial last line
        if isinstance(rec, dict) and isinstance(rec.get("step"), (int, float)):
            records.append(rec)
    # a resumed run may have logged a step twice: keep the last record of each step
    by_step = {int(r["step"]): r for r in records}
    return [by_step[s] for s in sorted(by_step)]


def load_run(run_dir: Path) -> tuple[Run | None, list[str]]:
    """Read one run dir.

    Returns:
        ``(run, problems)``: ``run`` is None when the run cannot be compared (no
        metrics.json, corrupt JSON, missing model / dataset / variant); ``problems``
        holds one line per problem (also non-fatal ones, such as a corrupt config.yaml).
    """
    problems: list[str] = []
    mpath = run_dir / "metrics.json"
    if not mpath.is_file():
        hint = (f"; score its checkpoint with `gencompare eval run={run_dir}`"
                if (run_dir / "checkpoints" / "last.ckpt").is_file() else "")
        return None, [f"{run_dir}: no metrics.json (training unfinished or failed){hint}"]
    try:
        text = mpath.read_text()
        metrics = json.loads(text)
    except json.JSONDecodeError as exc:
        what = "empty file" if not text.strip() else f"{exc.msg} at line {exc.lineno}, column {exc.colno}"
        return None, [f"{mpath}: corrupt JSON ({what}); skipped"]
    except (OSError, UnicodeDecodeError) as exc:
        return None, [f"{mpath}: unreadable ({type(exc).__name__}: {exc}); skipped"]
    if not isinstance(metrics, dict):
        return None, [f"{mpath}: not a JSON object; skipped"]
    missing = [k for k in ("model", "dataset", "variant") if not metrics.get(k)]
    if missing:
        return None, [f"{mpath}: missing {', '.join(missing)}; skipped"]
    config = None
    cpath = run_dir / "config.yaml"
    if cpath.is_file():
        try:
            from omegaconf import OmegaConf

            loaded = OmegaConf.to_container(OmegaConf.load(cpath), resolve=False)
            config = loaded if isinstance(loaded, dict) else None
        except Exception as exc:  # noqa: BLE001 - yaml errors come in many types
            problems.append(f"{cpath}: unreadable ({type(exc).__name__}); run compared without its config")
    return Run(run_dir, metrics, config, _read_history(run_dir / "history.jsonl")), problems


# --------------------------------------------------------------------- grouping
def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: json.dumps(node, sort_keys=True) if isinstance(node, (list, dict)) else node}


def _signature(config: dict[str, Any] | None) -> dict[str, Any] | None:
    if config is None:
        return None
    flat = _flatten(config)
    return {k: v for k, v in flat.items()
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
        if not self.differs:
            return self.model
        return f"{self.model} ({', '.join(f'{k}={v}' for k, v in self.differs.items())})"

    @property
    def family(self) -> str:
        return str(self.runs[0].metrics.get("family") or self.model)

    def stat(self, key: str, scale: float = 1.0) -> Stat | None:
        vals = [v * scale for v in (r.value(key) for r in self.runs) if v is not None]
        return summarize(vals)

    def strings(self, key: str) -> list[str]:
        return sorted({str(_lookup(r.metrics, key)) for r in self.runs if _lookup(r.metrics, key) is not None})

    @property
    def seeds(self) -> list[Any]:
        return sorted((r.seed for r in self.runs), key=str)


def _family_rank(model: str) -> tuple[int, str]:
    return (FAMILY_ORDER.index(model) if model in FAMILY_ORDER else len(FAMILY_ORDER), model)


def _variant_rank(variant: str) -> tuple[int, str]:
    return (VARIANT_ORDER.index(variant) if variant in VARIANT_ORDER else len(VARIANT_ORDER), variant)


def group_runs(runs: Sequence[Run]) -> list[Group]:
    """Group by (model, dataset, variant), then split by any config value (other than
    the seed and bookkeeping) that differs within that group; ordered by variant,
    then GAN, VAE, NADE, DDPM."""
    by_key: dict[tuple[str, str, str], list[Run]] = {}
    for r in runs:
        by_key.setdefault((r.model, r.dataset, r.variant), []).append(r)
    groups: list[Group] = []
    for (model, dataset, variant), members in by_key.items():
        sigs = [_signature(r.config) for r in members]
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
    groups.sort(key=lambda g: (_variant_rank(g.variant), _family_rank(g.model), g.label))
    return groups


# ------------------------------------------------------------------- formatting
def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return DASH
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    mag = abs(x)
    if mag >= 10 ** digits:
        return f"{x:,.0f}"
    decimals = min(4, max(0, digits - 1 - int(math.floor(math.log10(mag)))))
    text = f"{x:.{decimals}f}"
    # 8.00 modes reads as 8; 6.30 as PacGAN's 6.3
    return text.rstrip("0").rstrip(".") if "." in text else text


def _fmt_count(x: float) -> str:
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if abs(x) >= size:
            return f"{x / size:.2f}{unit}"
    return f"{x:.0f}"


def _fmt_seconds(x: float | None) -> str:
    if x is None or math.isnan(x):
        return DASH
    if x >= 3600:
        return f"{x / 3600:.2f} h"
    if x >= 120:
        return f"{x / 60:.1f} min"
    return f"{_fmt(x)} s"


def _pm(stat: Stat | None, own_stderr: Stat | None = None, spread: str = "std", fmt=_fmt, n_total: int | None = None) -> str:
    """``mean ± spread``; for a single run, ``± own_stderr`` (the metric's standard error
    over test examples) when given; ``(n=k)`` when only k of the group's runs report it."""
    if stat is None:
        return DASH
    s = fmt(stat.mean)
    err = stat.std if spread == "std" else stat.stderr
    if stat.n >= 2 and not math.isnan(err):
        s += f" ± {fmt(err)}"
    elif stat.n == 1 and own_stderr is not None and not math.isnan(own_stderr.mean):
        s += f" ± {fmt(own_stderr.mean)}"
    if n_total is not None and stat.n != n_total:
        s += f" (n={stat.n})"
    return s


def dataset_kind(dataset: str) -> str:
    """``points`` (2D mixtures), ``stacked`` (Stacked MNIST) or ``classes`` (MNIST-like)."""
    if dataset in POINT_DATASETS:
        return "points"
    return "stacked" if dataset == "stacked_mnist" else "classes"


@dataclass(frozen=True)
class Metric:
    """One aggregated metric: where it is in metrics.json and how it is shown."""

    name: str             # CSV column stem
    key: str              # dotted key into metrics.json
    header: str
    kinds: tuple[str, ...] = ("points", "classes", "stacked")
    scale: float = 1.0
    own_stderr: str | None = None  # the metric's standard error over test examples
    fmt: Callable[[float], str] = _fmt


METRICS: tuple[Metric, ...] = (
    Metric("steps", "steps", "steps", fmt=lambda x: f"{x:,.0f}"),
    Metric("parzen_ll", "parzen.mean", "Parzen LL (nats)", ("classes", "stacked"), own_stderr="parzen.stderr"),
    Metric("parzen_stderr", "parzen.stderr", "Parzen stderr", ("classes", "stacked")),
    Metric("parzen_sigma", "parzen.sigma", "Parzen sigma", ("classes", "stacked")),
    Metric("nll", "likelihood.nll_nats", "NLL (nats)", own_stderr="likelihood.stderr"),
    Metric("nll_stderr", "likelihood.stderr", "NLL stderr"),
    Metric("bits_per_dim", "likelihood.bits_per_dim", "bits/dim"),
    Metric("modes_captured", "mode_coverage.modes_captured", "modes captured", ("points",)),
    Metric("high_quality_pct", "mode_coverage.high_quality_fraction", "HQ %", ("points",), scale=100.0),
    Metric("reverse_kl", "mode_coverage.reverse_kl", "reverse KL", ("points",)),
    Metric("classes_covered", "mode_coverage.classes_covered", "classes covered", ("classes",)),
    Metric("kl_to_data", "mode_coverage.kl_to_data", "KL to data", ("classes",)),
    Metric("modes_covered", "mode_coverage.modes_covered", "modes covered", ("stacked",)),
    Metric("kl_to_uniform", "mode_coverage.kl_to_uniform", "KL to uniform", ("classes", "stacked")),
    Metric("precision", "features.precision", "precision", ("classes", "stacked")),
    Metric("recall", "features.recall", "recall", ("classes", "stacked")),
    Metric("density", "features.density", "density", ("classes", "stacked")),
    Metric("coverage", "features.coverage", "coverage", ("classes", "stacked")),
    Metric("frechet_distance", "features.frechet_distance", "FD", ("classes", "stacked")),
    Metric("parameters", "parameters_total", "parameters", fmt=_fmt_count),
    Metric("train_time_s", "train_time_s", "train time", fmt=_fmt_seconds),
    Metric("sample_time_1000_s", "sample_time_1000_s", "1k samples", fmt=_fmt_seconds),
)
# metrics shown in the per-variant tables (the stderr / sigma columns are CSV-only)
_TABLE_METRICS = ("parzen_ll", "nll", "modes_captured", "high_quality_pct", "reverse_kl", "classes_covered",
                  "modes_covered", "kl_to_data", "kl_to_uniform", "precision", "recall", "density", "coverage",
                  "frechet_distance", "parameters", "steps", "train_time_s", "sample_time_1000_s")
_METRIC_BY_NAME = {m.name: m for m in METRICS}


# ----------------------------------------------------------------------- tables
@dataclass
class TableData:
    """A table as plain strings, rendered to rich, Markdown and W&B alike."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    caption: str = ""

    def without_empty_columns(self, keep: int = 1) -> TableData:
        cols = [i for i in range(len(self.columns))
                if i < keep or any(row[i] not in (DASH, "") for row in self.rows)]
        return TableData(self.title, [self.columns[i] for i in cols], [[r[i] for i in cols] for r in self.rows],
                         self.caption)

    def to_rich(self) -> Table:
        t = Table(title=self.title, caption=self.caption or None, caption_justify="left")
        for i, c in enumerate(self.columns):
            t.add_column(c, justify="left" if i == 0 else "right", overflow="fold")
        for r in self.rows:
            t.add_row(*r)
        return t

    def to_markdown(self) -> str:
        def esc(s: str) -> str:
            return s.replace("|", "\\|")

        lines = [f"### {self.title}", ""]
        lines.append("| " + " | ".join(esc(c) for c in self.columns) + " |")
        lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(self.columns))) + "|")
        lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in self.rows]
        if self.caption:
            lines += ["", self.caption]
        return "\n".join(lines) + "\n"


def _nll_cell(g: Group) -> str:
    kinds = sorted({NLL_KIND_LABEL.get(_lookup(r.metrics, "likelihood.kind"), str(_lookup(r.metrics, "likelihood.kind")))
                    for r in g.runs if isinstance(r.metrics.get("likelihood"), Mapping)})
    stat = g.stat("likelihood.nll_nats")
    if stat is None:
        return "none" if kinds == ["none"] else DASH
    return f"{_pm(stat, g.stat('likelihood.stderr'), n_total=len(g.runs))} ({'/'.join(k for k in kinds if k != 'none')})"


def _mode_cell(g: Group, m: Metric) -> str:
    total_key = {"modes_captured": "mode_coverage.num_modes", "classes_covered": "mode_coverage.num_classes",
                 "modes_covered": "mode_coverage.num_modes"}[m.name]
    cell = _pm(g.stat(m.key), n_total=len(g.runs))
    totals = g.strings(total_key)
    return f"{cell} /{totals[0]}" if cell != DASH and len(totals) == 1 else cell


def _baseline_rows(groups: Sequence[Group]) -> list[tuple[str, Stat | None, Stat | None, Stat | None]]:
    """The Parzen sanity baselines of one variant: identical for every run of the variant
    (cached per variant by the evaluation), so averaged only to absorb float noise."""
    out = []
    for key, label in BASELINES:
        runs = [r for g in groups for r in g.runs]
        mean = summarize([v for v in (r.value(f"parzen_baselines.{key}.mean") for r in runs) if v is not None])
        if mean is None:
            continue
        stderr = summarize([v for v in (r.value(f"parzen_baselines.{key}.stderr") for r in runs) if v is not None])
        sigma = summarize([v for v in (r.value(f"parzen_baselines.{key}.sigma") for r in runs) if v is not None])
        out.append((label, Stat(mean.mean, math.nan, math.nan, 1), stderr, sigma))
    return out


def variant_table(variant: str, groups: Sequence[Group]) -> TableData:
    """Families as rows, every metric that applies to the variant's dataset as columns."""
    kind = dataset_kind(groups[0].dataset)
    metrics = [_METRIC_BY_NAME[n] for n in _TABLE_METRICS if kind in _METRIC_BY_NAME[n].kinds]
    nets = sorted({n for g in groups for n in g.strings("features.feature_network")})
    columns = ["family", "seeds"]
    for m in metrics:
        if m.name == "frechet_distance" and len(nets) == 1:
            columns.append(f"FD ({nets[0]})")
        else:
            columns.append(m.header)
    rows = []
    for g in groups:
        row = [g.label, str(len(g.runs))]
        for m in metrics:
            if m.name == "nll":
                row.append(_nll_cell(g))
            elif m.name in ("modes_captured", "classes_covered", "modes_covered"):
                row.append(_mode_cell(g, m))
            else:
                own = g.stat(m.own_stderr) if m.own_stderr else None
                row.append(_pm(g.stat(m.key, m.scale), own, fmt=m.fmt, n_total=len(g.runs)))
        rows.append(row)
    for label, mean, stderr, _sigma in _baseline_rows(groups):
        row = [label, DASH] + [DASH] * len(metrics)
        row[2 + metrics.index(_METRIC_BY_NAME["parzen_ll"])] = _pm(mean, stderr)
        rows.append(row)
    devices = sorted({str(r.metrics.get("device")) for g in groups for r in g.runs if r.metrics.get("device")})
    caption = ("± : std over seeds (ddof 1) when seeds > 1; for one run, the metric's own standard error over "
               "test examples (Parzen, NLL). NLL is each family's own likelihood (exact / IWAE / bound); not "
               "comparable with Parzen. " + (f"Device: {', '.join(devices)}." if devices else ""))
    if kind == "points":
        caption += " HQ %: samples within 3 std of a mode (PacGAN)."
    return TableData(f"{variant}", columns, rows, caption).without_empty_columns(keep=2)


def pacgan_table(groups: Sequence[Group]) -> TableData | None:
    """Modes captured and high-quality % on ring8 and grid25, mean ± standard error over
    seeds: the layout of PacGAN's 2D table (Lin et al. 2018)."""
    points = [g for g in groups if g.dataset in POINT_DATASETS]
    if not points:
        return None
    datasets = [d for d in POINT_DATASETS if any(g.dataset == d for g in points)]
    labels: list[str] = []
    for g in sorted(points, key=lambda g: (_family_rank(g.model), g.label)):
        if g.label not in labels:
            labels.append(g.label)
    columns = ["method"]
    for d in datasets:
        total = {"ring8": 8, "grid25": 25}[d]
        columns += [f"{d} modes /{total}", f"{d} HQ %"]
    columns.append("seeds")
    rows = []
    for label in labels:
        row = [label]
        counts = []
        for d in datasets:
            g = next((x for x in points if x.label == label and x.dataset == d), None)
            if g is None:
                row += [DASH, DASH]
                counts.append(DASH)
                continue
            row.append(_pm(g.stat("mode_coverage.modes_captured"), spread="stderr", n_total=len(g.runs)))
            row.append(_pm(g.stat("mode_coverage.high_quality_fraction", 100.0), spread="stderr", n_total=len(g.runs)))
            counts.append(str(len(g.runs)))
        row.append(" / ".join(counts))
        rows.append(row)
    return TableData("2D mixtures, PacGAN layout (mean ± standard error over seeds)", columns, rows,
                     "Standard error = sample std (ddof 1) / sqrt(seeds). Published (PacGAN, 10 trials): "
                     "GAN 6.3 ± 0.5 / 98.2 ± 0.2 % (ring), 17.3 ± 0.8 / 94.8 ± 0.7 % (grid).")


# ------------------------------------------------------------------ diagnostics
def _coverage_key(mode_coverage: Mapping[str, Any]) -> str | None:
    for k in ("modes_captured", "classes_covered", "modes_covered"):
        if k in mode_coverage:
            return k
    return None


def training_diagnostics(run: Run, tail: float = DIAGNOSTIC_TAIL) -> dict[str, Any] | None:
    """A per-run instability summary (issue 5, item 3).

    From ``history.jsonl`` (``step`` and the ``train/*`` scalars of each logged step),
    over the last ``tail`` share of the logged steps: mean and std of
    ``train/d_loss`` and ``train/g_loss`` (GAN) or of the family's loss
    (``train/loss``, ``train/nll`` or ``train/elbo``), the mean gap
    ``train/d_real - train/d_fake`` (D(x) - D(G(z)); near 1 the discriminator wins and
    the generator's gradient vanishes, Goodfellow et al. 2014 Sec. 3), and the mean
    ``train/grad_norm/generator``. From ``eval_history`` in metrics.json and the final
    ``mode_coverage``: the peak coverage over training, its step, the final value, and
    whether coverage fell from its peak (mode collapse during training).

    Returns:
        None when the run has neither a history nor intermediate evaluations.
    """
    out: dict[str, Any] = {}
    hist = run.history or []
    if hist:
        k = max(2, math.ceil(tail * len(hist)))
        last = hist[-k:]
        out["tail_steps"] = f"{int(last[0]['step'])}-{int(last[-1]['step'])}"
        out["tail_records"] = len(last)

        def series(key: str) -> list[float]:
            return [float(r[key]) for r in last if _number(r.get(key)) is not None]

        for name in ("d_loss", "g_loss"):
            s = summarize(series(f"train/{name}"))
            if s is not None:
                out[f"{name}_mean"], out[f"{name}_std"] = s.mean, s.std
        gaps = [float(r["train/d_real"]) - float(r["train/d_fake"]) for r in last
                if _number(r.get("train/d_real")) is not None and _number(r.get("train/d_fake")) is not None]
        if gaps:
            out["d_gap_mean"] = statistics.fmean(gaps)
        g = summarize(series("train/grad_norm/generator"))
        if g is not None:
            out["grad_norm_generator_mean"] = g.mean
            out["grad_norm_generator_max"] = max(series("train/grad_norm/generator"))
        if "d_loss_mean" not in out:
            for key in ("train/loss", "train/nll", "train/elbo"):
                s = summarize(series(key))
                if s is not None:
                    out["loss_key"], out["loss_mean"], out["loss_std"] = key.split("/", 1)[1], s.mean, s.std
                    break
    evals = [e for e in (run.metrics.get("eval_history") or []) if isinstance(e, Mapping)]
    final_cov = run.metrics.get("mode_coverage") if isinstance(run.metrics.get("mode_coverage"), Mapping) else None
    points: list[tuple[float, float]] = []
    ckey = None
    for e in evals:
        mc = e.get("mode_coverage")
        if isinstance(mc, Mapping) and (ckey := ckey or _coverage_key(mc)) and _number(mc.get(ckey)) is not None:
            points.append((float(e.get("step", math.nan)), float(mc[ckey])))
    if final_cov is not None:
        ckey = ckey or _coverage_key(final_cov)
        if ckey and _number(final_cov.get(ckey)) is not None:
            points.append((float(run.metrics.get("steps", math.nan)), float(final_cov[ckey])))
    if points and ckey:
        peak_step, peak = max(points, key=lambda p: (p[1], -p[0]))
        out.update(coverage_key=ckey, coverage_peak=peak, coverage_peak_step=peak_step,
                   coverage_final=points[-1][1], coverage_fell=points[-1][1] < peak,
                   coverage_evaluations=len(points))
    return out or None


def diagnostics_table(groups: Sequence[Group]) -> tuple[TableData | None, list[dict[str, Any]]]:
    records = []
    for g in groups:
        for r in g.runs:
            d = training_diagnostics(r)
            if d is not None:
                records.append({"run": str(r.path), "label": g.label, "model": g.model, "variant": g.variant,
                                "seed": r.seed, **d})
    if not records:
        return None, []

    def ms(d, stem):
        if f"{stem}_mean" not in d:
            return DASH
        return f"{_fmt(d[f'{stem}_mean'])} ± {_fmt(d[f'{stem}_std'])}"

    columns = ["run", "seed", "last 20 % of steps", "d_loss", "g_loss", "D(x) − D(G(z))", "‖∇G‖ mean / max",
               "loss", "coverage peak (step) → final", "coverage fell"]
    rows = []
    for d in sorted(records, key=lambda d: (_family_rank(d["model"]), d["variant"], d["label"], str(d["seed"]))):
        cov = DASH
        if "coverage_peak" in d:
            cov = f"{_fmt(d['coverage_peak'])} ({d['coverage_peak_step']:.0f}) → {_fmt(d['coverage_final'])}"
        gn = (f"{_fmt(d['grad_norm_generator_mean'])} / {_fmt(d['grad_norm_generator_max'])}"
              if "grad_norm_generator_mean" in d else DASH)
        loss = f"{d['loss_key']} {ms(d, 'loss')}" if "loss_key" in d else DASH
        rows.append([f"{d['label']} on {d['variant']}", str(d["seed"]), d.get("tail_steps", DASH), ms(d, "d_loss"),
                     ms(d, "g_loss"), _fmt(d.get("d_gap_mean")), gn, loss, cov,
                     ("yes" if d["coverage_fell"] else "no") if "coverage_fell" in d else DASH])
    caption = ("Losses: mean ± std over the last 20 % of logged steps (history.jsonl); a large std is an "
               "oscillating game. D(x) − D(G(z)) near 1: the discriminator wins and the generator's gradient "
               "vanishes. Coverage: modes / classes over trainer.eval_every evaluations and the final one.")
    return TableData("Training diagnostics", columns, rows, caption).without_empty_columns(keep=2), records


# ------------------------------------------------------------------------ files
def _csv_rows(groups: Sequence[Group]) -> tuple[list[str], list[dict[str, Any]]]:
    stems = [m.name for m in METRICS]
    header = ["label", "model", "family", "dataset", "variant", "n", "seeds", "config", "likelihood_kind",
              "feature_network", "device", "runs"]
    for s in stems:
        header += [f"{s}_mean", f"{s}_std", f"{s}_stderr", f"{s}_n"]

    def put(row: dict, stem: str, st: Stat | None) -> None:
        if st is None:
            return
        for part, v in (("mean", st.mean), ("std", st.std), ("stderr", st.stderr)):
            row[f"{stem}_{part}"] = None if math.isnan(v) else float(v)
        row[f"{stem}_n"] = st.n

    rows = []
    by_variant: dict[str, list[Group]] = {}
    for g in groups:
        by_variant.setdefault(g.variant, []).append(g)
        row = {"label": g.label, "model": g.model, "family": g.family, "dataset": g.dataset, "variant": g.variant,
               "n": len(g.runs), "seeds": " ".join(map(str, g.seeds)),
               "config": json.dumps(g.differs, default=str) if g.differs else "",
               "likelihood_kind": "/".join(g.strings("likelihood.kind")) or "",
               "feature_network": "/".join(g.strings("features.feature_network")),
               "device": "/".join(g.strings("device")), "runs": " ".join(str(r.path) for r in g.runs)}
        for m in METRICS:
            put(row, m.name, g.stat(m.key, m.scale))
        rows.append(row)
    for variant, vg in by_variant.items():
        for label, mean, stderr, sigma in _baseline_rows(vg):
            row = {"label": label, "model": "baseline", "family": "baseline", "dataset": vg[0].dataset,
                   "variant": variant, "n": 1}
            put(row, "parzen_ll", mean)
            put(row, "parzen_stderr", stderr)
            put(row, "parzen_sigma", sigma)
            rows.append(row)
    return header, rows


def write_csv(path: Path, header: list[str], rows: list[dict[str, Any]]) -> Path:
    """Missing values (None, NaN) as empty cells; floats at full precision."""
    def cell(v: Any) -> Any:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        return repr(v) if isinstance(v, float) else v

    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
        w.writeheader()
        w.writerows({k: cell(v) for k, v in row.items()} for row in rows)
    return path


def _wrap(label: str, width: int = 28) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(label, width, break_on_hyphens=False)) or label


def plot_metrics(groups: Sequence[Group], path: Path) -> Path | None:
    """Bar charts of each metric, one bar per group (and the Parzen baselines), with
    error bars (std over seeds; the metric's own stderr for a single run)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    names = [n for n in _TABLE_METRICS if n not in ("steps", "parameters")]
    panels = []
    for n in names:
        m = _METRIC_BY_NAME[n]
        bars = []
        for g in groups:
            st = g.stat(m.key, m.scale)
            if st is None or not math.isfinite(st.mean):
                continue
            err = st.std if st.n >= 2 else (g.stat(m.own_stderr).mean if m.own_stderr and g.stat(m.own_stderr) else 0.0)
            bars.append((f"{_wrap(g.label)}\n{g.variant}", st.mean, 0.0 if math.isnan(err) else err, False))
        if n == "parzen_ll":
            by_variant: dict[str, list[Group]] = {}
            for g in groups:
                by_variant.setdefault(g.variant, []).append(g)
            for variant, vg in by_variant.items():
                for label, mean, stderr, _ in _baseline_rows(vg):
                    bars.append((f"{label.replace(' (baseline)', '')}\n{variant}", mean.mean,
                                 stderr.mean if stderr else 0.0, True))
        if bars:
            panels.append((m, bars))
    if not panels:
        return None
    ncols = min(4, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    width = max(3.2, 0.45 * max(len(b) for _, b in panels) + 1.5)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, 3.6 * nrows), squeeze=False)
    colors = {f: plt.cm.tab10(i) for i, f in enumerate(FAMILY_ORDER)}
    for ax, (m, bars) in zip(axes.flat, panels):
        xs = range(len(bars))
        ax.bar(xs, [b[1] for b in bars], yerr=[b[2] for b in bars], capsize=3,
               color=[("lightgray" if b[3] else colors.get(b[0].split(" ")[0].split("\n")[0], "tab:gray")) for b in bars],
               hatch=None, edgecolor="black", linewidth=0.5)
        ax.set_xticks(list(xs), [b[0] for b in bars], rotation=60, ha="right", fontsize=7)
        ax.set_title(m.header if m.name != "train_time_s" else "train time (s)", fontsize=9)
        if m.name == "sample_time_1000_s":
            ax.set_title("time to draw 1,000 samples (s)", fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle("gencompare: metrics side by side (error bars: std over seeds, or the metric's stderr for one run)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def sample_mosaic(groups: Sequence[Group], path: Path) -> Path | None:
    """The final sample grid (or 2D scatter plot) of each group's first run (lowest
    seed): one row per family, one column per dataset variant."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from PIL import Image

    labels: list[str] = []
    variants: list[str] = []
    for g in groups:
        if g.label not in labels:
            labels.append(g.label)
        if g.variant not in variants:
            variants.append(g.variant)
    labels.sort(key=lambda lab: _family_rank(lab.split(" ")[0]))
    cells: dict[tuple[str, str], Path] = {}
    for g in groups:
        p = g.runs[0].sample_path
        if p.is_file():
            cells[(g.label, g.variant)] = p
    if not cells:
        return None
    fig, axes = plt.subplots(len(labels), len(variants), figsize=(3.2 * len(variants), 3.3 * len(labels)),
                             squeeze=False)
    for i, lab in enumerate(labels):
        for j, var in enumerate(variants):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            p = cells.get((lab, var))
            if p is not None:
                with Image.open(p) as im:
                    ax.imshow(im.convert("RGB"))
            else:
                ax.text(0.5, 0.5, "no samples", ha="center", va="center", transform=ax.transAxes, color="gray")
            if i == 0:
                ax.set_title(var, fontsize=10)
            if j == 0:
                ax.set_ylabel(_wrap(lab), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


PUBLISHED = {
    "points": ("Published (protocols.md 3a): PacGAN, 10 trials, mean ± standard error: "
               "GAN ring 6.3 ± 0.5 modes / 98.2 ± 0.2 % HQ, grid 17.3 ± 0.8 / 94.8 ± 0.7 %; "
               "PacGAN2 ring 7.9 ± 0.1 / 95.6 ± 2.0 %, grid 23.8 ± 0.7 / 91.3 ± 0.8 %."),
    "classes": ("Published (protocols.md 1 and 2): Parzen LL on MNIST (Goodfellow et al. 2014 Table 1, nats): "
                "DBN 138 ± 2, Stacked CAE 121 ± 1.6, Deep GSN 214 ± 1.1, GAN 225 ± 2, diffusion 220 ± 1.9, "
                "AAE 340 ± 2; sanity baselines (Theis et al. 2016): train images about 243, k-means about 313. "
                "Own NLL: NADE about 88.9 (static binarization), VAE IWAE k=5000 about 86.8 (dynamic)."),
    "stacked": ("Published (protocols.md 3c): DCGAN 99 modes / KL 3.4 (VEEGAN table); "
                "DCGAN 78.9 ± 6.5 / 4.50, PacDCGAN2 1000 / 0.06 (PacGAN table)."),
}


def _sweep_command(paths: Sequence[Path]) -> str | None:
    for p in paths:
        f = p / "multirun.yaml"
        if f.is_file():
            try:
                from omegaconf import OmegaConf

                task = OmegaConf.load(f).hydra.overrides.task
                return "gencompare train -m " + " ".join(shlex.quote(str(o)) for o in task)
            except Exception:  # noqa: BLE001 - informative only
                return None
    return None


# -------------------------------------------------------------------- the command
@dataclass
class Comparison:
    """What ``compare`` produced (for callers and tests)."""

    groups: list[Group]
    tables: list[TableData]
    problems: list[str]
    files: dict[str, Path]
    diagnostics: list[dict[str, Any]]


def compare(paths: Sequence[Path | str], *, out: Path | str, wandb: bool = False, wandb_project: str = "gencompare",
            wandb_mode: str = "auto", console: Console | None = None, err_console: Console | None = None) -> Comparison:
    """Compare the runs under ``paths`` and write the report files into ``out``.

    Args:
        paths: run dirs, sweep (multirun) dirs or metrics.json files; searched recursively.
        out: folder for comparison.md / .csv / .png, samples_mosaic.png, diagnostics.csv.
        wandb: also log the tables (``wandb.Table``) and figures to a W&B run of
            job type ``compare``.
    Returns:
        The groups, tables, problems met and files written.
    Raises:
        GencompareError: no run could be compared (each problem was printed first).
    """
    console = console or Console()
    err = err_console or Console(stderr=True, soft_wrap=True, highlight=False)
    paths = [Path(p) for p in paths]
    run_dirs, problems = find_run_dirs(paths)
    runs: list[Run] = []
    for d in run_dirs:
        run, probs = load_run(d)
        problems += probs
        if run is not None:
            runs.append(run)
    for p in problems:
        err.print(f"[yellow]warning:[/] {p}", markup=True)
    if not runs:
        raise GencompareError(
            f"nothing to compare: no readable metrics.json under {', '.join(map(str, paths))} "
            f"({len(problems)} problem(s) above)"
        )
    groups = group_runs(runs)
    tables: list[TableData] = []
    variants: dict[str, list[Group]] = {}
    for g in groups:
        variants.setdefault(g.variant, []).append(g)
    for variant, vg in variants.items():
        tables.append(variant_table(variant, vg))
    pac = pacgan_table(groups)
    diag, diag_records = diagnostics_table(groups)

    for t in tables + [x for x in (pac, diag) if x is not None]:
        console.print(t.to_rich())

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    header, csv_rows = _csv_rows(groups)
    files["csv"] = write_csv(out / "comparison.csv", header, csv_rows)
    if diag_records:
        keys = list(dict.fromkeys(k for d in diag_records for k in d))
        files["diagnostics"] = write_csv(out / "diagnostics.csv", keys, diag_records)
    fig = plot_metrics(groups, out / "comparison.png")
    if fig:
        files["figure"] = fig
    mosaic = sample_mosaic(groups, out / "samples_mosaic.png")
    if mosaic:
        files["mosaic"] = mosaic
    else:
        err.print("[yellow]warning:[/] no samples/samples.png in any run; no mosaic written", markup=True)

    now = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    md = ["# gencompare comparison", "",
          f"Generated {now} by `gencompare compare {' '.join(shlex.quote(str(p)) for p in paths)}` "
          f"from {len(runs)} run(s) in {len(groups)} group(s)."]
    sweep = _sweep_command(paths)
    if sweep:
        md.append(f"Sweep: `{sweep}`.")
    md.append("")
    kinds_seen = []
    for t, (variant, vg) in zip(tables, variants.items()):
        md.append(t.to_markdown())
        kind = dataset_kind(vg[0].dataset)
        if kind not in kinds_seen:
            kinds_seen.append(kind)
    if pac is not None:
        md.append(pac.to_markdown())
    if diag is not None:
        md.append(diag.to_markdown())
    md.append("### Published numbers\n")
    md += [f"- {PUBLISHED[k]}" for k in kinds_seen]
    md.append("")
    if problems:
        md.append("### Problems\n")
        md += [f"- {p}" for p in problems]
        md.append("")
    md.append("### Files\n")
    md += [f"- `{p.name}`" for p in files.values()]
    files["markdown"] = out / "comparison.md"
    files["markdown"].write_text("\n".join(md) + "\n")

    if wandb:
        _log_to_wandb(out, paths, tables, pac, diag, header, csv_rows, files, wandb_project, wandb_mode)
    err.print(f"wrote {', '.join(str(p) for p in files.values())}", markup=False)
    return Comparison(groups, tables, problems, files, diag_records)


def _wandb_cell(v: Any) -> Any:
    # a column is typed by W&B: an infinite reverse KL would turn it into strings (the CSV keeps inf)
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _log_to_wandb(out, paths, tables, pac, diag, header, csv_rows, files, project, mode) -> None:
    from omegaconf import OmegaConf

    from gencompare.tracking import make_tracker

    group = None
    if len(paths) == 1 and (paths[0] / "multirun.yaml").is_file():
        # the same group the sweep's jobs were logged to (runner.sweep_group)
        group = f"sweep-{paths[0].resolve().parent.name}_{paths[0].resolve().name}"
    logger = OmegaConf.create({"name": "wandb", "project": project, "entity": None, "mode": mode, "group": None,
                               "run_name": None, "tags": ["compare"], "log_images": True})
    tracker = make_tracker(logger, run_dir=out, config={"paths": [str(p) for p in paths]},
                           default_name=f"compare-{Path(out).resolve().name}", group=group, tags=["compare"],
                           job_type="compare")
    try:
        # W&B types each column: numbers or None, never "" for a missing number
        tracker.log_table("comparison", header, [[_wandb_cell(row.get(h)) for h in header] for row in csv_rows])
        for t in tables:
            tracker.log_table(f"table/{t.title}", t.columns, t.rows)
        for t, key in ((pac, "pacgan_2d"), (diag, "training_diagnostics")):
            if t is not None:
                tracker.log_table(key, t.columns, t.rows)
        for key in ("figure", "mosaic"):
            if key in files:
                tracker.log_image(f"comparison/{key}", files[key], caption=files[key].name)
    finally:
        tracker.finish()


def _parser() -> argparse.ArgumentParser:
    try:
        from rich_argparse import RichHelpFormatter as formatter
    except ImportError:  # pragma: no cover - rich-argparse is a dependency, but help must not need it
        formatter = argparse.HelpFormatter
    p = argparse.ArgumentParser(
        prog="gencompare compare", formatter_class=formatter,
        description="Compare runs: one table per dataset variant (families as rows, seeds aggregated), "
                    "the PacGAN-style 2D table, GAN training diagnostics; writes comparison.md/.csv/.png "
                    "and samples_mosaic.png.")
    p.add_argument("paths", nargs="*", type=Path,
                   help="run dirs, sweep dirs (searched recursively for metrics.json) or metrics.json files; "
                        "default: the latest sweep under outputs/multirun")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: the single dir given, else ./comparison)")
    p.add_argument("--wandb", action=argparse.BooleanOptionalAction, default=False,
                   help="log the tables and figures to a W&B comparison run (default: off)")
    p.add_argument("--wandb-project", default="gencompare", help="W&B project (default: gencompare)")
    p.add_argument("--wandb-mode", default="auto", choices=["auto", "online", "offline", "disabled"],
                   help="W&B mode; auto: online with an API key, else offline")
    return p


def _latest_sweep() -> Path | None:
    root = Path(os.environ.get("GENCOMPARE_OUTPUT_DIR", "outputs")) / "multirun"
    sweeps = [t for d in root.glob("*") if d.is_dir() for t in d.glob("*") if t.is_dir()]
    return max(sweeps, key=lambda p: (p.parent.name, p.name)) if sweeps else None


def compare_main(argv: Sequence[str]) -> int:
    """``gencompare compare [paths ...] [--out DIR] [--wandb]`` (the CLI's ``compare``).

    Problems with single runs are printed as one ``warning:`` line each on stderr and
    the other runs are compared.

    Returns:
        0 when at least one run was compared.
    Raises:
        GencompareError: no path given and no sweep under outputs/multirun, or
            nothing could be compared (the CLI prints it and exits with status 2).
    """
    args = _parser().parse_args(list(argv))
    paths = list(args.paths)
    err = Console(stderr=True, soft_wrap=True, highlight=False)
    if not paths:
        latest = _latest_sweep()
        if latest is None:
            raise GencompareError("give run dirs or a sweep dir to compare (none under outputs/multirun)")
        err.print(f"comparing the latest sweep: {latest}", markup=False)
        paths = [latest]
    out = args.out or (paths[0] if len(paths) == 1 and paths[0].is_dir() else Path("comparison"))
    console = Console() if sys.stdout.isatty() else Console(width=240)
    compare(paths, out=out, wandb=args.wandb, wandb_project=args.wandb_project, wandb_mode=args.wandb_mode,
            console=console, err_console=err)
    return 0
