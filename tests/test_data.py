"""The data layer: real data offline, the documented splits, mixtures, binarization."""
from __future__ import annotations


import pytest
import torch
from omegaconf import OmegaConf

from conftest import needs_fashion
from gencompare.data import (
    BatchStream, OfflineSampleWarning, apply_binarization, binarize, load_dataset, mixture_means,
)
from gencompare.errors import GencompareError


def mnist_cfg(data_dir, **kw):
    return OmegaConf.create(dict(name="mnist", data_dir=str(data_dir), download=False,
                                 allow_offline_sample=True, valid_size=10000, **kw))


def test_offline_mnist_sample_split_is_balanced_and_fixed(data_dir):
    with pytest.warns(OfflineSampleWarning, match="mnist-5k"):
        b = load_dataset(mnist_cfg(data_dir))
    assert b.variant == "mnist-5k"
    assert b.sizes() == {"train": 4000, "valid": 500, "test": 500}
    assert torch.bincount(b.train_labels).tolist() == [400] * 10
    assert torch.bincount(b.test_labels).tolist() == [50] * 10
    assert b.train.shape[1:] == (1, 28, 28) and 0.0 <= b.train.min() and b.train.max() == 1.0
    # real digits, not noise: mean intensity of MNIST is about 0.13
    assert 0.10 < float(b.train.mean()) < 0.16
    with pytest.warns(OfflineSampleWarning):
        again = load_dataset(mnist_cfg(data_dir))
    assert torch.equal(again.test, b.test)


def test_offline_sample_forbidden_gives_one_line_naming_files_and_folder(data_dir):
    with pytest.raises(GencompareError) as err:
        load_dataset(OmegaConf.merge(mnist_cfg(data_dir), {"allow_offline_sample": False}))
    msg = str(err.value)
    assert "\n" not in msg
    assert "train-images-idx3-ubyte" in msg and str(data_dir / "MNIST" / "raw") in msg
    assert "allow_offline_sample=true" in msg


@needs_fashion
def test_fashion_mnist_offline_has_all_60000_training_images(data_dir):
    cfg = OmegaConf.create(dict(name="fashion_mnist", data_dir=str(data_dir), download=False,
                                system_dirs=["/usr/share/datasets/fashion-mnist"], valid_size=0))
    b = load_dataset(cfg)
    assert b.sizes() == {"train": 60000, "valid": 0, "test": 10000}
    assert b.variant == "fashion_mnist" and b.num_classes == 10


def test_ring8_has_eight_distinct_modes_and_grid25_twenty_five():
    ring, std = mixture_means("ring8")
    assert std == 0.01 and len(torch.unique(ring.round(decimals=4), dim=0)) == 8
    assert torch.allclose(ring.norm(dim=1), torch.ones(8))
    assert torch.allclose(ring[2], torch.tensor([0.0, 1.0]), atol=1e-6)  # angle 2 pi * 2/8
    grid, std = mixture_means("grid25")
    assert std == 0.05 and len(grid) == 25 and set(grid[:, 0].tolist()) == {-4.0, -2.0, 0.0, 2.0, 4.0}


def test_mixture_is_a_function_of_the_seed():
    cfg = OmegaConf.create(dict(name="ring8", num_train=1000, num_valid=10, num_test=10))
    a, b, c = load_dataset(cfg, seed=1), load_dataset(cfg, seed=1), load_dataset(cfg, seed=2)
    assert torch.equal(a.train, b.train) and not torch.equal(a.train, c.train)
    # points sit within a few std of their labelled mode
    d = (a.train - a.means[a.train_labels]).norm(dim=1)
    assert float(d.max()) < 6 * a.std


def test_binarization_modes():
    x = torch.full((2000,), 0.3)
    dyn1, dyn2 = binarize(x, "dynamic"), binarize(x, "dynamic")
    assert set(dyn1.unique().tolist()) <= {0.0, 1.0} and not torch.equal(dyn1, dyn2)
    assert abs(float(dyn1.mean()) - 0.3) < 0.05
    assert float(binarize(x, "threshold").sum()) == 0.0
    with pytest.raises(ValueError, match="unknown binarization"):
        binarize(x, "sometimes")


def test_static_binarization_is_fixed_across_runs(data_dir):
    with pytest.warns(OfflineSampleWarning):
        a = apply_binarization(load_dataset(mnist_cfg(data_dir)), "static")
    with pytest.warns(OfflineSampleWarning):
        b = apply_binarization(load_dataset(mnist_cfg(data_dir)), "static")
    assert torch.equal(a.train, b.train) and set(a.train.unique().tolist()) == {0.0, 1.0}
    with pytest.warns(OfflineSampleWarning):
        d = apply_binarization(load_dataset(mnist_cfg(data_dir)), "dynamic")
    assert d.binarization == "dynamic" and len(d.train.unique()) > 2  # train binarized per batch
    assert set(d.test.unique().tolist()) == {0.0, 1.0}  # evaluation data fixed


def test_batch_stream_resumes_exactly():
    data = torch.arange(103.0)
    full = BatchStream(data, 10, seed=3)
    seq = [next(full) for _ in range(25)]  # crosses two epochs
    resumed = BatchStream(data, 10, seed=3, batches_drawn=13)
    assert all(torch.equal(seq[13 + i], next(resumed)) for i in range(12))
    epoch0 = torch.cat(seq[:10])
    assert len(epoch0.unique()) == 100  # without replacement within an epoch
    with pytest.raises(GencompareError, match="batch_size=200 exceeds"):
        BatchStream(data, 200, seed=0)


