"""Convolutional networks for 32x32 images (CIFAR-10, image folders at the default
resolution), 1 or 3 channels; the families pick them with ``arch: auto``.

- :class:`DCGAN32Generator` / :class:`DCGAN32Discriminator`: DCGAN (Radford et al. 2016,
  section 3 and Fig. 1) at 32x32, as pytorch/examples ``dcgan/main.py`` with one
  resolution level fewer (4 -> 8 -> 16 -> 32).
- :class:`ConvEncoder32` / :class:`ConvDecoder32`: the VAE's encoder and decoder, three
  stride-2 convolutions each way (32 -> 16 -> 8 -> 4) and a fully connected layer.

:func:`init_dcgan` is also the 28x28 DCGAN's initialisation (:mod:`.dcgan`).
"""
from __future__ import annotations

from torch import Tensor, nn


def init_dcgan(module: nn.Module) -> None:
    """DCGAN init (Radford et al. 2016, Sec. 4): conv weights N(0, 0.02), BN scale N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class DCGAN32Generator(nn.Module):
    """``(N, latent_dim)`` -> logits ``(N, C, 32, 32)`` (squashed by the GAN to [0, 1]).

    A transposed convolution projects z to 4x4 and three stride-2 ones upsample, each
    followed by BatchNorm and ReLU except the output layer (Radford et al. 2016, section 3).
    """

    def __init__(self, *, latent_dim: int, channels: int, width: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.net = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, width * 4, 4, 1, 0, bias=False),  # (N, 4w, 4, 4)
            nn.BatchNorm2d(width * 4),
            nn.ReLU(True),
            nn.ConvTranspose2d(width * 4, width * 2, 4, 2, 1, bias=False),  # (N, 2w, 8, 8)
            nn.BatchNorm2d(width * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(width * 2, width, 4, 2, 1, bias=False),  # (N, w, 16, 16)
            nn.BatchNorm2d(width),
            nn.ReLU(True),
            nn.ConvTranspose2d(width, channels, 4, 2, 1),  # (N, C, 32, 32)
        )
        init_dcgan(self)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z.view(z.shape[0], self.latent_dim, 1, 1))


class DCGAN32Discriminator(nn.Module):
    """``(N, C, 32, 32)`` -> logits ``(N,)``: strided convolutions, LeakyReLU(0.2), BatchNorm
    on every layer but the first (Radford et al. 2016, section 3)."""

    def __init__(self, *, channels: int, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 4, 2, 1, bias=False),  # (N, w, 16, 16)
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(width, width * 2, 4, 2, 1, bias=False),  # (N, 2w, 8, 8)
            nn.BatchNorm2d(width * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(width * 2, width * 4, 4, 2, 1, bias=False),  # (N, 4w, 4, 4)
            nn.BatchNorm2d(width * 4),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(width * 4, 1, 4, 1, 0),  # (N, 1, 1, 1)
        )
        init_dcgan(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).view(-1)


class ConvEncoder32(nn.Module):
    """``(N, C, 32, 32)`` -> ``(N, 2 * latent_dim)``: mean and log-variance of q(z|x)."""

    def __init__(self, *, channels: int, latent_dim: int, width: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 4, 2, 1),  # (N, w, 16, 16)
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 4, 2, 1),  # (N, 2w, 8, 8)
            nn.ReLU(),
            nn.Conv2d(2 * width, 4 * width, 4, 2, 1),  # (N, 4w, 4, 4)
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(4 * width * 16, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 2 * latent_dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ConvDecoder32(nn.Module):
    """``(N, latent_dim)`` -> ``(N, out_channels * 32 * 32)``, mirroring :class:`ConvEncoder32`.

    ``out_channels`` is C for one logit per pixel (Bernoulli) or 2C for a location and a
    log-scale per pixel (discretized logistic): the first C channels, then the next C.
    """

    def __init__(self, *, out_channels: int, latent_dim: int, width: int, hidden: int) -> None:
        super().__init__()
        self.width = width
        self.fc = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, 4 * width * 16), nn.ReLU()
        )
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(4 * width, 2 * width, 4, 2, 1),  # (N, 2w, 8, 8)
            nn.ReLU(),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1),  # (N, w, 16, 16)
            nn.ReLU(),
            nn.ConvTranspose2d(width, out_channels, 4, 2, 1),  # (N, out, 32, 32)
        )

    def forward(self, z: Tensor) -> Tensor:
        h = self.fc(z).view(z.shape[0], 4 * self.width, 4, 4)  # (N, 4w, 4, 4)
        return self.deconv(h).flatten(1)
