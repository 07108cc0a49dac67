"""Pictures a person would rather look at than read: sample grids and 2D scatter plots.

Every figure of the tool (these, and ``compare``'s in :mod:`gencompare.report.figures`)
draws a family in the colour its class declares (``GenerativeModel.family_color``, recorded
in metrics.json), so a family is the same colour everywhere.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch only for the annotations: report/ draws without importing it
    from torch import Tensor

#: The colour of a family that declares none (``GenerativeModel.family_color``) and of the
#: runs whose record names none; matplotlib's tab10 grey.
OTHER_COLOR = "#7f7f7f"
REAL_COLOR = "#bbbbbb"

GRID_SCALE = 2  # each image pixel drawn as GRID_SCALE x GRID_SCALE screen pixels (or more)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_samples(samples: Tensor, path: str | Path, *, means: Tensor | None = None,
                 title: str | None = None, nrow: int = 8, std: float | None = None,
                 real: Tensor | None = None, seed: int | None = None, color: str = OTHER_COLOR) -> Path:
    """Write samples as a PNG.

    Images ``(N, C, H, W)`` in [0, 1]: a grid of ``nrow`` columns, each pixel drawn at
    least ``GRID_SCALE`` times larger than the data (a 28 x 28 digit grid of 8 x 8 is
    ~560 px wide), under ``title``. Points ``(N, 2)``: a scatter plot in ``color`` (the
    family's, ``model.family_color``) over the real data ``real`` ``(M, 2)`` drawn faint,
    with the mixture ``means`` ``(K, 2)`` and their 3-sigma circles (radius ``3 * std``),
    labelled axes and the sample count. ``seed`` is appended to the title as ``seed <seed>``.

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = samples.detach().float().cpu()
    if seed is not None:
        title = f"{title}, seed {seed}" if title else f"seed {seed}"
    if samples.dim() == 4:
        return _save_grid(samples, path, title=title, nrow=nrow)
    return _save_scatter(samples, path, title=title, color=color, means=means, std=std, real=real)


def _save_grid(samples: Tensor, path: Path, *, title: str | None, nrow: int) -> Path:
    """Images ``(N, C, H, W)`` in [0, 1] as one grid (see :func:`save_samples`)."""
    plt = _pyplot()
    from torchvision.utils import make_grid

    grid = make_grid(samples.clamp(0, 1), nrow=nrow, padding=2, pad_value=0.5)  # (3, H, W)
    img = grid.permute(1, 2, 0).numpy()
    h, w = img.shape[:2]
    scale = max(GRID_SCALE, math.ceil(480 / max(h, w)))  # small grids still readable
    dpi = 100
    title_px = 40 if title else 0
    fig = plt.figure(figsize=(w * scale / dpi, (h * scale + title_px) / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, h * scale / (h * scale + title_px)))
    ax.imshow(img, interpolation="nearest")
    ax.set_axis_off()
    if title:
        fig.text(0.5, 1 - (title_px / 2) / (h * scale + title_px), title, ha="center", va="center",
                 fontsize=11 if w * scale >= 400 else 8, color="black")
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def _save_scatter(samples: Tensor, path: Path, *, title: str | None, color: str, means: Tensor | None,
                  std: float | None, real: Tensor | None) -> Path:
    """Points ``(N, 2)`` as a scatter plot over the real data (see :func:`save_samples`)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 6), dpi=110)
    if real is not None and len(real):
        r = real.detach().float().cpu()
        ax.scatter(r[:, 0], r[:, 1], s=10, alpha=0.3, color=REAL_COLOR, label=f"real data (n = {len(r):,})",
                   rasterized=True, zorder=1)
    ax.scatter(samples[:, 0], samples[:, 1], s=3, alpha=0.5, color=color, label=f"samples (n = {len(samples):,})",
               rasterized=True, zorder=2)
    if means is not None:
        m = means.detach().float().cpu()
        ax.scatter(m[:, 0], m[:, 1], s=25, marker="+", color="black", linewidths=0.8, label="mixture means", zorder=3)
        if std is not None:
            for i, (x, y) in enumerate(m.tolist()):
                ax.add_patch(plt.Circle((x, y), 3 * float(std), fill=False, color="black", linewidth=1.0,
                                        linestyle="-", zorder=4, label="3 sigma (high quality)" if i == 0 else None))
        span = float(m.abs().max()) * 1.5 + 0.5
        ax.set_xlim(-span, span)
        ax.set_ylim(-span, span)
    ax.set_aspect("equal")
    ax.set_xlabel("x1")
    ax.set_ylabel("x2")
    ax.grid(alpha=0.2)
    ax.legend(loc="upper right", fontsize=8, framealpha=0.9, markerscale=2)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
