"""Parzen-window (Gaussian kernel density) log-likelihood of held-out images.

The protocol of Goodfellow et al. 2014 ("Generative Adversarial Nets", Table 1),
whose estimator comes from Breuleux, Bengio & Vincent 2011 ("Quickly generating
representative samples from an RBM-derived process"): fit an isotropic Gaussian
kernel density to N model samples (the centres) and report the mean
log-density of held-out real images, in nats per image,

    log p(x) = logsumexp_j(-||x - s_j||^2 / (2 sigma^2)) - log N - (D/2) log(2 pi sigma^2),

with sigma chosen from ``logspace(-1, 0, 10)`` by the highest mean log-likelihood
on a validation set (docs/protocols.md section 1).

Known weakness (Theis, van den Oord & Bethge 2016, "A note on the evaluation of
generative models"): the number is dominated by sigma and by nearest neighbours;
real training images, or k-means centroids of them, used as centres score higher
than most published models. :func:`gencompare.metrics.parzen_baselines.sanity_baselines` reports both under the
identical protocol so a user sees when a model has "beaten the data".

Numerics. Squared distances are ``|x|^2 + |s|^2 - 2 x.s``: the data are first
centred on the mean of the centres (distances are unchanged, the norms that cancel
shrink), then one float32 matrix product of ``[x, 1]`` with ``[-2 s, |s|^2]`` gives
each tile of ``|s|^2 - 2 x.s``; ``|x|^2`` (float64) only enters the row minimum.
Per tile the row minimum is subtracted before exponentiating, so every kernel value
lies in (0, 1] and float32 ``exp2`` and sums are safe (a negative squared distance
from rounding is clamped at 0); the log of each tile's row sums, the shift back and
the merge across tiles (``logaddexp``) are float64. Against a float64 direct
computation the error is about 3e-3 nats at sigma = 0.1 and below 1e-3 nats for
sigma >= 0.2 on [0, 1] images (tests/test_parzen.py checks 0.01).

Every distance tile is computed once and all sigmas of a grid are evaluated
from it (:func:`parzen_log_likelihood_multi`), so selecting sigma costs one
matrix product, not ten.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gencompare.record import Parzen

__all__ = [
    "DEFAULT_SIGMAS",
    "PROTOCOL",
    "parzen_evaluate",
    "parzen_log_likelihood",
    "parzen_log_likelihood_multi",
    "plot_sigma_selection",
]

#: The sigma grid of Goodfellow et al. 2014 (their parzen_ll.py): logspace(-1, 0, 10).
DEFAULT_SIGMAS: tuple[float, ...] = tuple(float(s) for s in np.logspace(-1.0, 0.0, 10))

# CPU tile caps (float32 elements, centres per chunk). Measured on a 2-core EPYC
# (benchmarks/parzen.py): with one thread the tile shape hardly matters (1024 x 4096
# to 2048 x 10000 all within ~10% of the matmul floor), but every elementwise op is
# an OpenMP region, and on a loaded machine each region waits for descheduled
# threads, so fewer, larger tiles (whole rows of 10,000 centres) were up to 1.5x
# faster with two threads.
_CPU_TILE_ELEMENTS = 16 * 1024 * 1024
_CPU_CENTRE_CHUNK = 16384


def _as_rows(t: Tensor, name: str) -> Tensor:
    """Flatten (B, *shape) to (B, D) and check it is a non-empty float tensor."""
    if not isinstance(t, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise ValueError(
            f"{name} must be a floating-point tensor of pixels in [0, 1] (uint8 / 255), got dtype {t.dtype}"
        )
    if t.dim() < 2:
        raise ValueError(f"{name} must have shape (B, D) or (B, C, H, W), got shape {tuple(t.shape)}")
    if t.shape[0] == 0 or t[0].numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)}); Parzen needs at least one row")
    return t.reshape(t.shape[0], -1)


def _check_sigmas(sigmas: Sequence[float] | Tensor | float) -> list[float]:
    if isinstance(sigmas, Tensor):
        values = [float(s) for s in sigmas.reshape(-1).tolist()]
    elif isinstance(sigmas, (int, float, np.floating, np.integer)):
        values = [float(sigmas)]
    else:
        values = [float(s) for s in sigmas]
    if not values:
        raise ValueError("sigmas is empty; give at least one kernel width")
    bad = [s for s in values if not (math.isfinite(s) and s > 0)]
    if bad:
        raise ValueError(f"sigma must be a finite number > 0, got {bad}")
    return values


def _chunk_sizes(
    n: int, m: int, d: int, num_sigmas: int, device: torch.device,
    batch_size: int | tuple[int, int] | None, memory_budget_mb: float,
) -> tuple[int, int, bool]:
    """(rows of x, centres) per tile, and whether the centred float32 centres are kept
    whole, so that the working memory stays under the budget."""
    if not memory_budget_mb > 0:
        raise ValueError(f"memory_budget_mb must be > 0, got {memory_budget_mb}")
    budget = memory_budget_mb * 2**20
    # Centred float32 copy of all centres plus their norms, reused by every x chunk;
    # kept only when it takes at most a quarter of the budget, else rebuilt per chunk.
    cache_centres = n * (4 * d + 4) <= budget // 4
    if batch_size is not None:
        bm, bn = (batch_size, batch_size) if isinstance(batch_size, int) else batch_size
        if int(bm) < 1 or int(bn) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        return min(int(bm), m), min(int(bn), n), cache_centres
    # Bytes per tile element: the float32 distance tile, plus a float32 scratch tile
    # when several sigmas share it. Per centre of a chunk: the centred copy, its square
    # (for the norm) and the [-2 s, |s|^2] matrix. Per x row: the same three plus the
    # float64 norm, the running float64 log-sums of every sigma and the output.
    per_elem = 4 * (2 if num_sigmas > 1 else 1)
    per_centre = 12 * d + 16
    per_row = 12 * d + 16 * num_sigmas + 32
    fixed = n * (4 * d + 4) if cache_centres else 0
    if device.type == "cpu":
        bn = min(n, _CPU_CENTRE_CHUNK)
        bm_speed = max(1, _CPU_TILE_ELEMENTS // bn)
    else:
        # GPUs want the largest tiles the budget allows.
        bn = n
        bm_speed = m
    # Centre chunk copies take at most half of what the cache leaves, the tiles the rest.
    while bn > 1 and bn * per_centre > (budget - fixed) / 2:
        bn = max(1, bn // 2)
    bm_budget = int((budget - fixed - bn * per_centre) // (per_elem * bn + per_row))
    bm = max(1, min(m, bm_speed, bm_budget))
    return bm, bn, cache_centres


def parzen_log_likelihood_multi(
    centres: Tensor,
    x: Tensor,
    sigmas: Sequence[float] | Tensor,
    *,
    batch_size: int | tuple[int, int] | None = None,
    memory_budget_mb: float = 256,
) -> Tensor:
    """Parzen-window log-density of every row of ``x`` for several kernel widths at once.

    Each (x rows x centres) tile of squared distances is computed once and every sigma
    is evaluated from it, so a sigma grid costs one matrix product.

    Args:
        centres: (N, D) or (N, C, H, W) kernel centres (model samples), any float dtype,
            pixels in [0, 1] for the published protocol.
        x: (M, D) or (M, C, H, W) points to score, same D and device as ``centres``.
        sigmas: S kernel widths (standard deviation of the isotropic Gaussian, in pixel
            units), each > 0.
        batch_size: overrides the automatic tile: an int for both dimensions, or
            ``(rows of x, centres)``. Never changes the result beyond float rounding.
        memory_budget_mb: cap on the extra working memory (tiles, chunk copies),
            whatever N and M are. Ignored when ``batch_size`` is given.

    Returns:
        (S, M) float64 tensor on the device of the inputs: log p(x) in nats,
        ``logsumexp_j(-||x - s_j||^2 / (2 sigma^2)) - log N - (D/2) log(2 pi sigma^2)``
        (Goodfellow et al. 2014, Table 1 protocol; Breuleux et al. 2011 estimator).

    Raises:
        ValueError: empty inputs, non-float dtype, mismatched D or device, a sigma <= 0
            or not finite, a non-positive budget or batch size.
    """
    centres = _as_rows(centres, "centres")
    x = _as_rows(x, "x")
    if centres.shape[1] != x.shape[1]:
        raise ValueError(
            f"centres and x must have the same dimension D, got centres D={centres.shape[1]} "
            f"and x D={x.shape[1]} (flattened shapes {tuple(centres.shape)} and {tuple(x.shape)})"
        )
    if centres.device != x.device:
        raise ValueError(f"centres are on {centres.device} but x is on {x.device}; move both to one device")
    sig = _check_sigmas(sigmas)
    n, d = centres.shape
    m = x.shape[0]
    device = centres.device
    bm, bn, cache_centres = _chunk_sizes(n, m, d, len(sig), device, batch_size, memory_budget_mb)
    tiles = _KernelTiles(centres, sig, bm, bn, cache_centres)
    out = torch.empty(len(sig), m, dtype=torch.float64, device=device)
    for i0 in range(0, m, bm):
        lse = tiles.log_sum_exp(x[i0:i0 + bm])
        out[:, i0:i0 + lse.shape[1]] = lse
    log_norm = torch.tensor(
        [math.log(n) + 0.5 * d * math.log(2.0 * math.pi * s**2) for s in sig],
        dtype=torch.float64, device=device,
    )
    return out - log_norm.unsqueeze(1)


class _KernelTiles:
    """The centres of :func:`parzen_log_likelihood_multi` as float32 tiles, and the
    float64 ``logsumexp_j(-||x - s_j||^2 / (2 sigma^2))`` of a chunk of rows against them."""

    def __init__(self, centres: Tensor, sig: list[float], bm: int, bn: int, cache_centres: bool) -> None:
        device = centres.device
        self.centres, self.bn, self.n = centres, bn, centres.shape[0]
        # k_s = 1 / (2 sigma_s^2): the kernel log-value of a tile element is -k_s * d2.
        ks = [0.5 / s**2 for s in sig]
        self.ks64 = torch.tensor(ks, dtype=torch.float64, device=device)
        self.ks2 = [k / math.log(2.0) for k in ks]  # the same in base 2, for exp2
        # Distances are translation invariant; centring on the centres' mean makes the
        # norms that cancel in |x|^2 + |s|^2 - 2 x.s smaller, hence the float32 error.
        self.mu = centres.mean(0, dtype=torch.float64).to(torch.float32)
        self.chunks = [self.centre_chunk(j0) for j0 in range(0, self.n, bn)] if cache_centres else None
        self.tile = torch.empty(bm * bn, dtype=torch.float32, device=device)
        self.scratch = torch.empty(bm * bn, dtype=torch.float32, device=device) if len(sig) > 1 else None
        self.ones = torch.ones(bn, dtype=torch.float32, device=device)

    def centre_chunk(self, j0: int) -> Tensor:
        # (bn, D + 1): [-2 s, |s|^2], so that one matrix product with [x, 1] gives
        # |s|^2 - 2 x.s without a separate pass to add the norms.
        cb = self.centres[j0:j0 + self.bn].to(torch.float32) - self.mu  # (bn, D)
        c_sq = torch.sum(cb * cb, dim=1, dtype=torch.float64).to(torch.float32)
        return torch.cat([cb.mul_(-2.0), c_sq.unsqueeze(1)], dim=1)

    def log_sum_exp(self, x: Tensor) -> Tensor:
        """(S, rows) float64 for the (rows, D) chunk ``x``."""
        device = self.mu.device
        xb = x.to(torch.float32) - self.mu  # (bm, D)
        rows = xb.shape[0]
        x_sq = torch.sum(xb * xb, dim=1, dtype=torch.float64)  # (bm,)
        xb = torch.cat([xb, torch.ones(rows, 1, dtype=torch.float32, device=device)], dim=1)
        lse = torch.full((len(self.ks2), rows), -math.inf, dtype=torch.float64, device=device)
        for c_idx, j0 in enumerate(range(0, self.n, self.bn)):
            cb = self.chunks[c_idx] if self.chunks is not None else self.centre_chunk(j0)
            self._merge_tile(lse, xb, x_sq, cb)
        return lse

    def _merge_tile(self, lse: Tensor, xb: Tensor, x_sq: Tensor, cb: Tensor) -> None:
        rows, cols = xb.shape[0], cb.shape[0]
        # t = |s|^2 - 2 x.s; |x|^2 is constant along a row, so it only enters the
        # row minimum (added in float64) and never the float32 tile.
        t = torch.mm(xb, cb.T, out=self.tile[: rows * cols].view(rows, cols))
        t_min = t.amin(dim=1)  # (bm,)
        d2_min = x_sq + t_min.to(torch.float64)
        if bool((d2_min < 0).any()):
            # Rounding can make a near-duplicate's squared distance negative;
            # clamp d2 = |x|^2 + t at 0 (rare: only near-copies of a centre).
            torch.maximum(t, (-x_sq).to(torch.float32).unsqueeze(1), out=t)
            t_min = t.amin(dim=1)
            d2_min = (x_sq + t_min.to(torch.float64)).clamp_(min=0.0)
        for s, k2 in enumerate(self.ks2):
            # -k (t - t_min) in base 2, one fused pass: bias + alpha * t. Every value is
            # <= 0, with 0 at the row minimum, so each kernel term lies in (0, 1].
            dst = t if self.scratch is None else self.scratch[: rows * cols].view(rows, cols)
            torch.add((k2 * t_min).unsqueeze(1), t, alpha=-k2, out=dst)
            # exp2, not exp: torch's float32 exp takes a ~30x slower path for
            # arguments below about -87 (most of a tile at small sigma); exp2 does not.
            # Row sums as a matrix-vector product: much faster than torch's row-wise
            # sum on CPU. A float32 sum of terms in (0, 1], one of them 1, has
            # relative error ~1e-7, so its log is off by ~1e-7 nats.
            tile_sum = torch.mv(dst.exp2_(), self.ones[:cols]).to(torch.float64)
            chunk_lse = tile_sum.log_().sub_(self.ks64[s] * d2_min)
            torch.logaddexp(lse[s], chunk_lse, out=lse[s])


def parzen_log_likelihood(
    centres: Tensor,
    x: Tensor,
    sigma: float,
    *,
    batch_size: int | tuple[int, int] | None = None,
    memory_budget_mb: float = 256,
) -> Tensor:
    """Parzen-window log-density of every row of ``x`` under a Gaussian kernel density.

    Args:
        centres: (N, D) or (N, C, H, W) kernel centres (model samples), any float dtype.
        x: (M, D) or (M, C, H, W) points to score, same D and device.
        sigma: kernel standard deviation (pixel units), > 0.
        batch_size: overrides the automatic tile, an int or ``(rows of x, centres)``.
        memory_budget_mb: cap on the extra working memory whatever N and M are.

    Returns:
        (M,) float64 tensor of log p(x) in nats on the inputs' device:
        ``logsumexp_j(-||x - s_j||^2 / (2 sigma^2)) - log N - (D/2) log(2 pi sigma^2)``
        (Goodfellow et al. 2014, Table 1; Breuleux et al. 2011).

    Raises:
        ValueError: empty inputs, mismatched D or device, sigma <= 0, non-float dtype.
    """
    return parzen_log_likelihood_multi(
        centres, x, [sigma], batch_size=batch_size, memory_budget_mb=memory_budget_mb
    )[0]


#: What :func:`parzen_evaluate` records as its ``protocol``.
PROTOCOL = ("Parzen window, Goodfellow et al. 2014 Table 1: Gaussian KDE on model samples, "
            "sigma chosen on validation by mean log-likelihood, nats per test image")


def parzen_evaluate(
    samples: Tensor,
    valid: Tensor,
    test: Tensor,
    sigmas: Sequence[float] | Tensor | None = None,
    *,
    memory_budget_mb: float = 256,
    batch_size: int | tuple[int, int] | None = None,
    min_centres: int | None = None,
) -> Parzen:
    """The full Parzen protocol: choose sigma on ``valid``, report the mean on ``test``.

    Args:
        samples: (N, D) or (N, C, H, W) model samples used as kernel centres, pixels in
            [0, 1]; the published protocol uses N = 10,000 (pass ``min_centres=10000``
            to enforce it).
        valid: (V, ...) validation images (the paper: the first 1,000 of train[50000:60000]).
        test: (M, ...) test images (the paper: the 10,000 MNIST test images).
        sigmas: grid of kernel widths; default ``logspace(-1, 0, 10)`` as in the paper.
        memory_budget_mb, batch_size: see :func:`parzen_log_likelihood_multi`.
        min_centres: raise if fewer samples than this are given (None: no check).

    Returns:
        :class:`gencompare.record.Parzen` (its ``metrics.json`` block) with the mean and standard error (population std / sqrt(M))
        of the test log-likelihood in nats, the chosen sigma (the grid point with the
        highest mean validation log-likelihood; the first one on ties) and the
        validation curve.

    Raises:
        ValueError: too few samples, non-finite samples, empty inputs, mismatched D,
            a sigma <= 0.
    """
    sig = _check_sigmas(DEFAULT_SIGMAS if sigmas is None else sigmas)
    samples_2d = _as_rows(samples, "samples")
    if min_centres is not None and samples_2d.shape[0] < min_centres:
        raise ValueError(
            f"Parzen protocol needs at least {min_centres} samples as kernel centres, got "
            f"{samples_2d.shape[0]}; draw more samples or lower min_centres"
        )
    if not bool(torch.isfinite(samples_2d).all()):
        raise ValueError("samples contain NaN or inf; the model diverged or sample() is broken")
    kw = dict(batch_size=batch_size, memory_budget_mb=memory_budget_mb)
    valid_ll = parzen_log_likelihood_multi(samples_2d, valid, sig, **kw)  # (S, V)
    valid_means = valid_ll.mean(dim=1)
    best = int(torch.argmax(valid_means).item())
    test_ll = parzen_log_likelihood_multi(samples_2d, test, [sig[best]], **kw)[0]  # (M,)
    m = test_ll.shape[0]
    return Parzen(
        mean=float(test_ll.mean()),
        stderr=float(test_ll.std(correction=0) / math.sqrt(m)),
        sigma=sig[best],
        sigmas=sig,
        valid_means=[float(v) for v in valid_means.tolist()],
        num_centres=int(samples_2d.shape[0]),
        num_test=int(m),
        num_valid=int(valid_ll.shape[1]),
        protocol=PROTOCOL,
    )


def plot_sigma_selection(result: Parzen, path: str | Path) -> Path:
    """Write a PNG of mean validation log-likelihood (nats) against sigma (log axis).

    The chosen sigma is marked. Uses matplotlib's Agg canvas directly, so the global
    pyplot backend is untouched and no display is needed.

    Args:
        result: a :class:`gencompare.record.Parzen` from :func:`parzen_evaluate`.
        path: output file (parent folders are created).

    Returns:
        The path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(5.0, 3.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(result.sigmas, result.valid_means, "o-", color="C0", label="validation mean")
    best = result.sigmas.index(result.sigma)
    ax.plot([result.sigma], [result.valid_means[best]], "*", color="C3", markersize=14,
            label=f"chosen sigma = {result.sigma:.4g}")
    ax.set_xscale("log")
    ax.set_xlabel("sigma (kernel std, pixel units)")
    ax.set_ylabel("mean log-likelihood (nats)")
    ax.set_title(f"Parzen sigma selection (N={result.num_centres}, V={result.num_valid})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path
