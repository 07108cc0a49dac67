"""Mode coverage (docs/protocols.md 3a-3c) and feature-space metrics (3d).

Expected values are computed independently in the tests (math.log, closed forms,
hand-placed points). The Stacked MNIST test needs the trained digit classifier and is
marked slow; it shares the session cache folder with test_classifier.py.
"""
from __future__ import annotations

import math
import time
import warnings

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from gencompare.data import load_dataset, mixture_means, sample_mixture
from gencompare.metrics.features import density_coverage, frechet_distance, knn_radii, precision_recall
from gencompare.metrics.mode_coverage import class_coverage, mixture_coverage, stacked_coverage

# P(||z|| <= 3) for a standard 2D Gaussian (chi-square, 2 dof): the high-quality
# fraction of perfect samples, 0.98889 (so real data sits just below 99%).
HQ_TRUE = 1 - math.exp(-9 / 2)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ 3a: 2D mixtures
@pytest.mark.parametrize("name,k", [("ring8", 8), ("grid25", 25)])
def test_real_mixture_samples_cover_every_mode(name, k):
    means, std = mixture_means(name)
    x, labels = sample_mixture(means, std, 2500, _gen())
    out = mixture_coverage(x, means, std)
    assert out["modes_captured"] == k and out["num_modes"] == k and out["num_samples"] == 2500
    # binomial s.e. of the HQ fraction at n=2500 is 0.0021
    assert abs(out["high_quality_fraction"] - HQ_TRUE) < 0.008
    assert out["reverse_kl"] < 0.01
    assert sum(out["counts"]) == out["num_high_quality"]
    # high-quality points are assigned to the mode they were drawn from
    drawn = torch.bincount(labels, minlength=k).tolist()
    assert all(c <= d for c, d in zip(out["counts"], drawn))


@pytest.mark.parametrize("name,k", [("ring8", 8), ("grid25", 25)])
def test_one_mode_is_collapse(name, k):
    means, std = mixture_means(name)
    x = means[3] + std * torch.randn(2500, 2, generator=_gen(1))
    out = mixture_coverage(x, means, std)
    assert out["modes_captured"] == 1
    assert out["counts"][3] == out["num_high_quality"] > 0
    assert out["reverse_kl"] == pytest.approx(math.log(k), abs=1e-12)


def test_reverse_kl_matches_hand_computation():
    means, std = mixture_means("ring8")
    # 30 exact points on mode 0, 10 on mode 5: p = (3/4, 1/4)
    x = torch.cat([means[0].expand(30, 2), means[5].expand(10, 2), torch.tensor([[5.0, 5.0]])])
    out = mixture_coverage(x, means, std)
    expected = 0.75 * math.log(0.75 * 8) + 0.25 * math.log(0.25 * 8)
    assert out["reverse_kl"] == pytest.approx(expected, rel=1e-12)
    assert out["modes_captured"] == 2
    assert out["high_quality_fraction"] == pytest.approx(40 / 41)


def test_endpoint_inclusive_linspace_loses_modes():
    means, std = mixture_means("ring8")
    # the classic bug: linspace(0, 2 pi, 8) repeats angle 0 and spaces the rest 2 pi / 7
    angles = torch.linspace(0, 2 * math.pi, 8)
    wrong = torch.stack([angles.cos(), angles.sin()], 1)
    x, _ = sample_mixture(wrong, std, 2500, _gen(2))
    out = mixture_coverage(x, means, std)
    assert out["modes_captured"] < 8
    # only angle 0 is shared by both sets of means; 2 of the 8 wrong components sit there
    assert out["modes_captured"] == 1 and out["high_quality_fraction"] < 0.3


def test_no_high_quality_samples_and_bad_input():
    means, std = mixture_means("grid25")
    far = torch.full((10, 2), 100.0)
    far[0] = float("nan")  # a diverged generator: not high quality, not an error
    out = mixture_coverage(far, means, std)
    assert out["modes_captured"] == 0 and out["high_quality_fraction"] == 0.0
    assert out["reverse_kl"] == math.inf
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        mixture_coverage(torch.zeros(5, 3), means, std)
    with pytest.raises(ValueError, match="at least one sample"):
        mixture_coverage(torch.zeros(0, 2), means, std)


