"""The GAN's remedies for mode collapse and PacGAN's 2D networks: packing (Lin et al.
2018), minibatch discrimination (Salimans et al. 2016), the unrolled GAN (Metz et al.
2017) and simultaneous updates (PacGAN's code)."""
from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

from gencompare.models.base import count_parameters
from gencompare.models.gan import GAN, JOINT_OPTIMIZER
from gencompare.models.gan_remedies import MinibatchDiscrimination, pack, unrolled_parameters
from model_configs import from_config

pytestmark = pytest.mark.usefixtures("one_thread")


def adam(lr: float = 1e-3, betas=(0.5, 0.999)):
    return functools.partial(torch.optim.Adam, lr=lr, betas=betas)


def make_gan(shape, **kw) -> GAN:
    kw.setdefault("generator_optimizer", adam())
    kw.setdefault("discriminator_optimizer", adam())
    return from_config("gan", shape, **kw)


def train_steps(gan: GAN, data: torch.Tensor, steps: int, batch: int) -> None:
    opts = gan.configure_optimizers()
    for s in range(steps):
        for name, opt in opts.items():
            for _ in range(gan.optimizer_repeats().get(name, 1)):
                x = data[torch.randint(0, len(data), (batch,))]
                loss, _ = gan.training_step(x, name)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()


# -- packing ----------------------------------------------------------------------
def test_pack_concatenates_consecutive_examples():
    x = torch.arange(12.0).view(6, 2)
    assert torch.equal(pack(x, 2), torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11.0]]))
    assert pack(x, 1) is x
    img = torch.randn(6, 3, 4, 4)
    packed = pack(img, 3)
    assert packed.shape == (2, 9, 4, 4)  # along channels
    assert torch.equal(packed[1, 3:6], img[4])
    with pytest.raises(ValueError, match="multiple of model.module.pack"):
        pack(x, 4)


@pytest.mark.parametrize(("shape", "arch", "m"), [((2,), "mlp2d", 3), ((2,), "pacgan2d", 4),
                                                  ((1, 28, 28), "dcgan", 2), ((1, 28, 28), "mlp", 2)])
def test_packed_discriminator_sees_m_samples_per_input(shape, arch, m):
    kw = {"dcgan_width": 4} if arch == "dcgan" else {}
    gan = make_gan(shape, arch=arch, pack=m, **kw)
    fake = gan._fake_packs(5)
    assert fake.shape == (5, m * shape[0], *shape[1:])
    assert gan.discriminator(fake).shape == (5,)
    batch = torch.rand(5 * m, *shape)
    opts = gan.configure_optimizers()
    for name in opts:
        loss, logs = gan.training_step(batch, name)
        assert loss.shape == () and all(v.shape == () and not v.requires_grad for v in logs.values())
    with pytest.raises(ValueError, match="multiple"):
        gan.training_step(torch.rand(5 * m + 1, *shape), "discriminator")


@pytest.mark.parametrize(("shape", "arch"), [((2,), "mlp2d"), ((1, 28, 28), "dcgan"), ((1, 28, 28), "mlp")])
def test_pack_1_trains_the_plain_gan_bit_for_bit(shape, arch):
    """m = 1 against the plain GAN written out: the same noise, losses and updates."""
    kw = {"dcgan_width": 4} if arch == "dcgan" else {"mlp_hidden": 16, "maxout_units": 8} if arch == "mlp" else {}
    data = torch.rand(64, *shape)
    torch.manual_seed(3)
    packed = make_gan(shape, arch=arch, pack=1, **kw)
    torch.manual_seed(3)
    plain = make_gan(shape, arch=arch, **kw)
    torch.manual_seed(4)
    train_steps(packed, data, 4, 8)

    torch.manual_seed(4)
    d_opt = torch.optim.Adam(plain.discriminator.parameters(), lr=1e-3, betas=(0.5, 0.999))
    g_opt = torch.optim.Adam(plain.generator.parameters(), lr=1e-3, betas=(0.5, 0.999))
    for _ in range(4):
        x = data[torch.randint(0, len(data), (8,))]
        with torch.no_grad():
            fake = plain.generate(torch.randn(8, plain.latent_dim))
        lr_, lf = plain.discriminator(x), plain.discriminator(fake)
        d_loss = 0.5 * (F.binary_cross_entropy_with_logits(lr_, torch.ones_like(lr_))
                        + F.binary_cross_entropy_with_logits(lf, torch.zeros_like(lf)))
        d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        d_opt.step()
        x = data[torch.randint(0, len(data), (8,))]  # the runner draws a batch for the generator step too
        lf = plain.discriminator(plain.generate(torch.randn(8, plain.latent_dim)))
        g_loss = F.binary_cross_entropy_with_logits(lf, torch.ones_like(lf))
        g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        g_opt.step()
    for (name, a), b in zip(packed.state_dict().items(), plain.state_dict().values()):
        assert torch.equal(a, b), name


