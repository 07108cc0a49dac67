"""Derive the README's two figures from a committed `gencompare compare` output.

The figures `compare` writes are sized for a screen of their own: `samples_mosaic.png` is one
row per family (1100 x 3938 px) and `comparison.png` six panels side by side (3366 x 1012 px),
both unreadable at the width GitHub gives a README. This script only rearranges and crops
their pixels (nothing is redrawn or recomputed):

- `docs/figures/remedies_2d_mosaic.png`: the mosaic's panels laid out as two rows (ring8,
  grid25) of seven columns (one per method), each column headed by the mosaic's own
  family label, rotated to read left to right;
- `docs/figures/remedies_2d_coverage.png`: the "modes captured" and "HQ %" panels of
  `comparison.png`, one above the other.

Run from the repository root: `.venv/bin/python docs/make_figures.py`. The panel coordinates
below are those of the files in docs/results/remedies_2d-2026-11-28/ (2026-11-28); another
compare output needs its own.
"""
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "docs" / "results" / "remedies_2d-2026-11-28"
OUT = ROOT / "docs" / "figures"

# samples_mosaic.png: family label strip, ring8 and grid25 panels (x); each row's box (y).
LABEL_X, RING_X, GRID_X = (0, 65), (65, 577), (573, 1085)
ROW_TOP, ROW_PITCH, ROW_HEIGHT, ROWS = 125, 548, 511, 7
# comparison.png: the "modes captured" and "HQ %" panels, titles and tick labels included.
COVERAGE_PANELS = [(1125, 120, 2240, 562), (2240, 120, 3366, 562)]
WIDTH = 1800  # px of the mosaic as committed


def mosaic() -> Image.Image:
    """Seven methods across, ring8 above grid25, each column headed by its family label."""
    src = Image.open(SOURCE / "samples_mosaic.png").convert("RGB")
    cell = RING_X[1] - RING_X[0]
    label_h = LABEL_X[1] - LABEL_X[0]
    out = Image.new("RGB", (ROWS * cell, label_h + 2 * ROW_HEIGHT), "white")
    for i in range(ROWS):
        top = ROW_TOP + i * ROW_PITCH
        label = src.crop((LABEL_X[0], top, LABEL_X[1], top + ROW_HEIGHT)).rotate(-90, expand=True)
        out.paste(label, (i * cell, 0))
        out.paste(src.crop((RING_X[0], top, RING_X[1], top + ROW_HEIGHT)), (i * cell, label_h))
        out.paste(src.crop((GRID_X[0], top, GRID_X[1], top + ROW_HEIGHT)), (i * cell, label_h + ROW_HEIGHT))
    return out.resize((WIDTH, round(out.height * WIDTH / out.width)), Image.LANCZOS)


def coverage() -> Image.Image:
    """The two coverage panels of comparison.png, stacked."""
    src = Image.open(SOURCE / "comparison.png").convert("RGB")
    panels = [src.crop(box) for box in COVERAGE_PANELS]
    out = Image.new("RGB", (max(p.width for p in panels), sum(p.height for p in panels)), "white")
    y = 0
    for p in panels:
        out.paste(p, (0, y))
        y += p.height
    return out


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    mosaic().save(OUT / "remedies_2d_mosaic.png", optimize=True)
    coverage().save(OUT / "remedies_2d_coverage.png", optimize=True)
