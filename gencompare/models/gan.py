"""Generative adversarial nets (Goodfellow et al. 2014, "Generative Adversarial Nets").

A generator G maps Gaussian noise z to data space; a discriminator D outputs the
logit of "x is real". Training alternates k discriminator steps and one
generator step (Algorithm 1 of the paper). The GAN has no likelihood; Parzen and
mode coverage score it through :meth:`GAN.sample` like every other family.

Four architectures (``arch``):

- ``"mlp"``: the paper's MNIST networks, from its pylearn2 configuration
  (github.com/goodfeli/adversarial, ``mnist.yaml``): generator
  z(100) -> 1200 ReLU -> 1200 ReLU -> D sigmoid; discriminator of two maxout
  layers (240 units x 5 pieces) and a sigmoid output, with dropout.
- ``"dcgan"``: a small DCGAN pair (Radford et al. 2016) adapted from
  pytorch/examples ``dcgan/main.py`` to 28x28 images (1 or 3 channels); for 32x32
  images (CIFAR-10; ``"auto"`` picks it) the 32x32 pair of :mod:`gencompare.models.conv32`.
- ``"mlp2d"``: small ReLU MLPs for the 2D Gaussian mixtures, after the
  Unrolled GAN paper (Metz et al. 2017, Appendix A): generator with two hidden
  layers of 128 ReLU and a linear output; discriminator on inputs scaled by 1/4,
  here with the same two 128-unit ReLU layers (the appendix's discriminator may
  be shallower; the text could not be checked offline).
- ``"pacgan2d"``: PacGAN's networks for the 2D mixtures (Lin et al. 2018, from its code,
  fjxmlzn/PacGAN ``synthetic_data_experiments/2DGrid_GAN&PacGAN/pacgan_task.py``,
  ``create_model_brick``): generator z(2) -> 4 x [linear 400 without bias, batch
  normalization, ReLU] -> linear 2 (with a bias); discriminator of three maxout layers
  (200 units x 5 pieces) and a linear output, no dropout; all weights N(0, 0.02),
  biases zero.

Options against mode collapse (:mod:`gencompare.models.gan_remedies`): packing
(``pack``), minibatch discrimination (``minibatch_kernels``) and the unrolled GAN
(``unrolled_steps``); and ``updates="simultaneous"``, the update of PacGAN's code, where
both networks step from the same point on the same batch.

Departure from the paper code: its generator's sigmoid output bias starts at the
logit of the data's pixel means (``init_sigmoid_bias_from_marginals``); the
constructor never sees data, so all biases start at zero here.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.optim import Optimizer

from gencompare.models.base import GenerativeModel, OptimizerFactory
from gencompare.models.conv32 import DCGAN32Discriminator, DCGAN32Generator
from gencompare.models.conv32 import init_dcgan as _init_dcgan
from gencompare.models.gan_remedies import (MinibatchDiscrimination, adam_hyperparameters, adam_moments, pack,
                                            unrolled_parameters, unrolled_parameters_vmapped)

_ARCHS = ("auto", "mlp", "dcgan", "mlp2d", "pacgan2d")
_LOSSES = ("non_saturating", "minimax")
_UPDATES = ("alternating", "simultaneous")
PACGAN_INIT_STD = 0.02  # pacgan_task.py: IsotropicGaussian(config "weights_init_std" = 0.02); biases Constant(0)


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


def _init_uniform(module: nn.Module, irange: float) -> None:
    """pylearn2's ``irange`` init: weights U(-irange, irange), biases zero."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.uniform_(m.weight, -irange, irange)
            nn.init.zeros_(m.bias)


def _init_normal(module: nn.Module, std: float) -> None:
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


