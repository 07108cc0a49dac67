"""The DDPM's samplers: objects the config swaps (``model.module.sampler=ancestral|ddim|auto``),
as diffusers swaps schedulers.

A sampler factory is called by :class:`gencompare.models.ddpm.DDPM` with the data's shape
and T (``factory(data_shape=, timesteps=)``); the sampler then maps starting noise x_T to
x_0 with a denoiser: ``sampler(ddpm, net, x)``, shapes ``(B, *data_shape)`` in and out, in
the DDPM's model space ([-1, 1] for images).

- :class:`AncestralSampler`: Ho et al. 2020, Algorithm 2, all T steps.
- :class:`DDIMSampler`: Song, Meng & Ermon 2021, eq. 12, over ``steps`` of the T timesteps.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor, nn

from gencompare.models.base import randn_examples_like

if TYPE_CHECKING:
    from gencompare.models.ddpm import DDPM


class Sampler(Protocol):
    """What :meth:`DDPM.sample` calls: x_T ``(B, *data_shape)`` -> x_0, in model space."""

    steps: int  # denoiser passes per sample

    def __call__(self, ddpm: DDPM, net: nn.Module, x: Tensor) -> Tensor: ...

    def describe(self) -> str:
        """How it draws, for the run's record (metrics.json)."""
        ...


class AncestralSampler:
    """Algorithm 2 of Ho et al. 2020: ``x_{t-1} = mu_theta(x_t, t) + sigma_t z`` for t = T .. 1,
    with sigma_t^2 = beta_t (the decoder's at t = 1, see :class:`DDPM`) and no noise at t = 1."""

    name = "ancestral"

    def __init__(self, *, data_shape: Sequence[int] | None = None, timesteps: int) -> None:
        self.steps = int(timesteps)

    def __call__(self, ddpm: DDPM, net: nn.Module, x: Tensor) -> Tensor:
        for i in reversed(range(ddpm.num_timesteps)):
            t = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)
            mean, _, _ = ddpm._p_mean(net, x, t)
            x = mean.float()
            if i > 0:
                x = x + math.exp(0.5 * float(ddpm.model_log_variance[i])) * randn_examples_like(x)
        return x

    def describe(self) -> str:
        return f"ancestral, T={self.steps} steps (Ho et al. 2020, Algorithm 2)"


class DDIMSampler:
    """DDIM (Song et al. 2021, eq. 12) over ``steps`` timesteps evenly spaced in [T-1, 0].

    Args:
        timesteps: T.
        steps: timesteps visited; None = min(50, T) (Song et al. 2021 Table 1's middle setting).
        eta: 0 = deterministic given x_T; 1 = the ancestral sampler's variance.

    Raises:
        ValueError: ``steps`` outside [1, T].
    """

    name = "ddim"

    def __init__(self, *, data_shape: Sequence[int] | None = None, timesteps: int, steps: int | None = None,
                 eta: float = 0.0) -> None:
        if steps is not None and not 1 <= int(steps) <= int(timesteps):
            raise ValueError(f"sample_steps must be in [1, T={timesteps}] or None, got {steps}")
        self.steps = min(50, int(timesteps)) if steps is None else int(steps)
        self.timesteps, self.eta = int(timesteps), float(eta)

    def __call__(self, ddpm: DDPM, net: nn.Module, x: Tensor) -> Tensor:
        seq = torch.linspace(ddpm.num_timesteps - 1, 0, self.steps, dtype=torch.float64).round().long().tolist()
        seq = list(dict.fromkeys(seq))  # unique, descending
        for k, i in enumerate(seq):
            t = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)
            _, x0_pred, eps = ddpm._p_mean(net, x, t)
            ab = float(ddpm.alphas_cumprod[i])
            ab_prev = float(ddpm.alphas_cumprod[seq[k + 1]]) if k + 1 < len(seq) else 1.0
            sigma = self.eta * math.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))
            direction = math.sqrt(max(1 - ab_prev - sigma**2, 0.0)) * ddpm._precise(eps)
            x64 = math.sqrt(ab_prev) * x0_pred + direction
            if self.eta > 0 and k + 1 < len(seq):
                x64 = x64 + sigma * randn_examples_like(x64)
            x = x64.float()
        return x

    def describe(self) -> str:
        return f"DDIM, {self.steps} of T={self.timesteps} steps, eta={self.eta:g} (Song et al. 2021, eq. 12)"
