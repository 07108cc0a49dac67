"""The metric registry and the tables built from it: one per dataset variant (families
as rows, the Parzen sanity baselines of Theis et al. 2016 as their own rows) and the
PacGAN-style 2D table (mean ± standard error over seeds).

With a single run a cell shows the metric's own standard error over test examples
(Parzen, NLL) instead of a spread over seeds, as Goodfellow et al. 2014 Table 1 does.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from rich.table import Table

from gencompare.record import lookup
from gencompare.report.formatting import DASH, fmt, fmt_count, fmt_seconds, pm
from gencompare.report.groups import Group, baseline_rows, method_rank
from gencompare.report.published import PACGAN_2D, PACGAN_SOURCE, PACGAN_TABLE1

_IMAGES = ("classes", "stacked")  # coverage kinds scored with a classifier


@dataclass(frozen=True)
class Metric:
    """One aggregated metric: where it is in metrics.json and how it is shown."""

    name: str             # CSV column stem
    key: str              # dotted key into metrics.json
    header: str
    kinds: tuple[str, ...] = ("mixture", "classes", "stacked")  # coverage kinds it applies to
    scale: float = 1.0
    own_stderr: str | None = None  # the metric's standard error over test examples
    total: str | None = None       # a mode count's "out of" (shown as "8 /8")
    fmt: Callable[[float], str] = fmt


METRICS: tuple[Metric, ...] = (
    Metric("steps", "steps", "steps", fmt=lambda x: f"{x:,.0f}"),
    Metric("parzen_ll", "parzen.mean", "Parzen LL (nats)", _IMAGES, own_stderr="parzen.stderr"),
    Metric("parzen_stderr", "parzen.stderr", "Parzen stderr", _IMAGES),
    Metric("parzen_sigma", "parzen.sigma", "Parzen sigma", _IMAGES),
    Metric("nll", "likelihood.nll_nats", "NLL (nats)", own_stderr="likelihood.stderr"),
    Metric("nll_stderr", "likelihood.stderr", "NLL stderr"),
    Metric("bits_per_dim", "likelihood.bits_per_dim", "bits/dim"),
    Metric("modes_captured", "mode_coverage.modes_captured", "modes captured", ("mixture",),
           total="mode_coverage.num_modes"),
    Metric("high_quality_pct", "mode_coverage.high_quality_fraction", "HQ %", ("mixture",), scale=100.0),
    Metric("reverse_kl", "mode_coverage.reverse_kl", "reverse KL", ("mixture",)),
    Metric("classes_covered", "mode_coverage.classes_covered", "classes covered", ("classes",),
           total="mode_coverage.num_classes"),
    Metric("kl_to_data", "mode_coverage.kl_to_data", "KL to data", ("classes",)),
    Metric("modes_covered", "mode_coverage.modes_covered", "modes covered", ("stacked",),
           total="mode_coverage.num_modes"),
    Metric("kl_to_uniform", "mode_coverage.kl_to_uniform", "KL to uniform", _IMAGES),
    Metric("precision", "features.precision", "precision", _IMAGES),
    Metric("recall", "features.recall", "recall", _IMAGES),
    Metric("density", "features.density", "density", _IMAGES),
    Metric("coverage", "features.coverage", "coverage", _IMAGES),
    Metric("frechet_distance", "features.frechet_distance", "FD", _IMAGES),
    # 8-bit colour data: Inception's FID and IS, or the same on the tool's classifier (never mixed)
    Metric("fid", "fid_is.fid", "FID (Inception)", _IMAGES),
    Metric("inception_score", "fid_is.inception_score", "IS (Inception)", _IMAGES),
    Metric("fd_train", "fid_is.fd", "FD vs train (classifier)", _IMAGES),
    Metric("parameters", "parameters_total", "parameters", fmt=fmt_count),
    Metric("train_time_s", "train_time_s", "train time", fmt=fmt_seconds),
    Metric("sample_time_1000_s", "sample_time_1000_s", "1k samples", fmt=fmt_seconds),
)
# metrics shown in the per-variant tables (the stderr / sigma columns are CSV-only)
TABLE_METRICS = ("parzen_ll", "nll", "modes_captured", "high_quality_pct", "reverse_kl", "classes_covered",
                 "modes_covered", "kl_to_data", "kl_to_uniform", "precision", "recall", "density", "coverage",
                 "frechet_distance", "fid", "inception_score", "fd_train", "parameters", "steps", "train_time_s",
                 "sample_time_1000_s")
METRIC_BY_NAME = {m.name: m for m in METRICS}


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
    """The NLL with what it is, as the family labels its likelihood: ``1.23 ± 0.01 (IWAE)``."""
    kinds = sorted({r.likelihood_label for r in g.runs if isinstance(r.metrics.get("likelihood"), Mapping)})
    nll = METRIC_BY_NAME["nll"]
    stat = g.stat(nll.key)
    if stat is None:
        return "none" if kinds == ["none"] else DASH
    return f"{pm(stat, g.stat(nll.own_stderr), n_total=len(g.runs))} ({'/'.join(k for k in kinds if k != 'none')})"


def _count_cell(g: Group, m: Metric) -> str:
    """A mode count with its total when the group agrees on one: ``7.9 ± 0.316 /8``."""
    cell = pm(g.stat(m.key), n_total=len(g.runs))
    totals = g.strings(m.total) if m.total else []
    return f"{cell} /{totals[0]}" if cell != DASH and len(totals) == 1 else cell


def variant_table(variant: str, groups: Sequence[Group]) -> TableData:
    """Families as rows, every metric that applies to the variant's coverage kind as columns."""
    kind = groups[0].coverage
    metrics = [METRIC_BY_NAME[n] for n in TABLE_METRICS if kind in METRIC_BY_NAME[n].kinds]
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
            elif m.total:
                row.append(_count_cell(g, m))
            else:
                own = g.stat(m.own_stderr) if m.own_stderr else None
                row.append(pm(g.stat(m.key, m.scale), own, fmt=m.fmt, n_total=len(g.runs)))
        rows.append(row)
    for label, mean, stderr, _sigma in baseline_rows(groups):
        row = [label, DASH] + [DASH] * len(metrics)
        row[2 + metrics.index(METRIC_BY_NAME["parzen_ll"])] = pm(mean, stderr)
        rows.append(row)
    devices = sorted({str(r.metrics.get("device")) for g in groups for r in g.runs if r.metrics.get("device")})
    caption = ("± : std over seeds (ddof 1) when seeds > 1; for one run, the metric's own standard error over "
               "test examples (Parzen, NLL). NLL is each family's own likelihood (its kind in brackets); not "
               "comparable with Parzen. " + (f"Device: {', '.join(devices)}." if devices else ""))
    if kind == "mixture":
        caption += " HQ %: samples within 3 std of a mode (PacGAN)."
    return TableData(f"{variant}", columns, rows, caption).without_empty_columns(keep=2)


