"""Generative adversarial nets (Goodfellow et al. 2014, "Generative Adversarial Nets").

A generator G maps Gaussian noise z to data space; a discriminator D outputs the
logit of "x is real". Training alternates k discriminator steps and one
generator step (Algorithm 1 of the paper). The GAN has no likelihood; Parzen and
mode coverage score it through :meth:`GAN.sample` like every other family.

Three architectures (``arch``):

- ``"mlp"``: the paper's MNIST networks, from its pylearn2 configuration
  (github.com/goodfeli/adversarial, ``mnist.yaml``): generator
  z(100) -> 1200 ReLU -> 1200 ReLU -> D sigmoid; discriminator of two maxout
  layers (240 units x 5 pieces) and a sigmoid output, with dropout.
- ``"dcgan"``: a small DCGAN pair (Radford et al. 2016) adapted from
  pytorch/examples ``dcgan/main.py`` to 28x28 images (1 or 3 channels).
- ``"mlp2d"``: small ReLU MLPs for the 2D Gaussian mixtures, after the
  Unrolled GAN paper (Metz et al. 2017, Appendix A): generator with two hidden
  layers of 128 ReLU and a linear output; discriminator on inputs scaled by 1/4,
  here with the same two 128-unit ReLU layers (the appendix's discriminator may
  be shallower; the text could not be checked offline).

Departure from the paper code: its generator's sigmoid output bias starts at the
logit of the data's pixel means (``init_sigmoid_bias_from_marginals``); the
constructor never sees data, so all biases start at zero here.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer

from gencompare.models.base import GenerativeModel, OptimizerFactory

_ARCHS = ("auto", "mlp", "dcgan", "mlp2d")
_LOSSES = ("non_saturating", "minimax")


class Maxout(nn.Module):
    """Maxout layer (Goodfellow et al. 2013): ``max`` over ``pieces`` affine maps per unit.

    Input ``(N, in_features)`` -> output ``(N, units)``. Pieces of one unit are
    contiguous in the affine output, as in pylearn2's ``Maxout``.
    """

    def __init__(self, in_features: int, units: int, pieces: int) -> None:
        super().__init__()
        self.units, self.pieces = units, pieces
        self.linear = nn.Linear(in_features, units * pieces)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x).view(x.shape[0], self.units, self.pieces).amax(dim=-1)


def _init_uniform(module: nn.Module, irange: float) -> None:
    """pylearn2's ``irange`` init: weights U(-irange, irange), biases zero."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.uniform_(m.weight, -irange, irange)
            nn.init.zeros_(m.bias)


