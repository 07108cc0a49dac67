"""The figures: metrics side by side (comparison.png) and each group's final samples
(samples_mosaic.png)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from gencompare.plots import REAL_COLOR
from gencompare.record import lookup
from gencompare.report.diagnostics import coverage_over_training
from gencompare.report.formatting import wrap
from gencompare.report.groups import Group, baseline_rows, by_variant, method_rank
from gencompare.report.stats import summarize
from gencompare.report.tables import METRIC_BY_NAME, TABLE_METRICS


def _pyplot():
    # matplotlib is imported only when a figure is drawn: it is slow to import
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


#: The unit of each metric drawn, for its axis (headers that name theirs already are left as they are).
UNITS = {"parzen_ll": "nats", "nll": "nats", "ais_nll": "nats", "ais_decoder_nll": "nats",
         "ais_decoder_family_nll": "nats", "bits_per_dim": "bits/dim", "modes_captured": "modes",
         "high_quality_pct": "%", "reverse_kl": "nats", "classes_covered": "classes", "modes_covered": "modes",
         "kl_to_data": "nats", "kl_to_uniform": "nats", "precision": "fraction", "recall": "fraction",
         "density": "ratio", "coverage": "fraction", "frechet_distance": "squared feature distance",
         "fid": "squared feature distance", "inception_score": "score", "fd_train": "squared feature distance",
         "train_time_s": "s", "sample_time_1000_s": "s"}
TITLES = {"train_time_s": "train time", "sample_time_1000_s": "time to draw 1,000 samples"}


def _axis_title(m) -> str:
    header = TITLES.get(m.name, m.header)
    unit = UNITS.get(m.name)
    return header if not unit or f"({unit})" in header else f"{header} ({unit})"


def _why_missing(g: Group, m) -> str | None:
    """Why group ``g`` has no bar for metric ``m`` (a note drawn in its place), or None
    when the metric does not apply to its data (nothing to say)."""
    if g.coverage not in m.kinds:
        return None
    raw = [lookup(r.metrics, m.key) for r in g.runs]
    infinite = sum(1 for v in raw if isinstance(v, (int, float)) and math.isinf(v)
                   or isinstance(v, str) and v.lower().lstrip("+-") in ("inf", "infinity"))
    if infinite:
        return f"inf in {infinite}/{len(g.runs)} runs"
    if m.name in ("nll", "bits_per_dim") and all(lookup(r.metrics, "likelihood.kind") is None for r in g.runs):
        return f"no likelihood ({g.family})"
    if m.key.startswith("ais.decoder.") and all(isinstance(lookup(r.metrics, "ais"), dict) for r in g.runs):
        return f"no own p(x|z) ({g.family})"
    return "not measured"


def _bars(groups: Sequence[Group], m) -> list[tuple]:
    """The bars of metric ``m``'s panel: ``(label, mean, err, baseline, colour, note)``, one
    per group (a note in place of a value that cannot be drawn), then the Parzen baselines."""
    bars = []
    for g in groups:
        st = g.stat(m.key, m.scale)
        label = f"{wrap(g.label)}\n{g.variant}"
        if st is None or not math.isfinite(st.mean):
            why = _why_missing(g, m)
            if why:
                bars.append((label, 0.0, 0.0, False, g.color, why))
            continue
        own = g.stat(m.own_stderr) if m.own_stderr else None
        err = st.stderr if st.n >= 2 else (own.mean * m.scale if own else 0.0)
        bars.append((f"{label}\nn={st.n}", st.mean, 0.0 if math.isnan(err) else err, False, g.color, None))
    if m.name == "parzen_ll":
        for variant, vg in by_variant(groups).items():
            for label, mean, stderr, _ in baseline_rows(vg):
                bars.append((f"{label.replace(' (baseline)', '')}\n{variant}", mean.mean,
                             stderr.mean if stderr else 0.0, True, None, None))
    return bars


#: The log-likelihood estimates drawn side by side per group (:func:`_estimates_panel`):
#: (label, key, its standard error's key, sign); sign -1 turns a stored NLL into a log-likelihood.
ESTIMATES = (("Parzen", "parzen.mean", "parzen.stderr", 1.0),
             ("AIS, Gaussian obs.", "ais.gaussian.nll_nats", "ais.gaussian.stderr_nats", -1.0),
             ("AIS, own decoder", "ais.decoder.nll_nats", "ais.decoder.stderr_nats", -1.0),
             ("own likelihood", "likelihood.nll_nats", "likelihood.stderr", -1.0))
_ESTIMATE_HATCHES = ("", "//", "xx", "..")


def _estimates_panel(ax, groups: Sequence[Group]) -> None:
    """Each group's log-likelihood estimates side by side (issue 23): Parzen, AIS with a Gaussian
    observation, AIS with the family's own decoder, and its own likelihood (exact / IWAE /
    bound, its label written on the bar), one hatch each, in the family's colour; error bars
    as :func:`plot_metrics`'. Parzen and the Gaussian AIS score the same points; the
    own-decoder AIS and the own likelihood score the family's own data (binarized where it
    trains so), so compare within those pairs."""
    width = 0.8 / len(ESTIMATES)
    labelled: set[str] = set()
    ticks: list[str] = []
    for i, g in enumerate(groups):
        own_label = next((r.likelihood_label for r in g.runs if r.likelihood_label != "none"), None)
        for j, (label, key, stderr_key, sign) in enumerate(ESTIMATES):
            st = g.stat(key)
            if st is None or not math.isfinite(st.mean):
                continue
            own = g.stat(stderr_key)
            err = st.stderr if st.n >= 2 else (own.mean if own else 0.0)
            x = i - 0.4 + width * (j + 0.5)
            ax.bar(x, sign * st.mean, width, yerr=0.0 if math.isnan(err) else err, color=g.color,
                   hatch=_ESTIMATE_HATCHES[j], edgecolor="black", linewidth=0.5, capsize=2)
            labelled.add(label)
        ticks.append(f"{wrap(g.label)}\n{g.variant}" + (f"\nown: {own_label}" if own_label else ""))
    ax.set_xticks(range(len(groups)), ticks, rotation=60, ha="right", fontsize=8)
    ax.set_title("log-likelihood estimates (nats, higher is better)", fontsize=10)
    ax.set_ylabel("nats", fontsize=8)
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="y", alpha=0.3)
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(facecolor="white", edgecolor="black", hatch=h * 2, label=lab)
                       for (lab, *_), h in zip(ESTIMATES, _ESTIMATE_HATCHES) if lab in labelled], fontsize=7)


def _has_ais(groups: Sequence[Group]) -> bool:
    return any(g.stat(e[1]) is not None for g in groups for e in ESTIMATES[1:3])


def plot_metrics(groups: Sequence[Group], path: Path) -> Path | None:
    """Bar charts of each metric, one bar per group (and the Parzen baselines), each
    labelled with its number of seeds n; error bars are the standard error over seeds
    (std / sqrt(n)), or for a single run the metric's own standard error over test
    examples where it has one. A group whose value cannot be drawn (inf, a family without
    a likelihood) gets a grey note in its slot instead of silently missing. None when no
    metric has a finite value."""
    names = [n for n in TABLE_METRICS if n not in ("steps", "parameters")]
    panels = [(METRIC_BY_NAME[n], _bars(groups, METRIC_BY_NAME[n])) for n in names]
    panels = [(m, bars) for m, bars in panels if any(b[5] is None for b in bars)]
    if not panels:
        return None
    plt = _pyplot()
    estimates = _has_ais(groups)  # the estimates' panel, last, where some run has AIS
    ncols = min(3, len(panels) + estimates)
    nrows = math.ceil((len(panels) + estimates) / ncols)
    width = max(4.0, 0.6 * max(len(b) for _, b in panels) + 1.8)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, 4.6 * nrows), squeeze=False)
    for ax, (m, bars) in zip(axes.flat, panels):
        xs = list(range(len(bars)))
        drawn = [(x, b) for x, b in zip(xs, bars) if b[5] is None]
        ax.bar([x for x, _ in drawn], [b[1] for _, b in drawn], yerr=[b[2] for _, b in drawn], capsize=3,
               color=[REAL_COLOR if b[3] else b[4] for _, b in drawn],
               edgecolor="black", linewidth=0.5, error_kw={"linewidth": 1})
        low, high = ax.get_ylim()
        for x, b in zip(xs, bars):
            if b[5] is not None:
                ax.text(x, low + 0.5 * (high - low), b[5], rotation=90, ha="center", va="center", fontsize=8,
                        color="dimgray", style="italic",
                        bbox={"boxstyle": "round", "facecolor": "whitesmoke", "edgecolor": "lightgray"})
        ax.set_xticks(xs, [b[0] for b in bars], rotation=60, ha="right", fontsize=8)
        ax.set_xlim(-0.6, len(bars) - 0.4)
        ax.set_title(_axis_title(m), fontsize=10)
        ax.set_ylabel(UNITS.get(m.name, ""), fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    if estimates:
        _estimates_panel(list(axes.flat)[len(panels)], groups)
    for ax in list(axes.flat)[len(panels) + estimates:]:
        ax.axis("off")
    fig.suptitle("gencompare: metrics side by side. Bars: mean over n seeds; error bars: standard error (std / sqrt(n)),\n"
                 "or the metric's own standard error over test examples for n=1; grey notes: values that cannot be drawn",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.6 / fig.get_figheight()))  # room for the two-line title
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def sample_mosaic(groups: Sequence[Group], path: Path) -> Path | None:
    """The final sample grid (or 2D scatter plot) of each group's first run (lowest
    seed): one row per family, one column per dataset variant, each cell titled with its
    seed and each row labelled in its family's colour. None when no run has one."""
    labels: list[str] = []
    variants: list[str] = []
    colors: dict[str, str] = {}
    for g in sorted(groups, key=method_rank):
        if g.label not in labels:
            labels.append(g.label)
            colors[g.label] = g.color
    for g in groups:
        if g.variant not in variants:
            variants.append(g.variant)
    cells: dict[tuple[str, str], tuple[Path, object]] = {}
    for g in groups:
        run = min(g.runs, key=lambda r: (not isinstance(r.seed, int), r.seed if isinstance(r.seed, int) else 0))
        if run.sample_path.is_file():
            cells[(g.label, g.variant)] = (run.sample_path, run.seed)
    if not cells:
        return None
    aspect = 1.0  # height / width of the tallest picture: cells sized to it, not square
    for p, _ in cells.values():
        with Image.open(p) as im:
            aspect = max(aspect if aspect != 1.0 else 0.0, im.size[1] / im.size[0])
    plt = _pyplot()
    fig, axes = plt.subplots(len(labels), len(variants),
                             figsize=(max(5.0 * len(variants), 6.0), 5.0 * aspect * len(labels) + 0.8), squeeze=False)
    for i, lab in enumerate(labels):
        for j, var in enumerate(variants):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            cell = cells.get((lab, var))
            if cell is not None:
                p, seed = cell
                with Image.open(p) as im:
                    ax.imshow(im.convert("RGB"))
                ax.set_title(f"{var}, seed {seed}", fontsize=12)
            else:
                ax.text(0.5, 0.5, "no samples", ha="center", va="center", transform=ax.transAxes, color="gray",
                        fontsize=12)
                ax.set_title(var, fontsize=12)
            if j == 0:
                ax.set_ylabel(wrap(lab), fontsize=14, color=colors[lab], fontweight="bold")
            for spine in ax.spines.values():
                spine.set_edgecolor(colors[lab])
                spine.set_linewidth(2)
    fig.suptitle("final samples: one row per family, its lowest seed", fontsize=13)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def coverage_curves(groups: Sequence[Group], path: Path) -> Path | None:
    """Mode coverage over training (``trainer.eval_every`` evaluations and the final one):
    per dataset variant, the modes (or classes) captured and, for the 2D mixtures, the
    high-quality %, one line per group, mean ± standard error over its seeds at each step.
    None when no group has coverage at two steps or more."""
    # (variant, quantity, lines); a line: (label, family, colour, steps, means, standard errors)
    panels: list[tuple[str, str, list[tuple[str, str, str, list[float], list[float], list[float]]]]] = []
    for variant, vg in by_variant(groups).items():
        count_lines, hq_lines, count_key = [], [], None
        for g in sorted(vg, key=method_rank):
            per_step: dict[float, list[tuple[float, float | None]]] = {}
            for r in g.runs:
                key, points = coverage_over_training(r.metrics)
                count_key = count_key or key
                for step, count, hq in points:
                    per_step.setdefault(step, []).append((count, hq))
            steps = sorted(s for s in per_step if math.isfinite(s))
            if len(steps) < 2:
                continue
            for lines, pick, scale in ((count_lines, 0, 1.0), (hq_lines, 1, 100.0)):
                stats = [summarize([v[pick] * scale for v in per_step[s] if v[pick] is not None]) for s in steps]
                kept = [(s, st) for s, st in zip(steps, stats) if st is not None]
                if len(kept) >= 2:
                    lines.append((g.label, g.family, g.color, [s for s, _ in kept], [st.mean for _, st in kept],
                                  [0.0 if math.isnan(st.stderr) else st.stderr for _, st in kept]))
        if count_lines:
            panels.append((variant, (count_key or "coverage").replace("_", " "), count_lines))
        if hq_lines:
            panels.append((variant, "high-quality %", hq_lines))
    if not panels:
        return None
    plt = _pyplot()
    ncols = min(2, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.0 * ncols, 3.8 * nrows), squeeze=False)
    for ax, (variant, quantity, lines) in zip(axes.flat, panels):
        seen: dict[str, int] = {}
        for label, family, color, xs, means, errs in lines:
            style = ("-", "--", ":", "-.")[seen.get(family, 0) % 4]  # variants of one family: its colour, new dashes
            seen[family] = seen.get(family, 0) + 1
            line, = ax.plot(xs, means, marker="o", markersize=3, label=wrap(label, 40), color=color,
                            linestyle=style)
            ax.fill_between(xs, [m - e for m, e in zip(means, errs)], [m + e for m, e in zip(means, errs)],
                            color=line.get_color(), alpha=0.2)
        ax.set_title(f"{variant}: {quantity}", fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle("mode coverage over training (mean ± standard error over seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
