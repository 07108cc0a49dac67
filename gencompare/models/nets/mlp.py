"""Fully connected networks.

- :func:`paper_generator` / :func:`maxout_discriminator`: the GAN paper's MNIST networks,
  from its pylearn2 configuration (Goodfellow et al. 2014; github.com/goodfeli/adversarial,
  ``mnist.yaml``): generator z(100) -> 1200 ReLU -> 1200 ReLU -> D (logits, squashed by
  the GAN); discriminator of two maxout layers (240 units x 5 pieces) and a linear output,
  with dropout.
- :func:`mlp2d_generator` / :func:`mlp2d_discriminator`: small ReLU MLPs for the 2D
  Gaussian mixtures, after the Unrolled GAN paper (Metz et al. 2017, Appendix A): two
  hidden layers of 128 ReLU; the discriminator's inputs scaled by 1/4 (the appendix's
  discriminator may be shallower; the text could not be checked offline).
- :func:`vae_encoder` / :func:`vae_decoder`: the VAE's MLPs (Kingma & Welling 2014).

Every GAN discriminator factory takes ``pack`` (PacGAN's m: it judges m examples
concatenated) and ``minibatch`` (``(kernels, kernel_dim)`` of minibatch discrimination
before its output layer, or None): the GAN's remedies for mode collapse
(:mod:`gencompare.models.gan_remedies`).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from gencompare.models.base import ExampleDropout  # nn.Dropout, its mask per example under data parallelism
from gencompare.models.gan_remedies import MinibatchDiscrimination

_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


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
        # max, not amax: its backward routes the gradient by index (amax's compares and
        # divides by the ties, ~50 % slower on a CPU); the two differ only on exact ties
        return self.linear(x).view(x.shape[0], self.units, self.pieces).max(dim=-1).values


class LogitHead(nn.Module):
    """Wraps an MLP discriminator so that it takes ``(N, *shape)`` and returns logits ``(N,)``."""

    def __init__(self, net: nn.Module, *, input_scale: float = 1.0) -> None:
        super().__init__()
        self.net = net
        self.input_scale = input_scale

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.reshape(x.shape[0], -1) * self.input_scale).view(-1)


def init_uniform(module: nn.Module, irange: float) -> None:
    """pylearn2's ``irange`` init: linear weights U(-irange, irange), biases zero."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.uniform_(m.weight, -irange, irange)
            nn.init.zeros_(m.bias)


def output_layers(features: int, minibatch: tuple[int, int] | None) -> list[nn.Module]:
    """A discriminator's linear output ``(N, features) -> (N, 1)``, after minibatch
    discrimination with ``minibatch = (kernels, kernel_dim)`` if given."""
    if minibatch is None:
        return [nn.Linear(features, 1)]
    mbd = MinibatchDiscrimination(features, *minibatch)
    return [mbd, nn.Linear(mbd.out_features, 1)]


def paper_generator(*, data_shape: Sequence[int], latent_dim: int, hidden: int = 1200) -> nn.Sequential:
    """``(N, latent_dim)`` -> logits ``(N, D)``: two ReLU layers of ``hidden``, weights
    U(-0.05, 0.05) (``mnist.yaml``: generator irange .05)."""
    d = math.prod(data_shape)
    net = nn.Sequential(
        nn.Linear(latent_dim, hidden), nn.ReLU(),
        nn.Linear(hidden, hidden), nn.ReLU(),
        nn.Linear(hidden, d),
    )
    init_uniform(net, 0.05)
    net.arch = "mlp"  # the name checkpoints record (GAN.arch)
    return net


def maxout_discriminator(*, data_shape: Sequence[int], pack: int = 1, minibatch: tuple[int, int] | None = None,
                         units: int = 240, pieces: int = 5, dropout_input: float = 0.2,
                         dropout_hidden: float = 0.5) -> LogitHead:
    """``(N, m * D)`` packs -> logits ``(N,)``: two maxout layers of ``units`` x ``pieces``,
    dropout on the inputs and hidden units (``mnist.yaml`` keeps inputs with p = 0.8 and
    hidden units with 0.5), weights U(-0.005, 0.005) (discriminator irange .005)."""
    net = nn.Sequential(
        ExampleDropout(dropout_input),
        Maxout(math.prod(data_shape) * pack, units, pieces),
        ExampleDropout(dropout_hidden),
        Maxout(units, units, pieces),
        ExampleDropout(dropout_hidden),
        *output_layers(units, minibatch),
    )
    init_uniform(net, 0.005)
    return LogitHead(net)


def mlp2d_generator(*, data_shape: Sequence[int], latent_dim: int, hidden: int = 128) -> nn.Sequential:
    """``(N, latent_dim)`` -> ``(N, D)``: two ReLU layers of ``hidden`` and a linear output."""
    h = hidden
    net = nn.Sequential(nn.Linear(latent_dim, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, math.prod(data_shape)))
    net.arch = "mlp2d"  # the name checkpoints record (GAN.arch)
    return net


def mlp2d_discriminator(*, data_shape: Sequence[int], pack: int = 1, minibatch: tuple[int, int] | None = None,
                        hidden: int = 128) -> LogitHead:
    """``(N, m * D)`` packs -> logits ``(N,)``: two ReLU layers of ``hidden``. Points are
    scaled by 1/4 first (Metz et al.), so grid25's [-4, 4] lands roughly in [-1, 1]."""
    h = hidden
    net = nn.Sequential(nn.Linear(math.prod(data_shape) * pack, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(),
                        *output_layers(h, minibatch))
    return LogitHead(net, input_scale=0.25 if len(data_shape) == 1 else 1.0)


def mlp(sizes: Sequence[int], activation: type[nn.Module]) -> nn.Sequential:
    """Linear layers of ``sizes`` with ``activation`` between them (none after the last)."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def _activation(name: str) -> type[nn.Module]:
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {tuple(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


def vae_encoder(*, data_shape: Sequence[int], latent_dim: int, hidden_sizes: Sequence[int] | None = None,
                default_hidden_sizes: Sequence[int] = (500,), activation: str = "tanh",
                arch: str = "mlp") -> nn.Sequential:
    """``(N, *data_shape)`` -> ``(N, 2 * latent_dim)``, mean and log-variance of q(z|x): an
    MLP of ``hidden_sizes`` (None: ``default_hidden_sizes``) with ``activation`` (Kingma &
    Welling 2014, Sec. 5 and Appendix C: 500 tanh units for MNIST). ``arch`` is the name
    checkpoints record (``VAE.arch``).

    Raises:
        ValueError: unknown ``activation``.
    """
    hidden = [int(h) for h in (default_hidden_sizes if hidden_sizes is None else hidden_sizes)]
    net = nn.Sequential(nn.Flatten(), mlp([math.prod(data_shape), *hidden, 2 * latent_dim], _activation(activation)))
    net.arch = arch
    return net


def vae_decoder(*, data_shape: Sequence[int], latent_dim: int, params_per_dim: int = 1,
                hidden_sizes: Sequence[int] | None = None, default_hidden_sizes: Sequence[int] = (500,),
                activation: str = "tanh") -> nn.Sequential:
    """``(N, latent_dim)`` -> ``(N, params_per_dim * D)``: :func:`vae_encoder`'s MLP mirrored.

    Raises:
        ValueError: unknown ``activation``.
    """
    hidden = [int(h) for h in (default_hidden_sizes if hidden_sizes is None else hidden_sizes)]
    return mlp([latent_dim, *hidden[::-1], params_per_dim * math.prod(data_shape)], _activation(activation))
