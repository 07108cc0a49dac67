"""The figures: metrics side by side (comparison.png) and each group's final samples
(samples_mosaic.png)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from gencompare.report.diagnostics import coverage_over_training
from gencompare.report.formatting import wrap
from gencompare.report.groups import FAMILY_ORDER, Group, baseline_rows, by_variant, method_rank
from gencompare.report.stats import summarize
from gencompare.report.tables import METRIC_BY_NAME, TABLE_METRICS


def _pyplot():
    # matplotlib is imported only when a figure is drawn: it is slow to import
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_metrics(groups: Sequence[Group], path: Path) -> Path | None:
    """Bar charts of each metric, one bar per group (and the Parzen baselines), with
    error bars (std over seeds; the metric's own stderr for a single run). None when no
    metric has a finite value."""
    names = [n for n in TABLE_METRICS if n not in ("steps", "parameters")]
    panels = []
    for n in names:
        m = METRIC_BY_NAME[n]
        bars = []
        for g in groups:
            st = g.stat(m.key, m.scale)
            if st is None or not math.isfinite(st.mean):
                continue
            err = st.std if st.n >= 2 else (g.stat(m.own_stderr).mean if m.own_stderr and g.stat(m.own_stderr) else 0.0)
            bars.append((f"{wrap(g.label)}\n{g.variant}", st.mean, 0.0 if math.isnan(err) else err, False))
        if n == "parzen_ll":
            for variant, vg in by_variant(groups).items():
                for label, mean, stderr, _ in baseline_rows(vg):
                    bars.append((f"{label.replace(' (baseline)', '')}\n{variant}", mean.mean,
                                 stderr.mean if stderr else 0.0, True))
        if bars:
            panels.append((m, bars))
    if not panels:
        return None
    plt = _pyplot()
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
    seed): one row per family, one column per dataset variant. None when no run has one."""
    labels: list[str] = []
    variants: list[str] = []
    for g in sorted(groups, key=method_rank):
        if g.label not in labels:
            labels.append(g.label)
    for g in groups:
        if g.variant not in variants:
            variants.append(g.variant)
    cells: dict[tuple[str, str], Path] = {}
    for g in groups:
        p = g.runs[0].sample_path
        if p.is_file():
            cells[(g.label, g.variant)] = p
    if not cells:
        return None
    plt = _pyplot()
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
                ax.set_ylabel(wrap(lab), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def coverage_curves(groups: Sequence[Group], path: Path) -> Path | None:
    """Mode coverage over training (``trainer.eval_every`` evaluations and the final one):
    per dataset variant, the modes (or classes) captured and, for the 2D mixtures, the
    high-quality %, one line per group, mean ± standard error over its seeds at each step.
    None when no group has coverage at two steps or more."""
    panels: list[tuple[str, str, list[tuple[str, list[float], list[float], list[float]]]]] = []
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
                    lines.append((g.label, [s for s, _ in kept], [st.mean for _, st in kept],
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
        for label, xs, means, errs in lines:
            line, = ax.plot(xs, means, marker="o", markersize=3, label=wrap(label, 40))
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
