"""The VAE's convolutional encoder and decoder, for 28x28 images (two stride-2 layers each
way) and for 32x32 images (three; :mod:`.conv32`). Factories of the data's shape: the
encoder maps ``(N, C, H, W)`` to ``(N, 2 * latent_dim)`` (mean and log-variance of q(z|x)),
the decoder ``(N, latent_dim)`` to ``(N, params_per_dim * C * H * W)``, the first C
channels' parameters then the next C's.
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from gencompare.models.nets.conv32 import ConvDecoder32, ConvEncoder32


class ConvEncoder(nn.Module):
    """``(N, C, 28, 28)`` -> ``(N, 2 * latent_dim)`` (mean and log-variance of q(z|x))."""

    def __init__(self, *, channels: int, latent_dim: int, width: int = 32, hidden: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 4, 2, 1),  # (N, w, 14, 14)
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 4, 2, 1),  # (N, 2w, 7, 7)
            nn.ReLU(),
            nn.Flatten(),  # (N, 2w * 49)
            nn.Linear(2 * width * 49, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 2 * latent_dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ConvDecoder(nn.Module):
    """``(N, latent_dim)`` -> logits ``(N, C * 28 * 28)``, mirroring :class:`ConvEncoder`."""

    def __init__(self, *, channels: int, latent_dim: int, width: int = 32, hidden: int = 256) -> None:
        super().__init__()
        self.width = width
        self.fc = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, 2 * width * 49), nn.ReLU()
        )
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1),  # (N, w, 14, 14)
            nn.ReLU(),
            nn.ConvTranspose2d(width, channels, 4, 2, 1),  # (N, C, 28, 28)
        )

    def forward(self, z: Tensor) -> Tensor:
        h = self.fc(z).view(z.shape[0], 2 * self.width, 7, 7)  # (N, 2w, 7, 7)
        return self.deconv(h).flatten(1)


def conv28_encoder(*, data_shape: Sequence[int], latent_dim: int, width: int = 32, hidden: int = 256) -> ConvEncoder:
    """:class:`ConvEncoder` for ``(C, 28, 28)`` data."""
    net = ConvEncoder(channels=int(data_shape[0]), latent_dim=latent_dim, width=width, hidden=hidden)
    net.arch = "conv"  # the name checkpoints record (VAE.arch)
    return net


def conv28_decoder(*, data_shape: Sequence[int], latent_dim: int, params_per_dim: int = 1, width: int = 32,
                   hidden: int = 256) -> ConvDecoder:
    """:class:`ConvDecoder` for ``(C, 28, 28)`` data: one logit per pixel.

    Raises:
        ValueError: ``params_per_dim`` other than 1.
    """
    if params_per_dim != 1:
        raise ValueError(f"the 28x28 conv decoder outputs one logit per pixel, not {params_per_dim} parameters")
    return ConvDecoder(channels=int(data_shape[0]), latent_dim=latent_dim, width=width, hidden=hidden)


def conv32_encoder(*, data_shape: Sequence[int], latent_dim: int, width: int = 32, hidden: int = 256) -> ConvEncoder32:
    """:class:`.conv32.ConvEncoder32` for ``(C, 32, 32)`` data."""
    net = ConvEncoder32(channels=int(data_shape[0]), latent_dim=latent_dim, width=width, hidden=hidden)
    net.arch = "conv32"  # the name checkpoints record (VAE.arch)
    return net


def conv32_decoder(*, data_shape: Sequence[int], latent_dim: int, params_per_dim: int = 1, width: int = 32,
                   hidden: int = 256) -> ConvDecoder32:
    """:class:`.conv32.ConvDecoder32` for ``(C, 32, 32)`` data, ``params_per_dim * C`` output channels."""
    return ConvDecoder32(out_channels=params_per_dim * int(data_shape[0]), latent_dim=latent_dim, width=width,
                         hidden=hidden)
