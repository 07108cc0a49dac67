"""DCGAN networks (Radford et al. 2016) for 28x28 and 32x32 images, 1 or 3 channels.

The 28x28 pair is pytorch/examples ``dcgan/main.py`` adapted to 28x28 (a projection to
7x7 and two stride-2 layers); the 32x32 pair (:mod:`.conv32`) has one resolution level
fewer than the 64x64 original (4 -> 8 -> 16 -> 32). Generators emit logits, squashed to
[0, 1] by the GAN. The factories take the data's shape; the discriminators take PacGAN's
``pack`` (packs concatenated along channels) and ``minibatch`` (28x28 only).
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from gencompare.models.gan_remedies import MinibatchDiscrimination
from gencompare.models.nets.conv32 import DCGAN32Discriminator, DCGAN32Generator, init_dcgan


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
        init_dcgan(self)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z.view(z.shape[0], self.latent_dim, 1, 1))


class DCGANDiscriminator(nn.Module):
    """DCGAN discriminator for 28x28 images: ``(N, C, 28, 28)`` -> logits ``(N,)``.

    LeakyReLU(0.2) throughout and no BatchNorm on the first layer, as in
    Radford et al. 2016, Sec. 3. With ``minibatch=(B, C)`` the last 7x7 convolution
    (a linear map of the flattened features) becomes minibatch discrimination on the
    flattened ``(N, 2w * 49)`` features and a linear layer.
    """

    def __init__(self, *, channels: int, width: int, minibatch: tuple[int, int] | None = None) -> None:
        super().__init__()
        body = [
            nn.Conv2d(channels, width, 4, 2, 1, bias=False),  # (N, w, 14, 14)
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(width, width * 2, 4, 2, 1, bias=False),  # (N, 2w, 7, 7)
            nn.BatchNorm2d(width * 2),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        if minibatch is None:
            self.net = nn.Sequential(*body, nn.Conv2d(width * 2, 1, 7, 1, 0))  # (N, 1, 1, 1)
        else:
            mbd = MinibatchDiscrimination(width * 2 * 49, *minibatch)  # flattens (N, 2w, 7, 7)
            self.net = nn.Sequential(*body, mbd, nn.Linear(mbd.out_features, 1))
        init_dcgan(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).view(-1)


def dcgan28_generator(*, data_shape: Sequence[int], latent_dim: int, width: int = 64) -> DCGANGenerator:
    """:class:`DCGANGenerator` for ``(C, 28, 28)`` data."""
    net = DCGANGenerator(latent_dim=latent_dim, channels=int(data_shape[0]), width=width)
    net.arch = "dcgan"  # the name checkpoints record (GAN.arch)
    return net


def dcgan28_discriminator(*, data_shape: Sequence[int], pack: int = 1, minibatch: tuple[int, int] | None = None,
                          width: int = 64) -> DCGANDiscriminator:
    """:class:`DCGANDiscriminator` for packs of ``pack`` ``(C, 28, 28)`` images (``m * C`` channels)."""
    return DCGANDiscriminator(channels=int(data_shape[0]) * pack, width=width, minibatch=minibatch)


def dcgan32_generator(*, data_shape: Sequence[int], latent_dim: int, width: int = 64) -> DCGAN32Generator:
    """:class:`.conv32.DCGAN32Generator` for ``(C, 32, 32)`` data."""
    net = DCGAN32Generator(latent_dim=latent_dim, channels=int(data_shape[0]), width=width)
    net.arch = "dcgan"  # the name checkpoints record (GAN.arch)
    return net


def dcgan32_discriminator(*, data_shape: Sequence[int], pack: int = 1, minibatch: tuple[int, int] | None = None,
                          width: int = 64) -> DCGAN32Discriminator:
    """:class:`.conv32.DCGAN32Discriminator` for packs of ``pack`` ``(C, 32, 32)`` images.

    Raises:
        ValueError: ``minibatch`` is given (implemented for the 28x28 DCGAN and the MLPs).
    """
    if minibatch is not None:
        raise ValueError("minibatch_kernels is implemented for the 28x28 DCGAN and the MLP discriminators")
    return DCGAN32Discriminator(channels=int(data_shape[0]) * pack, width=width)
