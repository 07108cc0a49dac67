"""Sample-quality metrics in a feature space (docs/protocols.md section 3d).

- :func:`precision_recall`: improved precision and recall (Kynkaanniemi et al. 2019,
  "Improved Precision and Recall Metric for Assessing Generative Models", section 3).
- :func:`density_coverage`: density and coverage (Naeem et al. 2020, "Reliable Fidelity
  and Diversity Metrics for Generative Models", eqs. 5 and 6).
- :func:`frechet_distance`: the Frechet distance between Gaussians fitted to two feature
  sets (Heusel et al. 2017, eq. 6; numerics as in pytorch-fid's ``calculate_frechet_distance``).

The features are whatever the caller passes, ``(N, F)`` tensors; gencompare uses the
penultimate layer of its own digit classifier (:mod:`gencompare.metrics.classifier`),
since no Inception weights can be downloaded offline. A Frechet distance computed on
those features is therefore reported as "FD (<feature network name>)", never as FID:
it is comparable only with numbers from the same feature network.

Nearest-neighbour radii exclude the point itself (the (k+1)-th smallest distance in
its own set, the self-distance 0 being the first), as in both papers' reference code;
an exact duplicate of a point therefore counts as a neighbour at distance 0. All
pairwise distances are computed with :func:`torch.cdist` in float64, in row chunks of
``chunk_size`` so peak memory is ``chunk_size x N`` distances however large the sets.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from scipy import linalg
from torch import Tensor

__all__ = ["precision_recall", "density_coverage", "frechet_distance", "knn_radii"]

# 2,048 rows x 10,000 columns x 8 bytes = 164 MB of distances per chunk at most.
_DEFAULT_CHUNK = 2048


def _as_features(x: Tensor | np.ndarray, name: str) -> Tensor:
    x = torch.as_tensor(x).detach()
    if x.ndim != 2:
        raise ValueError(f"{name} must be a (N, F) feature matrix, got shape {tuple(x.shape)}")
    if len(x) == 0:
        raise ValueError(f"{name} is empty")
    # float64: float32 cdist goes through |a|^2 + |b|^2 - 2 a.b, whose cancellation
    # error is comparable with small nearest-neighbour radii.
    return x.to(device="cpu", dtype=torch.float64)


def _check_pair(real: Tensor, fake: Tensor) -> None:
    if real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"real and fake features differ in width: {real.shape[1]} vs {fake.shape[1]}"
        )


def knn_radii(x: Tensor, k: int, *, chunk_size: int = _DEFAULT_CHUNK) -> Tensor:
    """Distance from each point to its k-th nearest neighbour in the same set, itself excluded.

    Args:
        x: ``(N, F)`` features.
        k: neighbour rank, ``1 <= k < N``.
    Returns:
        ``(N,)`` float64 radii.
    Raises:
        ValueError: ``x`` not 2-D or empty, or ``k`` out of range.
    """
    x = _as_features(x, "x")
    if not 1 <= k < len(x):
        raise ValueError(f"k={k} needs 1 <= k < N={len(x)} points")
    radii = torch.empty(len(x), dtype=torch.float64)
    for start in range(0, len(x), chunk_size):
        d = torch.cdist(x[start : start + chunk_size], x)  # (c, N)
        # k+1 smallest: the first is the point's distance to itself
        radii[start : start + chunk_size] = d.topk(k + 1, dim=1, largest=False).values[:, k]
    return radii


def _count_inside(
    queries: Tensor, centres: Tensor, radii: Tensor, *, strict: bool, chunk_size: int
) -> Tensor:
    """For each query, how many balls ``B(centre_i, radii_i)`` contain it: ``(M,)`` int64."""
    counts = torch.empty(len(queries), dtype=torch.long)
    for start in range(0, len(queries), chunk_size):
        d = torch.cdist(queries[start : start + chunk_size], centres)  # (c, N)
        inside = d < radii[None] if strict else d <= radii[None]
        counts[start : start + chunk_size] = inside.sum(dim=1)
    return counts


def precision_recall(
    real: Tensor, fake: Tensor, k: int = 3, *, chunk_size: int = _DEFAULT_CHUNK
) -> dict[str, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019, eqs. 1-3; k = 3 as in the paper).

    The manifold of a set is the union of closed balls around its points with radius the
    distance to the k-th nearest neighbour in the same set (the point excluded).
    Precision is the share of fake points inside the real manifold; recall the share of
    real points inside the fake manifold. Membership uses ``<=`` as the authors' code does.

    Args:
        real: ``(N, F)`` features of real data; fake: ``(M, F)`` features of samples.
        k: neighbour rank for the radii; needs ``k < N`` and ``k < M``.
    Returns:
        ``{"precision": float, "recall": float}``, each in [0, 1].
    Raises:
        ValueError: wrong shapes, empty sets, mismatched widths, or k too large.
    """
    real, fake = _as_features(real, "real"), _as_features(fake, "fake")
    _check_pair(real, fake)
    r_real = knn_radii(real, k, chunk_size=chunk_size)
    r_fake = knn_radii(fake, k, chunk_size=chunk_size)
    precision = (_count_inside(fake, real, r_real, strict=False, chunk_size=chunk_size) > 0)
    recall = (_count_inside(real, fake, r_fake, strict=False, chunk_size=chunk_size) > 0)
    return {"precision": precision.double().mean().item(), "recall": recall.double().mean().item()}


