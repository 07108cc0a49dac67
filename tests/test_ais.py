"""AIS and BDMC (gencompare/metrics/ais.py) against exact log p(x) of linear-Gaussian decoders.

z ~ N(0, I_d), x | z ~ N(W z + b, sigma^2 I_D) has p(x) = N(x; b, W W^T + sigma^2 I), so the
forward estimate, both BDMC bounds and the gap can be checked against the truth. Everything is
seeded; the numbers quoted in comments were measured on the 2-core CPU with one thread."""
from __future__ import annotations

import math
import sys

import pytest
import torch

from gencompare.metrics.ais import (
    DEFAULT_BDMC_GAP_THRESHOLD_NATS,
    BernoulliObservation,
    DecoderModel,
    GaussianObservation,
    LatentVariableModel,
    StandardNormalPrior,
    ais_log_likelihood,
    bdmc,
    bdmc_gap_too_large,
    reverse_ais,
    sigmoid_schedule,
    summarize_log_likelihood,
)

# one torch thread: the chain loop is many small ops, and on the shared 2-core CPU two
# intra-op threads made the 784-D BDMC run 25x slower (426 s against 17 s)
pytestmark = pytest.mark.usefixtures("one_thread")


class LinearGaussian:
    """A linear decoder in a DecoderModel, and its exact marginal log-likelihood (float64)."""

    def __init__(self, d: int, dim: int, sigma: float, w_scale: float, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.W = torch.randn(dim, d, generator=g) * w_scale
        self.b = torch.randn(dim, generator=g) * 0.1
        self.sigma = sigma
        self.model = DecoderModel(StandardNormalPrior(d), GaussianObservation(self.decode, sigma))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.W.T + self.b

    def exact(self, x: torch.Tensor) -> torch.Tensor:
        cov = (self.W @ self.W.T).double() + self.sigma**2 * torch.eye(self.W.shape[0], dtype=torch.float64)
        return torch.distributions.MultivariateNormal(self.b.double(), cov).log_prob(x.double())


def report(name: str, exact: torch.Tensor, res) -> None:
    """One line per run in pytest -s output (the numbers quoted in the report)."""
    line = f"{name}: exact {exact.mean().item():.3f}"
    if hasattr(res, "lower"):
        line += f" lower {res.lower_mean:.3f} upper {res.upper_mean:.3f} gap {res.gap:.3f}"
    else:
        line += f" estimate {res.log_px.mean().item():.3f} acceptance {res.mean_acceptance.item():.3f}"
    print(line, file=sys.stderr)


# ---- pieces -------------------------------------------------------------------------------

def test_sigmoid_schedule_matches_wu_et_al():
    # eval_gen's sigmoid_schedule(num, rad=4): sigmoid(linspace(-4, 4, num)) rescaled to [0, 1]
    betas = sigmoid_schedule(10)
    s = 1 / (1 + torch.exp(-torch.linspace(-4, 4, 11, dtype=torch.float64)))
    assert torch.allclose(betas, (s - s.min()) / (s.max() - s.min()))
    assert betas[0] == 0 and betas[-1] == 1 and (betas.diff() > 0).all()
    assert torch.allclose(betas + betas.flip(0), torch.ones(11, dtype=torch.float64))  # symmetric
    assert sigmoid_schedule(1).tolist() == [0.0, 1.0]


def test_observation_models_and_protocol():
    lg = LinearGaussian(3, 5, 0.3, 1.0)
    z, x = torch.randn(4, 3), torch.randn(4, 5)
    want = torch.distributions.Normal(lg.decode(z), 0.3).log_prob(x).sum(1)
    assert torch.allclose(lg.model.log_likelihood_given_latent(x, z), want, atol=1e-4)
    assert torch.allclose(lg.model.prior_log_prob(z), torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(1))
    logits = torch.randn(4, 5) * 3
    bern = BernoulliObservation(lambda _z: logits)
    xb = (torch.rand(4, 5) < 0.5).float()
    assert torch.allclose(bern.log_prob(xb, z), torch.distributions.Bernoulli(logits=logits).log_prob(xb).sum(1))
    assert isinstance(lg.model, LatentVariableModel)
    assert bern.sample(z, torch.Generator().manual_seed(0)).shape == (4, 5)


def test_summary_nats_and_bits_per_dim():
    s = summarize_log_likelihood(torch.tensor([-100.0, -110.0, -120.0]), dims=10)
    assert s.n == 3 and s.mean_nats == pytest.approx(-110.0)
    assert s.stderr_nats == pytest.approx(10.0 / math.sqrt(3))
    assert s.bits_per_dim == pytest.approx(110.0 / (10 * math.log(2)))
    with_offset = summarize_log_likelihood(torch.tensor([-100.0, -120.0]), dims=10, offset_bits_per_dim=8.0)
    assert with_offset.bits_per_dim == pytest.approx(110.0 / (10 * math.log(2)) + 8.0)
    assert summarize_log_likelihood(torch.tensor([-1.0])).bits_per_dim is None
    assert math.isnan(summarize_log_likelihood(torch.tensor([-1.0])).stderr_nats)


@pytest.mark.parametrize("kwargs, match", [
    (dict(steps=0), "steps must be an int >= 1"),
    (dict(chains=0), "chains must be an int >= 1"),
    (dict(leapfrog=0), "leapfrog must be an int >= 1"),
    (dict(steps=2.5), "steps must be an int >= 1"),
    (dict(step_size=0.0), "step_size must lie in"),
    (dict(target_acceptance=1.0), "target_acceptance must be in"),
    (dict(step_size_jitter=1.0), "step_size_jitter must be in"),
    (dict(steps=2, schedule=[0.0, 0.7, 0.5]), "schedule must be nondecreasing"),
    (dict(steps=2, schedule=[0.1, 0.5, 1.0]), "schedule must be nondecreasing from 0 to 1"),
])
def test_bad_arguments_raise_value_error(kwargs, match):
    lg = LinearGaussian(2, 2, 0.3, 1.0)
    with pytest.raises(ValueError, match=match):
        ais_log_likelihood(lg.model, torch.zeros(3, 2), **kwargs)


def test_bad_inputs_raise():
    lg = LinearGaussian(2, 2, 0.3, 1.0)
    with pytest.raises(ValueError, match="x must be a tensor of shape"):
        ais_log_likelihood(lg.model, torch.zeros(2))
    with pytest.raises(ValueError, match="z_posterior must have shape"):
        reverse_ais(lg.model, torch.zeros(3, 2), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="n .number of simulated examples"):
        bdmc(lg.model, 0)
    with pytest.raises(TypeError, match="LatentVariableModel"):
        ais_log_likelihood(object(), torch.zeros(3, 2))
    bad = DecoderModel(StandardNormalPrior(2), GaussianObservation(lambda z: z, 0.3))
    bad.log_likelihood_given_latent = lambda x, z: torch.zeros(x.shape[0], 1) + z.sum()  # (n, 1), not (n,)
    with pytest.raises(ValueError, match="model log densities must have shape"):
        ais_log_likelihood(bad, torch.zeros(3, 2), steps=2)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        GaussianObservation(lambda z: z, 0.0)
    assert bdmc_gap_too_large(DEFAULT_BDMC_GAP_THRESHOLD_NATS + 0.5)
    assert not bdmc_gap_too_large(0.2) and bdmc_gap_too_large(float("nan"))


# ---- accuracy against the exact marginal ----------------------------------------------------

def test_two_dim_forward_estimate_within_0p1_nats():
    lg = LinearGaussian(2, 2, 0.3, 1.0)
    g = torch.Generator().manual_seed(1)
    x = lg.model.sample_given_latent(lg.model.prior_sample(8, g), g)
    res = ais_log_likelihood(lg.model, x, generator=g)  # the defaults: 1,000 steps, 16 chains, L = 10
    exact = lg.exact(x)
    report("2-D forward", exact, res)
    assert res.log_px.shape == (8,) and res.log_weights.shape == (16, 8) and res.step_sizes.shape == (16, 8)
    assert abs(res.log_px.double().mean() - exact.mean()) < 0.1
    assert 0.4 < res.mean_acceptance < 0.95


@pytest.fixture(scope="module")
def mnist_sized():
    """d = 5, D = 784, sigma = 0.2: the posterior is ~0.07 wide against the prior's 1. (With
    d = 10 the chains' log-weights spread ~1.1 nats at 1,000 steps, and the mean over 8-32
    examples strayed up to 0.12 nats from exact across seeds: noise, not bias.)"""
    return LinearGaussian(5, 784, 0.2, 0.1)


@pytest.fixture(scope="module")
def bdmc_default(mnist_sized):
    n = torch.get_num_threads()  # module-scoped: set up before the function-scoped one_thread
    torch.set_num_threads(1)
    try:
        return bdmc(mnist_sized.model, 16, generator=torch.Generator().manual_seed(2))
    finally:
        torch.set_num_threads(n)


def test_784_dim_bdmc_at_default_steps(mnist_sized, bdmc_default):
    res = bdmc_default
    exact = mnist_sized.exact(res.x)
    report("784-D BDMC, 1000 steps", exact, res)
    assert abs(res.lower.double().mean() - exact.mean()) < 0.1
    assert res.lower_mean <= exact.mean() + 0.05 and res.upper_mean >= exact.mean()  # the sandwich
    assert res.gap < 2 * DEFAULT_BDMC_GAP_THRESHOLD_NATS


def test_784_dim_bdmc_gap_shrinks_with_steps(mnist_sized, bdmc_default):
    short = bdmc(mnist_sized.model, 16, steps=100, generator=torch.Generator().manual_seed(2))
    report("784-D BDMC, 100 steps", mnist_sized.exact(short.x), short)
    assert short.gap > 2 * bdmc_default.gap
    assert bdmc_gap_too_large(short)


# ---- the loop's contract ------------------------------------------------------------------

HOST_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")


def test_chain_loop_reads_nothing_on_the_host(monkeypatch):
    """Every host read of a tensor (a device sync on a GPU) while _anneal is on the stack fails."""
    reads: list[str] = []
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def guarded(t, *a, _original=original, _name=name, **kw):
            f = sys._getframe(1)
            while f is not None:
                if f.f_code.co_name == "_anneal":
                    reads.append(f"{_name} at {sys._getframe(1).f_code.co_filename}:{sys._getframe(1).f_lineno}")
                    break
                f = f.f_back
            return _original(t, *a, **kw)
        monkeypatch.setattr(torch.Tensor, name, guarded)
    lg = LinearGaussian(3, 6, 0.3, 1.0)
    res = bdmc(lg.model, 3, steps=5, chains=2, leapfrog=2, generator=torch.Generator().manual_seed(0))
    monkeypatch.undo()
    assert reads == []
    assert torch.isfinite(res.lower).all() and torch.isfinite(res.upper).all()


def test_no_parameter_gradients_and_requires_grad_untouched():
    dec = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 8))
    model = DecoderModel(StandardNormalPrior(4), GaussianObservation(dec, 0.5))
    x = torch.randn(3, 8)
    res = ais_log_likelihood(model, x, steps=10, chains=2, leapfrog=3, generator=torch.Generator().manual_seed(0))
    assert all(p.requires_grad and p.grad is None for p in dec.parameters())
    assert torch.isfinite(res.log_px).all() and not res.log_px.requires_grad