# -- PacGAN's networks ---------------------------------------------------------------
@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_pacgan2d_parameter_counts_are_those_its_code_prints(m):
    """pacgan_task.py prints both networks' parameter counts (Blocks' parameters: weights,
    biases, batch-norm scales and shifts). Generator: 2*400 + 3*400*400 + 400*2 + 2 (the
    output bias) + 4*(400 + 400) = 484,802. Discriminator: (2m*1000 + 1000) + 2*(200*1000
    + 1000) + (200 + 1) = 403,201 + 2,000 m."""
    gan = make_gan((2,), arch="pacgan2d", pack=m)
    assert count_parameters(gan.generator) == 484_802
    assert count_parameters(gan.discriminator) == 403_201 + 2_000 * m
    assert not any(isinstance(mod, torch.nn.Dropout) for mod in gan.modules())


def test_pacgan2d_init_and_batch_norm_follow_blocks():
    torch.manual_seed(0)
    gan = make_gan((2,), arch="pacgan2d")
    first = gan.generator[0]
    assert first.bias is None and gan.generator[-1].bias is not None
    assert abs(float(first.weight.detach().std()) - 0.02) < 0.002
    assert abs(float(gan.discriminator.net[1].linear.weight.detach().std()) - 0.02) < 0.001
    assert float(gan.discriminator.net[-1].bias.detach().abs().max()) == 0.0
    bn = gan.generator[1]
    x = torch.randn(50, 400) * 3 + 1
    y = bn(x)  # training mode: biased batch variance, eps 1e-4
    expected = (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + 1e-4)
    assert torch.allclose(y, expected, atol=1e-5)
    assert torch.allclose(bn.population_stdev, 0.95 + 0.05 * torch.sqrt(x.var(0, unbiased=False) + 1e-4))
    bn.eval()
    assert torch.allclose(bn(x), (x - bn.population_mean) / bn.population_stdev)


def test_pacgan2d_packed_positions_get_their_own_batch_statistics():
    """PacGAN calls its generator once per packed position, each call normalising its own
    batch: the packed fakes equal m separate calls on the same noise."""
    torch.manual_seed(0)
    gan = make_gan((2,), arch="pacgan2d", pack=3)
    torch.manual_seed(1)
    packs = gan._fake_packs(10)
    torch.manual_seed(1)
    z = torch.randn(30, 2).view(3, 10, 2)
    separate = torch.cat([gan.generator(z[j]) for j in range(3)], dim=1)
    assert packs.shape == (10, 6) and torch.allclose(packs, separate, atol=1e-6)
    joint = gan.generator(z.reshape(30, 2)).view(3, 10, 2).transpose(0, 1).reshape(10, 6)
    assert not torch.allclose(packs, joint, atol=1e-3)  # one batch of 30 would normalise differently


