"""The metric registry and the tables built from it: one per dataset variant (families
as rows, the Parzen sanity baselines of Theis et al. 2016 as their own rows) and the
PacGAN-style 2D table (mean ± standard error over seeds).

With a single run a cell shows the metric's own standard error over test examples
(Parzen, NLL) instead of a spread over seeds, as Goodfellow et al. 2014 Table 1 does.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich.table import Table

from gencompare.record import lookup
from gencompare.report.formatting import DASH, fmt, fmt_count, fmt_seconds, pm
from gencompare.report.groups import BASELINES, Group, baseline_rows, method_rank
from gencompare.report.stats import summarize
from gencompare.report.published import PACGAN_2D, PACGAN_SOURCE, PACGAN_TABLE1

_IMAGES = ("classes", "stacked")  # coverage kinds scored with a classifier


Note = Callable[[Mapping[str, Any]], str]


@dataclass(frozen=True)
class Metric:
    """One metric's row of the tables: where it is in metrics.json and how it is shown, in
    ``compare``'s tables and CSV and in the terminal table of one run (:func:`run_table`).
    A metric outside the package declares its rows on its class
    (:attr:`gencompare.metrics.base.Metric.rows`)."""

    name: str             # CSV column stem
    key: str              # dotted key into metrics.json
    header: str
    kinds: tuple[str, ...] = ("mixture", "classes", "stacked")  # coverage kinds it applies to
    scale: float = 1.0
    own_stderr: str | None = None  # the metric's standard error over test examples
    total: str | None = None       # a mode count's "out of" (shown as "8 /8")
    fmt: Callable[[float], str] = fmt
    note: str | Note = ""          # the terminal's protocol / note column, or a function of metrics.json
    absent_note: str | None = None  # key of the reason the terminal shows (value "none") when the metric is missing
    network: str | None = None     # key of the feature network's name, shown in the header: "FD (<network>)"

    def header_for(self, networks: Sequence[str]) -> str:
        """The header, naming the feature network when every run used the same one."""
        return f"{self.header} ({networks[0]})" if self.network and len(networks) == 1 else self.header


def _get(key: str, digits: int = 3, prefix: str = "", suffix: str = "") -> Note:
    """A note that shows one value of metrics.json (nothing when it is missing)."""
    def note(m: Mapping[str, Any]) -> str:
        v = lookup(m, key)
        return "" if v is None else f"{prefix}{v:.{digits}f}{suffix}" if isinstance(v, float) else f"{prefix}{v}{suffix}"
    return note


def _parzen_note(m: Mapping[str, Any]) -> str:
    pz = m["parzen"]
    return (f"sigma={pz['sigma']:.3f} (on {pz.get('selected_on', 'valid')}), {pz['num_centres']} samples, "
            f"{pz['num_test']} test images")


def _accuracy_note(m: Mapping[str, Any]) -> str:
    ok = lookup(m, "classifier.meets_protocol")
    flag = "" if ok is None else (" (meets the 98% protocol)" if ok else " (BELOW the 98% protocol)")
    return f"{lookup(m, 'classifier.feature_network')}{flag}"


def _is_note(m: Mapping[str, Any]) -> str:
    fi = m["fid_is"]
    std = fi.get("inception_score_std", fi.get("classifier_score_std"))
    return f"± {std:.2f} (std over {fi.get('splits')} splits of {fi.get('num_fake')} samples)"


def _ais_note(block: str) -> Note:
    """The AIS protocol of one block of ``ais``: sigma, K, chains, leapfrog, acceptance, BDMC gap."""
    def note(m: Mapping[str, Any]) -> str:
        a = lookup(m, f"ais.{block}")
        if not isinstance(a, Mapping):
            return ""
        parts = [f"sigma={a['sigma']:.3g}"] if a.get("sigma") is not None else [str(a.get("observation", ""))]
        parts.append(f"K={a['steps']:,}, {a['chains']} chains, L={a['leapfrog']}, {a['num_test']} test")
        if a.get("family_nll_nats") is not None:
            parts.append(f"own likelihood on the same examples {a['family_nll_nats']:.3g}")
        if a.get("acceptance_rate") is not None:
            parts.append(f"acceptance {a['acceptance_rate']:.2f}")
        if a.get("bdmc_gap_nats") is not None:
            flag = " (ABOVE threshold: not converged)" if a.get("bdmc_gap_too_large") else ""
            parts.append(f"BDMC gap {a['bdmc_gap_nats']:.3g} nats on {a.get('bdmc_examples')} simulated{flag}")
        return ", ".join(parts)
    return note


_FEATURES = "features.feature_network"


METRICS: tuple[Metric, ...] = (
    Metric("steps", "steps", "steps", fmt=lambda x: f"{x:,.0f}"),
    Metric("parzen_ll", "parzen.mean", "Parzen LL (nats)", _IMAGES, own_stderr="parzen.stderr", note=_parzen_note),
    Metric("parzen_stderr", "parzen.stderr", "Parzen stderr", _IMAGES),
    Metric("parzen_sigma", "parzen.sigma", "Parzen sigma", _IMAGES),
    Metric("nll", "likelihood.nll_nats", "NLL (nats)", own_stderr="likelihood.stderr", note=_get("likelihood.kind"),
           absent_note="likelihood.note"),
    Metric("nll_stderr", "likelihood.stderr", "NLL stderr"),
    Metric("bits_per_dim", "likelihood.bits_per_dim", "bits/dim", note=_get("likelihood.note")),
    # AIS (Wu et al. 2017): -log p(x) under N(x; mean(z), sigma^2 I), on Parzen's data (images) or the
    # 8-bit images' bits/dim scale; and under the family's own decoder, on its own likelihood's data
    Metric("ais_nll", "ais.gaussian.nll_nats", "AIS NLL, Gaussian obs. (nats)", own_stderr="ais.gaussian.stderr_nats",
           note=_ais_note("gaussian")),
    Metric("ais_decoder_nll", "ais.decoder.nll_nats", "AIS NLL, own decoder (nats)",
           own_stderr="ais.decoder.stderr_nats", note=_ais_note("decoder")),
    Metric("ais_decoder_family_nll", "ais.decoder.family_nll_nats", "own NLL on AIS's examples (nats)",
           note="the family's own likelihood on the examples AIS scored: the paired comparison"),
    Metric("ais_stderr", "ais.gaussian.stderr_nats", "AIS stderr"),
    Metric("ais_sigma", "ais.gaussian.sigma", "AIS sigma"),
    Metric("ais_bdmc_gap", "ais.gaussian.bdmc_gap_nats", "AIS BDMC gap (nats)"),
    Metric("ais_decoder_stderr", "ais.decoder.stderr_nats", "AIS own decoder stderr"),
    Metric("ais_decoder_bdmc_gap", "ais.decoder.bdmc_gap_nats", "AIS own decoder BDMC gap (nats)"),
    Metric("modes_captured", "mode_coverage.modes_captured", "modes captured", ("mixture",),
           total="mode_coverage.num_modes", note="within 3 std of a mode (PacGAN)"),
    Metric("high_quality_pct", "mode_coverage.high_quality_fraction", "HQ %", ("mixture",), scale=100.0,
           note="samples within 3 std of a mode"),
    Metric("reverse_kl", "mode_coverage.reverse_kl", "reverse KL", ("mixture",), note="nats, to uniform over the modes"),
    Metric("classes_covered", "mode_coverage.classes_covered", "classes covered", ("classes",),
           total="mode_coverage.num_classes"),
    Metric("kl_to_data", "mode_coverage.kl_to_data", "KL to data", ("classes",), note="KL(gen || data classes), nats"),
    Metric("modes_covered", "mode_coverage.modes_covered", "modes covered", ("stacked",),
           total="mode_coverage.num_modes"),
    Metric("kl_to_uniform", "mode_coverage.kl_to_uniform", "KL to uniform", _IMAGES, note="KL(gen || uniform), nats"),
    Metric("precision", "features.precision", "precision", _IMAGES, note=_get(_FEATURES, prefix="k=3, features: ")),
    Metric("recall", "features.recall", "recall", _IMAGES, note=_get(_FEATURES, prefix="k=3, features: ")),
    Metric("density", "features.density", "density", _IMAGES, note=_get(_FEATURES, prefix="k=5, features: ")),
    Metric("coverage", "features.coverage", "coverage", _IMAGES, note=_get(_FEATURES, prefix="k=5, features: ")),
    Metric("frechet_distance", "features.frechet_distance", "FD", _IMAGES, note="Frechet distance, not FID",
           network=_FEATURES),
    # 8-bit colour data: Inception's FID and IS, or the same on the tool's classifier (never mixed)
    Metric("fid", "fid_is.fid", "FID (Inception)", _IMAGES, note=_get("fid_is.note"), absent_note="fid_is.note"),
    Metric("inception_score", "fid_is.inception_score", "IS (Inception)", _IMAGES, note=_is_note),
    Metric("fd_train", "fid_is.fd", "FD vs train (classifier)", _IMAGES, note=_get("fid_is.feature_network")),
    Metric("classifier_score", "fid_is.classifier_score", "IS-like score (classifier)", _IMAGES,
           note=lambda m: f"not the Inception Score; {_is_note(m)}"),
    Metric("classifier_accuracy", "classifier.test_accuracy", "classifier accuracy %", _IMAGES, scale=100.0,
           note=_accuracy_note),
    Metric("parameters", "parameters_total", "parameters", fmt=fmt_count),
    Metric("train_time_s", "train_time_s", "train time", fmt=fmt_seconds),
    Metric("sample_time_1000_s", "sample_time_1000_s", "1k samples", fmt=fmt_seconds, note=_get("sampler")),
)
# metrics shown in the per-variant tables (the stderr / sigma columns are CSV-only)
TABLE_METRICS = ("parzen_ll", "ais_nll", "nll", "ais_decoder_nll", "ais_decoder_family_nll", "modes_captured", "high_quality_pct", "reverse_kl", "classes_covered",
                 "modes_covered", "kl_to_data", "kl_to_uniform", "precision", "recall", "density", "coverage",
                 "frechet_distance", "fid", "inception_score", "fd_train", "parameters", "steps", "train_time_s",
                 "sample_time_1000_s")
# metrics shown in the terminal table at the end of a run and by `gencompare eval`, in this order
RUN_TABLE_METRICS = ("nll", "bits_per_dim", "parzen_ll", "ais_nll", "ais_decoder_nll", "modes_captured", "high_quality_pct", "reverse_kl",
                     "classes_covered", "kl_to_data", "modes_covered", "kl_to_uniform", "precision", "recall",
                     "density", "coverage", "frechet_distance", "fid", "inception_score", "fd_train",
                     "classifier_score", "classifier_accuracy", "sample_time_1000_s")
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


def variant_table(variant: str, groups: Sequence[Group], trusted: frozenset[str] | None = None) -> TableData:
    """Families as rows, every metric that applies to the variant's coverage kind as columns
    (the registry's, then those the runs' metrics declare: :func:`declared_rows`, which
    ``trusted`` is passed to)."""
    kind = groups[0].coverage
    declared = declared_rows((r.config for g in groups for r in g.runs), trusted)
    metrics = [m for m in (*(METRIC_BY_NAME[n] for n in TABLE_METRICS), *declared) if kind in m.kinds]
    columns = ["family", "seeds"]
    for m in metrics:
        columns.append(m.header_for(sorted({n for g in groups for n in g.strings(m.network)}) if m.network else []))
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
               "test examples (Parzen, NLL, AIS). NLL is each family's own likelihood (its kind in brackets); not "
               "comparable with Parzen. AIS NLL, Gaussian obs.: -log p(x) under N(x; mean(z), sigma^2 I) on the data "
               "Parzen scores (compare with minus Parzen LL); AIS NLL, own decoder: on the data of the family's own "
               "NLL, which it tightens (Wu et al. 2017); AIS scores only the first metrics.ais.num_test test examples, "
               "so hold it against the own NLL on those same examples. " + (f"Device: {', '.join(devices)}." if devices else ""))
    if kind == "mixture":
        caption += " HQ %: samples within 3 std of a mode (PacGAN)."
    return TableData(f"{variant}", columns, rows, caption).without_empty_columns(keep=2)


def declared_rows(configs: Iterable[Mapping[str, Any] | None],
                  trusted: frozenset[str] | None = None) -> tuple[Metric, ...]:
    """The rows that metrics outside the package declare (their class's ``rows``), for
    every ``metrics.<name>._target_`` of the runs' configs (``config.yaml``), first
    declaration of a name kept. The built-in metrics' rows are :data:`METRICS`, so
    ``gencompare.*`` targets are not looked up.

    A run dir's config may have come from anyone, and importing a module runs its top-level
    code, so a target is read only when reading it imports nothing a user did not choose:
    its module is already imported (this command built that metric), or the target is one
    :func:`gencompare.trust.is_safe_target` accepts (a ``_target_`` of a YAML on the
    command's search path; ``trusted``: those targets, by default
    ``trust.trusted_targets(trust.search_path())``). Any other target adds no rows and
    nothing is imported. A class is never called: only a
    :class:`gencompare.metrics.base.Metric` subclass's :class:`Metric` rows are read. One
    that does not import here (its package not on the path) adds nothing.
    """
    from gencompare.metrics.base import Metric as Scored

    rows: dict[str, Metric] = {}
    targets = {spec["_target_"] for cfg in configs if isinstance(cfg, Mapping)
               for spec in (cfg.get("metrics") or {}).values() if isinstance(spec, Mapping) and "_target_" in spec}
    for target in sorted(str(t) for t in targets if not str(t).startswith("gencompare.")):
        cls = _metric_class(target, trusted)
        if isinstance(cls, type) and issubclass(cls, Scored):
            for row in cls.rows:
                if isinstance(row, Metric):
                    rows.setdefault(row.name, row)
    return tuple(rows.values())


def _metric_class(target: str, trusted: frozenset[str] | None) -> Any:
    """What ``target`` names, when reading it imports nothing new or the user's configs
    name it (see :func:`declared_rows`); else None."""
    import sys

    from hydra.utils import get_class

    from gencompare.trust import is_safe_target

    module, _, name = target.rpartition(".")
    if module in sys.modules:  # imported already: reading an attribute runs no new code
        return getattr(sys.modules[module], name, None)
    if not is_safe_target(target, trusted):
        return None
    try:
        return get_class(target)
    except Exception:  # noqa: BLE001 - a run of a metric this environment lacks: shown without it
        return None


def run_table(metrics: Mapping[str, Any], title: str, declared: Sequence[Metric] = ()) -> TableData:
    """One run's evaluation as the terminal shows it: a row per metric of
    :data:`RUN_TABLE_METRICS` (then ``declared``) found in ``metrics`` (metrics.json as a
    dict), formatted as ``compare`` formats a single run, the Parzen sanity baselines
    after the Parzen row, and the metric's protocol note."""
    rows: list[list[str]] = []
    for m in (*(METRIC_BY_NAME[n] for n in RUN_TABLE_METRICS), *declared):
        value = lookup(metrics, m.key)
        net = lookup(metrics, m.network) if m.network else None
        header = m.header_for([] if net is None else [str(net)])
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            reason = lookup(metrics, m.absent_note) if m.absent_note else None
            if reason:
                rows.append([header, "none", str(reason)])
            continue
        own = lookup(metrics, m.own_stderr) if m.own_stderr else None
        cell = pm(summarize([value * m.scale]), summarize([own]) if isinstance(own, (int, float)) else None, fmt=m.fmt)
        total = lookup(metrics, m.total) if m.total else None
        rows.append([header, cell if total is None else f"{cell} /{total}",
                     m.note(metrics) if callable(m.note) else m.note])
        if m.name == "parzen_ll":
            rows += _baseline_lines(metrics.get("parzen_baselines") or {})
    return TableData(title, ["metric", "value", "protocol / note"], rows)


def _baseline_lines(baselines: Mapping[str, Any]) -> list[list[str]]:
    out = []
    for key, label in BASELINES:
        b = baselines.get(key)
        if isinstance(b, Mapping):
            out.append([f"  {label}", pm(summarize([b["mean"]]), summarize([b["stderr"]])),
                        f"sigma={b['sigma']:.3f}, {b['num_centres']} centres; a model below this has not beaten the data"])
    if "note" in baselines:
        out.append(["  k-means centroids (baseline)", "omitted", str(baselines["note"])])
    return out


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
