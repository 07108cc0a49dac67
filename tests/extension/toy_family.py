"""A family defined outside gencompare: a mixture of K Gaussians with diagonal covariances,
fitted by maximum likelihood (Bishop 2006, Sec. 9.2), whose log-likelihood is exact.

This file and ``conf/model/gmm.yaml`` beside it are all it takes (tests/test_extension_family.py
trains it through ``hydra.searchpath``): the class says what the family is and how reports
show it; nothing in ``gencompare/`` names it.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from gencompare.models.base import GenerativeModel, OptimizerFactory


class GaussianMixture(GenerativeModel):
    """``p(x) = sum_k pi_k N(x; mu_k, diag(sigma_k^2))`` on points ``(D,)`` or flattened images.

    Args:
        data_shape: shape of one example.
        binary: must be False (the mixture is a density on real values).
        optimizer: a partial optimizer (Hydra ``_partial_``).
        components: K, the number of mixture components.
        init_scale: standard deviation of the initial means (data units).

    Raises:
        ValueError: ``binary=True`` or ``components < 1``.
    """

    family = "gmm"
    family_color = "#ff7f0e"  # tab10 orange: none of the four families' colours
    family_order = 4          # after the GAN, VAE, NADE and DDPM
    likelihood_kind = "nll_exact"
    likelihood_label = "closed form"
    likelihood_description = "exact log-likelihood of a {self.components}-component Gaussian mixture"

    def __init__(self, *, data_shape: Sequence[int], binary: bool = False, optimizer: OptimizerFactory,
                 components: int = 8, init_scale: float = 1.0) -> None:
        super().__init__(data_shape=data_shape, binary=binary)
        if binary:
            raise ValueError("the Gaussian mixture is a density on real values; use binarize=none")
        if components < 1:
            raise ValueError(f"components must be >= 1, got {components}")
        self.components = int(components)
        self.optimizer_factory = optimizer
        self.logits = nn.Parameter(torch.zeros(self.components))                        # (K,)
        self.means = nn.Parameter(init_scale * torch.randn(self.components, self.data_dim))  # (K, D)
        self.log_stds = nn.Parameter(torch.zeros(self.components, self.data_dim))        # (K, D)

    def configure_optimizers(self) -> dict[str, Optimizer]:
        return {"model": self.optimizer_factory(self.parameters())}

    def training_step(self, batch: Tensor, name: str) -> tuple[Tensor, dict[str, Tensor | float]]:
        nll = -self.log_likelihood(batch).mean()
        return nll, {"nll": nll.detach()}

    def log_likelihood(self, x: Tensor) -> Tensor:
        """``log p(x)`` in nats, shape ``(B,)``, for ``x`` of shape ``(B, *data_shape)``."""
        x = x.flatten(1).unsqueeze(1)                                                   # (B, 1, D)
        z = (x - self.means) / self.log_stds.exp()                                      # (B, K, D)
        per_dim = -0.5 * z.square() - self.log_stds - 0.5 * math.log(2 * math.pi)
        return torch.logsumexp(self.logits.log_softmax(0) + per_dim.sum(-1), dim=1)     # (B,)

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        k = torch.multinomial(self.logits.softmax(0), n, replacement=True)              # (n,)
        x = self.means[k] + self.log_stds[k].exp() * torch.randn(n, self.data_dim, device=self.means.device)
        return x.view(n, *self.data_shape)
