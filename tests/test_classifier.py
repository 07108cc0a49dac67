"""The digit classifier of docs/protocols.md 3b/3c: shapes, caching, determinism, accuracy.

The fast tests train on a tiny problem; the accuracy test trains the real classifier
on the 4,000-digit offline MNIST sample (about 1-2 minutes on 2 CPU threads) and is
marked slow. It caches into the session's base temp folder, which test_mode_coverage.py
shares, so one pytest session trains it once.
"""
from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from gencompare.data import DataBundle, load_dataset
from gencompare.metrics.classifier import (
    REQUIRED_ACCURACY,
    DigitClassifier,
    classifier_key,
    get_classifier,
    train_classifier,
)

MNIST_CFG = dict(name="mnist", data_dir="/tmp/gcdata", download=False, allow_offline_sample=True, valid_size=10000)


def _load(cfg: dict) -> DataBundle:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # OfflineSampleWarning: expected here
        return load_dataset(OmegaConf.create(cfg))


def _tiny_bundle(variant: str = "mnist-5k", n: int = 64, channels: int = 1) -> DataBundle:
    """A toy 'digit' bundle: class c is a bright bar at row 2c (learnable in one epoch)."""
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(10, (n * channels,), generator=g)
    x = 0.1 * torch.rand(n * channels, 1, 28, 28, generator=g)
    for i, c in enumerate(labels.tolist()):
        x[i, 0, 2 * c + 4 : 2 * c + 6, 4:24] = 1.0
    if channels == 3:
        x = x.reshape(n, 3, 28, 28)
        lab = labels.reshape(n, 3)
        labels = 100 * lab[:, 0] + 10 * lab[:, 1] + lab[:, 2]
    name = "stacked_mnist" if channels == 3 else ("fashion_mnist" if variant == "fashion_mnist" else "mnist")
    return DataBundle(
        name=name, variant=variant, kind="image", shape=(channels, 28, 28),
        train=x, valid=x[:0], test=x[:32], train_labels=labels, valid_labels=labels[:0],
        test_labels=labels[:32], num_classes=1000 if channels == 3 else 10, source="toy",
        classifier=variant.removeprefix("stacked_"),
    )


# ------------------------------------------------------------------------ fast tests
def test_feature_and_logit_shapes():
    model = DigitClassifier(num_classes=10, feature_dim=128).eval()
    x1 = torch.rand(5, 1, 28, 28)
    assert model(x1).shape == (5, 10)
    assert model.features(x1).shape == (5, 128)
    # Stacked MNIST: one 128-d feature vector per channel, concatenated
    x3 = torch.rand(4, 3, 28, 28)
    assert model.embed(x3).shape == (4, 384)
    torch.testing.assert_close(model.embed(x3)[:, 128:256], model.embed(x3[:, 1:2]))
    with pytest.raises(ValueError, match="predict_stacked"):
        model(x3)
    with pytest.raises(ValueError, match=r"\(N, C, 28, 28\)"):
        model.features(torch.rand(2, 1, 32, 32))


def test_predict_stacked_combines_channel_predictions():
    model = DigitClassifier().eval()
    digits = torch.rand(12, 1, 28, 28)
    single = model.predict(digits)
    stacked = digits.reshape(4, 3, 28, 28)
    expected = 100 * single[0::3] + 10 * single[1::3] + single[2::3]
    assert torch.equal(model.predict_stacked(stacked, batch_size=5), expected)
    with pytest.raises(ValueError, match="3, 28, 28"):
        model.predict_stacked(digits)


def test_training_is_deterministic_and_leaves_global_rng_alone():
    b = _tiny_bundle()
    state = torch.get_rng_state()
    m1 = train_classifier(b.train, b.train_labels, epochs=1, seed=3, batch_size=16)
    assert torch.equal(torch.get_rng_state(), state)
    m2 = train_classifier(b.train, b.train_labels, epochs=1, seed=3, batch_size=16)
    m3 = train_classifier(b.train, b.train_labels, epochs=1, seed=4, batch_size=16)
    p1, p2, p3 = (dict(m.named_parameters()) for m in (m1, m2, m3))
    assert all(torch.equal(p1[k], p2[k]) for k in p1)
    assert not all(torch.equal(p1[k], p3[k]) for k in p1)