def density_coverage(
    real: Tensor, fake: Tensor, k: int = 5, *, chunk_size: int = _DEFAULT_CHUNK
) -> dict[str, float]:
    """Density and coverage (Naeem et al. 2020, eqs. 5-6; k = 5 as in the paper).

    With ``r_i`` the k-NN radius of real point ``x_i`` (itself excluded)::

        density  = 1/(k M) sum_j sum_i 1[||y_j - x_i|| < r_i]        (can exceed 1)
        coverage = 1/N     sum_i 1[exists j: ||y_j - x_i|| < r_i]

    Balls are open (``<``) as in the authors' ``prdc`` package; with this convention a
    set scored against itself has density exactly 1 (absent distance ties).

    Args:
        real: ``(N, F)`` real features; fake: ``(M, F)`` sample features; ``k < N``.
    Returns:
        ``{"density": float, "coverage": float}``; coverage in [0, 1], density >= 0.
    Raises:
        ValueError: wrong shapes, empty sets, mismatched widths, or k too large.
    """
    real, fake = _as_features(real, "real"), _as_features(fake, "fake")
    _check_pair(real, fake)
    r_real = knn_radii(real, k, chunk_size=chunk_size)
    density = _count_inside(fake, real, r_real, strict=True, chunk_size=chunk_size)
    covered = torch.zeros(len(real), dtype=torch.bool)
    for start in range(0, len(real), chunk_size):
        d = torch.cdist(real[start : start + chunk_size], fake)  # (c, M)
        covered[start : start + chunk_size] = (d < r_real[start : start + chunk_size, None]).any(dim=1)
    return {
        "density": density.double().sum().item() / (k * len(fake)),
        "coverage": covered.double().mean().item(),
    }


def frechet_distance(real: Tensor, fake: Tensor, *, eps: float = 1e-6) -> float:
    """Frechet distance between Gaussians fitted to two feature sets.

    ``FD = ||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2))`` (Heusel et al. 2017, eq. 6),
    with unbiased covariances (``np.cov``), in squared feature units. As in pytorch-fid,
    when ``sqrtm`` of the product is singular (non-finite) ``eps * I`` is added to both
    covariances, and a numerically complex square root is replaced by its real part once
    the imaginary diagonal is negligible. Report it as "FD (<feature network>)", not FID.

    Args:
        real: ``(N, F)``; fake: ``(M, F)``; ``N, M >= 2``.
        eps: diagonal offset used only when the product is singular.
    Returns:
        The distance, a float >= 0 (up to rounding).
    Raises:
        ValueError: wrong shapes, fewer than 2 points, mismatched widths, or a square
            root with a large imaginary component.
    """
    real, fake = _as_features(real, "real"), _as_features(fake, "fake")
    _check_pair(real, fake)
    if len(real) < 2 or len(fake) < 2:
        raise ValueError("frechet_distance needs at least 2 points in each set for a covariance")
    a, b = real.numpy(), fake.numpy()
    mu1, mu2 = a.mean(axis=0), b.mean(axis=0)
    sigma1 = np.atleast_2d(np.cov(a, rowvar=False))
    sigma2 = np.atleast_2d(np.cov(b, rowvar=False))
    diff = mu1 - mu2
    with warnings.catch_warnings():
        # a singular product is handled below (eps offset), as pytorch-fid's sqrtm(disp=False)
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            m = np.max(np.abs(covmean.imag))
            raise ValueError(f"sqrtm of the covariance product has imaginary component {m:.3g}")
        covmean = covmean.real
    fd = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))
    if not math.isfinite(fd):
        raise ValueError("Frechet distance is not finite; check the features for NaN/inf")
    return fd
