"""Annealed importance sampling (AIS) of log p(x) for latent-variable decoders, and
bidirectional Monte Carlo (BDMC) to check it.

Sources:
  - Neal (2001), "Annealed importance sampling", Statistics and Computing 11: the
    estimator, weights prod_k f_k(z_{k-1}) / f_{k-1}(z_{k-1}) with a transition leaving f_k
    invariant after each ratio; E[w] = Z_K / Z_0.
  - Wu, Burda, Salakhutdinov & Grosse (2017), "On the Quantitative Analysis of
    Decoder-Based Generative Models", ICLR, arXiv:1611.04273; code
    github.com/tonywu95/eval_gen (algorithms/ais.py, algorithms/hmc.py,
    sampling/samplers.py). The path f_beta(z) = p(z) p(x|z)^beta from the prior to the
    posterior, the sigmoid schedule (their Sec. 6.2), HMC transitions with step sizes
    adapted towards 65 % acceptance, several chains per example.
  - Grosse, Ghahramani & Adams (2015), "Sandwiching the marginal likelihood using
    bidirectional Monte Carlo", arXiv:1511.02543: reverse AIS from an exact posterior
    sample gives a stochastic upper bound; on data simulated from the model the gap
    between the bounds bounds the error of forward AIS.
  (Section numbers other than Wu et al.'s 6.2, which their code names, were not checked
  against the papers, so none are given.)

Everything is family-agnostic: a model is anything with the :class:`LatentVariableModel`
methods (a prior over z and an observation model p(x|z)); :class:`DecoderModel` builds one
from a :class:`StandardNormalPrior` and e.g. ``GaussianObservation(gan.generator, sigma)``.

All chains of all examples are one batch of ``chains * N`` rows (row ``c * N + n`` is chain
c of example n). The annealing loop reads nothing on the host (no ``.item()``, no Python
branch on a tensor), so on a GPU it queues kernels without stalling; results stay tensors.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

__all__ = [
    "DEFAULT_BDMC_GAP_THRESHOLD_NATS", "AISResult", "BDMCResult", "BernoulliObservation", "DecoderModel",
    "GaussianObservation", "LatentVariableModel", "LogLikelihoodSummary", "StandardNormalPrior", "ais_log_likelihood",
    "bdmc", "bdmc_gap_too_large", "reverse_ais", "sigmoid_schedule", "summarize_log_likelihood",
]

#: Mean BDMC gap (nats per example) above which a caller should warn. Our choice, not a
#: number from the papers: Wu et al. (2017) trust AIS where BDMC on simulated data gives a
#: gap small next to the differences between the decoders they compare; 1 nat per image is
#: small next to the log-likelihood differences between image models, and a larger gap says
#: more intermediate distributions (``steps``) are needed.
DEFAULT_BDMC_GAP_THRESHOLD_NATS = 1.0

_LOG_2PI = math.log(2.0 * math.pi)


@runtime_checkable
class LatentVariableModel(Protocol):
    """What AIS needs of a model p(x) = integral p(z) p(x|z) dz. Shapes: z is (n, latent_dim),
    x is (n, ...) (row i of x goes with row i of z); log densities are (n,) in nats."""

    latent_dim: int

    def prior_sample(self, n: int, generator: torch.Generator | None) -> Tensor: ...
    def prior_log_prob(self, z: Tensor) -> Tensor: ...
    def log_likelihood_given_latent(self, x: Tensor, z: Tensor) -> Tensor: ...
    def sample_given_latent(self, z: Tensor, generator: torch.Generator | None) -> Tensor: ...


@dataclass
class StandardNormalPrior:
    """p(z) = N(0, I_latent_dim). Samples go to ``device`` (default: the generator's, else CPU)."""

    latent_dim: int
    device: torch.device | str | None = None
    dtype: torch.dtype = torch.float32

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        device = self.device if self.device is not None else (generator.device if generator is not None else "cpu")
        return torch.randn(n, self.latent_dim, generator=generator, device=device, dtype=self.dtype)

    def log_prob(self, z: Tensor) -> Tensor:
        return -0.5 * z.pow(2).sum(1) - 0.5 * self.latent_dim * _LOG_2PI


@dataclass
class GaussianObservation:
    """p(x|z) = N(x; decoder_mean(z), sigma^2 I), summed over all dimensions of x after the first.

    ``sigma`` is a standard deviation in x's units (Wu et al.'s code passes a *variance* under
    the name sigma: their 0.025 is sigma^2 here). ``decoder_mean`` maps (n, latent_dim) to
    (n, ...) shaped like x; e.g. a GAN's generator (in eval mode: a batch-norm layer in train
    mode would make p(x|z) depend on the other chains)."""

    decoder_mean: Callable[[Tensor], Tensor]
    sigma: float

    def __post_init__(self) -> None:
        if not self.sigma > 0:
            raise ValueError(f"GaussianObservation: sigma must be > 0, got {self.sigma}")

    def log_prob(self, x: Tensor, z: Tensor) -> Tensor:
        mean = self.decoder_mean(z).reshape(x.shape[0], -1)
        sq = (x.reshape(x.shape[0], -1) - mean).pow(2).sum(1)
        return -0.5 * sq / self.sigma**2 - mean.shape[1] * (math.log(self.sigma) + 0.5 * _LOG_2PI)

    def sample(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        mean = self.decoder_mean(z)
        return mean + self.sigma * torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)


@dataclass
class BernoulliObservation:
    """p(x|z) = prod_i Bernoulli(x_i; sigmoid(decoder_logits(z)_i)) for binary x (a VAE's
    decoder on binarized MNIST), from logits so that saturated pixels stay finite."""

    decoder_logits: Callable[[Tensor], Tensor]

    def log_prob(self, x: Tensor, z: Tensor) -> Tensor:
        logits = self.decoder_logits(z).reshape(x.shape[0], -1)
        target = x.reshape(x.shape[0], -1).to(logits.dtype)
        return -torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(1)

    def sample(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return torch.bernoulli(torch.sigmoid(self.decoder_logits(z)), generator=generator)


@dataclass
class DecoderModel:
    """A :class:`LatentVariableModel` from a prior (``sample``, ``log_prob``, ``latent_dim``)
    and an observation model (``log_prob(x, z)``, ``sample(z, generator)``)."""

    prior: StandardNormalPrior
    observation: GaussianObservation | BernoulliObservation

    @property
    def latent_dim(self) -> int:
        return self.prior.latent_dim

    def prior_sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.prior.sample(n, generator)

    def prior_log_prob(self, z: Tensor) -> Tensor:
        return self.prior.log_prob(z)

    def log_likelihood_given_latent(self, x: Tensor, z: Tensor) -> Tensor:
        return self.observation.log_prob(x, z)

    def sample_given_latent(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.observation.sample(z, generator)


def sigmoid_schedule(steps: int, rad: float = 4.0) -> Tensor:
    """Inverse temperatures beta_0 = 0 < ... < beta_steps = 1 (float64, CPU, shape (steps+1,)).

    Wu et al. (2017), Sec. 6.2: gamma_t = sigmoid(rad (2t/T - 1)), beta_t = (gamma_t -
    gamma_0) / (gamma_T - gamma_0); denser near 0 and 1, where the path changes fastest.
    eval_gen's ``sigmoid_schedule(num)`` returns ``num`` points, so theirs(K + 1) == ours(K).
    Raises ValueError if steps < 1 or rad <= 0."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"sigmoid_schedule: steps (intermediate distributions K) must be an int >= 1, got {steps!r}")
    if not rad > 0:
        raise ValueError(f"sigmoid_schedule: rad must be > 0, got {rad}")
    s = torch.sigmoid(torch.linspace(-rad, rad, steps + 1, dtype=torch.float64))
    return (s - s[0]) / (s[-1] - s[0])


@dataclass
class AISResult:
    """One AIS run. ``log_px`` (N,) nats: forward, a stochastic lower bound (log-mean-exp of
    the chains' weights, E[estimate] <= log p(x) by Jensen); reverse, a stochastic upper bound.
    ``log_weights`` (chains, N) float64 (float32 on MPS); ``mean_acceptance`` 0-d (HMC acceptance probability,
    mean over chains and transitions; NaN if steps = 1); ``step_sizes`` (chains, N) final HMC step sizes;
    ``z`` (chains, N, latent_dim) the final states. Tensors stay on the model's device."""

    log_px: Tensor
    log_weights: Tensor
    mean_acceptance: Tensor
    step_sizes: Tensor
    z: Tensor
    steps: int
    chains: int
    leapfrog: int
    direction: str


@dataclass
class _HMC:
    leapfrog: int
    target: float
    adapt: bool
    step_min: float
    step_max: float
    jitter: float
    inc: float = 1.02        # eval_gen's stepsize_inc / stepsize_dec
    dec: float = 0.98
    slowness: float = 0.9    # eval_gen's avg_acceptance_slowness (weight of the old average)


def _terms(model: LatentVariableModel, x: Tensor, z: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """log p(x|z), its gradient in z, log p(z), its gradient: all (n,) / (n, d), detached.
    Kept apart so that the gradient of log f_beta = log p(z) + beta log p(x|z) at a new beta
    costs no decoder call (each HMC transition then costs exactly ``leapfrog`` of them)."""
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)  # only z: autograd.grad computes no parameter gradient
        ll = model.log_likelihood_given_latent(x, z)
        (g_ll,) = torch.autograd.grad(ll.sum(), z, allow_unused=True)
        lp = model.prior_log_prob(z)
        (g_lp,) = torch.autograd.grad(lp.sum(), z, allow_unused=True)
    zero = torch.zeros_like(z)
    return ll.detach(), (zero if g_ll is None else g_ll), lp.detach(), (zero if g_lp is None else g_lp)


def _hmc(model, x, beta: float, state: list[Tensor], eps: Tensor, ema: Tensor, hmc: _HMC, generator):
    """One HMC transition leaving f_beta invariant (leapfrog as eval_gen's simulate_dynamics;
    Metropolis test on the Hamiltonian). Returns the new state, eps, ema and the (n,)
    acceptance probabilities; rejected or non-finite proposals keep the old row (torch.where)."""
    z, ll, g_ll, lp, g_lp = state
    p0 = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
    h = eps
    if hmc.jitter:
        # Neal (2011, "MCMC using Hamiltonian dynamics"): a random step size per
        # transition breaks the periodic trajectories that stall HMC on near-isotropic Gaussian
        # posteriors (784-D linear-Gaussian decoder, d = 10, 1,000 steps: BDMC gap 2.5 -> 1.0 nats)
        u = torch.rand(eps.shape, generator=generator, device=z.device, dtype=z.dtype)
        h = eps * (1.0 + hmc.jitter * (2.0 * u - 1.0))
    p = p0 + 0.5 * h * (g_lp + beta * g_ll)
    z1 = z
    for i in range(hmc.leapfrog):
        z1 = z1 + h * p
        ll1, g_ll1, lp1, g_lp1 = _terms(model, x, z1)
        p = p + (h if i < hmc.leapfrog - 1 else 0.5 * h) * (g_lp1 + beta * g_ll1)
    log_ratio = (lp1 + beta * ll1 - 0.5 * p.pow(2).sum(1)) - (lp + beta * ll - 0.5 * p0.pow(2).sum(1))
    log_ratio = torch.where(torch.isnan(log_ratio), torch.full_like(log_ratio, -math.inf), log_ratio)
    accept_prob = log_ratio.clamp(max=0.0).exp()
    u = torch.rand(accept_prob.shape, generator=generator, device=z.device, dtype=accept_prob.dtype)
    acc = u < accept_prob
    new = [torch.where(acc[:, None], a, b) for a, b in ((z1, z), (g_ll1, g_ll), (g_lp1, g_lp))]
    state = [new[0], torch.where(acc, ll1, ll), new[1], torch.where(acc, lp1, lp), new[2]]
    if hmc.adapt:
        # eval_gen's hmc_updates, per chain: moving average of the acceptance (here the
        # probability, less noisy than the 0/1 decision), step size x1.02 if above target, else x0.98
        ema = hmc.slowness * ema + (1.0 - hmc.slowness) * accept_prob
        eps = torch.where(ema[:, None] > hmc.target, eps * hmc.inc, eps * hmc.dec).clamp(hmc.step_min, hmc.step_max)
    return state, eps, ema, accept_prob


def _anneal(model, x: Tensor, z0: Tensor, betas: list[float], eps0: float, hmc: _HMC, generator):
    """AIS along ``betas`` (Python floats, so no host read in the loop) from z0 (n, d).
    Returns log weights (n,) float64 (MPS: float32), mean acceptance (0-d), final step sizes (n,), final z.
    Neal (2001): log w += (beta_k - beta_{k-1}) log p(x|z_{k-1}), then a transition at
    beta_k; the transition after the last ratio changes no weight and is skipped."""
    ll, g_ll, lp, g_lp = _terms(model, x, z0)
    if ll.shape != (z0.shape[0],) or lp.shape != (z0.shape[0],):
        raise ValueError(f"model log densities must have shape ({z0.shape[0]},), got log p(x|z) "
                         f"{tuple(ll.shape)} and log p(z) {tuple(lp.shape)}")
    state, n = [z0.detach(), ll, g_ll, lp, g_lp], z0.shape[0]
    wdt = torch.float32 if z0.device.type == "mps" else torch.float64  # MPS has no float64
    log_w = torch.zeros(n, dtype=wdt, device=z0.device)
    eps = torch.full((n, 1), eps0, dtype=z0.dtype, device=z0.device)
    ema = torch.full((n,), hmc.target, dtype=z0.dtype, device=z0.device)  # eval_gen starts it at the target
    acc_sum = torch.zeros((), dtype=wdt, device=z0.device)
    for k in range(1, len(betas)):
        log_w = log_w + (betas[k] - betas[k - 1]) * state[1].to(wdt)  # float64: ~1e3-nat terms, K of them
        if k < len(betas) - 1:
            state, eps, ema, a = _hmc(model, x, betas[k], state, eps, ema, hmc, generator)
            acc_sum = acc_sum + a.to(wdt).mean()
    transitions = len(betas) - 2  # steps = 1: plain importance sampling from p(z), no transition
    return log_w, acc_sum / transitions if transitions else acc_sum * math.nan, eps[:, 0], state[0]


def _check_model_x(model, x) -> None:
    if not isinstance(model, LatentVariableModel):
        raise TypeError("model must implement LatentVariableModel (latent_dim, prior_sample, prior_log_prob, "
                        f"log_likelihood_given_latent, sample_given_latent); got {type(model).__name__}")
    if not isinstance(x, Tensor) or x.dim() < 2 or x.shape[0] < 1:
        raise ValueError(f"x must be a tensor of shape (N, ...) with N >= 1, got "
                         f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")


def _settings(steps, chains, leapfrog, step_size, target_acceptance, adapt_step_size, step_size_bounds,
              step_size_jitter, schedule) -> tuple[list[float], _HMC]:
    """Check the arguments shared by forward and reverse AIS; the schedule as Python floats."""
    for name, v in (("steps", steps), ("chains", chains), ("leapfrog", leapfrog)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    lo, hi = step_size_bounds
    if not 0 < lo <= step_size <= hi:
        raise ValueError(f"step_size must lie in step_size_bounds [{lo}, {hi}] with 0 < min, got {step_size}")
    if not 0 < target_acceptance < 1:
        raise ValueError(f"target_acceptance must be in (0, 1), got {target_acceptance}")
    if not 0 <= step_size_jitter < 1:
        raise ValueError(f"step_size_jitter must be in [0, 1), got {step_size_jitter}")
    betas = sigmoid_schedule(steps) if schedule is None else torch.as_tensor(schedule, dtype=torch.float64).cpu()
    if betas.dim() != 1 or betas.numel() != steps + 1 or betas[0] != 0 or betas[-1] != 1 or (betas.diff() < 0).any():
        raise ValueError(f"schedule must be nondecreasing from 0 to 1 with steps + 1 = {steps + 1} values, "
                         f"got {betas.tolist() if betas.numel() <= 8 else f'{betas.numel()} values'}")
    return betas.tolist(), _HMC(leapfrog, target_acceptance, adapt_step_size, lo, hi, step_size_jitter)


def _run(model, x: Tensor, z0: Tensor, direction: str, betas: list[float], chains: int, step_size: float,
         hmc: _HMC, generator) -> AISResult:
    n = x.shape[0]
    x_rep = x.detach().repeat(chains, *([1] * (x.dim() - 1)))  # row c * N + n is chain c of example n
    log_w, acc, eps, z = _anneal(model, x_rep, z0, betas if direction == "forward" else betas[::-1],
                                 step_size, hmc, generator)
    log_w = log_w.view(chains, n)
    # forward: log mean_c w_c estimates log p(x); reverse: mean_c w_c estimates 1 / p(x)
    lme = torch.logsumexp(log_w, 0) - math.log(chains)
    return AISResult(lme if direction == "forward" else -lme, log_w, acc, eps.view(chains, n),
                     z.view(chains, n, -1), len(betas) - 1, chains, hmc.leapfrog, direction)


def ais_log_likelihood(model: LatentVariableModel, x: Tensor, *, steps: int = 1000, chains: int = 16,
                       leapfrog: int = 10, step_size: float = 0.1, target_acceptance: float = 0.65,
                       adapt_step_size: bool = True, step_size_bounds: tuple[float, float] = (1e-4, 0.5),
                       step_size_jitter: float = 0.5, schedule: Sequence[float] | Tensor | None = None,
                       generator: torch.Generator | None = None) -> AISResult:
    """Forward AIS estimate of log p(x) per example (Neal 2001; Wu et al. 2017).

    x: (N, ...) on the model's device. ``chains`` independent chains per example start at
    z ~ p(z) and anneal through f_beta(z) = p(z) p(x|z)^beta along ``schedule`` (default
    :func:`sigmoid_schedule` (steps)), with one HMC transition of ``leapfrog`` steps after each
    intermediate distribution. Defaults follow eval_gen (16 chains, L = 10, step sizes in
    [1e-4, 0.5], target acceptance 0.65) except: steps 1,000 (theirs 10,000; check with
    :func:`bdmc`), initial step 0.1 (theirs 0.01, which takes ~100 transitions of x1.02 to
    grow: ~2 nats lost at 1,000 steps on a 784-D linear-Gaussian decoder, d = 10), and a step size drawn uniformly
    in [1 -+ step_size_jitter] x the adapted one per transition (theirs: none).
    Step sizes adapt per chain; that makes each transition depend on the chain's past, which
    the unbiasedness argument does not cover (eval_gen adapts too, one size for all chains);
    ``adapt_step_size=False`` keeps the exact guarantee. ``generator`` must be on x's device.

    Cost: 1 + (steps - 1) * leapfrog evaluations of log p(x|z) and its z-gradient on a batch
    of chains * N rows. Returns :class:`AISResult` (``log_px`` (N,) nats, a stochastic lower
    bound). Raises ValueError on steps / chains / leapfrog < 1, a bad schedule, step size,
    jitter or target, or model densities of the wrong shape; TypeError if ``model`` lacks
    the protocol."""
    _check_model_x(model, x)
    betas, hmc = _settings(steps, chains, leapfrog, step_size, target_acceptance, adapt_step_size,
                           step_size_bounds, step_size_jitter, schedule)
    z0 = model.prior_sample(chains * x.shape[0], generator).to(x.device)
    return _run(model, x, z0, "forward", betas, chains, step_size, hmc, generator)


def reverse_ais(model: LatentVariableModel, x: Tensor, z_posterior: Tensor, *, steps: int = 1000,
                chains: int = 1, leapfrog: int = 10, step_size: float = 0.1, target_acceptance: float = 0.65,
                adapt_step_size: bool = True, step_size_bounds: tuple[float, float] = (1e-4, 0.5),
                step_size_jitter: float = 0.5, schedule: Sequence[float] | Tensor | None = None,
                generator: torch.Generator | None = None) -> AISResult:
    """Reverse AIS (Grosse et al. 2015): anneal from beta = 1 to 0 starting at
    ``z_posterior`` (N, latent_dim), an exact sample of p(z|x) for each row of x (N, ...).
    Each chain's weight has expectation 1/p(x), so ``log_px = -log mean_c w_c`` is a stochastic
    upper bound of log p(x) in nats (Jensen). eval_gen runs one reverse chain per example (the
    default); several chains start from the same z. Arguments, cost and errors as
    :func:`ais_log_likelihood`; ValueError too if z_posterior is not (N, latent_dim)."""
    _check_model_x(model, x)
    betas, hmc = _settings(steps, chains, leapfrog, step_size, target_acceptance, adapt_step_size,
                           step_size_bounds, step_size_jitter, schedule)
    if not isinstance(z_posterior, Tensor) or z_posterior.shape != (x.shape[0], model.latent_dim):
        got = tuple(z_posterior.shape) if isinstance(z_posterior, Tensor) else type(z_posterior).__name__
        raise ValueError(f"z_posterior must have shape ({x.shape[0]}, {model.latent_dim}), got {got}")
    z0 = z_posterior.detach().to(x.device).repeat(chains, 1)
    return _run(model, x, z0, "reverse", betas, chains, step_size, hmc, generator)


@dataclass
class BDMCResult:
    """Both bounds on n simulated examples (nats): ``lower`` (n,) forward AIS, ``upper`` (n,)
    reverse AIS; ``x`` (n, ...) and ``z`` (n, latent_dim) the simulated data and latents."""

    lower: Tensor
    upper: Tensor
    forward: AISResult
    reverse: AISResult
    x: Tensor
    z: Tensor

    @property
    def lower_mean(self) -> float:
        return float(self.lower.mean())

    @property
    def upper_mean(self) -> float:
        return float(self.upper.mean())

    @property
    def gap(self) -> float:
        """Mean over examples of upper - lower (nats): bounds the forward estimate's error on
        the simulated data (Grosse et al. 2015), in expectation."""
        return float((self.upper - self.lower).mean())


def bdmc(model: LatentVariableModel, n: int, *, steps: int = 1000, chains: int = 16, reverse_chains: int = 1,
         generator: torch.Generator | None = None, **kwargs) -> BDMCResult:
    """Bidirectional Monte Carlo (Grosse et al. 2015; Wu et al. 2017, eval_gen's
    ``--exps BDMC``): simulate z ~ p(z), x ~ p(x|z) for n examples (z is then an exact
    posterior sample for its x), run forward AIS (``chains`` chains) and reverse AIS from z
    (``reverse_chains``) with the same ``steps``, and return both bounds. ``kwargs`` go to
    both runs (leapfrog, step_size, target_acceptance, adapt_step_size, step_size_bounds,
    step_size_jitter, schedule). Raises ValueError if n < 1, plus the errors of :func:`ais_log_likelihood`."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n (number of simulated examples) must be an int >= 1, got {n!r}")
    if not isinstance(model, LatentVariableModel):
        raise TypeError(f"model must implement LatentVariableModel, got {type(model).__name__}")
    with torch.no_grad():
        z = model.prior_sample(n, generator)
        x = model.sample_given_latent(z, generator)
    fwd = ais_log_likelihood(model, x, steps=steps, chains=chains, generator=generator, **kwargs)
    rev = reverse_ais(model, x, z, steps=steps, chains=reverse_chains, generator=generator, **kwargs)
    return BDMCResult(fwd.log_px, rev.log_px, fwd, rev, x, z)


def bdmc_gap_too_large(result: BDMCResult | float, threshold: float = DEFAULT_BDMC_GAP_THRESHOLD_NATS) -> bool:
    """True if the mean BDMC gap (nats per example) exceeds ``threshold`` (default
    :data:`DEFAULT_BDMC_GAP_THRESHOLD_NATS`): the caller should warn and raise ``steps``."""
    gap = result.gap if isinstance(result, BDMCResult) else float(result)
    return not gap <= threshold  # a NaN gap counts as too large


@dataclass
class LogLikelihoodSummary:
    """Mean and standard error over examples: log p(x) in nats; bits/dim of the negative
    log-likelihood (None unless ``dims`` was given)."""

    n: int
    mean_nats: float
    stderr_nats: float
    bits_per_dim: float | None
    bits_per_dim_stderr: float | None


def summarize_log_likelihood(log_px: Tensor, *, dims: int | None = None,
                             offset_bits_per_dim: float | None = None) -> LogLikelihoodSummary:
    """Mean +- standard error (std with ddof 1 / sqrt(n); NaN for n = 1) of log p(x) (N,) in nats,
    and bits/dim = -mean / (dims ln 2) (+ ``offset_bits_per_dim`` if passed).

    The offset is the caller's business: it converts between pixel scales, e.g. a density
    on [0, 1] pixels reported as a discrete model of 256 levels needs + log2(256) = 8 bits/dim
    (uniform dequantization); nothing is added unless passed. Raises ValueError on an empty
    or non-1-D log_px or dims < 1."""
    if not isinstance(log_px, Tensor) or log_px.dim() != 1 or log_px.numel() < 1:
        raise ValueError(f"log_px must be a non-empty 1-D tensor of per-example nats, got "
                         f"{tuple(log_px.shape) if isinstance(log_px, Tensor) else type(log_px).__name__}")
    if dims is not None and (not isinstance(dims, int) or dims < 1):
        raise ValueError(f"dims must be an int >= 1, got {dims!r}")
    v = log_px.detach().cpu().double()  # to the host first: MPS has no float64
    n, mean = v.numel(), float(v.mean())
    se = float(v.std(correction=1) / math.sqrt(n)) if n > 1 else math.nan
    if dims is None:
        return LogLikelihoodSummary(n, mean, se, None, None)
    scale = dims * math.log(2.0)
    return LogLikelihoodSummary(n, mean, se, -mean / scale + (offset_bits_per_dim or 0.0), se / scale)
