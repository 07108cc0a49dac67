"""PacGAN's networks for the 2D mixtures (Lin et al. 2018, from its code: fjxmlzn/PacGAN,
``synthetic_data_experiments/2DGrid_GAN&PacGAN/pacgan_task.py``, ``create_model_brick``,
and ``config.py``).

Generator z(2) -> 4 x [linear 400 without bias, batch normalization, ReLU] -> linear 2
(with a bias); discriminator of three maxout layers (200 units x 5 pieces) and a linear
output, no dropout; all weights N(0, 0.02), biases zero.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from gencompare.models.gan_remedies import MinibatchDiscrimination
from gencompare.models.nets.mlp import LogitHead, Maxout, output_layers

PACGAN_INIT_STD = 0.02  # pacgan_task.py: IsotropicGaussian(config "weights_init_std" = 0.02); biases Constant(0)


def init_normal(module: nn.Module, std: float) -> None:
    """Blocks' ``IsotropicGaussian(std)`` weights and ``Constant(0)`` biases (PacGAN's init)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, MinibatchDiscrimination):
            nn.init.normal_(m.T, 0.0, std)


class BlocksBatchNorm(nn.Module):
    """Batch normalization as Blocks computes it, the library of PacGAN's code
    (mila-iqia/blocks ``blocks/bricks/bn.py``, ``BatchNormalization``).

    Input ``(N, F)``, or ``(G, N, F)``: G groups normalised separately over their N
    examples, as PacGAN's m generator calls (one per packed sample) each normalise their
    own batch. Training: ``(x - mean) / sqrt(var + eps)`` with the biased batch variance
    and eps = 1e-4 (Blocks' default), times a scale (starts at 1) plus a shift (starts at
    0). The population mean and *standard deviation* (not variance) move by
    ``0.95 * population + 0.05 * batch`` each training pass, the G groups' statistics
    averaged first (pacgan_task.py, ``create_models``: ``bn_updates``); eval mode
    normalises by them, without eps.
    """

    def __init__(self, features: int, *, eps: float = 1e-4, momentum: float = 0.05) -> None:
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(features))
        self.bias = nn.Parameter(torch.zeros(features))
        self.register_buffer("population_mean", torch.zeros(features))
        self.register_buffer("population_stdev", torch.ones(features))

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            mean = x.mean(dim=-2, keepdim=True)                                   # (G, 1, F)
            stdev = torch.sqrt(((x - mean) ** 2).mean(dim=-2, keepdim=True) + self.eps)
            with torch.no_grad():
                batch_mean = mean.reshape(-1, mean.shape[-1]).mean(dim=0)
                batch_stdev = stdev.reshape(-1, stdev.shape[-1]).mean(dim=0)
                self.population_mean.lerp_(batch_mean, self.momentum)
                self.population_stdev.lerp_(batch_stdev, self.momentum)
        else:
            mean, stdev = self.population_mean, self.population_stdev
        return (x - mean) / stdev * self.weight + self.bias


class PacGANGenerator(nn.Sequential):
    """``(N, z)`` or ``(G, N, z)`` -> ``(..., D)``; see :func:`pacgan_generator`.

    ``per_position`` tells the GAN to call it once per packed position, as PacGAN's
    code does (``create_models``: one noise batch per packing), so that each position's
    samples get their own batch-normalization statistics.
    """

    per_position = True
    arch = "pacgan2d"  # the name checkpoints record (GAN.arch)


def pacgan_generator(*, data_shape: Sequence[int] | None = None, latent_dim: int, hidden: int = 400,
                     out_dim: int | None = None, layers: int = 4) -> PacGANGenerator:
    """PacGAN's 2D generator: ``(N, z)`` or ``(G, N, z)`` -> ``(..., out_dim)``.

    ``layers`` x [linear without bias, :class:`BlocksBatchNorm`, ReLU], then a linear
    output with a bias (pacgan_task.py: ``MLP(..., use_bias=False)`` and then
    ``decoder.linear_transformations[-1].use_bias = True``). ``out_dim`` defaults to
    the data's dimension.

    Raises:
        ValueError: image data (PacGAN's networks are for points).
    """
    if data_shape is not None and len(data_shape) != 1:
        raise ValueError(f"PacGAN's 2D networks are for points, got data_shape {tuple(data_shape)}")
    out_dim = math.prod(data_shape) if out_dim is None else out_dim
    mods: list[nn.Module] = []
    width = latent_dim
    for _ in range(layers):
        mods += [nn.Linear(width, hidden, bias=False), BlocksBatchNorm(hidden), nn.ReLU()]
        width = hidden
    mods.append(nn.Linear(width, out_dim))
    net = PacGANGenerator(*mods)
    init_normal(net, PACGAN_INIT_STD)
    return net


def pacgan_discriminator(*, data_shape: Sequence[int], pack: int = 1, minibatch: tuple[int, int] | None = None,
                         units: int = 200, pieces: int = 5) -> LogitHead:
    """``(N, m * D)`` packs -> logits ``(N,)``: three maxout layers of ``units`` x ``pieces``
    and a linear output, weights N(0, 0.02) (pacgan_task.py, ``create_model_brick``).

    Raises:
        ValueError: image data.
    """
    if len(data_shape) != 1:
        raise ValueError(f"PacGAN's 2D networks are for points, got data_shape {tuple(data_shape)}")
    d, u = math.prod(data_shape), units
    net = nn.Sequential(Maxout(d * pack, u, pieces), Maxout(u, u, pieces), Maxout(u, u, pieces),
                        *output_layers(u, minibatch))
    init_normal(net, PACGAN_INIT_STD)
    return LogitHead(net)
