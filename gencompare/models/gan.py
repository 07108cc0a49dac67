"""Generative adversarial nets (Goodfellow et al. 2014, "Generative Adversarial Nets").

A generator G maps Gaussian noise z to data space; a discriminator D outputs the
logit of "x is real". Training alternates k discriminator steps and one
generator step (Algorithm 1 of the paper). The GAN has no likelihood; Parzen and
mode coverage score it through :meth:`GAN.sample` like every other family.

The networks are parts the config names (:mod:`gencompare.models.nets`; ``conf/model/gan.yaml``
lists the paper's MNIST MLP and maxout pair, DCGAN at 28x28 and 32x32, the 2D MLPs of Metz et
al. 2017 and PacGAN's 2D networks, and picks one by the data's shape with ``arch: auto``).

Options against mode collapse (:mod:`gencompare.models.gan_remedies`): packing
(``pack``), minibatch discrimination (``minibatch_kernels``) and the unrolled GAN
(``unrolled_steps``); and ``updates="simultaneous"``, the update of PacGAN's code, where
both networks step from the same point on the same batch.

Departure from the paper code: its generator's sigmoid output bias starts at the
logit of the data's pixel means (``init_sigmoid_bias_from_marginals``); the
constructor never sees data, so all biases start at zero here.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.optim import Optimizer

from gencompare.models.base import GenerativeModel, LatentDecoder, OptimizerFactory, draw_examples
from gencompare.models.gan_remedies import (adam_hyperparameters, adam_moments, pack, unrolled_parameters,
                                            unrolled_parameters_vmapped)

_LOSSES = ("non_saturating", "minimax")
_UPDATES = ("alternating", "simultaneous")
JOINT_OPTIMIZER = "discriminator_and_generator"  # the one optimizer of updates="simultaneous"


def _check_options(*, loss: str, updates: str, k: int, pack: int, minibatch_kernels: int, minibatch_kernel_dim: int,
                   unrolled_steps: int) -> None:
    """Raise ValueError on an option the GAN does not have (see :class:`GAN`)."""
    if loss not in _LOSSES:
        raise ValueError(f"unknown GAN loss {loss!r}; expected one of {_LOSSES}")
    if updates not in _UPDATES:
        raise ValueError(f"unknown GAN updates {updates!r}; expected one of {_UPDATES}")
    if k < 1:
        raise ValueError(f"k (discriminator steps per generator step) must be >= 1, got {k}")
    if updates == "simultaneous" and k != 1:
        raise ValueError(f"simultaneous updates step both networks once per iteration; k must be 1, got {k}")
    if pack < 1:
        raise ValueError(f"pack (samples per discriminator input) must be >= 1, got {pack}")
    if minibatch_kernels < 0 or minibatch_kernel_dim < 1:
        raise ValueError(f"minibatch_kernels must be >= 0 and minibatch_kernel_dim >= 1, got "
                         f"{minibatch_kernels} and {minibatch_kernel_dim}")
    if unrolled_steps < 0:
        raise ValueError(f"unrolled_steps must be >= 0, got {unrolled_steps}")


class GAN(GenerativeModel):
    """Generative adversarial net with the non-saturating or the minimax generator loss.

    Args:
        data_shape: ``(C, H, W)`` images or ``(D,)`` points.
        binary: accepted for the shared interface; the GAN always generates
            continuous pixels in [0, 1] (``binarize: none`` in its config).
        generator: net factory, ``generator(data_shape=, latent_dim=) -> nn.Module`` mapping
            ``(N, latent_dim)`` to ``(N, D)`` outputs (logits for images, squashed by a sigmoid;
            coordinates for points). Called before ``discriminator``.
        discriminator: net factory, ``discriminator(data_shape=, pack=, minibatch=) -> nn.Module``
            mapping packs of ``pack`` examples to logits ``(N,)``, with minibatch discrimination
            ``(kernels, kernel_dim)`` before its output layer (or None).
        generator_optimizer, discriminator_optimizer: Hydra ``_partial_``
            optimizer factories, ``factory(params) -> Optimizer``.
        latent_dim: size of z ~ N(0, I). None: 100 for images (the paper's
            ``nvis: 100``) and 2 for points (the 2D latent of VEEGAN/PacGAN,
            whose 2D-mixture numbers docs/protocols.md quotes).
        k: discriminator steps per generator step (Algorithm 1; the paper used 1).
        loss: generator loss, ``"non_saturating"`` (minimise -log D(G(z)),
            Sec. 3 of the paper, and what its code trains) or ``"minimax"``
            (minimise log(1 - D(G(z))), the value function of eq. 1).
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
        ValueError: unknown ``loss`` or ``updates``, ``k < 1``, ``pack < 1``, negative
            ``minibatch_kernels`` or ``unrolled_steps``, ``k > 1`` with simultaneous
            updates, a data shape that is neither ``(D,)`` nor ``(C, H, W)``, or a network
            factory's own ValueError (e.g. no network for this data shape).
    """

    family = "gan"
    family_color = "#d62728"  # tab10, colour-blind distinguishable beside the other families
    family_order = 0
    likelihood_kind = None

    def __init__(
        self, *, data_shape: Sequence[int], binary: bool = False, generator: Callable[..., nn.Module],
        discriminator: Callable[..., nn.Module], generator_optimizer: OptimizerFactory,
        discriminator_optimizer: OptimizerFactory, latent_dim: int | None = None, k: int = 1,
        loss: str = "non_saturating", pack: int = 1, minibatch_kernels: int = 0, minibatch_kernel_dim: int = 5,
        unrolled_steps: int = 0, updates: str = "alternating",
    ) -> None:
        super().__init__(data_shape=data_shape, binary=binary)
        if len(self.data_shape) not in (1, 3):
            raise ValueError(f"GAN needs data_shape (D,) for points or (C, H, W) for images, got {self.data_shape}")
        _check_options(loss=loss, updates=updates, k=int(k), pack=int(pack), minibatch_kernels=int(minibatch_kernels),
                       minibatch_kernel_dim=int(minibatch_kernel_dim), unrolled_steps=int(unrolled_steps))
        self.is_image = len(self.data_shape) == 3
        self.loss_name, self.updates = loss, updates
        self.k, self.pack, self.unrolled_steps = int(k), int(pack), int(unrolled_steps)
        self.latent_dim = int(latent_dim) if latent_dim is not None else (100 if self.is_image else 2)
        self._generator_optimizer = generator_optimizer
        self._discriminator_optimizer = discriminator_optimizer
        self._d_optimizer: Optimizer | None = None  # what steps D, read by the unrolled GAN
        self._unrolled_shared: tuple[list[Tensor], list[dict]] | None = None  # seed batch: Adam's step counts, groups
        minibatch = (int(minibatch_kernels), int(minibatch_kernel_dim)) if minibatch_kernels else None
        # generator first: the order of the parameters' random draws is part of every golden number
        self.generator = generator(data_shape=self.data_shape, latent_dim=self.latent_dim)
        self.discriminator = discriminator(data_shape=self.data_shape, pack=self.pack, minibatch=minibatch)
        #: the networks' name in checkpoints and records (a resumed run must build the same)
        self.arch = getattr(self.generator, "arch", type(self.generator).__name__)

    # -- networks ---------------------------------------------------------
    def _to_data(self, out: Tensor) -> Tensor:
        """Generator output -> data space ``(N, *data_shape)``: sigmoid for images, raw for points."""
        out = out.reshape(out.shape[0], *self.data_shape)
        return torch.sigmoid(out) if self.is_image else out

    def _noise(self, n: int) -> Tensor:
        # Gaussian noise: the default of the paper code's Generator (noise="gaussian").
        # per example: under data parallelism each rank's rows of the global batch's z
        return draw_examples(lambda m: torch.randn(m, self.latent_dim, device=self.device), n)

    def generate(self, z: Tensor) -> Tensor:
        """G(z): ``(N, latent_dim)`` -> ``(N, *data_shape)`` in data space (with gradients)."""
        return self._to_data(self.generator(z))

    def _fake_packs(self, n_packs: int) -> Tensor:
        """``n_packs`` packs of ``pack`` generated samples, shaped as :func:`pack` shapes real ones.

        PacGAN's generator runs once per packed position (pacgan_task.py, ``create_models``:
        one noise batch ``z`` per packing), so with its generator (``per_position``) each
        position's samples get their own batch-normalization statistics.
        """
        z = self._noise(n_packs * self.pack)
        if getattr(self.generator, "per_position", False) and self.pack > 1:
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

    def latent_decoder(self) -> LatentDecoder:
        """z ~ N(0, I) (:meth:`_noise`) and G(z) as the mean of a Gaussian observation model,
        the GAN's density of Wu et al. 2017; no observation model of its own."""
        return LatentDecoder(latent_dim=self.latent_dim, mean=self.generate)