# -------------------------------------------------------------- 3b: class coverage
def test_class_coverage_hand_made():
    pred = [0, 0, 1, 2, 2, 2]
    data = [0, 0, 1, 1, 1, 2, 3, 3]
    out = class_coverage(pred, 4, data)
    p = [2 / 6, 1 / 6, 3 / 6]
    q = [2 / 8, 3 / 8, 1 / 8]
    assert out["classes_covered"] == 3 and out["counts"] == [2, 1, 3, 0] and out["num_samples"] == 6
    assert out["kl_to_uniform"] == pytest.approx(sum(pi * math.log(pi * 4) for pi in p), rel=1e-12)
    assert out["kl_to_data"] == pytest.approx(sum(pi * math.log(pi / qi) for pi, qi in zip(p, q)), rel=1e-12)
    # generator mass on a class the data never shows: infinite KL
    assert class_coverage([0, 3], 4, [0, 1, 2])["kl_to_data"] == math.inf
    assert class_coverage(torch.tensor([7] * 5), 10)["kl_to_uniform"] == pytest.approx(math.log(10))
    assert class_coverage(torch.arange(10), 10)["kl_to_uniform"] == pytest.approx(0.0, abs=1e-12)
    assert class_coverage([1], 10)["kl_to_data"] is None
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        class_coverage([3, 10], 10)
    with pytest.raises(ValueError, match="empty"):
        class_coverage([], 10)


# -------------------------------------------------------------- 3c: Stacked MNIST
def test_stacked_coverage_counts_triples():
    all_modes = torch.arange(1000)
    out = stacked_coverage(all_modes)
    assert out["modes_covered"] == 1000 and out["kl_to_uniform"] == pytest.approx(0.0, abs=1e-12)
    triples = torch.tensor([[1, 2, 3], [1, 2, 3], [9, 9, 9], [0, 0, 0]])
    out = stacked_coverage(triples)
    assert out["modes_covered"] == 3
    assert out["counts"][123] == 2 and out["counts"][999] == 1 and out["counts"][0] == 1
    p = [0.5, 0.25, 0.25]
    assert out["kl_to_uniform"] == pytest.approx(math.log(1000) + sum(pi * math.log(pi) for pi in p))
    assert stacked_coverage(torch.full((26000,), 42))["kl_to_uniform"] == pytest.approx(math.log(1000))


