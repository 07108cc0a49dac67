"""Likelihoods of 8-bit pixels, and the one dequantization convention that puts every
family's bits/dim in one column (docs/protocols.md section 4).

The convention. An 8-bit image is ``k in {0..255}^D``, fed to the models as ``x = k / 255``.
Its bits/dim is ``-log2 P(k) / D``.

- A family whose likelihood is a probability of the pixel values (the DDPM's discretized
  Gaussian decoder, the VAE's discretized logistic decoder, NADE on binary pixels)
  reports it as is.
- A density ``p`` on [0, 1]^D (RNADE, the VAE's continuous Bernoulli) is scored on
  uniformly dequantized pixels ``y = (k + u) / 256``, ``u ~ U[0, 1)^D`` (Theis, van den
  Oord & Bethge 2016, section 3.1; the convention of the flow and diffusion papers):
  ``-log P(k) <= -E_u log p(y) + D ln 256`` by Jensen, since the 256^D cells of width
  1/256 tile [0, 1)^D. The right-hand side, estimated with one draw of ``u`` per test
  image, is what is reported: an upper bound on the discrete NLL, like the DDPM's bound.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from gencompare.models.base import draw_examples

#: The nats a density on [0, 1]^D gains per dimension over the probability of 256 levels.
LOG_256 = math.log(256.0)
#: Lower bound on the discretized logistic's log-scale (PixelCNN++'s -7): the bin of width
#: 1/255 then holds almost all of the mass, so the probability stays below 1.
MIN_LOG_SCALE = -7.0


def dequantize(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """``x = k / 255`` -> ``y = (k + u) / 256`` with ``u ~ U[0, 1)`` elementwise (see module doc).

    ``k`` is recovered by rounding, so pixels off the 8-bit grid are snapped to it.
    """
    k = torch.round(x * 255.0)
    if generator is None:  # data-parallel: this rank's rows of the global batch's draw
        u = draw_examples(lambda m: torch.rand(m, *x.shape[1:], device=x.device), len(x))
    else:
        u = torch.rand(x.shape, generator=generator, device=generator.device)
    return (k + u.to(x.device, x.dtype)) / 256.0


def _log_sigmoid_diff(lo: Tensor, hi: Tensor) -> Tensor:
    """log(sigmoid(hi) - sigmoid(lo)) for lo < hi, accurate in both tails."""
    # sigmoid(hi) - sigmoid(lo) = sigmoid(-lo) - sigmoid(-hi): reflect the right tail to the
    # left, where logsigmoid keeps its precision.
    flip = lo > 0
    a = torch.where(flip, -hi, lo)
    b = torch.where(flip, -lo, hi)
    log_b = F.logsigmoid(b)
    return log_b + torch.log(-torch.expm1(F.logsigmoid(a) - log_b))


def discretized_logistic_log_likelihood(x: Tensor, *, mean: Tensor, log_scale: Tensor) -> Tensor:
    """Log-probability of 8-bit pixels under a discretized logistic (Kingma et al. 2016,
    IAF, section 5.2; Salimans et al. 2017, PixelCNN++, eq. 2, one component).

    Pixel ``x = k / 255`` owns the bin ``[x - 1/510, x + 1/510]`` of a logistic with
    ``mean`` and scale ``exp(log_scale)``; the bins of 0 and 1 extend to -inf and +inf, so
    the 256 probabilities sum to 1 whatever the parameters.

    Args:
        x: pixels in [0, 1] on the 256-level grid, any shape.
        mean, log_scale: broadcastable to ``x``; ``log_scale`` is clamped at -7.

    Returns:
        Elementwise log-probabilities in nats (<= 0).
    """
    inv_s = torch.exp(-log_scale.clamp_min(MIN_LOG_SCALE))
    centred = x - mean
    upper = (centred + 0.5 / 255.0) * inv_s
    lower = (centred - 0.5 / 255.0) * inv_s
    log_mid = _log_sigmoid_diff(lower, upper)
    return torch.where(x < 0.5 / 255.0, F.logsigmoid(upper),
                       torch.where(x > 1.0 - 0.5 / 255.0, F.logsigmoid(-lower), log_mid))


def dequantization_note(discrete: bool) -> str:
    """How a family's bits/dim of 8-bit pixels was obtained (recorded with the number)."""
    if discrete:
        return "none: the likelihood is a probability of the 8-bit pixel values"
    return ("uniform: a density scored at y = (k + u) / 256, u ~ U[0,1) (one draw per test image), "
            "NLL = -log p(y) + D ln 256, an upper bound on the 8-bit NLL")
