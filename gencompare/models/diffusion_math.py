"""Closed-form pieces of diffusion models: beta schedules, Gaussian KL and log-densities,
the discretized Gaussian decoder of Ho et al. 2020 (Sec. 3.3) and bits/dim.

Follows the official code, ``diffusion_tf/diffusion_utils_2.py`` and ``nn.py``
(computations in float64 where it matters). Used by :mod:`gencompare.models.ddpm`.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

LN2 = math.log(2.0)


# ---------------------------------------------------------------------------
# Schedules and closed-form densities
# ---------------------------------------------------------------------------
def make_beta_schedule(
    kind: str,
    *,
    timesteps: int,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    cosine_s: float = 0.008,
    max_beta: float = 0.999,
) -> Tensor:
    """Beta schedule beta_1 .. beta_T as a float64 tensor of shape ``(T,)``.

    - ``"linear"``: ``linspace(beta_start, beta_end, T)`` (Ho et al. 2020, sec. 4:
      1e-4 to 0.02 over T = 1000).
    - ``"cosine"``: ``alpha_bar(t) = f(t) / f(0)``, ``f(t) = cos(((t/T + s) / (1 + s)) pi/2)^2``,
      ``beta_t = 1 - alpha_bar(t) / alpha_bar(t-1)`` clipped at ``max_beta``
      (Nichol & Dhariwal 2021, eq. 17, s = 0.008, clip 0.999).

    Raises:
        ValueError: unknown ``kind``, ``timesteps < 2`` or betas outside (0, 1).
    """
    if timesteps < 2:
        raise ValueError(f"timesteps must be >= 2, got {timesteps}")
    if kind == "linear":
        if not 0.0 < beta_start <= beta_end < 1.0:
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
        return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
    if kind == "cosine":
        steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
        f = torch.cos((steps + cosine_s) / (1.0 + cosine_s) * math.pi / 2) ** 2
        alpha_bar = f / f[0]
        betas = 1.0 - alpha_bar[1:] / alpha_bar[:-1]
        return betas.clamp(max=max_beta)
    raise ValueError(f"beta_schedule must be 'linear' or 'cosine', got {kind!r}")


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """Elementwise KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) in nats (broadcasting)."""
    return 0.5 * (
        -1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
    )


def _log_diff_ndtr(a: Tensor, b: Tensor) -> Tensor:
    """log(Phi(b) - Phi(a)) for a < b, accurate in both tails."""
    # Reflect to the left tail where log_ndtr keeps its precision:
    # Phi(b) - Phi(a) = Phi(-a) - Phi(-b).
    flip = a > 0
    lo = torch.where(flip, -b, a)
    hi = torch.where(flip, -a, b)
    log_hi = torch.special.log_ndtr(hi)
    log_lo = torch.special.log_ndtr(lo)
    return log_hi + torch.log(-torch.expm1(log_lo - log_hi))


def discretized_gaussian_log_likelihood(x: Tensor, *, mean: Tensor, log_scale: Tensor) -> Tensor:
    """Log-probability of 8-bit data under a discretised Gaussian (Ho et al. 2020, eq. 13).

    The 256 pixel values ``k/255`` mapped to ``x = 2k/255 - 1`` in [-1, 1] each
    own the bin ``[x - 1/255, x + 1/255]``; the edge bins extend to -inf (x = -1)
    and +inf (x = 1), so the 256 probabilities sum to 1. Exact normal CDFs
    (the official code uses a tanh approximation).

    Args:
        x: data in [-1, 1] on the 256-level grid, any shape.
        mean, log_scale: Gaussian mean and log standard deviation, broadcastable to ``x``.

    Returns:
        Elementwise log-probabilities in nats, shape of ``x`` broadcast with the parameters.
    """
    inv_std = torch.exp(-log_scale)
    upper = (x - mean + 1.0 / 255.0) * inv_std
    lower = (x - mean - 1.0 / 255.0) * inv_std
    # Thresholds at +-0.999 as in the official code: only the extreme levels
    # (-1 and +1) are within 1/255 of them.
    log_cdf_upper = torch.special.log_ndtr(upper)  # x = -1: P(X <= -1 + 1/255)
    log_sf_lower = torch.special.log_ndtr(-lower)  # x = +1: P(X >= 1 - 1/255)
    log_mid = _log_diff_ndtr(lower, upper)
    return torch.where(x < -0.999, log_cdf_upper, torch.where(x > 0.999, log_sf_lower, log_mid))


def gaussian_log_likelihood(x: Tensor, *, mean: Tensor, log_var: Tensor) -> Tensor:
    """Elementwise log N(x; mean, e^log_var) in nats (a density, for continuous data)."""
    return -0.5 * (math.log(2 * math.pi) + log_var + (x - mean) ** 2 * torch.exp(-log_var))


def bits_per_dim(nll_nats: Tensor | float, D: int) -> Tensor | float:
    """Convert a negative log-likelihood in nats per example to bits per dimension.

    ``bits/dim = nll / (D ln 2)``; e.g. D = 784 for MNIST, 3072 for CIFAR-10 (Ho
    et al. 2020 report <= 3.70 bits/dim on CIFAR-10, Table 1).

    Raises:
        ValueError: if ``D < 1``.
    """
    if D < 1:
        raise ValueError(f"D must be >= 1, got {D}")
    return nll_nats / (D * LN2)


def schedule_constants(betas: Tensor) -> dict[str, Tensor]:
    """The float64 constants of the forward and reverse processes for ``betas`` ``(T,)``
    (official code, ``GaussianDiffusion2.__init__``; "computations here in float64 for
    accuracy"): alpha_bar_t, the posterior q(x_{t-1} | x_t, x_0)'s mean coefficients and
    variance, and the reverse variance sigma_t^2 = beta_t with the decoder's tilde_beta_2
    at t = 1 ("fixedlarge")."""
    alphas = 1.0 - betas
    alphas_cumprod = torch.cumprod(alphas, dim=0)
    alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
    posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
    return {
        "betas": betas,
        "alphas_cumprod": alphas_cumprod,
        "alphas_cumprod_prev": alphas_cumprod_prev,
        "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
        "sqrt_one_minus_alphas_cumprod": (1.0 - alphas_cumprod).sqrt(),
        "sqrt_recip_alphas_cumprod": (1.0 / alphas_cumprod).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1.0 / alphas_cumprod - 1.0).sqrt(),
        "posterior_variance": posterior_variance,
        # index 0 is 0; the value is never used as a KL term (t = 1 is the decoder)
        "posterior_log_variance_clipped": torch.log(torch.cat([posterior_variance[1:2], posterior_variance[1:]])),
        "posterior_mean_coef1": betas * alphas_cumprod_prev.sqrt() / (1.0 - alphas_cumprod),
        "posterior_mean_coef2": (1.0 - alphas_cumprod_prev) * alphas.sqrt() / (1.0 - alphas_cumprod),
        "model_log_variance": torch.log(torch.cat([posterior_variance[1:2], betas[1:]])),
    }