def test_get_classifier_caches_by_variant(tmp_path):
    b = _tiny_bundle("mnist-5k")
    model, info = get_classifier(b, tmp_path, epochs=1)
    path = tmp_path / "classifier-mnist-5k.pt"
    assert info["cached"] is False and Path(info["cache_path"]) == path and path.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temp file left behind
    assert info["variant"] == "mnist-5k" and info["feature_network"] == "gencompare-cnn-mnist-5k"
    assert info["num_train"] == len(torch.unique(b.train.reshape(64, -1), dim=0))
    assert info["epochs"] == 1 and info["num_test"] == 32
    acc = (model.predict(b.test) == b.test_labels).double().mean().item()
    assert info["test_accuracy"] == pytest.approx(acc)
    assert info["meets_protocol"] == (acc >= REQUIRED_ACCURACY)
    mtime = path.stat().st_mtime_ns

    again, info2 = get_classifier(b, tmp_path, epochs=1)
    assert info2["cached"] is True and path.stat().st_mtime_ns == mtime
    assert torch.equal(again.predict(b.test), model.predict(b.test))
    assert info2["train_seconds"] == info["train_seconds"]

    # a different recipe is retrained and replaces the file
    _, info3 = get_classifier(b, tmp_path, epochs=2)
    assert info3["cached"] is False and info3["epochs"] == 2

    # full MNIST is a different key: its own file
    _, info4 = get_classifier(_tiny_bundle("mnist"), tmp_path, epochs=1)
    assert info4["cached"] is False and (tmp_path / "classifier-mnist.pt").is_file()


def test_stacked_bundle_uses_the_digit_classifier(tmp_path):
    digits = _tiny_bundle("mnist-5k", n=48)
    stacked = _tiny_bundle("stacked_mnist-5k", n=16, channels=3)
    # the stacked toy's channels are the same 48 digits, so the same set trains the same net
    m_stacked, info_s = get_classifier(stacked, tmp_path / "a", epochs=1)
    m_digits, info_d = get_classifier(digits, tmp_path / "b", epochs=1)
    assert info_s["variant"] == "mnist-5k" and info_s["bundle_variant"] == "stacked_mnist-5k"
    assert (tmp_path / "a" / "classifier-mnist-5k.pt").is_file()
    assert info_s["num_train"] == info_d["num_train"]
    for (k, p), q in zip(m_stacked.state_dict().items(), m_digits.state_dict().values()):
        assert torch.equal(p, q), k
    _, info_again = get_classifier(stacked, tmp_path / "a", epochs=1)
    assert info_again["cached"] is True


def test_fashion_has_no_accuracy_requirement_and_errors(tmp_path):
    _, info = get_classifier(_tiny_bundle("fashion_mnist"), tmp_path, epochs=1)
    assert info["variant"] == "fashion_mnist" and info["meets_protocol"] is None
    assert info["required_accuracy"] is None
    assert classifier_key(_tiny_bundle("stacked_mnist", n=4, channels=3)) == "mnist"
    with pytest.raises(ValueError, match="no digit classifier"):
        classifier_key(_load(dict(name="ring8", num_train=10, num_valid=2, num_test=2)))
    b = _tiny_bundle()
    b.binarization = "static"
    with pytest.raises(ValueError, match="binarized"):
        get_classifier(b, tmp_path, epochs=1)


def test_unreadable_cache_is_rebuilt(tmp_path):
    (tmp_path / "classifier-mnist-5k.pt").write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="unreadable classifier cache"):
        _, info = get_classifier(_tiny_bundle(), tmp_path, epochs=1)
    assert info["cached"] is False
    assert get_classifier(_tiny_bundle(), tmp_path, epochs=1)[1]["cached"] is True


# ---------------------------------------------------------------- the real classifier
@pytest.fixture(scope="session")
def mnist_classifier(tmp_path_factory):
    """The default classifier of the offline MNIST sample, trained once per session."""
    bundle = _load(MNIST_CFG)
    cache = tmp_path_factory.getbasetemp() / "gc-classifier-cache"
    # one thread: on a busy 2-core machine two OpenMP threads spin against each other
    # (measured: 706 s with 2 threads vs about 80 s with 1 under the same load)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        model, info = get_classifier(bundle, cache)
        info["wall_seconds"] = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    return bundle, model, info


@pytest.mark.slow
def test_mnist_5k_classifier_meets_protocol_accuracy(mnist_classifier):
    bundle, model, info = mnist_classifier
    print(f"classifier {info['feature_network']}: test accuracy {info['test_accuracy']:.4f}, "
          f"trained in {info['train_seconds']:.1f}s, wall {info['wall_seconds']:.1f}s")
    assert bundle.variant == "mnist-5k"
    assert info["num_train"] == 4000 and info["num_test"] == 500 and info["epochs"] == 20
    acc = (model.predict(bundle.test) == bundle.test_labels).double().mean().item()
    assert info["test_accuracy"] == pytest.approx(acc)
    # measured: 98.6% (seed 0); docs/protocols.md 3b requires 98%
    assert acc >= REQUIRED_ACCURACY and info["meets_protocol"] is True
    # the features separate classes: nearest class mean in feature space mostly agrees
    f_train, f_test = model.embed(bundle.train), model.embed(bundle.test)
    centres = torch.stack([f_train[bundle.train_labels == c].mean(0) for c in range(10)])
    nearest = torch.cdist(f_test, centres).argmin(1)
    assert (nearest == bundle.test_labels).double().mean().item() > 0.95
    assert not math.isnan(info["train_seconds"])