def pacgan_generator(*, latent_dim: int, hidden: int, out_dim: int, layers: int = 4) -> nn.Sequential:
    """PacGAN's 2D generator: ``(N, z)`` or ``(G, N, z)`` -> ``(..., out_dim)``.

    ``layers`` x [linear without bias, :class:`BlocksBatchNorm`, ReLU], then a linear
    output with a bias (pacgan_task.py: ``MLP(..., use_bias=False)`` and then
    ``decoder.linear_transformations[-1].use_bias = True``).
    """
    mods: list[nn.Module] = []
    width = latent_dim
    for _ in range(layers):
        mods += [nn.Linear(width, hidden, bias=False), BlocksBatchNorm(hidden), nn.ReLU()]
        width = hidden
    mods.append(nn.Linear(width, out_dim))
    net = nn.Sequential(*mods)
    _init_normal(net, PACGAN_INIT_STD)
    return net


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


JOINT_OPTIMIZER = "discriminator_and_generator"  # the one optimizer of updates="simultaneous"


class GAN(GenerativeModel):
    """Generative adversarial net with the non-saturating or the minimax generator loss.

    Args:
        data_shape: ``(C, H, W)`` images or ``(D,)`` points.
        binary: accepted for the shared interface; the GAN always generates
            continuous pixels in [0, 1] (``binarize: none`` in its config).
        generator_optimizer, discriminator_optimizer: Hydra ``_partial_``
            optimizer factories, ``factory(params) -> Optimizer``.
        arch: ``"auto"`` (``"mlp2d"`` for points, ``"dcgan"`` for 32x32 images,
            ``"mlp"`` for other images), ``"mlp"``, ``"dcgan"`` (28x28 or 32x32 images),
            ``"mlp2d"`` or ``"pacgan2d"`` (points only).
        latent_dim: size of z ~ N(0, I). None: 100 for images (the paper's
            ``nvis: 100``) and 2 for points (the 2D latent of VEEGAN/PacGAN,
            whose 2D-mixture numbers docs/protocols.md quotes).
        k: discriminator steps per generator step (Algorithm 1; the paper used 1).
        loss: generator loss, ``"non_saturating"`` (minimise -log D(G(z)),
            Sec. 3 of the paper, and what its code trains) or ``"minimax"``
            (minimise log(1 - D(G(z))), the value function of eq. 1).
        mlp_hidden: generator hidden width for ``"mlp"`` (1200 in the paper).
        maxout_units, maxout_pieces: discriminator maxout layers for ``"mlp"``
            (240 units x 5 pieces in the paper); ``maxout_pieces`` also for ``"pacgan2d"``.
        dropout_input, dropout_hidden: discriminator dropout for ``"mlp"``. The
            paper's config keeps inputs with probability 0.8 and hidden units
            with 0.5 (``discriminator_input_include_probs``), i.e. drop rates
            0.2 and 0.5, applied in both the discriminator and the generator step.
        dcgan_width: base channel count for ``"dcgan"`` (64 as in pytorch/examples;
            the widest layer has ``4 * dcgan_width`` channels).
        mlp2d_hidden: width of the two hidden ReLU layers of ``"mlp2d"``
            (128, Metz et al. 2017, Appendix A).
        pacgan2d_hidden: width of the four generator layers of ``"pacgan2d"`` (400).
        pacgan2d_maxout_units: units of its three discriminator maxout layers (200).
        pack: m, the samples the discriminator judges together (PacGAN). A batch of B
            examples makes B / m packs of real and as many of generated samples, so B
            must be a multiple of m; m = 1 is the plain GAN.
        minibatch_kernels, minibatch_kernel_dim: minibatch discrimination (Salimans et
            al. 2016, Sec. 3.2) before the discriminator's output layer, with B kernels
            of C dimensions; 0 kernels: none.
        unrolled_steps: k of the unrolled GAN (Metz et al. 2017): the generator's loss
            against the discriminator after k Adam steps on the generator's batch,
            differentiated through them; 0: the plain generator step. The
            discriminator's optimizer must be ``torch.optim.Adam``.
        updates: ``"alternating"`` (Algorithm 1: k discriminator steps, then a
            generator step with fresh noise and data) or ``"simultaneous"`` (PacGAN's
            and ALI's code, IshmaelBelghazi/ALI ``ali/algorithms.py``: both networks
            step at once from their gradients at the same point, on one batch and one
            draw of noise; one optimizer, :data:`JOINT_OPTIMIZER`, holding both
            networks' parameter groups).

    Raises:
        ValueError: unknown ``arch``, ``loss`` or ``updates``, ``k < 1``, ``pack < 1``,
            negative ``minibatch_kernels`` or ``unrolled_steps``, ``k > 1`` with
            simultaneous updates, a data shape that is neither ``(D,)`` nor ``(C, H, W)``,
            ``"dcgan"`` on images other than 28x28 and 32x32, ``"pacgan2d"`` on images, or
            minibatch discrimination with the 32x32 DCGAN.
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
        pacgan2d_hidden: int = 400,
        pacgan2d_maxout_units: int = 200,
        pack: int = 1,
        minibatch_kernels: int = 0,
        minibatch_kernel_dim: int = 5,
        unrolled_steps: int = 0,
        updates: str = "alternating",
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
        if updates not in _UPDATES:
            raise ValueError(f"unknown GAN updates {updates!r}; expected one of {_UPDATES}")
        if int(k) < 1:
            raise ValueError(f"k (discriminator steps per generator step) must be >= 1, got {k}")
        if updates == "simultaneous" and int(k) != 1:
            raise ValueError(f"simultaneous updates step both networks once per iteration; k must be 1, got {k}")
        if int(pack) < 1:
            raise ValueError(f"pack (samples per discriminator input) must be >= 1, got {pack}")
        if int(minibatch_kernels) < 0 or int(minibatch_kernel_dim) < 1:
            raise ValueError(f"minibatch_kernels must be >= 0 and minibatch_kernel_dim >= 1, got "
                             f"{minibatch_kernels} and {minibatch_kernel_dim}")
        if int(unrolled_steps) < 0:
            raise ValueError(f"unrolled_steps must be >= 0, got {unrolled_steps}")
        self.is_image = len(self.data_shape) == 3
        if arch == "auto":
            arch = ("dcgan" if self.data_shape[1:] == (32, 32) else "mlp") if self.is_image else "mlp2d"
        if arch == "dcgan" and not (self.is_image and self.data_shape[1:] in ((28, 28), (32, 32))):
            raise ValueError(f"arch 'dcgan' needs (C, 28, 28) or (C, 32, 32) images, got data_shape {self.data_shape}")
        if arch == "dcgan" and self.data_shape[1:] == (32, 32) and minibatch_kernels:
            raise ValueError("minibatch_kernels is implemented for the 28x28 DCGAN and the MLP discriminators")
        if arch == "pacgan2d" and self.is_image:
            raise ValueError(f"arch 'pacgan2d' is PacGAN's network for points, got data_shape {self.data_shape}")
        self.arch = arch
        self.loss_name = loss
        self.k = int(k)
        self.pack = int(pack)
        self.unrolled_steps = int(unrolled_steps)
        self.updates = updates
        self.latent_dim = int(latent_dim) if latent_dim is not None else (100 if self.is_image else 2)
        self._generator_optimizer = generator_optimizer
        self._discriminator_optimizer = discriminator_optimizer
        self._d_optimizer: Optimizer | None = None  # what steps D, read by the unrolled GAN
        self._unrolled_shared: tuple[list[Tensor], list[dict]] | None = None  # seed batch: Adam's step counts, groups

        d, z, m = self.data_dim, self.latent_dim, self.pack
        minibatch = (int(minibatch_kernels), int(minibatch_kernel_dim)) if minibatch_kernels else None

        def output_layers(features: int) -> list[nn.Module]:
            """The discriminator's linear output, after minibatch discrimination if asked."""
            if minibatch is None:
                return [nn.Linear(features, 1)]
            mbd = MinibatchDiscrimination(features, *minibatch)
            return [mbd, nn.Linear(mbd.out_features, 1)]

        if arch == "mlp":
            self.generator = nn.Sequential(
                nn.Linear(z, mlp_hidden), nn.ReLU(),
                nn.Linear(mlp_hidden, mlp_hidden), nn.ReLU(),
                nn.Linear(mlp_hidden, d),  # logits; sigmoid in _to_data
            )
            _init_uniform(self.generator, 0.05)  # mnist.yaml: generator irange .05
            disc = nn.Sequential(
                nn.Dropout(dropout_input),
                Maxout(d * m, maxout_units, maxout_pieces),
                nn.Dropout(dropout_hidden),
                Maxout(maxout_units, maxout_units, maxout_pieces),
                nn.Dropout(dropout_hidden),
                *output_layers(maxout_units),
            )
            _init_uniform(disc, 0.005)  # mnist.yaml: discriminator irange .005
            self.discriminator = _LogitHead(disc)
        elif arch == "dcgan" and self.data_shape[1:] == (32, 32):
            c = self.data_shape[0]
            self.generator = DCGAN32Generator(latent_dim=z, channels=c, width=dcgan_width)
            self.discriminator = DCGAN32Discriminator(channels=c * m, width=dcgan_width)
        elif arch == "dcgan":
            c = self.data_shape[0]
            self.generator = DCGANGenerator(latent_dim=z, channels=c, width=dcgan_width)
            self.discriminator = DCGANDiscriminator(channels=c * m, width=dcgan_width, minibatch=minibatch)
        elif arch == "mlp2d":
            h = mlp2d_hidden
            self.generator = nn.Sequential(
                nn.Linear(z, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, d)
            )
            # Metz et al. scale the discriminator input down by 4 so that grid25's
            # [-4, 4] coordinates land roughly in [-1, 1].
            self.discriminator = _LogitHead(
                nn.Sequential(nn.Linear(d * m, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), *output_layers(h)),
                input_scale=0.25 if not self.is_image else 1.0,
            )
        else:  # pacgan2d: pacgan_task.py, create_model_brick
            self.generator = pacgan_generator(latent_dim=z, hidden=pacgan2d_hidden, out_dim=d)
            u = pacgan2d_maxout_units
            disc = nn.Sequential(
                Maxout(d * m, u, maxout_pieces), Maxout(u, u, maxout_pieces), Maxout(u, u, maxout_pieces),
                *output_layers(u),
            )
            _init_normal(disc, PACGAN_INIT_STD)
            self.discriminator = _LogitHead(disc)

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

    def _fake_packs(self, n_packs: int) -> Tensor:
        """``n_packs`` packs of ``pack`` generated samples, shaped as :func:`pack` shapes real ones.

        PacGAN's generator runs once per packed position (pacgan_task.py, ``create_models``:
        one noise batch ``z`` per packing), so with ``"pacgan2d"`` each position's samples
        get their own batch-normalization statistics.
        """
        z = self._noise(n_packs * self.pack)
        if self.arch == "pacgan2d" and self.pack > 1:
            out = self.generator(z.view(self.pack, n_packs, self.latent_dim))  # (m, n_packs, D)
            return out.transpose(0, 1).reshape(n_packs, -1)                      # (n_packs, m * D)
        return pack(self.generate(z), self.pack)

    def networks(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "discriminator": self.discriminator}

    #: one stacked seed's slices of :meth:`member_inputs` while its step runs under
    #: ``torch.func.vmap`` (:class:`gencompare.train.stacked.Stackable`); None otherwise
    member_slices: dict[str, Tensor] | None = None

    def member_inputs(self) -> dict[str, Tensor]:
        """What a stacked seed's unrolled generator step reads besides its weights
        (:class:`gencompare.train.stacked.Stackable`): the discriminator's Adam moments
        ``exp_avg.<name>`` and ``exp_avg_sq.<name>``, stacked ``(S, ...)`` as the parameters;
        the step counts and hyperparameters, shared by the seeds, are kept on the host for the step.

        Raises:
            RuntimeError: ``unrolled_steps`` before :meth:`configure_optimizers`.
        """
        if not self.unrolled_steps:
            return {}
        if self._d_optimizer is None:
            raise RuntimeError("unrolled_steps needs configure_optimizers() to have run")
        names = [n for n, _ in self.discriminator.named_parameters()]
        live = [p for _, p in self.discriminator.named_parameters()]
        exp_avg, exp_avg_sq, step = adam_moments(self._d_optimizer, live)
        self._unrolled_shared = (step, adam_hyperparameters(self._d_optimizer, live))
        return {**{f"exp_avg.{n}": t for n, t in zip(names, exp_avg)},
                **{f"exp_avg_sq.{n}": t for n, t in zip(names, exp_avg_sq)}}

    def _unrolled_discriminator(self, real: Tensor, fake: Tensor) -> dict[str, Tensor]:
        """D's weights after ``unrolled_steps`` Adam steps on ``(real, fake)``, as a graph.

        One model differentiates the steps with ``torch.autograd.grad(create_graph=True)``
        (:func:`unrolled_parameters`, its optimizer's own moments); a stacked seed, whose step
        runs under ``torch.func.vmap`` where ``requires_grad`` cannot change, with
        ``torch.func.grad`` from its slices of :meth:`member_inputs`
        (:func:`unrolled_parameters_vmapped`). The same update, but ``torch.func.grad``
        rounds differently (g_loss 0.70155322 -> 0.70155334 at the first step of the golden
        ``gan-unrolled3-ring8``), so the one-model path keeps autograd's arithmetic.
        """
        loss_fn = lambda disc: self._d_objective(disc(real), disc(fake))  # noqa: E731
        mine = self.member_slices
        if mine is None:
            if self._d_optimizer is None:
                raise RuntimeError("unrolled_steps needs configure_optimizers() to have run")
            return unrolled_parameters(self.discriminator, self._d_optimizer, loss_fn, self.unrolled_steps)
        names = [n for n, _ in self.discriminator.named_parameters()]
        step, groups = self._unrolled_shared
        return unrolled_parameters_vmapped(self.discriminator, [mine[f"exp_avg.{n}"] for n in names],
                                           [mine[f"exp_avg_sq.{n}"] for n in names], step, groups, loss_fn,
                                           self.unrolled_steps)

    # -- training ---------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Optimizer]:
        """``{"discriminator": ..., "generator": ...}``: D steps first (Algorithm 1); with
        simultaneous updates ``{JOINT_OPTIMIZER: ...}``, one optimizer of the factories'
        class holding the discriminator's parameter group and then the generator's.

        Raises:
            ValueError: simultaneous updates with factories of two optimizer classes.
        """
        d_opt = self._discriminator_optimizer(self.discriminator.parameters())
        g_opt = self._generator_optimizer(self.generator.parameters())
        if self.updates == "alternating":
            self._d_optimizer = d_opt
            return {"discriminator": d_opt, "generator": g_opt}
        if type(d_opt) is not type(g_opt):
            raise ValueError("simultaneous updates need one optimizer class for both networks, got "
                             f"{type(d_opt).__name__} and {type(g_opt).__name__}")
        self._d_optimizer = type(d_opt)(d_opt.param_groups + g_opt.param_groups)  # each group keeps its settings
        return {JOINT_OPTIMIZER: self._d_optimizer}

    def optimizer_repeats(self) -> dict[str, int]:
        return {"discriminator": self.k} if self.updates == "alternating" else {}

    @staticmethod
    def _d_objective(logit_real: Tensor, logit_fake: Tensor) -> Tensor:
        """0.5 * [BCE(D(x), 1) + BCE(D(G(z)), 0)], the paper code's ``d_obj``."""
        return 0.5 * (
            F.binary_cross_entropy_with_logits(logit_real, torch.ones_like(logit_real))
            + F.binary_cross_entropy_with_logits(logit_fake, torch.zeros_like(logit_fake))
        )

    def _generator_loss(self, real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
        """The generator's loss on packed ``fake`` and D's logits on them.

        Against D itself, or, with ``unrolled_steps``, against D after that many Adam steps
        on ``(real, fake)`` (Metz et al. 2017, eq. 6). Either way D's weights enter as
        constants (detached): they get no gradient from this loss (only the generator steps
        here), and no ``requires_grad`` changes, which a step under ``torch.func.vmap``
        (stacked seeds) could not make.
        """
        if self.unrolled_steps:
            params = self._unrolled_discriminator(real, fake)
        else:
            params = {k: v.detach() for k, v in self.discriminator.named_parameters()}
        logit_fake = functional_call(self.discriminator, params, (fake,), strict=False)
        if self.loss_name == "non_saturating":
            loss = F.binary_cross_entropy_with_logits(logit_fake, torch.ones_like(logit_fake))
        else:  # minimax: log(1 - sigmoid(l)) = -BCE(l, 0)
            loss = -F.binary_cross_entropy_with_logits(logit_fake, torch.zeros_like(logit_fake))
        return loss, logit_fake

    def training_step(self, batch: Tensor, name: str) -> tuple[Tensor, dict[str, Tensor]]:
        """Discriminator or generator loss on ``batch`` ``(B, *data_shape)``, B / pack packs.

        ``"discriminator"``: 0.5 * [BCE(D(x), 1) + BCE(D(G(z)), 0)] with G(z)
        detached, the paper code's ``d_obj``; logs ``d_loss``, ``d_real`` (mean
        D(x)) and ``d_fake`` (mean D(G(z))).
        ``"generator"``: -log D(G(z)) (non-saturating) or log(1 - D(G(z)))
        (minimax), as many packs of G(z) as the batch makes; logs ``g_loss`` and
        ``d_fake``. The discriminator's parameters get no gradient from this loss.
        :data:`JOINT_OPTIMIZER` (simultaneous updates): the sum of both losses on one
        draw of G(z), each reaching only its own network; logs all four.
        All losses are means over the packs, computed from logits.

        Raises:
            ValueError: ``name`` is not one of the model's optimizers, or B is not a
                multiple of ``pack``.
        """
        real = pack(batch, self.pack)
        n = real.shape[0]
        if name == "discriminator" and self.updates == "alternating":
            with torch.no_grad():
                fake = self._fake_packs(n)
            logit_real = self.discriminator(real)
            logit_fake = self.discriminator(fake)
            loss = self._d_objective(logit_real, logit_fake)
            logs = {
                "d_loss": loss.detach(),
                "d_real": torch.sigmoid(logit_real.detach()).mean(),
                "d_fake": torch.sigmoid(logit_fake.detach()).mean(),
            }
            return loss, logs
        if name == "generator" and self.updates == "alternating":
            loss, logit_fake = self._generator_loss(real, self._fake_packs(n))
            logs = {"g_loss": loss.detach(), "d_fake": torch.sigmoid(logit_fake.detach()).mean()}
            return loss, logs
        if name == JOINT_OPTIMIZER and self.updates == "simultaneous":
            fake = self._fake_packs(n)
            logit_real = self.discriminator(real)
            logit_fake = self.discriminator(fake.detach())
            d_loss = self._d_objective(logit_real, logit_fake)
            g_loss, _ = self._generator_loss(real, fake)
            logs = {
                "d_loss": d_loss.detach(), "g_loss": g_loss.detach(),
                "d_real": torch.sigmoid(logit_real.detach()).mean(),
                "d_fake": torch.sigmoid(logit_fake.detach()).mean(),
            }
            return d_loss + g_loss, logs
        expected = "'discriminator' and 'generator'" if self.updates == "alternating" else repr(JOINT_OPTIMIZER)
        raise ValueError(f"GAN has optimizers {expected}, got {name!r}")

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
