"""The figures a researcher puts in a paper: sizes, notes for undrawable values, one colour per family."""
from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from gencompare.models.gan import GAN
from gencompare.models.nade import NADE
from gencompare.models.vae import VAE
from gencompare.plots import OTHER_COLOR, save_samples
from gencompare.record import FamilyStyle
from gencompare.report.figures import _why_missing, plot_metrics, sample_mosaic
from gencompare.report.groups import Group
from gencompare.report.runs import Run
from gencompare.report.tables import METRIC_BY_NAME

FAMILIES = {cls.family: cls for cls in (GAN, VAE, NADE)}


def _has_color(png, hex_color: str, tol: int = 12) -> bool:
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    want = np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)])
    return bool((np.abs(rgb - want).max(axis=-1) <= tol).any())


def test_image_grid_is_twice_the_data_size(tmp_path):
    path = save_samples(torch.rand(64, 1, 28, 28), tmp_path / "g.png", title="vae on mnist-5k, step 3", seed=0)
    with Image.open(path) as im:
        w, h = im.size
    assert w >= 2 * 242 and h > w  # 8 x 8 digits with 2 px padding were 242 px; the title adds height


def test_scatter_has_real_data_samples_and_family_colour(tmp_path):
    angles = torch.arange(8) * 2 * math.pi / 8
    means = torch.stack([angles.cos(), angles.sin()], 1)
    real = means[torch.randint(8, (500,))] + 0.01 * torch.randn(500, 2)
    path = save_samples(means[torch.randint(8, (300,))] + 0.02 * torch.randn(300, 2), tmp_path / "s.png",
                        means=means, std=0.01, real=real, title="gan on ring8, step 10", seed=3, color=GAN.family_color)
    assert _has_color(path, GAN.family_color)
    assert len({cls.family_color for cls in FAMILIES.values()} | {OTHER_COLOR}) == 4  # one colour each


def test_a_family_declaring_no_colour_is_drawn_grey(tmp_path):
    path = save_samples(torch.randn(300, 2), tmp_path / "s.png", title="mine on ring8")
    assert _has_color(path, OTHER_COLOR) and not _has_color(path, GAN.family_color)


def _run(tmp_path, name, **metrics) -> Run:
    d = tmp_path / name
    d.mkdir()
    family = metrics.get("family", "gan")
    return Run(d, {"model": family, "dataset": "ring8", "variant": "ring8", "data": {"coverage": "mixture"},
                   "family_style": FamilyStyle.of(FAMILIES[family]).to_dict(), **metrics}, None, None)


def test_comparison_notes_values_it_cannot_draw(tmp_path):
    gan = Group("gan", "ring8", "ring8", [
        _run(tmp_path, "g0", family="gan", seed=0, likelihood={"kind": None},
             mode_coverage={"reverse_kl": float("inf"), "modes_captured": 7, "num_modes": 8}),
        _run(tmp_path, "g1", family="gan", seed=1, likelihood={"kind": None},
             mode_coverage={"reverse_kl": 0.3, "modes_captured": 8, "num_modes": 8})])
    nade = Group("nade", "ring8", "ring8", [
        _run(tmp_path, f"n{s}", family="nade", seed=s, likelihood={"kind": "nll_exact", "nll_nats": -4.0 + s / 10},
             mode_coverage={"reverse_kl": 0.01, "modes_captured": 8, "num_modes": 8}) for s in range(3)])
    assert _why_missing(gan, METRIC_BY_NAME["nll"]) == "no likelihood (gan)"
    assert _why_missing(gan, METRIC_BY_NAME["reverse_kl"]) == "inf in 1/2 runs"  # a missed mode: the mean is inf
    out = plot_metrics([gan, nade], tmp_path / "comparison.png")
    assert out is not None and _has_color(out, NADE.family_color)
    with Image.open(out) as im:
        assert min(im.size) >= 400


def test_mosaic_rows_in_family_colours(tmp_path):
    groups = []
    for fam in ("gan", "vae"):
        run = _run(tmp_path, fam, family=fam, seed=4)
        save_samples(torch.rand(16, 1, 28, 28), run.path / "samples" / "samples.png", title=f"{fam} on x")
        groups.append(Group(fam, "ring8", "ring8", [run]))
    out = sample_mosaic(groups, tmp_path / "mosaic.png")
    with Image.open(out) as im:
        assert im.size[0] >= 500
    assert _has_color(out, GAN.family_color) and _has_color(out, VAE.family_color)
