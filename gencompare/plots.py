"""Pictures a person would rather look at than read: sample grids and 2D scatter plots."""
from __future__ import annotations

from pathlib import Path

from torch import Tensor


def save_samples(samples: Tensor, path: str | Path, *, means: Tensor | None = None,
                 title: str | None = None, nrow: int = 8) -> Path:
    """Write samples as a PNG: an image grid for ``(N, C, H, W)`` in [0, 1], a scatter
    plot over the mixture ``means`` ``(K, 2)`` for points ``(N, 2)``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = samples.detach().float().cpu()
    if samples.dim() == 4:
        from torchvision.utils import save_image

        save_image(samples.clamp(0, 1), str(path), nrow=nrow, padding=2, pad_value=0.5)
        return path
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    ax.scatter(samples[:, 0], samples[:, 1], s=3, alpha=0.4, color="tab:blue", label="samples")
    if means is not None:
        m = means.detach().float().cpu()
        ax.scatter(m[:, 0], m[:, 1], s=60, marker="x", color="tab:red", label="mixture means")
        span = float(m.abs().max()) * 1.5 + 0.5
        ax.set_xlim(-span, span)
        ax.set_ylim(-span, span)
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path

