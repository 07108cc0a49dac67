"""Published numbers to hold the tables against (docs/protocols.md), by coverage kind.

The networks and training lengths of gencompare are not the papers': these are context
for the comparison between families, not targets for the rows.
"""
from __future__ import annotations

# PacGAN's Table 1 (Lin et al. 2018; docs/protocols.md 3a), 10 trials, mean and standard error:
# method -> dataset -> (modes, modes stderr, high-quality %, its stderr). Only the rows
# docs/protocols.md quotes.
PACGAN_TABLE1: dict[str, dict[str, tuple[float, float, float, float]]] = {
    "GAN": {"ring8": (6.3, 0.5, 98.2, 0.2), "grid25": (17.3, 0.8, 94.8, 0.7)},
    "PacGAN2": {"ring8": (7.9, 0.1, 95.6, 2.0), "grid25": (23.8, 0.7, 91.3, 0.8)},
}
PACGAN_SOURCE = "Lin et al. 2018, Table 1, 10 trials"


def _pacgan_text(method: str) -> str:
    ring, grid = PACGAN_TABLE1[method]["ring8"], PACGAN_TABLE1[method]["grid25"]
    return (f"{method} ring {ring[0]} ± {ring[1]} modes / {ring[2]} ± {ring[3]} % HQ, "
            f"grid {grid[0]} ± {grid[1]} / {grid[2]} ± {grid[3]} %")


PUBLISHED = {
    "mixture": ("Published (docs/protocols.md 3a): PacGAN, 10 trials, mean ± standard error: "
                + "; ".join(_pacgan_text(m) for m in PACGAN_TABLE1) + "."),
    "classes": ("Published (docs/protocols.md 1 and 2): Parzen LL on MNIST (Goodfellow et al. 2014 Table 1, nats): "
                "DBN 138 ± 2, Stacked CAE 121 ± 1.6, Deep GSN 214 ± 1.1, GAN 225 ± 2, diffusion 220 ± 1.9, "
                "AAE 340 ± 2; sanity baselines (Theis et al. 2016): train images about 243, k-means about 313. "
                "Own NLL: NADE about 88.9 (static binarization), VAE IWAE k=5000 about 86.8 (dynamic)."),
    "stacked": ("Published (docs/protocols.md 3c): DCGAN 99 modes / KL 3.4 (VEEGAN table); "
                "DCGAN 78.9 ± 6.5 / 4.50, PacDCGAN2 1000 / 0.06 (PacGAN table)."),
}

# The columns of PacGAN's 2D table (Lin et al. 2018): its two mixtures and their mode
# counts. The PacGAN-layout table reproduces that table, so it names these datasets.
PACGAN_2D = (("ring8", 8), ("grid25", 25))
