"""Variational autoencoder (Kingma & Welling 2014, "Auto-Encoding Variational Bayes").

Gaussian encoder q(z|x) = N(mu(x), diag sigma^2(x)), standard normal prior
p(z) = N(0, I), trained by maximising the ELBO with the reparameterisation trick
and the analytic KL term (Kingma & Welling 2014, eq. 10). The decoder p(x|z)
depends on the data:

- binary images (``binary=True``): factorised Bernoulli, as in the paper's MNIST
  experiments;
- continuous images in [0, 1] (``binary=False``): factorised *continuous
  Bernoulli* (Loaiza-Ganem & Cunningham 2019). It is a normalised density on
  [0, 1], so the ELBO and the IWAE estimate are genuine log-densities of the
  pixels (the same space as the Parzen-window estimate), whereas a Bernoulli on
  grey values is not normalised. A Gaussian with a learned per-pixel scale was
  rejected: MNIST's always-zero border pixels let that scale shrink without
  bound, so the likelihood diverges;
- 8-bit colour images at 32x32 (``pixels="auto"`` on CIFAR-10): a *discretized logistic* per pixel (Kingma et al. 2016, IAF, section 5.2),
  a probability of the 256 pixel levels, so the IWAE estimate is a log-probability of
  the 8-bit image and its bits/dim sits in one column with the DDPM's
  (:mod:`gencompare.models.pixels`);
- points (``(D,)`` data): Gaussian with mean and log-variance output by the
  decoder.

:meth:`VAE.log_likelihood` is the importance-weighted estimate of Burda et al.
2016 ("Importance Weighted Autoencoders", Sec. 3), a lower bound on log p(x)
that tightens as the number of samples k grows.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer

from gencompare.models.base import (GenerativeModel, LatentDecoder, OptimizerFactory, draw_examples,
                                    randn_examples_like)
from gencompare.models.pixels import discretized_logistic_log_likelihood

_LOG_2PI = math.log(2.0 * math.pi)
# Lower bound on the point decoder's log-variance: ring8 modes have std 0.01
# (log-variance -9.2); the floor sits well below that but keeps 1/sigma^2 finite.
_MIN_LOGVAR = 2.0 * math.log(1e-3)


def continuous_bernoulli_log_norm(logits: Tensor) -> Tensor:
    """log C(lambda) of the continuous Bernoulli, elementwise, from logits eta.

    With lambda = sigmoid(eta), C(lambda) = 2 atanh(1 - 2 lambda) / (1 - 2 lambda)
    (Loaiza-Ganem & Cunningham 2019, Sec. 3) simplifies to eta / tanh(eta / 2);
    near eta = 0 the Taylor series 2 + eta^2/6 - eta^4/360 replaces the 0/0.
    """
    small = logits.abs() < 1e-3
    safe = torch.where(small, torch.ones_like(logits), logits)
    exact = torch.log(safe / torch.tanh(safe / 2.0))
    eta2 = logits * logits
    taylor = math.log(2.0) + torch.log1p(eta2 / 12.0 - eta2 * eta2 / 720.0)
    return torch.where(small, taylor, exact)


def continuous_bernoulli_mean(logits: Tensor) -> Tensor:
    """Mean of the continuous Bernoulli with logits eta, in (0, 1), elementwise.

    E[x] = lambda / (2 lambda - 1) + 1 / (2 atanh(1 - 2 lambda))
    (Loaiza-Ganem & Cunningham 2019, Sec. 3) = sigmoid(eta) / tanh(eta / 2) - 1 / eta,
    computed in float64 because the two terms cancel near eta = 0, where
    1/2 + eta/12 is used instead.
    """
    eta = logits.double()
    small = eta.abs() < 1e-4
    safe = torch.where(small, torch.ones_like(eta), eta)
    exact = torch.sigmoid(safe) / torch.tanh(safe / 2.0) - 1.0 / safe
    return torch.where(small, 0.5 + eta / 12.0, exact).to(logits.dtype)


_PIXELS = ("auto", "continuous_bernoulli", "discretized_logistic")


class VAE(GenerativeModel):
    """VAE with a Gaussian encoder, N(0, I) prior and a decoder matched to the data.

    Args:
        data_shape: ``(C, H, W)`` images or ``(D,)`` points.
        binary: True for {0, 1} images (Bernoulli decoder); False for pixels in
            [0, 1] (``pixels``) or points (Gaussian decoder).
        encoder: net factory, ``encoder(data_shape=, latent_dim=) -> nn.Module`` mapping
            ``(N, *data_shape)`` to ``(N, 2 * latent_dim)``, the mean and log-variance of
            q(z|x). Called before ``decoder``.
        decoder: net factory, ``decoder(data_shape=, latent_dim=, params_per_dim=) -> nn.Module``
            mapping ``(N, latent_dim)`` to ``(N, params_per_dim * D)``: one logit per
            dimension (Bernoulli, continuous Bernoulli), or two (location and log-scale of
            the discretized logistic; mean and log-variance of the Gaussian), the first D
            then the next D.
        optimizer: Hydra ``_partial_`` optimizer factory ``factory(params)``.
        latent_dim: size of z. None: 20 for images (one of Kingma & Welling's MNIST
            settings, Fig. 2), 64 for 32x32 images (natural images need more than digits)
            and 2 for points.
        pixels: p(x|z) of non-binary images: ``"continuous_bernoulli"``, a density on
            [0, 1]^D; ``"discretized_logistic"``, a probability of the 8-bit levels
            (bits/dim in one column with the DDPM's); ``"auto"``: the discretized logistic
            on 32x32 images (CIFAR-10), the continuous Bernoulli on others.
        iwae_k: default number of importance samples of :meth:`log_likelihood`
            (5000, the test-time value of Burda et al. 2016, Sec. 5).
        iwae_chunk: samples evaluated at once; memory grows as
            ``iwae_chunk * B * D`` floats.

    Raises:
        ValueError: a data shape neither ``(D,)`` nor ``(C, H, W)``, unknown ``pixels``,
            ``binary=True`` with points, non-positive ``iwae_k``/``iwae_chunk``, or a
            network factory's own ValueError (e.g. no network for this data shape).
    """

    family = "vae"
    family_color = "#1f77b4"
    family_order = 1
    likelihood_label = "IWAE"
    likelihood_description = "importance-weighted estimate (IWAE, k={self.iwae_k})"
    likelihood_kind = "nll_iwae"

    def __init__(
        self, *, data_shape: Sequence[int], binary: bool = False, encoder: Callable[..., nn.Module],
        decoder: Callable[..., nn.Module], optimizer: OptimizerFactory, latent_dim: int | None = None,
        pixels: str = "auto", iwae_k: int = 5000, iwae_chunk: int = 500,
    ) -> None:
        super().__init__(data_shape=data_shape, binary=binary)
        if len(self.data_shape) not in (1, 3):
            raise ValueError(f"VAE needs data_shape (D,) for points or (C, H, W) for images, got {self.data_shape}")
        if pixels not in _PIXELS:
            raise ValueError(f"unknown VAE pixels {pixels!r}; expected one of {_PIXELS}")
        if int(iwae_k) < 1 or int(iwae_chunk) < 1:
            raise ValueError(f"iwae_k and iwae_chunk must be >= 1, got {iwae_k} and {iwae_chunk}")
        self.is_image = len(self.data_shape) == 3
        if self.binary and not self.is_image:
            raise ValueError("binary=True is for images; points use the Gaussian decoder")
        colour32 = self.is_image and self.data_shape[1:] == (32, 32)
        if pixels == "auto":
            pixels = "discretized_logistic" if colour32 else "continuous_bernoulli"
        # what p(x|z) is, and so whether log_likelihood is a probability of the pixel values it is given
        self.pixel_decoder = "gaussian" if not self.is_image else "bernoulli" if self.binary else pixels
        self.discrete_likelihood = self.pixel_decoder in ("bernoulli", "discretized_logistic")
        default_latent = (64 if colour32 else 20) if self.is_image else 2
        self.latent_dim = int(latent_dim) if latent_dim is not None else default_latent
        self.iwae_k, self.iwae_chunk = int(iwae_k), int(iwae_chunk)
        self._optimizer = optimizer
        params = 2 if self.pixel_decoder in ("gaussian", "discretized_logistic") else 1
        # encoder first: the order of the parameters' random draws is part of every golden number
        self.encoder = encoder(data_shape=self.data_shape, latent_dim=self.latent_dim)
        self.decoder = decoder(data_shape=self.data_shape, latent_dim=self.latent_dim, params_per_dim=params)
        #: the networks' name in checkpoints and records (a resumed run must build the same)
        self.arch = getattr(self.encoder, "arch", type(self.encoder).__name__)

    def networks(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "decoder": self.decoder}

    # -- distributions ----------------------------------------------------
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """q(z|x): ``(B, *data_shape)`` -> mean and log-variance, each ``(B, latent_dim)``."""
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        return mu, logvar

    def _decode(self, z: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        """Decoder parameters for ``z`` ``(..., latent_dim)``: logits ``(..., D)``;
        location and log-scale ``(..., D)`` each for the discretized logistic; mean and
        log-variance ``(..., D)`` each for points."""
        lead = z.shape[:-1]
        out = self.decoder(z.reshape(-1, self.latent_dim))
        out = out.reshape(*lead, out.shape[-1])  # not -1: a rank may decode no row (metrics.ranks)
        if self.pixel_decoder == "discretized_logistic":
            return out.chunk(2, dim=-1)
        if self.is_image:
            return out
        mean, raw = out.chunk(2, dim=-1)
        return mean, _MIN_LOGVAR + F.softplus(raw - _MIN_LOGVAR)

    def _log_px_given_z(self, x_flat: Tensor, z: Tensor) -> Tensor:
        """log p(x|z) in nats summed over dimensions.

        Args:
            x_flat: ``(B, D)`` data.
            z: ``(S, B, latent_dim)`` latents.

        Returns:
            ``(S, B)`` log-likelihoods.
        """
        params = self._decode(z)
        if self.pixel_decoder == "discretized_logistic":
            loc, log_scale = params
            return discretized_logistic_log_likelihood(x_flat, mean=loc, log_scale=log_scale).sum(-1)
        if self.is_image:
            logits = params
            target = x_flat.expand_as(logits)
            ll = -F.binary_cross_entropy_with_logits(logits, target, reduction="none")
            if not self.binary:
                ll = ll + continuous_bernoulli_log_norm(logits)
            return ll.sum(-1)
        mean, logvar = params
        return (-0.5 * (_LOG_2PI + logvar + (x_flat - mean) ** 2 * torch.exp(-logvar))).sum(-1)

    def _elbo_terms(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Single-sample reconstruction term E_q[log p(x|z)] and analytic KL(q||p), each ``(B,)``."""
        mu, logvar = self.encode(x)
        eps = randn_examples_like(mu)
        z = mu + torch.exp(0.5 * logvar) * eps
        recon = self._log_px_given_z(x.reshape(x.shape[0], -1), z.unsqueeze(0)).squeeze(0)
        # Kingma & Welling 2014, Appendix B: -KL = 1/2 sum(1 + log s^2 - m^2 - s^2).
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)
        return recon, kl

    def _check_binary(self, x: Tensor) -> None:
        if self.binary and not bool(((x == 0) | (x == 1)).all()):
            raise ValueError(
                "this VAE has a Bernoulli decoder (binary=True): its likelihood is defined on "
                "{0, 1} images; binarize x first"
            )

    # -- training ---------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Optimizer]:
        return {"model": self._optimizer(self.parameters())}

    def training_step(self, batch: Tensor, name: str) -> tuple[Tensor, dict[str, Tensor]]:
        """Negative ELBO on ``batch`` ``(B, *data_shape)``, mean in nats per example.

        Logs ``elbo`` (nats/example, higher is better), ``recon`` (the
        reconstruction NLL -E_q[log p(x|z)], nats/example, one sample of z) and
        ``kl`` (KL(q(z|x) || p(z)), nats/example).

        Raises:
            ValueError: ``name`` is not "model".
        """
        if name != "model":
            raise ValueError(f"VAE has one optimizer 'model', got {name!r}")
        recon, kl = self._elbo_terms(batch)
        elbo = recon - kl
        loss = -elbo.mean()
        return loss, {"elbo": -loss.detach(), "recon": -recon.detach().mean(), "kl": kl.detach().mean()}

    # -- evaluation -------------------------------------------------------
    @torch.no_grad()
    def elbo(self, x: Tensor) -> Tensor:
        """Per-example ELBO in nats, shape ``(B,)``, one sample of z and the analytic KL.

        Raises:
            ValueError: ``binary=True`` and ``x`` is not {0, 1}-valued.
        """
        self._check_binary(x)
        recon, kl = self._elbo_terms(x)
        return recon - kl

    @torch.no_grad()
    def log_likelihood(self, x: Tensor, k: int | None = None) -> Tensor:
        """Importance-weighted estimate of log p(x) in nats, shape ``(B,)`` float32.

        log (1/k) sum_i p(x, z_i) / q(z_i|x), z_i ~ q(z|x) (Burda et al. 2016,
        Sec. 3). A stochastic lower bound on log p(x) whose expectation is
        non-decreasing in k; k = 1 is the ELBO in expectation. Samples are drawn
        ``iwae_chunk`` at a time and combined with a log-sum-exp in float64.

        Args:
            x: ``(B, *data_shape)`` data ({0, 1} images when ``binary=True``).
            k: number of importance samples; defaults to ``iwae_k``.

        Raises:
            ValueError: ``k < 1``, or ``binary=True`` and ``x`` is not {0, 1}-valued.
        """
        k = self.iwae_k if k is None else int(k)
        if k < 1:
            raise ValueError(f"k (importance samples) must be >= 1, got {k}")
        self._check_binary(x)
        x_flat = x.reshape(x.shape[0], -1)
        mu, logvar = self.encode(x)
        std = torch.exp(0.5 * logvar)
        chunks = []
        for start in range(0, k, self.iwae_chunk):
            s = min(self.iwae_chunk, k - start)
            eps = draw_examples(lambda m: torch.randn(s, m, *mu.shape[1:], device=mu.device, dtype=mu.dtype),
                                len(mu), dim=1)  # (s, B, latent_dim); data-parallel: the global batch's
            z = mu + std * eps  # (s, B, latent_dim)
            log_px = self._log_px_given_z(x_flat, z)
            log_pz = -0.5 * (z.pow(2) + _LOG_2PI).sum(-1)
            log_qz = -0.5 * (eps.pow(2) + _LOG_2PI + logvar).sum(-1)
            chunks.append(torch.logsumexp((log_px + log_pz - log_qz).double(), dim=0))  # (B,)
        return (torch.logsumexp(torch.stack(chunks), dim=0) - math.log(k)).float()

    def _decoder_mean(self, z: Tensor) -> Tensor:
        """E[x|z] in data space, ``(n, latent_dim) -> (n, *data_shape)``, what :meth:`sample`
        returns for images (the points' Gaussian mean, not a draw), differentiable in z."""
        params = self._decode(z)
        if self.pixel_decoder == "discretized_logistic":
            x = params[0].clamp(0.0, 1.0)
        elif self.is_image:
            x = torch.sigmoid(params) if self.binary else continuous_bernoulli_mean(params)
        else:
            x = params[0]
        return x.reshape(z.shape[0], *self.data_shape)

    def _sample_given_latent(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x ~ p(x|z) of this decoder, ``(n, latent_dim) -> (n, *data_shape)``: Bernoulli
        draws; the continuous Bernoulli by its inverse CDF x = log1p(u (e^eta - 1)) / eta
        (Loaiza-Ganem & Cunningham 2019, Sec. 3); a logistic draw rounded to the 256 levels;
        a Gaussian draw for points."""
        params = self._decode(z)
        first = params[0] if isinstance(params, tuple) else params
        u = torch.rand(first.shape, generator=generator, device=first.device, dtype=first.dtype)
        if self.pixel_decoder == "discretized_logistic":
            loc, log_scale = params
            noise = torch.log(u.clamp(1e-6, 1 - 1e-6)) - torch.log1p(-u.clamp(1e-6, 1 - 1e-6))
            x = torch.round((loc + log_scale.clamp_min(-7.0).exp() * noise).clamp(0.0, 1.0) * 255.0) / 255.0
        elif self.binary:
            x = (u < torch.sigmoid(params)).to(first.dtype)
        elif self.is_image:
            eta = params.double()
            small = eta.abs() < 1e-4
            safe = torch.where(small, torch.ones_like(eta), eta)
            # e^eta - 1 overflows for large eta: there use 1 + log(u + (1 - u) e^-eta) / eta
            pos = 1.0 + torch.log(u.double() + (1.0 - u.double()) * torch.exp(-safe.clamp_min(0.0))) / safe
            neg = torch.log1p(u.double() * torch.expm1(safe.clamp_max(0.0))) / safe
            x = torch.where(small, u.double(), torch.where(eta > 0, pos, neg)).clamp(0.0, 1.0).to(first.dtype)
        else:
            mean, logvar = params
            x = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=generator, device=mean.device,
                                                              dtype=mean.dtype)
        return x.reshape(z.shape[0], *self.data_shape)

    def latent_decoder(self) -> LatentDecoder:
        """The N(0, I) prior, the decoder mean (:meth:`_decoder_mean`) and this VAE's own
        p(x|z) (the one its ELBO and IWAE estimate use), for AIS: with its own decoder AIS
        tightens the IWAE estimate; with a Gaussian on the mean a VAE is scored as a GAN is."""
        return LatentDecoder(
            latent_dim=self.latent_dim, mean=self._decoder_mean,
            log_prob=lambda x, z: self._log_px_given_z(x.reshape(x.shape[0], -1), z.unsqueeze(0)).squeeze(0),
            sample=self._sample_given_latent, name=self.pixel_decoder.replace("_", " "),
            discrete=self.discrete_likelihood)

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        """``n`` samples ``(n, *data_shape)`` with z ~ N(0, I).

        Images: the decoder mean in [0, 1] (Bernoulli probabilities, or the
        continuous Bernoulli mean, which differs from sigmoid(logits); for the
        discretized logistic its location clamped to [0, 1]). Points: a
        draw from the Gaussian decoder.
        """
        was_training = self.training
        self.eval()
        try:
            z = draw_examples(lambda m: torch.randn(m, self.latent_dim, device=self.device), n)
            params = self._decode(z)
            if self.pixel_decoder == "discretized_logistic":
                x = params[0].clamp(0.0, 1.0)  # the location; the edge bins hold the mass outside [0, 1]
            elif self.is_image:
                x = torch.sigmoid(params) if self.binary else continuous_bernoulli_mean(params)
            else:
                mean, logvar = params
                noise = randn_examples_like(mean)
                x = mean + torch.exp(0.5 * logvar) * noise
            return x.reshape(n, *self.data_shape)
        finally:
            self.train(was_training)
