"""``metrics.ais``: the log-likelihood of every family with a decoder and a prior, by annealed
importance sampling (:mod:`gencompare.metrics.ais`; Neal 2001; Wu et al. 2017,
"On the Quantitative Analysis of Decoder-Based Generative Models", arXiv:1611.04273),
checked by bidirectional Monte Carlo (Grosse et al. 2015, arXiv:1511.02543).

A family takes part through its model interface, never its name:
:meth:`gencompare.models.base.GenerativeModel.latent_decoder` returns its prior's size, the
mean of p(x|z) and, where it has one, its own p(x|z). Two estimates, two blocks of ``ais``:

- ``gaussian``: p(x|z) = N(x; mean(z), sigma^2 I) (Wu et al.'s observation model), sigma
  chosen over ``sigma_grid`` by the highest mean AIS log-likelihood on the validation split,
  as Parzen's sigma is. Scored on the data Parzen scores ([0, 1] pixels, raw points), so
  ``-nll_nats`` is on the scale of Parzen's LL: both are densities of the same test points.
  On 8-bit data (``bundle.bit_depth == 8``) the pixels are dequantized instead and D ln 256
  added (:mod:`gencompare.models.pixels`), so the number is the bits/dim of the 8-bit
  images that the families' own likelihoods report there.
- ``decoder``: the family's own p(x|z) (the VAE's), on the data its own likelihood is
  scored on (:class:`gencompare.metrics.likelihood.FamilyLikelihood`: binarized where the
  run binarizes, dequantized for a density of 8-bit pixels): comparable with its IWAE NLL,
  which AIS tightens.

Every random number comes from one ``torch.Generator`` seeded from the run seed, so adding
this block (last in the config) leaves the numbers of the other metrics bit-identical.
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch
from torch import Tensor

from gencompare.data import as_pixels
from gencompare.errors import GencompareError
from gencompare.metrics.ais import (DecoderModel, GaussianObservation, StandardNormalPrior, ais_log_likelihood, bdmc,
                                    bdmc_gap_too_large, summarize_log_likelihood)
from gencompare.metrics.base import EvalContext, Metric
from gencompare.models.pixels import LOG_256, dequantize
from gencompare.record.schema import AIS, AISEstimate
from gencompare.terminal import console

__all__ = ["AISLikelihood", "DEFAULT_SIGMA_GRID", "OwnObservation"]

#: sigma grid when ``sigma_grid`` is null: logspace(-2, 0, 9), 0.01 ... 1. It reaches below
#: Parzen's logspace(-1, 0, 10) because a 2D mixture's modes have std 0.01 (ring8), and it
#: holds Wu et al.'s MNIST value (variance 0.025, sigma 0.158) within a grid step.
DEFAULT_SIGMA_GRID = tuple(float(10.0 ** (-2 + i / 4)) for i in range(9))
_SEED_OFFSET = 2311  # the AIS generator's seed is the run seed plus this (any fixed number)


class OwnObservation:
    """A family's own p(x|z) in :class:`~gencompare.metrics.ais.DecoderModel`'s observation
    interface (``log_prob(x, z) -> (n,)`` nats, ``sample(z, generator)``), from the two
    callables of a :class:`~gencompare.models.base.LatentDecoder`."""

    def __init__(self, log_prob, sample) -> None:
        self.log_prob, self.sample = log_prob, sample


class AISLikelihood(Metric):
    """``metrics.ais``: AIS estimates of -log p(x) per observation model (module doc).

    Args:
        num_test: first this many test examples (None: the whole split).
        num_valid: validation examples sigma is chosen on (the training split's first ones
            when there is none).
        chains: independent AIS chains per example (Wu et al.: 16).
        steps: K, intermediate distributions of the sigmoid schedule (Wu et al.: 10,000).
        leapfrog: leapfrog steps per HMC transition (Wu et al.: 10).
        sigma_grid: candidate standard deviations of the Gaussian observation model (None:
            :data:`DEFAULT_SIGMA_GRID`); one value skips the selection.
        select_steps, select_chains: K and chains of the AIS runs that choose sigma.
        bdmc_examples: examples simulated from the model for BDMC (0: no BDMC).
        bdmc_threshold: mean BDMC gap in nats above which a warning is printed.
        batch_size: test examples per AIS call (each call holds ``chains * batch_size`` rows).
        step_size: initial HMC step size (adapted per chain towards 65 % acceptance).
    """

    final_only = True
    # across_ranks stays False: in a data-parallel evaluation rank 0 computes AIS alone. Its
    # chains draw from one generator through the sigma selection and then every test batch,
    # each HMC step for all chains of the batch at once; spreading them would need every
    # rank to draw the other ranks' chains in step (not built), and its own generator leaves
    # the global RNG the other metrics draw from as it was.

    def __init__(self, *, enabled: bool = True, num_test: int | None = 100, num_valid: int = 50, chains: int = 16,
                 steps: int = 1000, leapfrog: int = 10, sigma_grid: Sequence[float] | None = None,
                 select_steps: int = 100, select_chains: int = 4, bdmc_examples: int = 10,
                 bdmc_threshold: float = 1.0, batch_size: int = 100, step_size: float = 0.1) -> None:
        super().__init__(enabled=enabled)
        self.num_test = None if num_test is None else int(num_test)
        self.num_valid, self.chains, self.steps, self.leapfrog = int(num_valid), int(chains), int(steps), int(leapfrog)
        self.sigma_grid = [float(s) for s in (DEFAULT_SIGMA_GRID if sigma_grid is None else sigma_grid)]
        self.select_steps, self.select_chains = int(select_steps), int(select_chains)
        self.bdmc_examples, self.bdmc_threshold = int(bdmc_examples), float(bdmc_threshold)
        self.batch_size, self.step_size = int(batch_size), float(step_size)

    def applies(self, bundle, model) -> bool | str:
        if model.latent_decoder() is None:
            return (f"{model.family} exposes no decoder with a prior (latent_decoder() is None): AIS needs p(z) "
                    "and p(x|z), an autoregressive or diffusion model has no latent variable to anneal over")
        return True

    def check(self, *, kind: str, num_samples: int) -> None:
        if not self.enabled:
            return
        bad = [f"{k}={v}" for k, v in (("chains", self.chains), ("steps", self.steps), ("leapfrog", self.leapfrog),
                                       ("num_valid", self.num_valid), ("select_steps", self.select_steps),
                                       ("select_chains", self.select_chains), ("batch_size", self.batch_size))
               if v < 1]
        bad += [f"num_test={self.num_test}"] if self.num_test is not None and self.num_test < 1 else []
        bad += [f"bdmc_examples={self.bdmc_examples}"] if self.bdmc_examples < 0 else []
        bad += [f"sigma_grid={self.sigma_grid}"] if not self.sigma_grid or min(self.sigma_grid) <= 0 else []
        if bad:
            raise GencompareError(f"metrics.ais: {', '.join(bad)}: counts must be >= 1 (bdmc_examples >= 0) "
                                  "and sigma_grid a non-empty list of standard deviations > 0")

    def compute(self, ctx: EvalContext) -> AIS:
        model, device = ctx.model, ctx.device
        generator = torch.Generator(device=device).manual_seed(int(ctx.seed) + _SEED_OFFSET)
        was_training = model.training
        model.eval()  # batch norm in train mode would make p(x|z) depend on the other chains
        try:
            dec = model.latent_decoder()
            prior = StandardNormalPrior(dec.latent_dim, device=device)
            out = {"gaussian": self._gaussian(ctx, dec, prior, generator)}
            if dec.log_prob is not None:
                out["decoder"] = self._own(ctx, dec, prior, generator)
        finally:
            model.train(was_training)
        return AIS(**out)

    # -- the two observation models ------------------------------------------------------
    def _data(self, split: Tensor, n: int | None, ctx: EvalContext, dequantized: bool, generator) -> Tensor:
        x = as_pixels(split[:n] if n is not None else split).to(ctx.device).float()
        return dequantize(x, generator) if dequantized else x

    def _gaussian(self, ctx: EvalContext, dec, prior, generator) -> AISEstimate:
        cont = ctx.cont
        eight_bit = cont.bit_depth == 8
        valid, on = cont.valid, "valid"
        if len(valid) == 0:
            valid, on = (cont.train[: self.num_valid] if cont.streamed else cont.train), "train (no validation split)"
        valid = self._data(valid, self.num_valid, ctx, eight_bit, generator)
        test = self._data(cont.test, self.num_test, ctx, eight_bit, generator)
        t0 = time.perf_counter()
        valid_ll = []
        for sigma in self.sigma_grid if len(self.sigma_grid) > 1 else []:
            m = DecoderModel(prior, GaussianObservation(dec.mean, sigma))
            ll = self._log_px(m, valid, generator, steps=self.select_steps, chains=self.select_chains)[0]
            valid_ll.append(float(ll.double().mean()))
        finite = [(v, s) for v, s in zip(valid_ll, self.sigma_grid) if math.isfinite(v)]
        sigma = max(finite)[1] if finite else self.sigma_grid[0]
        model = DecoderModel(prior, GaussianObservation(dec.mean, sigma))
        what = ("N(x; mean(z), sigma^2 I) on uniformly dequantized 8-bit pixels, NLL + D ln 256 (bits/dim of the "
                "8-bit images, an upper bound as the families' own there)" if eight_bit else
                "N(x; mean(z), sigma^2 I) on the [0, 1] pixels Parzen scores: -nll_nats is on Parzen's "
                "log-likelihood scale" if ctx.bundle.kind == "image" else "N(x; mean(z), sigma^2 I) on the test points")
        est = self._estimate(ctx, model, test, generator, "gaussian", what + f"; sigma chosen on {on}",
                             offset=cont_dims(ctx) * LOG_256 if eight_bit else 0.0, bits=eight_bit, t0=t0)
        est.sigma, est.num_valid = sigma, len(valid)
        if valid_ll:
            est.sigma_grid, est.sigma_valid_ll, est.select_steps = self.sigma_grid, valid_ll, self.select_steps
        return est

    def _own(self, ctx: EvalContext, dec, prior, generator) -> AISEstimate:
        bundle = ctx.bundle
        dequantized = bundle.bit_depth == 8 and bundle.binarization == "none" and not dec.discrete
        test = self._data(bundle.test, self.num_test, ctx, dequantized, generator)
        model = DecoderModel(prior, OwnObservation(dec.log_prob, dec.sample))
        what = (f"the family's own p(x|z) ({dec.name}) on the test data its own likelihood is scored on "
                f"(binarization {bundle.binarization}" + (", dequantized, NLL + D ln 256)" if dequantized else ")"))
        offset = cont_dims(ctx) * LOG_256 if dequantized else 0.0
        est = self._estimate(ctx, model, test, generator, f"decoder ({dec.name})", what, offset=offset, bits=True,
                             t0=time.perf_counter())
        est.family_nll_nats = self._family_nll(ctx, test, offset)
        return est

    def _family_nll(self, ctx: EvalContext, x: Tensor, offset: float) -> float | None:
        """The family's own ``log_likelihood`` (the VAE's IWAE) on the same examples as AIS, as a
        NLL in nats, for the paired comparison (AIS should meet or exceed it); drawn in a forked
        RNG seeded from the run seed, so the global stream stays as it was. None if it has none."""
        model = ctx.model
        with torch.random.fork_rng(devices=[ctx.device] if ctx.device.type == "cuda" else []), torch.no_grad():
            torch.manual_seed(int(ctx.seed) + _SEED_OFFSET)
            parts = [model.log_likelihood(x[i: i + self.batch_size]) for i in range(0, len(x), self.batch_size)]
        if any(p is None for p in parts):
            return None
        return _finite(-float(torch.cat(parts).double().mean()) + offset)

    # -- AIS and BDMC ----------------------------------------------------------------------
    def _log_px(self, model, x: Tensor, generator, *, steps: int, chains: int) -> tuple[Tensor, Tensor]:
        """Forward AIS log p(x) (N,) in nats and the mean acceptance (0-d), in batches."""
        lls, accs = [], []
        for i in range(0, len(x), self.batch_size):
            r = ais_log_likelihood(model, x[i: i + self.batch_size], steps=steps, chains=chains,
                                   leapfrog=self.leapfrog, step_size=self.step_size, generator=generator)
            lls.append(r.log_px.detach())
            accs.append(r.mean_acceptance.detach().double() * len(r.log_px))
        return torch.cat(lls), torch.stack(accs).sum() / len(x)

    def _estimate(self, ctx: EvalContext, model, x: Tensor, generator, observation: str, data: str, *,
                  offset: float, bits: bool, t0: float) -> AISEstimate:
        log_px, acc = self._log_px(model, x, generator, steps=self.steps, chains=self.chains)
        s = summarize_log_likelihood(log_px.cpu())
        dims = cont_dims(ctx)
        nll = -s.mean_nats + offset
        est = AISEstimate(nll_nats=_finite(nll), stderr_nats=_finite(s.stderr_nats), observation=observation,
                          steps=self.steps, chains=self.chains, leapfrog=self.leapfrog, num_test=len(x),
                          acceptance_rate=_finite(float(acc)), data=data,
                          bits_per_dim=_finite(nll / (dims * math.log(2.0))) if bits else None)
        if self.bdmc_examples:
            bd = bdmc(model, self.bdmc_examples, steps=self.steps, chains=self.chains, generator=generator,
                      leapfrog=self.leapfrog, step_size=self.step_size)
            est.bdmc_gap_nats, est.bdmc_examples = _finite(bd.gap), self.bdmc_examples
            est.bdmc_lower_nats, est.bdmc_upper_nats = _finite(bd.lower_mean), _finite(bd.upper_mean)
            est.bdmc_threshold_nats = self.bdmc_threshold
            est.bdmc_gap_too_large = bdmc_gap_too_large(bd.gap, self.bdmc_threshold)
            if est.bdmc_gap_too_large:
                block = observation.split(" ")[0]
                console.print(f"[bold yellow]warning:[/] {self.name}.{block}: BDMC gap {bd.gap:.3g} nats on {self.bdmc_examples} simulated examples exceeds "
                              f"{self.bdmc_threshold:g}: AIS has not converged at steps={self.steps}; raise "
                              f"metrics.{self.name}.steps (the estimate is a stochastic lower bound on log p(x))")
        est.seconds = time.perf_counter() - t0
        return est


def cont_dims(ctx: EvalContext) -> int:
    """D, the dimensions of one example."""
    return math.prod(ctx.bundle.shape)


def _finite(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None