# -- simultaneous updates ------------------------------------------------------------
def test_simultaneous_updates_step_both_networks_from_the_same_point():
    torch.manual_seed(0)
    gan = make_gan((2,), arch="mlp2d", mlp2d_hidden=8, updates="simultaneous",
                   discriminator_optimizer=adam(lr=1e-2), generator_optimizer=adam(lr=2e-3))
    opts = gan.configure_optimizers()
    assert list(opts) == [JOINT_OPTIMIZER] and gan.optimizer_repeats() == {}
    joint = opts[JOINT_OPTIMIZER]
    assert [g["lr"] for g in joint.param_groups] == [1e-2, 2e-3]
    before = {n: p.detach().clone() for n, p in gan.named_parameters()}
    x = torch.randn(16, 2)
    torch.manual_seed(5)
    loss, logs = gan.training_step(x, JOINT_OPTIMIZER)
    assert set(logs) == {"d_loss", "g_loss", "d_real", "d_fake"}
    joint.zero_grad()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in gan.named_parameters()}
    # the reference: each network's gradient of its own loss at the old point, same noise
    torch.manual_seed(5)
    fake = gan.generate(torch.randn(16, 2))
    lr_, lf = gan.discriminator(x), gan.discriminator(fake.detach())
    d_loss = 0.5 * (F.softplus(-lr_).mean() + F.softplus(lf).mean())
    g_loss = F.softplus(-gan.discriminator(fake)).mean()
    d_ref = torch.autograd.grad(d_loss, list(gan.discriminator.parameters()))
    g_ref = torch.autograd.grad(g_loss, list(gan.generator.parameters()))
    for (n, _), r in zip(gan.discriminator.named_parameters(), d_ref):
        assert torch.allclose(grads[f"discriminator.{n}"], r, atol=1e-6)
    for (n, _), r in zip(gan.generator.named_parameters(), g_ref):
        assert torch.allclose(grads[f"generator.{n}"], r, atol=1e-6)
    joint.step()
    moved = {n: float((p.detach() - before[n]).abs().max()) for n, p in gan.named_parameters()}
    assert all(v > 0 for v in moved.values())
    assert max(moved[n] for n in moved if n.startswith("discriminator")) == pytest.approx(1e-2, rel=1e-3)
    assert max(moved[n] for n in moved if n.startswith("generator")) == pytest.approx(2e-3, rel=1e-3)


def test_simultaneous_updates_refuse_k_above_1_and_mixed_optimizers():
    with pytest.raises(ValueError, match="k must be 1"):
        make_gan((2,), updates="simultaneous", k=2)
    gan = make_gan((2,), updates="simultaneous", generator_optimizer=functools.partial(torch.optim.SGD, lr=0.1))
    with pytest.raises(ValueError, match="one optimizer class"):
        gan.configure_optimizers()


# -- minibatch discrimination --------------------------------------------------------
def test_minibatch_features_see_the_batch_diversity():
    torch.manual_seed(0)
    layer = MinibatchDiscrimination(6, kernels=10, kernel_dim=3)
    one = torch.randn(1, 6)
    identical = one.repeat(8, 1)
    varied = torch.cat([one, torch.randn(7, 6) * 50])  # far apart at T's N(0, 0.05) scale
    o_same, o_varied = layer.closeness(identical), layer.closeness(varied)
    assert o_same.shape == (8, 10)
    assert torch.allclose(o_same, torch.full((8, 10), 7.0))  # N - 1 neighbours at distance 0
    assert float(o_varied.detach().max()) < 7.0 and float(o_varied.detach().mean()) < 1.0
    assert layer(varied).shape == (8, 16) and torch.equal(layer(varied)[:, :6], varied)
    # the first example is the same in both batches: only the others change its logit
    for shape, arch in (((2,), "mlp2d"), ((2,), "pacgan2d"), ((1, 28, 28), "dcgan"), ((1, 28, 28), "mlp")):
        kw = {"dcgan_width": 4} if arch == "dcgan" else {}
        gan = make_gan(shape, arch=arch, minibatch_kernels=5, minibatch_kernel_dim=3, **kw).eval()
        x0 = torch.rand(1, *shape)
        same = gan.discriminator(x0.repeat(6, *[1] * len(shape)))
        mixed = gan.discriminator(torch.cat([x0, torch.rand(5, *shape) * 3]))
        assert torch.allclose(same, same[0].expand(6))
        assert not torch.isclose(same[0], mixed[0], atol=1e-6), arch
        plain = make_gan(shape, arch=arch, **kw).eval()
        assert torch.allclose(plain.discriminator(x0), plain.discriminator(torch.cat([x0, torch.rand(5, *shape)]))[:1])


