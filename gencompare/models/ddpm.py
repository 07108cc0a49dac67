"""Denoising diffusion probabilistic model (Ho, Jain & Abbeel 2020, "DDPM").

A fixed forward process ``q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)``
over T timesteps and a learned reverse process
``p_theta(x_{t-1} | x_t) = N(mu_theta(x_t, t), sigma_t^2 I)`` whose mean is
parameterised by a noise predictor epsilon_theta (eq. 11), trained with the
unweighted objective L_simple (eq. 14). Samples come from ancestral sampling
(Algorithm 2) or, faster, DDIM (Song, Meng & Ermon 2021, eq. 12, eta = 0).
:meth:`DDPM.log_likelihood` is the variational bound of eq. 5, negated, so it
is a lower bound on log p(x) in nats per example.

Conventions (follow the official code, ``diffusion_tf/diffusion_utils_2.py``):

- Timestep index ``i = 0 .. T-1`` in code is the paper's ``t = i + 1``.
- Images in [0, 1] are mapped to [-1, 1] (``x * 2 - 1``) inside the model and
  samples mapped back and clamped to [0, 1]; points are used as given.
- Reverse variance ``sigma_t^2 = beta_t`` ("fixedlarge"); for the decoder at
  t = 1 the official code uses the posterior variance tilde_beta_2 instead
  of beta_1 ("to get a better decoder log likelihood"), and so do we.
- For images the predicted x_0 is clipped to [-1, 1] before forming the
  reverse mean, both when sampling and when evaluating the bound (official
  code, ``clip_denoised=True``), so the bound scores the very model that
  is sampled from. Points have no bounded range and are not clipped.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from gencompare.models.base import (GenerativeModel, OptimizerFactory, batch_shard, batch_total, draw_examples,
                                    forget_on_load, in_chunks, randn_examples_like, shard_chunks)
from gencompare.models.diffusion_math import (  # noqa: F401 - bits_per_dim, make_beta_schedule are public here too
    bits_per_dim,
    discretized_gaussian_log_likelihood,
    gaussian_log_likelihood,
    make_beta_schedule,
    normal_kl,
    schedule_constants,
)
from gencompare.models.samplers import Sampler


class DDPM(GenerativeModel):
    """DDPM with epsilon prediction, trained with L_simple (Ho et al. 2020).

    Args (keyword-only):
        data_shape: ``(C, H, W)`` images in [0, 1] or ``(D,)`` points.
        binary: images arrive as {0, 1} floats (they still live on the 8-bit grid
            as levels 0 and 255, so the discretised decoder applies unchanged).
        denoiser: net factory, ``denoiser(data_shape=, timesteps=) -> nn.Module``, epsilon_theta
            ``(B, *data_shape), (B,) timestep indices -> (B, *data_shape)``
            (:mod:`gencompare.models.nets.unet`: the U-Net, the residual MLP for points).
        schedule: ``schedule(timesteps=) -> (T,)`` float64 betas
            (:func:`gencompare.models.diffusion_math.make_beta_schedule`).
        sampler: sampler factory, ``sampler(data_shape=, timesteps=)``, the default of
            :meth:`sample` (:mod:`gencompare.models.samplers`: ancestral or DDIM).
        optimizer: partial optimizer, called on the denoiser's parameters only.
        timesteps: T (paper: 1000).
        ema_decay: decay of the exponential moving average of the weights (paper
            0.9999 over 800k steps). Default 0.995, an averaging window of ~200
            steps: at 0.9999 the average would still be mostly the random
            initial weights after the few thousand steps of a CPU run.
        ema_warmup: use ``min(ema_decay, (1 + n) / (10 + n))`` at update n (as
            ``tf.train.ExponentialMovingAverage(num_updates=n)``), so the average
            follows training from the first steps. The official code instead
            copies the weights at step 0 and then uses ``ema_decay`` (set False).
        sample_batch_size: examples per batch in :meth:`sample` (memory bound).
        clip_denoised: clip predicted x_0 to [-1, 1]; None = True for images,
            False for points.
        bound_timesteps: None = evaluate all T - 1 KL terms of the bound; K < T - 1 =
            an unbiased estimate of their sum from K timesteps drawn without
            replacement (T / K times cheaper); "auto" (default) = all for points,
            100 for images (the full bound costs T U-Net passes per test image).
            L_T and L_0 are always exact.
        bound_batch_size: (example, timestep) pairs per denoiser call in the bound.

    Raises:
        ValueError: a data shape neither ``(C, H, W)`` nor ``(D,)``, bad sizes, or a part
            factory's own ValueError (no network for this data shape, a bad schedule).
    """

    family = "ddpm"
    family_color = "#9467bd"
    family_order = 3
    likelihood_label = "bound"
    likelihood_kind = "nll_bound"

    def __init__(
        self, *, data_shape: Sequence[int], binary: bool = False, denoiser: Callable[..., nn.Module],
        schedule: Callable[..., Tensor], sampler: Callable[..., Sampler], optimizer: OptimizerFactory,
        timesteps: int = 1000, ema_decay: float = 0.995, ema_warmup: bool = True, sample_batch_size: int = 500,
        clip_denoised: bool | None = None, bound_timesteps: int | str | None = "auto", bound_batch_size: int = 512,
    ) -> None:
        super().__init__(data_shape=data_shape, binary=binary)
        if len(self.data_shape) not in (1, 3):
            raise ValueError(f"data_shape must be (C, H, W) or (D,), got {self.data_shape}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
        self.is_image = len(self.data_shape) == 3
        self.discrete_likelihood = self.is_image  # the discretized decoder (eq. 13): 8-bit probabilities
        self._optimizer_factory = optimizer
        self.num_timesteps = T = int(timesteps)
        self.denoiser: nn.Module = denoiser(data_shape=self.data_shape, timesteps=T)
        #: the network's name in checkpoints and records (a resumed run must build the same)
        self.arch = getattr(self.denoiser, "arch", type(self.denoiser).__name__)
        # The EMA copy is a registered submodule so checkpoints (state_dict) keep it; it has no
        # gradients and is never handed to the optimizer. Not torch.optim.swa_utils.AveragedModel:
        # its update_parameters reads its n_averaged buffer on the host twice per call (a GPU sync
        # every step, torch 2.14), its first update copies the weights instead of averaging from
        # the initial ones, and it has no warm-up; with it, every DDPM result so far would change.
        self.ema = copy.deepcopy(self.denoiser).requires_grad_(False)
        self.ema_decay, self.ema_warmup = float(ema_decay), bool(ema_warmup)
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
        self._ema_count: int | None = 0  # host copy of ema_updates (no sync per step)
        self._range_checked = False
        forget_on_load(self, "_ema_count")
        self.sampler = sampler(data_shape=self.data_shape, timesteps=T)
        self.sample_batch_size = int(sample_batch_size)
        self.clip_denoised = self.is_image if clip_denoised is None else bool(clip_denoised)
        if bound_timesteps == "auto":
            bound_timesteps = min(100, T - 1) if self.is_image else None
        if bound_timesteps is not None and not 1 <= int(bound_timesteps) <= T - 1:
            raise ValueError(f"bound_timesteps must be 'auto', in [1, T-1] or None, got {bound_timesteps}")
        self.bound_timesteps, self.bound_batch_size = bound_timesteps, int(bound_batch_size)
        # Plain CPU attributes, not buffers: derived from the config (nothing to checkpoint), and
        # model.to("mps") would fail on float64 buffers; _extract caches per-device copies.
        for name, value in schedule_constants(schedule(timesteps=T)).items():
            setattr(self, name, value)
        self._const_cache: dict[tuple[int, torch.device, torch.dtype], Tensor] = {}

    # -- data space <-> model space ------------------------------------------
    def to_model_space(self, x: Tensor, *, check_range: bool = True) -> Tensor:
        """Data -> diffusion space: images [0, 1] -> [-1, 1] (``x*2-1``); points unchanged.

        ``check_range=False`` skips only the pixel-range check, which reads the batch on
        the host (a CPU-GPU sync); images are rescaled either way.

        Raises:
            ValueError: on a shape other than ``(B, *data_shape)``, or images outside [0, 1].
        """
        if tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(f"expected batch of shape (B, {self.data_shape}), got {tuple(x.shape)}")
        if not self.is_image:
            return x
        if check_range and (x.min() < -1e-6 or x.max() > 1 + 1e-6):
            raise ValueError(f"DDPM expects image pixels in [0, 1], got range [{x.min():.3g}, {x.max():.3g}]")
        return x * 2.0 - 1.0

    def to_data_space(self, x: Tensor) -> Tensor:
        """Diffusion space -> data: images [-1, 1] -> [0, 1], clamped; points unchanged."""
        return ((x + 1.0) / 2.0).clamp(0.0, 1.0) if self.is_image else x

    def _extract(self, a: Tensor, t: Tensor, like: Tensor) -> Tensor:
        """``a[t]`` reshaped to ``(B, 1, ..., 1)`` to broadcast against ``like``, in ``like``'s dtype."""
        key = (id(a), like.device, like.dtype)
        if key not in self._const_cache:
            self._const_cache[key] = a.to(like.device, like.dtype)
        return self._const_cache[key][t].reshape(t.shape[0], *([1] * (like.dim() - 1)))

    @staticmethod
    def _precise(x: Tensor) -> Tensor:
        """``x`` in float64 for the bound and the sampler's arithmetic (float32 on MPS, which has no float64)."""
        return x.float() if x.device.type == "mps" else x.double()

    # -- forward process --------------------------------------------------
    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor | None = None) -> Tensor:
        """Sample ``x_t ~ q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)`` (eq. 4).

        Args:
            x0: ``(B, ...)`` clean data in model space ([-1, 1] for images).
            t: ``(B,)`` timestep indices 0 .. T-1 (index i is the paper's t = i + 1).
            noise: optional ``(B, ...)`` standard normal noise epsilon.

        Returns:
            ``(B, ...)`` x_t, same dtype as ``x0``.
        """
        if noise is None:
            noise = torch.randn_like(x0)
        return (
            self._extract(self.sqrt_alphas_cumprod, t, x0) * x0
            + self._extract(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise
        )

    # -- reverse process --------------------------------------------------
    def _p_mean(self, net: nn.Module, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Reverse-process mean (float64), predicted x_0 (float64) and epsilon (float32) at ``(x_t, t)``."""
        eps = net(x_t, t)
        x_t64, eps64 = self._precise(x_t), self._precise(eps)
        x0_pred = (
            self._extract(self.sqrt_recip_alphas_cumprod, t, x_t64) * x_t64
            - self._extract(self.sqrt_recipm1_alphas_cumprod, t, x_t64) * eps64
        )
        if self.clip_denoised:
            x0_pred = x0_pred.clamp(-1.0, 1.0)
        mean = (
            self._extract(self.posterior_mean_coef1, t, x_t64) * x0_pred
            + self._extract(self.posterior_mean_coef2, t, x_t64) * x_t64
        )
        return mean, x0_pred, eps

    # -- training -----------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Optimizer]:
        """One optimizer, ``{"model": ...}``, over the denoiser's parameters (not the EMA copy)."""
        return {"model": self._optimizer_factory(self.denoiser.parameters())}

    def training_step(self, batch: Tensor, name: str) -> tuple[Tensor, dict[str, Tensor]]:
        """L_simple (Ho et al. 2020, eq. 14): ``E_{t, x0, eps} ||eps - eps_theta(x_t, t)||^2``.

        Averaged over dimensions as well as the batch (official code:
        ``meanflat``), which only rescales the learning rate.

        Args:
            batch: ``(B, *data_shape)`` data (images in [0, 1]).
            name: must be "model".

        Returns:
            ``(loss, {"loss": float})``.

        Raises:
            ValueError: unknown optimizer name, or bad batch shape / range.
        """
        if name != "model":
            raise ValueError(f"DDPM has one optimizer 'model', got {name!r}")
        # the pixel range of the first training batch is checked; the later ones come from
        # the same data and checking each would sync a GPU every step
        x0 = self.to_model_space(batch, check_range=not self._range_checked)
        self._range_checked = True
        # per example: under data parallelism each rank's rows of the global batch's draws
        t = draw_examples(lambda m: torch.randint(0, self.num_timesteps, (m,), device=x0.device), len(x0))
        noise = randn_examples_like(x0)
        eps = self.denoiser(self.q_sample(x0, t, noise), t)
        loss = ((noise - eps) ** 2).mean()
        return loss, {"loss": loss.detach()}

    def read_host_state(self) -> None:
        """Stacked seeds' hook (:class:`gencompare.train.stacked.Stackable`), called once the
        stack is built: the EMA step count read now, and no range check under vmap."""
        if self._ema_count is None:
            self._ema_count = int(self.ema_updates.reshape(-1)[0])  # stacked seeds update in step
        self._range_checked = True  # a range check cannot read a batch under vmap; the data layer gives [0, 1]

    @torch.no_grad()
    def on_train_batch_end(self, step: int) -> None:
        """Update the EMA weights: ``ema <- d * ema + (1 - d) * live`` (Ho et al. 2020, Appendix B)."""
        if self._ema_count is None:  # once after construction or loading: the buffer is the truth
            self._ema_count = int(self.ema_updates)
        self.ema_updates += 1
        self._ema_count += 1  # a host copy of the buffer: reading the buffer each step would sync a GPU
        decay = self.ema_decay
        if self.ema_warmup:
            n = float(self._ema_count)
            decay = min(decay, (1.0 + n) / (10.0 + n))
        for p_ema, p in zip(self.ema.parameters(), self.denoiser.parameters()):
            p_ema.lerp_(p.detach(), 1.0 - decay)
        for b_ema, b in zip(self.ema.buffers(), self.denoiser.buffers()):
            b_ema.copy_(b)

    def networks(self) -> dict[str, nn.Module]:
        """``{"denoiser": ...}``; the EMA copy has the same size and is not counted again."""
        return {"denoiser": self.denoiser}

    def compile_networks(self) -> list[str]:
        """The denoiser and its EMA copy, which samples and scores the bound."""
        self.ema.compile()
        return [*super().compile_networks(), "ema"]

    # -- sampling -----------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, *, sampler: Sampler | None = None, noise: Tensor | None = None,
               use_ema: bool = True) -> Tensor:
        """Draw ``n`` examples with the EMA denoiser, in batches of ``sample_batch_size``.

        Args:
            n: number of examples.
            sampler: a sampler (:mod:`gencompare.models.samplers`); default the constructor's.
            noise: optional ``(n, *data_shape)`` starting noise x_T (DDIM with
                eta = 0 is then deterministic).
            use_ema: sample with the EMA weights (default) or the live weights.

        Returns:
            ``(n, *data_shape)``: images in [0, 1], points in raw coordinates.

        Raises:
            ValueError: ``noise`` of the wrong shape.
        """
        sampler = self.sampler if sampler is None else sampler
        if noise is not None and tuple(noise.shape) != (n, *self.data_shape):
            raise ValueError(f"noise must have shape {(n, *self.data_shape)}, got {tuple(noise.shape)}")
        net = self.ema if use_ema else self.denoiser
        was_training = net.training
        net.eval()
        try:
            bs = self.sample_batch_size
            if noise is not None:
                out = [self.to_data_space(sampler(self, net, noise[i : i + bs].to(self.device, torch.float32)))
                       for i in range(0, n, bs)]
            else:  # data-parallel: this rank's rows of each global chunk, their noise the global draw's
                out = in_chunks(lambda m: self.to_data_space(sampler(self, net, draw_examples(
                    lambda k: torch.randn(k, *self.data_shape, device=self.device), m))), n, bs)
            return torch.cat(out) if out else torch.empty(0, *self.data_shape, device=self.device)
        finally:
            net.train(was_training)

    def describe_sampler(self) -> str:
        """How :meth:`sample` draws by default, for the run's record (metrics.json)."""
        return f"{self.sampler.describe()}, EMA weights"

    def describe_likelihood(self) -> str:
        """What :meth:`log_likelihood` computes, for the run's record (metrics.json)."""
        terms = ("all T-1 KL terms" if self.bound_timesteps is None else
                 f"unbiased estimate of the T-1={self.num_timesteps - 1} KL terms from {self.bound_timesteps} "
                 "timesteps drawn per batch")
        decoder = "discretized decoder" if self.is_image else "Gaussian decoder (a density)"
        return f"variational bound (Ho et al. 2020 eq. 5, {decoder}; {terms})"

    # -- variational bound ----------------------------------------------------
    def _check_images(self, x: Tensor) -> Tensor:
        """Model-space data for the bound; images are snapped to the 8-bit grid the decoder is defined on."""
        x0 = self._precise(self.to_model_space(x.to(self.device, torch.float32)))
        if self.is_image:
            # A no-op for uint8/255 data; makes bins disjoint for anything else.
            x0 = torch.round((x0 + 1.0) * 127.5) / 127.5 - 1.0
        return x0

    @torch.no_grad()
    def prior_term(self, x: Tensor) -> Tensor:
        """L_T = KL(q(x_T | x_0) || N(0, I)) in nats per example, shape ``(B,)`` (eq. 5).

        Args:
            x: ``(B, *data_shape)`` data (images in [0, 1]).
        """
        x0 = self._check_images(x)
        t = torch.full((x0.shape[0],), self.num_timesteps - 1, device=x0.device, dtype=torch.long)
        mean = self._extract(self.sqrt_alphas_cumprod, t, x0) * x0
        logvar = torch.log1p(-self._extract(self.alphas_cumprod, t, x0))
        kl = normal_kl(mean, logvar, torch.zeros_like(mean), torch.zeros_like(mean))
        return kl.flatten(1).sum(1)

    @torch.no_grad()
    def bound_terms(self, x: Tensor, *, timesteps: int | None | str = "default") -> dict[str, Tensor]:
        """The three parts of the variational bound (Ho et al. 2020, eq. 5), in nats per example.

        - ``"prior"``: L_T (exact, closed form);
        - ``"diffusion"``: sum_{t=2..T} L_{t-1}, each a closed-form Gaussian KL at
          one sample ``x_t ~ q(x_t | x_0)`` (as the official ``calc_bpd_loop``);
          with ``timesteps = K`` an unbiased estimate ``(T-1)/K`` times the sum over
          K distinct t drawn uniformly;
        - ``"decoder"``: L_0 = -log p_theta(x_0 | x_1): the discretised Gaussian of
          eq. 13 for images (a probability, 256 bins per pixel), a Gaussian
          *density* for points (continuous data, so the bound is on a density).

        Uses the EMA denoiser in eval mode; denoiser calls are batched over
        (example, timestep) pairs, ``bound_batch_size`` at a time, so memory is
        bounded. Full cost: T denoiser passes per example.

        Args:
            x: ``(B, *data_shape)`` data (images in [0, 1]; rounded to the 8-bit grid).
            timesteps: None = all T - 1 KL terms; K = subsampled estimate;
                "default" = the constructor's ``bound_timesteps``.

        Returns:
            dict of ``(B,)`` float64 tensors ``prior``, ``diffusion``, ``decoder``.
        """
        if timesteps == "default":
            timesteps = self.bound_timesteps
        T = self.num_timesteps
        if timesteps is not None and not 1 <= int(timesteps) <= T - 1:
            raise ValueError(f"timesteps must be in [1, T-1={T - 1}] or None, got {timesteps}")
        x0_all = self._check_images(x)
        device = x0_all.device
        if timesteps is None or int(timesteps) == T - 1:
            kl_steps, scale = torch.arange(1, T, device=device), 1.0
        else:
            kl_steps, scale = torch.randperm(T - 1, device=device)[: int(timesteps)] + 1, (T - 1) / int(timesteps)
        all_steps = torch.cat([torch.zeros(1, dtype=torch.long, device=device), kl_steps])

        net = self.ema
        was_training = net.training
        net.eval()
        try:
            diffusion, decoder = [], []
            start = 0
            for m, keep, shard in shard_chunks(x0_all.shape[0], self.bound_batch_size):  # data-parallel: global chunks
                with batch_shard(shard):  # a rank with no row of the chunk scores one of its own, dropped
                    terms_all = self._bound_chunk(net, x0_all[min(start, x0_all.shape[0] - 1):][:m], all_steps)
                terms_all = terms_all[:, :keep]  # (1 + K, b)
                start += keep
                decoder.append(terms_all[0])
                diffusion.append(terms_all[1:].sum(0) * scale)
        finally:
            net.train(was_training)
        return {"prior": self.prior_term(x), "diffusion": torch.cat(diffusion), "decoder": torch.cat(decoder)}

    def _bound_chunk(self, net: nn.Module, x0: Tensor, all_steps: Tensor) -> Tensor:
        """The terms at ``all_steps`` ``(S,)`` for ``x0`` ``(b, ...)``: ``(S, b)``, denoiser calls
        batched over (timestep, example) pairs; the x_t noise is the global batch's draw, this
        rank's rows (one process: the draw itself)."""
        b = x0.shape[0]
        per_call = max(1, self.bound_batch_size // batch_total(b))  # grouped as one process groups them
        terms = []
        for s0 in range(0, all_steps.numel(), per_call):
            ts = all_steps[s0 : s0 + per_call]
            t = ts.repeat_interleave(b)  # (c*b,), timestep-major
            x0_rep = x0.repeat(ts.numel(), *([1] * (x0.dim() - 1)))
            noise = draw_examples(lambda m: torch.randn(ts.numel(), m, *x0.shape[1:], dtype=x0.dtype,
                                                        device=x0.device), b, dim=1)
            x_t = self.q_sample(x0_rep, t, noise.reshape(x0_rep.shape)).float()
            terms.append(self._vb_terms(net, x0_rep, x_t, t).reshape(ts.numel(), b))
        return torch.cat(terms)

    def _vb_terms(self, net: nn.Module, x0: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """L_{t-1} per example in nats (``(B,)``): decoder NLL where t == 0, else the Gaussian KL."""
        mean, _, _ = self._p_mean(net, x_t, t)
        x_t64 = self._precise(x_t)
        true_mean = (
            self._extract(self.posterior_mean_coef1, t, x_t64) * x0
            + self._extract(self.posterior_mean_coef2, t, x_t64) * x_t64
        )
        true_logvar = self._extract(self.posterior_log_variance_clipped, t, x_t64)
        model_logvar = self._extract(self.model_log_variance, t, x_t64)
        kl = normal_kl(true_mean, true_logvar, mean, model_logvar).flatten(1).sum(1)
        if self.is_image:
            dec_ll = discretized_gaussian_log_likelihood(x0, mean=mean, log_scale=0.5 * model_logvar)
        else:
            dec_ll = gaussian_log_likelihood(x0, mean=mean, log_var=model_logvar)
        dec_nll = -dec_ll.flatten(1).sum(1)
        return torch.where(t == 0, dec_nll, kl)

    def log_likelihood(self, x: Tensor) -> Tensor:
        """Negated variational bound, a lower bound on log p(x): ``-(L_T + sum_t L_{t-1} + L_0)``.

        Ho et al. 2020, eq. 5, in nats per example (shape ``(B,)``, float32).
        For images it bounds the probability of the 8-bit image (use
        :func:`bits_per_dim` to compare with the paper's CIFAR-10 <= 3.70
        bits/dim); for points it bounds a density. Stochastic (one x_t sample
        per term); all T - 1 KL terms unless ``bound_timesteps`` was set.

        Args:
            x: ``(B, *data_shape)`` data in data space.
        """
        terms = self.bound_terms(x)
        return (-(terms["prior"] + terms["diffusion"] + terms["decoder"])).float()

    def extra_repr(self) -> str:  # shown by print(model)
        return (f"T={self.num_timesteps}, betas={float(self.betas[0]):g}..{float(self.betas[-1]):g}, arch={self.arch}, "
                f"ema_decay={self.ema_decay}, sampler={self.sampler.describe()}")
