"""The figures: metrics side by side (comparison.png) and each group's final samples
(samples_mosaic.png)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from gencompare.report.formatting import wrap
from gencompare.report.groups import FAMILY_ORDER, Group, baseline_rows, by_variant, family_rank
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
    for g in groups:
        if g.label not in labels:
            labels.append(g.label)
        if g.variant not in variants:
            variants.append(g.variant)
    labels.sort(key=lambda lab: family_rank(lab.split(" ")[0]))
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