def test_random_flip_mirrors_each_image_on_its_own_coin():
    """dataset.random_flip: every image is itself or its left-right mirror, about half of
    them mirrored, each on its own coin (a seed batch's (S, B, C, H, W) too)."""
    from gencompare.data import random_hflip

    torch.manual_seed(0)
    x = torch.rand(2, 400, 3, 4, 5)
    y = random_hflip(x)
    same = (y == x).flatten(2).all(-1)
    mirrored = (y == x.flip(-1)).flatten(2).all(-1)
    assert bool((same | mirrored).all()) and not bool((same & mirrored).any())
    assert 0.4 < mirrored.float().mean().item() < 0.6
    assert bool(mirrored[0].ne(mirrored[1]).any())  # members draw their own coins



# ------------------------------------------------------- loaders named by their configs
BUILTIN = [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST"), ("stacked_mnist", "StackedMNIST"),
           ("ring8", "Ring8"), ("grid25", "Grid25"), ("cifar10", "CIFAR10"), ("image_folder", "ImageFolder")]


@pytest.mark.parametrize("name,cls", BUILTIN, ids=[b[0] for b in BUILTIN])
def test_each_dataset_config_names_its_loader_and_schema(tmp_path, data_dir, name, cls):
    """dataset=<name> composes to its loader's schema (a typo'd key fails while composing)
    and builds that loader, whose fields are the config's keys."""
    from omegaconf import OmegaConf

    from conftest import compose_train
    from gencompare.data import build_loader

    cfg = compose_train(tmp_path, data_dir, f"dataset={name}")
    assert OmegaConf.get_type(cfg.dataset).__name__ == cls
    assert cfg.dataset._target_.endswith(f".{cls}") and type(build_loader(cfg.dataset)).__name__ == cls
    with pytest.raises(Exception, match="num_trian"):
        compose_train(tmp_path, data_dir, f"dataset={name}", "dataset.num_trian=3")


def test_dataset_typo_fails_before_training_in_one_line(tmp_path, data_dir):
    from conftest import run_cli

    res = run_cli("train", "dataset=ring8", "dataset.num_trian=3", "logger=none", "hydra.run.dir=r",
                  cwd=tmp_path, data_dir=data_dir)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode != 0 and len(lines) == 1 and "Key 'num_trian' not in 'Ring8'" in lines[0], res.stderr
    assert not (tmp_path / "r").exists()


def test_what_code_reads_about_a_dataset_comes_from_its_bundle(data_dir):
    """The classifier that scores mode coverage and compare's table order are the
    bundle's (and metrics.json's data block's), not inferred from the dataset's name."""
    with pytest.warns(OfflineSampleWarning):
        mnist = load_dataset(mnist_cfg(data_dir))
    with pytest.warns(OfflineSampleWarning):
        stacked = load_dataset(OmegaConf.create(dict(
            _target_="gencompare.data.StackedMNIST", name="stacked_mnist", data_dir=str(data_dir), download=False,
            num_train=20, num_valid=5, num_test=5)))
    ring = load_dataset(OmegaConf.create(dict(_target_="gencompare.data.Ring8", num_train=20, num_valid=5,
                                              num_test=5)))
    assert (mnist.classifier, stacked.classifier, ring.classifier) == ("mnist-5k", "mnist-5k", None)
    assert mnist.table_order < stacked.table_order < ring.table_order
    assert ring.describe()["classifier"] is None and ring.describe()["table_order"] == ring.table_order


def test_stream_transforms_draw_what_the_loop_drew():
    """The flip and dynamic binarization applied by the stream as it draws give, bit for
    bit, what training got by applying them after each draw (same global RNG draws)."""
    from gencompare.data import DynamicBinarization, RandomHFlip, random_hflip

    images = torch.rand(40, 1, 4, 5)
    torch.manual_seed(7)
    stream = BatchStream(images, 8, seed=3)
    old = [binarize(random_hflip(next(stream)), "dynamic") for _ in range(7)]
    torch.manual_seed(7)
    stream = BatchStream(images, 8, seed=3, transforms=(RandomHFlip(), DynamicBinarization()))
    assert all(torch.equal(a, next(stream)) for a in old)
    assert not BatchStream(images, 8, seed=3).transforms  # off unless asked for


def test_seed_batch_streams_with_one_transform_draw_what_the_stacked_loop_drew():
    """A seed batch stacks its members' batches (S, B, ...) and applied each transform to
    the stack: with one transform per member's stream the global RNG is drawn in the
    same order, so the batches are bit-identical."""
    from gencompare.data import DynamicBinarization, RandomHFlip

    images = [torch.rand(40, 1, 4, 5) for _ in range(3)]
    for transform in (RandomHFlip(), DynamicBinarization()):
        torch.manual_seed(1)
        streams = [BatchStream(x, 8, seed=s) for s, x in enumerate(images)]
        old = [transform(torch.stack([next(s) for s in streams])) for _ in range(6)]
        torch.manual_seed(1)
        streams = [BatchStream(x, 8, seed=s, transforms=(transform,)) for s, x in enumerate(images)]
        assert all(torch.equal(a, torch.stack([next(s) for s in streams])) for a in old), transform


def test_bundle_transforms_follow_the_config(data_dir):
    """What training applies per drawn batch: the flip where dataset.random_flip asks for it
    (images only), then dynamic binarization where the run binarizes dynamically."""
    ring = load_dataset(OmegaConf.create(dict(_target_="gencompare.data.Ring8", random_flip=True, num_train=20,
                                              num_valid=5, num_test=5)))
    assert ring.transforms == ()
    with pytest.warns(OfflineSampleWarning):
        digits = load_dataset(mnist_cfg(data_dir, random_flip=True))
    assert [type(t).__name__ for t in digits.transforms] == ["RandomHFlip"]
    apply_binarization(digits, "dynamic")
    assert [type(t).__name__ for t in digits.transforms] == ["RandomHFlip", "DynamicBinarization"]