@pytest.fixture(scope="session")
def stacked_setup(tmp_path_factory):
    from gencompare.metrics.classifier import get_classifier

    cfg = dict(name="mnist", data_dir="/tmp/gcdata", download=False, allow_offline_sample=True, valid_size=10000)
    stacked_cfg = dict(cfg, name="stacked_mnist", build_seed=0, num_train=50000, num_valid=1000, num_test=26000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # OfflineSampleWarning
        digits = load_dataset(OmegaConf.create(cfg))
        stacked = load_dataset(OmegaConf.create(stacked_cfg))
    cache = tmp_path_factory.getbasetemp() / "gc-classifier-cache"  # shared with test_classifier.py
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see test_classifier.py: 2 OpenMP threads thrash a busy 2-core machine
    try:
        model, info = get_classifier(digits, cache)
    finally:
        torch.set_num_threads(threads)
    return stacked, model, info


@pytest.mark.slow
def test_real_stacked_mnist_covers_the_modes(stacked_setup):
    stacked, model, info = stacked_setup
    assert len(stacked.test) == 26000
    torch.set_num_threads(1)  # conftest's autouse fixture restores 2 afterwards
    start = time.perf_counter()
    pred = model.predict_stacked(stacked.test)
    seconds = time.perf_counter() - start
    out = stacked_coverage(pred, data_labels=stacked.test_labels)
    true = stacked_coverage(stacked.test_labels)
    print(f"stacked ({stacked.variant}): {out['modes_covered']} modes of 1000 from 26,000 real images "
          f"(true labels {true['modes_covered']}), KL to uniform {out['kl_to_uniform']:.4f}, "
          f"triple accuracy {(pred == stacked.test_labels).double().mean():.4f}, labelled in {seconds:.1f}s "
          f"by {info['feature_network']} (test accuracy {info['test_accuracy']:.4f})")
    assert out["modes_covered"] >= 990
    # real data is near uniform: expected KL for 26,000 uniform draws is ~ 999/52000 = 0.019
    assert out["kl_to_uniform"] < 0.05
    assert out["kl_to_data"] < 0.05


# ------------------------------------------------------ 3d: feature-space metrics
def test_knn_radii_exclude_the_point_itself():
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    torch.testing.assert_close(knn_radii(x, 1), torch.tensor([1.0, 1.0, 2.0, 4.0], dtype=torch.float64))
    torch.testing.assert_close(knn_radii(x, 2, chunk_size=3), torch.tensor([3.0, 2.0, 3.0, 6.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="1 <= k < N"):
        knn_radii(x, 4)


def test_metrics_of_a_set_against_itself_and_disjoint_sets():
    x = torch.randn(600, 16, generator=_gen(3))
    pr = precision_recall(x, x)
    dc = density_coverage(x, x)
    assert pr == {"precision": 1.0, "recall": 1.0}
    assert dc["coverage"] == 1.0
    assert dc["density"] == pytest.approx(1.0, abs=1e-3)
    far = x + 100.0
    assert precision_recall(x, far) == {"precision": 0.0, "recall": 0.0}
    assert density_coverage(x, far) == {"density": 0.0, "coverage": 0.0}


def test_precision_recall_density_coverage_hand_placed():
    # real points 0..9 on a line: every k=1 radius is 1
    real = torch.stack([torch.arange(10.0), torch.zeros(10)], 1)
    fake = torch.tensor([[0.5, 0.0], [20.0, 0.0]])
    pr = precision_recall(real, fake, k=1)
    # 0.5 lies in the real manifold, 20 does not; the fake radii (19.5) swallow all real points
    assert pr["precision"] == 0.5 and pr["recall"] == 1.0
    dc = density_coverage(real, fake, k=1)
    # 0.5 is inside the open balls of real 0 and 1: density 2 / (k M) = 1; coverage 2/10
    assert dc["density"] == pytest.approx(1.0) and dc["coverage"] == pytest.approx(0.2)
    # chunking never changes the result
    assert precision_recall(real, fake, k=1, chunk_size=3) == pr
    assert density_coverage(real, fake, k=1, chunk_size=1) == dc


def test_frechet_distance_closed_forms():
    x = torch.randn(2000, 8, generator=_gen(4))
    assert abs(frechet_distance(x, x)) < 1e-6
    # diagonal Gaussians: FD = ||mu1 - mu2||^2 + sum (s1 - s2)^2 with s the standard deviations
    s1 = torch.tensor([1.0, 2.0, 0.5, 1.0])
    s2 = torch.tensor([1.5, 1.0, 0.5, 3.0])
    mu2 = torch.tensor([1.0, 0.0, -2.0, 0.5])
    a = torch.randn(40000, 4, generator=_gen(5)) * s1
    b = torch.randn(40000, 4, generator=_gen(6)) * s2 + mu2
    closed = float((mu2**2).sum() + ((s1 - s2) ** 2).sum())  # 5.25 + 4.5 = 9.75
    assert frechet_distance(a, b) == pytest.approx(closed, rel=0.02)


def test_frechet_distance_non_commuting_covariances():
    # correlated features whose covariances do not commute; reference trace of the
    # matrix square root via Tr((S1 S2)^1/2) = Tr((S1^1/2 S2 S1^1/2)^1/2), using eigh only
    g = np.random.default_rng(7)
    a = g.normal(size=(3000, 5)) @ g.normal(size=(5, 5))
    b = g.normal(size=(2500, 5)) @ g.normal(size=(5, 5)) + 0.3
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)

    def sqrt_psd(m):
        w, v = np.linalg.eigh(m)
        return (v * np.sqrt(np.clip(w, 0, None))) @ v.T

    r = sqrt_psd(s1)
    tr = np.trace(sqrt_psd(r @ s2 @ r))
    diff = a.mean(0) - b.mean(0)
    expected = diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr
    assert frechet_distance(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(expected, rel=1e-8)
    # rank-deficient covariances (more dims than points): a shift by 1 in each of 20 dims
    few = torch.randn(5, 20, generator=_gen(8))
    assert frechet_distance(few, few + 1.0) == pytest.approx(20.0, abs=1e-3)
    with pytest.raises(ValueError, match="differ in width"):
        frechet_distance(torch.zeros(4, 3), torch.zeros(4, 2))