# -- unrolled GAN ------------------------------------------------------------------
@pytest.fixture
def float64():
    """Finite differences need float64 throughout, the GAN's noise included."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _tiny_unrolled(k: int) -> tuple[GAN, torch.Tensor]:
    torch.manual_seed(0)
    gan = make_gan((2,), arch="mlp2d", mlp2d_hidden=8, unrolled_steps=k,
                   discriminator_optimizer=adam(lr=0.05, betas=(0.6, 0.9)))
    data = torch.randn(64, 2)
    opts = gan.configure_optimizers()
    for _ in range(2):  # give D's Adam some state (moments, step count) to unroll from
        loss, _ = gan.training_step(data[:16], "discriminator")
        opts["discriminator"].zero_grad()
        loss.backward()
        opts["discriminator"].step()
    return gan, data[16:32]


def test_first_unrolled_step_is_the_optimizers_own_step(float64):
    gan, x = _tiny_unrolled(1)
    d_opt = gan._d_optimizer
    fake = gan.generate(torch.randn(16, 2)).detach()

    def d_loss(disc):
        return gan._d_objective(disc(x), disc(fake))

    unrolled = unrolled_parameters(gan.discriminator, d_opt, d_loss, 1)
    d_opt.zero_grad()
    d_loss(gan.discriminator).backward()
    d_opt.step()
    for name, p in gan.discriminator.named_parameters():
        assert torch.allclose(unrolled[name], p, atol=1e-12, rtol=1e-10), name


@pytest.mark.parametrize("k", [1, 3])
def test_unrolled_generator_gradient_matches_finite_differences(k, float64):
    """d/dtheta_G of the generator's loss against D after k Adam steps that depend on
    theta_G: autograd through the unrolled steps against central differences of the
    whole computation (float64, three random directions)."""
    gan, x = _tiny_unrolled(k)

    def g_loss() -> torch.Tensor:
        torch.manual_seed(11)  # the same noise in every evaluation
        return gan.training_step(x, "generator")[0]

    params = list(gan.generator.parameters())
    grads = torch.autograd.grad(g_loss(), params)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        v = [torch.randn(p.shape, generator=gen) for p in params]
        eps = 1e-6
        with torch.no_grad():
            for p, d in zip(params, v):
                p.add_(eps * d)
        up = float(g_loss().detach())
        with torch.no_grad():
            for p, d in zip(params, v):
                p.sub_(2 * eps * d)
        down = float(g_loss().detach())
        with torch.no_grad():
            for p, d in zip(params, v):
                p.add_(eps * d)
        numeric = (up - down) / (2 * eps)
        analytic = float(sum((g * d).sum() for g, d in zip(grads, v)))
        assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-9)


def test_unrolled_gradient_differs_from_the_plain_one_and_leaves_d_untouched():
    gan, x = _tiny_unrolled(3)
    gan.discriminator.zero_grad(set_to_none=True)
    before = [p.detach().clone() for p in gan.discriminator.parameters()]
    torch.manual_seed(11)
    loss, _ = gan.training_step(x, "generator")
    loss.backward()
    unrolled = [p.grad.clone() for p in gan.generator.parameters()]
    assert all(p.grad is None for p in gan.discriminator.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, gan.discriminator.parameters()))
    gan.unrolled_steps = 0
    gan.generator.zero_grad()
    torch.manual_seed(11)
    gan.training_step(x, "generator")[0].backward()
    plain = [p.grad for p in gan.generator.parameters()]
    assert not all(torch.allclose(a, b) for a, b in zip(unrolled, plain))


def test_unrolled_needs_adam():
    gan = make_gan((2,), unrolled_steps=2, discriminator_optimizer=functools.partial(torch.optim.SGD, lr=0.1))
    gan.configure_optimizers()
    with pytest.raises(ValueError, match="torch.optim.Adam"):
        gan.training_step(torch.randn(8, 2), "generator")