def _init_dcgan(module: nn.Module) -> None:
    """DCGAN init (Radford et al. 2016, Sec. 4): conv weights N(0, 0.02), BN scale N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class _Flatten(nn.Module):
    """``(N, *shape)`` -> ``(N, prod(shape))``."""

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], -1)


class DCGANGenerator(nn.Module):
    """DCGAN generator for 28x28 images: ``(N, latent_dim)`` -> logits ``(N, C, 28, 28)``.

    pytorch/examples ``dcgan`` uses 64x64 images and five transposed convolutions;
    for 28x28 the first layer projects to 7x7 and two stride-2 layers upsample.
    The last layer emits logits (no BatchNorm), squashed by the caller.
    """

    def __init__(self, *, latent_dim: int, channels: int, width: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.net = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, width * 4, 7, 1, 0, bias=False),  # (N, 4w, 7, 7)
            nn.BatchNorm2d(width * 4),
            nn.ReLU(True),
            nn.ConvTranspose2d(width * 4, width * 2, 4, 2, 1, bias=False),  # (N, 2w, 14, 14)
            nn.BatchNorm2d(width * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(width * 2, channels, 4, 2, 1),  # (N, C, 28, 28)
        )
        _init_dcgan(self)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z.view(z.shape[0], self.latent_dim, 1, 1))


class DCGANDiscriminator(nn.Module):
    """DCGAN discriminator for 28x28 images: ``(N, C, 28, 28)`` -> logits ``(N,)``.

    LeakyReLU(0.2) throughout and no BatchNorm on the first layer, as in
    Radford et al. 2016, Sec. 3.
    """

    def __init__(self, *, channels: int, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 4, 2, 1, bias=False),  # (N, w, 14, 14)
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(width, width * 2, 4, 2, 1, bias=False),  # (N, 2w, 7, 7)
            nn.BatchNorm2d(width * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(width * 2, 1, 7, 1, 0),  # (N, 1, 1, 1)
        )
        _init_dcgan(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).view(-1)


class _LogitHead(nn.Module):
    """Wraps an MLP discriminator so that it returns logits of shape ``(N,)``."""

    def __init__(self, net: nn.Module, *, input_scale: float = 1.0) -> None:
        super().__init__()
        self.net = net
        self.input_scale = input_scale

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.reshape(x.shape[0], -1) * self.input_scale).view(-1)


class GAN(GenerativeModel):
    """Generative adversarial net with the non-saturating or the minimax generator loss.

    Args:
        data_shape: ``(C, H, W)`` images or ``(D,)`` points.
        binary: accepted for the shared interface; the GAN always generates
            continuous pixels in [0, 1] (``binarize: none`` in its config).
        generator_optimizer, discriminator_optimizer: Hydra ``_partial_``
            optimizer factories, ``factory(params) -> Optimizer``.
        arch: ``"auto"`` (``"mlp2d"`` for points, ``"mlp"`` for images),
            ``"mlp"``, ``"dcgan"`` (28x28 images only) or ``"mlp2d"``.
        latent_dim: size of z ~ N(0, I). None: 100 for images (the paper's
            ``nvis: 100``) and 2 for points (the 2D latent of VEEGAN/PacGAN,
            whose 2D-mixture numbers protocols.md quotes).
        k: discriminator steps per generator step (Algorithm 1; the paper used 1).
        loss: generator loss, ``"non_saturating"`` (minimise -log D(G(z)),
            Sec. 3 of the paper, and what its code trains) or ``"minimax"``
            (minimise log(1 - D(G(z))), the value function of eq. 1).
        mlp_hidden: generator hidden width for ``"mlp"`` (1200 in the paper).
        maxout_units, maxout_pieces: discriminator maxout layers for ``"mlp"``
            (240 units x 5 pieces in the paper).
        dropout_input, dropout_hidden: discriminator dropout for ``"mlp"``. The
            paper's config keeps inputs with probability 0.8 and hidden units
            with 0.5 (``discriminator_input_include_probs``), i.e. drop rates
            0.2 and 0.5, applied in both the discriminator and the generator step.
        dcgan_width: base channel count for ``"dcgan"`` (64 as in pytorch/examples;
            the widest layer has ``4 * dcgan_width`` channels).
        mlp2d_hidden: width of the two hidden ReLU layers of ``"mlp2d"``
            (128, Metz et al. 2017, Appendix A).

    Raises:
        ValueError: unknown ``arch`` or ``loss``, ``k < 1``, a data shape that is
            neither ``(D,)`` nor ``(C, H, W)``, or ``"dcgan"`` on non-28x28 data.
    """

    family = "gan"
    likelihood_kind = None

    def __init__(
        self,
        *,
        data_shape: Sequence[int],
        binary: bool = False,
        generator_optimizer: OptimizerFactory,
        discriminator_optimizer: OptimizerFactory,
        arch: str = "auto",
        latent_dim: int | None = None,
        k: int = 1,
        loss: str = "non_saturating",
        mlp_hidden: int = 1200,
        maxout_units: int = 240,
        maxout_pieces: int = 5,
        dropout_input: float = 0.2,
        dropout_hidden: float = 0.5,
        dcgan_width: int = 64,
        mlp2d_hidden: int = 128,
    ) -> None:
        super().__init__(data_shape=data_shape, binary=binary)
        if len(self.data_shape) not in (1, 3):
            raise ValueError(
                f"GAN needs data_shape (D,) for points or (C, H, W) for images, got {self.data_shape}"
            )
        if arch not in _ARCHS:
            raise ValueError(f"unknown GAN arch {arch!r}; expected one of {_ARCHS}")
        if loss not in _LOSSES:
            raise ValueError(f"unknown GAN loss {loss!r}; expected one of {_LOSSES}")
        if int(k) < 1:
            raise ValueError(f"k (discriminator steps per generator step) must be >= 1, got {k}")
        self.is_image = len(self.data_shape) == 3
        if arch == "auto":
            arch = "mlp" if self.is_image else "mlp2d"
        if arch == "dcgan" and not (self.is_image and self.data_shape[1:] == (28, 28)):
            raise ValueError(f"arch 'dcgan' needs (C, 28, 28) images, got data_shape {self.data_shape}")
        self.arch = arch
        self.loss_name = loss
        self.k = int(k)
        self.latent_dim = int(latent_dim) if latent_dim is not None else (100 if self.is_image else 2)
        self._generator_optimizer = generator_optimizer
        self._discriminator_optimizer = discriminator_optimizer

        d, z = self.data_dim, self.latent_dim
        if arch == "mlp":
            self.generator = nn.Sequential(
                nn.Linear(z, mlp_hidden), nn.ReLU(),
                nn.Linear(mlp_hidden, mlp_hidden), nn.ReLU(),
                nn.Linear(mlp_hidden, d),  # logits; sigmoid in _to_data
            )
            _init_uniform(self.generator, 0.05)  # mnist.yaml: generator irange .05
            disc = nn.Sequential(
                nn.Dropout(dropout_input),
                Maxout(d, maxout_units, maxout_pieces),
                nn.Dropout(dropout_hidden),
                Maxout(maxout_units, maxout_units, maxout_pieces),
                nn.Dropout(dropout_hidden),
                nn.Linear(maxout_units, 1),
            )
            _init_uniform(disc, 0.005)  # mnist.yaml: discriminator irange .005
            self.discriminator = _LogitHead(disc)
        elif arch == "dcgan":
            c = self.data_shape[0]
            self.generator = DCGANGenerator(latent_dim=z, channels=c, width=dcgan_width)
            self.discriminator = DCGANDiscriminator(channels=c, width=dcgan_width)
        else:  # mlp2d
            h = mlp2d_hidden
            self.generator = nn.Sequential(
                nn.Linear(z, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, d)
            )
            # Metz et al. scale the discriminator input down by 4 so that grid25's
            # [-4, 4] coordinates land roughly in [-1, 1].
            self.discriminator = _LogitHead(
                nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 1)),
                input_scale=0.25 if not self.is_image else 1.0,
            )

    # -- networks ---------------------------------------------------------
    def _to_data(self, out: Tensor) -> Tensor:
        """Generator output -> data space ``(N, *data_shape)``: sigmoid for images, raw for points."""
        out = out.reshape(out.shape[0], *self.data_shape)
        return torch.sigmoid(out) if self.is_image else out

    def _noise(self, n: int) -> Tensor:
        # Gaussian noise: the default of the paper code's Generator (noise="gaussian").
        return torch.randn(n, self.latent_dim, device=self.device)

    def generate(self, z: Tensor) -> Tensor:
        """G(z): ``(N, latent_dim)`` -> ``(N, *data_shape)`` in data space (with gradients)."""
        return self._to_data(self.generator(z))

    def networks(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "discriminator": self.discriminator}

    # -- training ---------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Optimizer]:
        """``{"discriminator": ..., "generator": ...}``: D steps first (Algorithm 1)."""
        return {
            "discriminator": self._discriminator_optimizer(self.discriminator.parameters()),
            "generator": self._generator_optimizer(self.generator.parameters()),
        }

    def optimizer_repeats(self) -> dict[str, int]:
        return {"discriminator": self.k}

    def training_step(self, batch: Tensor, name: str) -> tuple[Tensor, dict[str, Tensor]]:
        """Discriminator or generator loss on ``batch`` ``(B, *data_shape)``.

        ``"discriminator"``: 0.5 * [BCE(D(x), 1) + BCE(D(G(z)), 0)] with G(z)
        detached, the paper code's ``d_obj``; logs ``d_loss``, ``d_real`` (mean
        D(x)) and ``d_fake`` (mean D(G(z))).
        ``"generator"``: -log D(G(z)) (non-saturating) or log(1 - D(G(z)))
        (minimax), z of batch size B; logs ``g_loss`` and ``d_fake``. The
        discriminator's parameters get no gradient from this loss.
        All losses are means over the batch, computed from logits.

        Raises:
            ValueError: ``name`` is not "discriminator" or "generator".
        """
        n = batch.shape[0]
        if name == "discriminator":
            with torch.no_grad():
                fake = self.generate(self._noise(n))
            logit_real = self.discriminator(batch)
            logit_fake = self.discriminator(fake)
            loss = 0.5 * (
                F.binary_cross_entropy_with_logits(logit_real, torch.ones_like(logit_real))
                + F.binary_cross_entropy_with_logits(logit_fake, torch.zeros_like(logit_fake))
            )
            logs = {
                "d_loss": loss.detach(),
                "d_real": torch.sigmoid(logit_real.detach()).mean(),
                "d_fake": torch.sigmoid(logit_fake.detach()).mean(),
            }
            return loss, logs
        if name == "generator":
            fake = self.generate(self._noise(n))
            # Freeze D while building the graph: its weights get no gradient
            # (the runner only steps the generator here) and backward is cheaper.
            params = list(self.discriminator.parameters())
            flags = [p.requires_grad for p in params]
            try:
                for p in params:
                    p.requires_grad_(False)
                logit_fake = self.discriminator(fake)
            finally:
                for p, f in zip(params, flags):
                    p.requires_grad_(f)
            if self.loss_name == "non_saturating":
                loss = F.binary_cross_entropy_with_logits(logit_fake, torch.ones_like(logit_fake))
            else:  # minimax: log(1 - sigmoid(l)) = -BCE(l, 0)
                loss = -F.binary_cross_entropy_with_logits(logit_fake, torch.zeros_like(logit_fake))
            logs = {"g_loss": loss.detach(), "d_fake": torch.sigmoid(logit_fake.detach()).mean()}
            return loss, logs
        raise ValueError(f"GAN has optimizers 'discriminator' and 'generator', got {name!r}")

    # -- evaluation -------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        """``n`` samples ``(n, *data_shape)``: pixels in [0, 1] or raw 2D coordinates.

        Drawn in eval mode (no dropout, BatchNorm running statistics); the
        previous train/eval mode is restored.
        """
        was_training = self.training
        self.eval()
        try:
            return self.generate(self._noise(n))
        finally:
            self.train(was_training)

    def log_likelihood(self, x: Tensor) -> None:
        """None: a GAN defines no tractable density (score it with Parzen windows)."""
        return None