def pacgan_table(groups: Sequence[Group]) -> TableData | None:
    """Modes captured and high-quality % on ring8 and grid25, mean ± standard error over
    seeds: the layout of PacGAN's 2D table (Lin et al. 2018), its published rows below
    (:data:`~gencompare.report.published.PACGAN_TABLE1`). None without such runs."""
    totals = dict(PACGAN_2D)
    points = [g for g in groups if g.coverage == "mixture" and g.dataset in totals]
    if not points:
        return None
    datasets = [d for d in totals if any(g.dataset == d for g in points)]
    labels: list[str] = []
    for g in sorted(points, key=method_rank):
        if g.label not in labels:
            labels.append(g.label)
    columns = ["method"]
    for d in datasets:
        columns += [f"{d} modes /{totals[d]}", f"{d} HQ %"]
    columns.append("seeds")
    modes, hq = METRIC_BY_NAME["modes_captured"], METRIC_BY_NAME["high_quality_pct"]
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
            row.append(pm(g.stat(modes.key), spread="stderr", n_total=len(g.runs)))
            row.append(pm(g.stat(hq.key, hq.scale), spread="stderr", n_total=len(g.runs)))
            counts.append(str(len(g.runs)))
        row.append(" / ".join(counts))
        rows.append(row)
    for method, by_dataset in PACGAN_TABLE1.items():
        row = [f"{method}, published"]
        for d in datasets:
            m, m_se, q, q_se = by_dataset[d]
            row += [f"{m} ± {m_se}", f"{q} ± {q_se}"]
        rows.append(row + [" / ".join("10" for _ in datasets)])
    return TableData("2D mixtures, PacGAN layout (mean ± standard error over seeds)", columns, rows,
                     f"Standard error = sample std (ddof 1) / sqrt(seeds). Rows marked published: {PACGAN_SOURCE} "
                     "(PacGAN's networks and 400 epochs; compare a row with them only in that setting, "
                     "experiment=pacgan2d).")