def test_fixed_step_size_stays_fixed_under_jitter():
    """Without adaptation the jittered step is drawn afresh each transition around the fixed one
    (not compounded), and steps = 1 is importance sampling from the prior: no transition."""
    lg = LinearGaussian(2, 2, 0.3, 1.0)
    x = torch.randn(3, 2)
    res = ais_log_likelihood(lg.model, x, steps=20, chains=2, adapt_step_size=False, step_size=0.05,
                             generator=torch.Generator().manual_seed(0))
    assert torch.allclose(res.step_sizes, torch.full((2, 3), 0.05))
    one = ais_log_likelihood(lg.model, x, steps=1, chains=4, generator=torch.Generator().manual_seed(0))
    assert torch.isnan(one.mean_acceptance) and torch.isfinite(one.log_px).all()


def test_bernoulli_decoder_against_quadrature():
    """A 1-D latent with a Bernoulli decoder on 30 binary pixels: exact log p(x) by quadrature."""
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(30, generator=g) * 3, torch.randn(30, generator=g)
    model = DecoderModel(StandardNormalPrior(1), BernoulliObservation(lambda z: z * w + b))
    gx = torch.Generator().manual_seed(1)
    x = model.sample_given_latent(model.prior_sample(8, gx), gx)
    grid = torch.linspace(-10, 10, 100001, dtype=torch.float64)[:, None]
    logits = grid * w.double() + b.double()  # (G, 30)
    ll = -torch.nn.functional.binary_cross_entropy_with_logits(
        logits[:, None, :].expand(-1, 8, -1), x.double()[None].expand(grid.shape[0], -1, -1), reduction="none").sum(2)
    lp = -0.5 * grid**2 - 0.5 * math.log(2 * math.pi)
    exact = torch.logsumexp(ll + lp, 0) + math.log(grid[1, 0] - grid[0, 0])
    res = ais_log_likelihood(model, x, steps=100, generator=torch.Generator().manual_seed(2))
    report("Bernoulli 1-D latent, 100 steps", exact, res)
    assert abs(res.log_px.double().mean() - exact.mean()) < 0.1
