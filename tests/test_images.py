"""8-bit colour data (issue 11): CIFAR-10 in torchvision's layout and image folders, the
32x32 network of each family, bits/dim of the 8-bit pixels under one dequantization
convention, and FID / IS with Inception or, without its weights, the tool's classifier."""
from __future__ import annotations

import functools
import json
import math
import warnings

import pytest
import torch
from omegaconf import OmegaConf

from conftest import compose_train, run_cli
from gencompare.data import BatchStream, load_dataset
from gencompare.errors import GencompareError
from gencompare.data import UnreadableImagesWarning
from gencompare.metrics import inception
from gencompare.models.base import count_parameters
from gencompare.models.nade import build as build_nade
from gencompare.models.pixels import LOG_256, discretized_logistic_log_likelihood
from gencompare.models.nets.unet import UNet
from gencompare.train.train import train
from image_data import write_fake_cifar10, write_png_folder
from model_configs import from_config

ADAM = functools.partial(torch.optim.Adam, lr=1e-3)
SHAPE = (3, 32, 32)


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
    """A data dir holding a fake CIFAR-10: 5 x 40 training and 40 test images."""
    root = tmp_path_factory.mktemp("cifar")
    write_fake_cifar10(root)
    return root


@pytest.fixture(scope="module")
def png_dir(tmp_path_factory):
    """Two class folders of 30 RGB 40x48 PNGs each, and one file that is no image."""
    return write_png_folder(tmp_path_factory.mktemp("pngs") / "pets")


def cifar_cfg(data_dir, **kw):
    return OmegaConf.create({"name": "cifar10", "data_dir": str(data_dir), "download": False, "valid_size": 20, **kw})


def folder_cfg(path, **kw):
    return OmegaConf.create({"name": "image_folder", "path": str(path), "resolution": 32, "channels": 3,
                             "build_seed": 0, "test_fraction": 0.1, "valid_fraction": 0.05, **kw})


# -- data ---------------------------------------------------------------------------
def test_cifar10_reads_torchvision_layout_into_uint8_train_and_float_splits(cifar_dir):
    b = load_dataset(cifar_cfg(cifar_dir))
    assert b.sizes() == {"train": 180, "valid": 20, "test": 40}
    assert b.shape == SHAPE and b.bit_depth == 8 and b.coverage == "classes" and b.num_classes == 10
    assert b.train.dtype == torch.uint8 and b.valid.dtype == b.test.dtype == torch.float32
    assert 0.0 <= float(b.test.min()) and float(b.test.max()) <= 1.0
    assert b.class_names[0] == "airplane"
    # not torchvision's files: used, but never under the name of the real CIFAR-10
    assert b.variant == "cifar10-unverified" and "MD5" in b.notes[0]
    # the last valid_size training images are the validation split, in file order
    full = load_dataset(cifar_cfg(cifar_dir, valid_size=0))
    assert torch.equal(full.train[:180], b.train)
    assert torch.equal(full.train[180:].float() / 255.0, b.valid)


def test_cifar10_archive_placed_by_hand_is_extracted(tmp_path, cifar_dir):
    import tarfile

    data = tmp_path / "data"
    data.mkdir()
    with tarfile.open(data / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(cifar_dir / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    b = load_dataset(cifar_cfg(data))
    assert b.sizes()["train"] == 180 and (data / "cifar-10-batches-py" / "test_batch").is_file()


def test_uint8_training_data_is_converted_per_batch_exactly_as_float_data():
    x = torch.randint(0, 256, (50, *SHAPE), dtype=torch.uint8)
    as_float = x.to(torch.float32) / 255.0
    a, b = BatchStream(x, 8, seed=3), BatchStream(as_float, 8, seed=3)
    for _ in range(12):  # across an epoch boundary
        xa, xb = next(a), next(b)
        assert xa.dtype == torch.float32 and torch.equal(xa, xb)


@pytest.mark.filterwarnings("ignore::gencompare.data.UnreadableImagesWarning")
def test_image_folder_labels_resizes_crops_and_counts_unreadable_files(png_dir):
    with pytest.warns(UnreadableImagesWarning, match=r"skipped 1 unreadable of 61 image files .*broken\.png"):
        b = load_dataset(folder_cfg(png_dir))
    assert b.shape == SHAPE and b.train.dtype == torch.uint8 and b.bit_depth == 8
    assert sum(b.sizes().values()) == 60 and b.sizes()["test"] == 6 and b.sizes()["valid"] == 3
    assert b.class_names == ["cats", "dogs"] and b.coverage == "classes" and b.num_classes == 2
    assert set(b.train_labels.tolist()) == {0, 1}
    assert b.variant.startswith("folder-pets-32px-3ch-")
    grey = load_dataset(folder_cfg(png_dir, channels=1, resolution=16))
    assert grey.shape == (1, 16, 16) and grey.variant != b.variant
    # the split is fixed by build_seed, not by the run
    again = load_dataset(folder_cfg(png_dir))
    assert torch.equal(again.train, b.train)


def test_flat_image_folder_has_no_labels_and_no_coverage(tmp_path, png_dir):
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in sorted((png_dir / "dogs").glob("*.png"))[:12]:
        (flat / p.name).write_bytes(p.read_bytes())
    b = load_dataset(folder_cfg(flat, test_fraction=0.25, valid_fraction=0.25))
    assert b.coverage is None and b.num_classes == 0 and b.class_names == []
    assert b.sizes() == {"train": 6, "valid": 3, "test": 3}


def test_missing_cifar10_is_one_line_naming_the_archive_for_every_family(tmp_path):
    empty = tmp_path / "nodata"
    for family in ("gan", "vae", "nade", "ddpm"):
        res = run_cli("train", f"model={family}", "dataset=cifar10", "dataset.download=false", "logger=none",
                      f"hydra.run.dir=r_{family}", cwd=tmp_path, data_dir=empty)
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert res.returncode == 2, res.stderr
        assert len(lines) == 1 and "Traceback" not in res.stderr + res.stdout, res.stderr
        assert "cifar-10-python.tar.gz" in lines[0] and str(empty) in lines[0]
        assert not (tmp_path / f"r_{family}" / "config.yaml").exists()


def test_empty_image_folder_is_one_line(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    res = run_cli("train", "dataset=image_folder", f"dataset.path={tmp_path / 'empty'}", "logger=none",
                  "hydra.run.dir=r", cwd=tmp_path, data_dir=tmp_path / "data")
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert "holds no images" in lines[0] and "Traceback" not in res.stderr


def test_image_folder_without_path_is_one_line(compose):
    with pytest.raises(GencompareError, match="dataset.path"):
        train(compose("dataset=image_folder"))


# -- networks -----------------------------------------------------------------------
def test_arch_auto_picks_the_32x32_networks():
    gan = from_config("gan", SHAPE, generator_optimizer=ADAM, discriminator_optimizer=ADAM)
    assert gan.arch == "dcgan" and type(gan.generator).__name__ == "DCGAN32Generator"
    x = gan.sample(4)
    assert x.shape == (4, *SHAPE) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert gan.discriminator(x).shape == (4,)
    vae = from_config("vae", SHAPE, optimizer=ADAM)
    assert vae.arch == "conv32" and vae.pixel_decoder == "discretized_logistic" and vae.discrete_likelihood
    assert vae.sample(3).shape == (3, *SHAPE)
    # 28x28 keeps the paper's MLPs
    assert from_config("gan", (1, 28, 28), generator_optimizer=ADAM, discriminator_optimizer=ADAM).arch == "mlp"
    assert from_config("vae", (1, 28, 28), optimizer=ADAM).arch == "mlp"
    with pytest.raises(ValueError, match="conv32"):
        from_config("vae", (1, 28, 28), optimizer=ADAM, arch="conv32")


def test_ho_et_al_cifar10_unet_has_35_7m_parameters():
    unet = UNet(in_channels=3, base_channels=128, channel_mults=(1, 2, 2, 2), num_res_blocks=2, dropout=0.1,
                attention_resolutions=(16,), resolution=32)
    assert count_parameters(unet) == 35_746_307  # Ho et al. 2020: 35.7M
    attn = [n for n, m in unet.named_modules() if type(m).__name__ == "AttnBlock"]
    # two blocks down and three up at 16x16, one in the middle
    assert len(attn) == 6 and "mid_attn" in attn


def test_small_ddpm_default_runs_on_32x32():
    ddpm = from_config("ddpm", SHAPE, optimizer=ADAM, base_channels=8, sample_steps=2)
    loss, logs = ddpm.training_step(torch.rand(2, *SHAPE), "model")
    assert loss.ndim == 0 and logs["loss"].ndim == 0 and ddpm.discrete_likelihood
    assert ddpm.sample(2).shape == (2, *SHAPE)


def test_discretized_logistic_sums_to_one_over_the_256_levels():
    levels = torch.arange(256, dtype=torch.float64) / 255.0
    for mean, log_scale in [(0.3, -2.0), (0.0, -7.0), (1.3, 0.5), (0.5, -9.0), (-0.2, -4.0)]:
        lp = discretized_logistic_log_likelihood(levels, mean=torch.tensor(mean, dtype=torch.float64),
                                                 log_scale=torch.tensor(log_scale, dtype=torch.float64))
        assert torch.all(lp <= 0) and lp.exp().sum().item() == pytest.approx(1.0, abs=1e-6)


def test_rnade_on_8bit_pixels_is_scored_on_dequantized_pixels_plus_d_ln_256(cifar_dir):
    """The one convention: a density is scored at (k + u) / 256 and gains D ln 256 nats."""
    from gencompare.evaluate import test_likelihood

    bundle = load_dataset(cifar_cfg(cifar_dir))
    torch.manual_seed(0)
    rnade = build_nade(data_shape=SHAPE, binary=False, optimizer=ADAM, hidden_dim=8, n_components=2)
    assert not rnade.discrete_likelihood
    mcfg = OmegaConf.create({"likelihood": {"enabled": True, "max_examples": 4, "batch_size": 4}})
    torch.manual_seed(1)
    out = test_likelihood(rnade, bundle, mcfg)
    torch.manual_seed(1)
    u = torch.rand(4, *SHAPE)
    y = (torch.round(bundle.test[:4] * 255) + u) / 256
    with torch.no_grad():
        expected = -(rnade.log_likelihood(y).double() - 3072 * LOG_256).mean()
    assert out["nll_nats"] == pytest.approx(float(expected), rel=1e-6)
    assert out["bits_per_dim"] == pytest.approx(out["nll_nats"] / (3072 * math.log(2)))
    assert out["dequantization"].startswith("uniform")


# -- end to end ---------------------------------------------------------------------
def shrink_eval(n_real: int):
    return ["metrics=fast", "metrics.num_samples=40", "metrics.sample_batch_size=40",
            "metrics.parzen.num_centres=40", "metrics.parzen.num_valid=3", "metrics.parzen.num_test=6",
            "metrics.likelihood.max_examples=6", "metrics.classifier.epochs=1", f"metrics.features.num_real={n_real}",
            f"metrics.fid_is.num_real={n_real}", "metrics.fid_is.download=false",
            "metrics.fid_is.inception_weights=/nonexistent/inception.pth", "trainer.batch_size=8"]


FAMILY_SHRINK = {  # small networks and cheap likelihoods: the code path, not the quality
    "gan": ["model.module.dcgan_width=8"],
    "vae": ["model.module.iwae_k=4", "model.module.conv_width=8"],
    "nade": ["model.module.hidden_dim=8", "model.module.n_components=2"],
    "ddpm": ["model.module.base_channels=8", "model.module.sample_steps=2", "model.module.bound_timesteps=2"],
}


@pytest.mark.parametrize("dataset", ["cifar10", "image_folder"])
@pytest.mark.parametrize("family", ["gan", "vae", "nade", "ddpm"])
def test_each_family_trains_and_reports_bits_per_dim_of_8bit_pixels(tmp_path, cifar_dir, png_dir, family, dataset):
    data = [f"dataset.path={png_dir}"] if dataset == "image_folder" else ["dataset.valid_size=20"]
    cfg = compose_train(tmp_path / "run", cifar_dir, f"model={family}", f"dataset={dataset}", *data,
                        *shrink_eval(6), *FAMILY_SHRINK[family])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnreadableImagesWarning)
        train(cfg)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["data"]["bit_depth"] == 8 and metrics["data"]["train_storage"] == "uint8"
    assert metrics["data"]["binarization"] == "none"  # dataset.binarize: none beats model.binarize
    lk = metrics["likelihood"]
    if family == "gan":
        assert lk["kind"] is None
    else:
        assert math.isfinite(lk["bits_per_dim"]) and lk["bits_per_dim"] > 0
        assert lk["bits_per_dim"] == pytest.approx(lk["nll_nats"] / (3072 * math.log(2)))
        assert lk["dequantization"].startswith("uniform" if family == "nade" else "none")
        assert "bits/dim of the 8-bit pixels" in lk["note"]
    # no Inception weights here: the fallback is named, never called FID
    fi = metrics["fid_is"]
    assert "fid" not in fi and "inception_score" not in fi
    assert fi["feature_network"] == metrics["classifier"]["feature_network"] and fi["feature_network"].startswith("gencompare-cnn-")
    assert math.isfinite(fi["fd"]) and "NOT FID/IS" in fi["note"] and "/nonexistent/inception.pth" in fi["note"]
    assert 0.0 <= metrics["classifier"]["test_accuracy"] <= 1.0


# -- Inception ----------------------------------------------------------------------
class StandInInception(torch.nn.Module):
    """The contract of :func:`gencompare.metrics.inception.load_inception`: uint8 images
    (N, 3, H, W) -> (pool features (N, 2048), logits (N, 1008)), here random projections."""

    name = "stand-in-inception"

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.pool = torch.nn.Parameter(torch.randn(3 * 8 * 8, 2048, generator=g) / 8, requires_grad=False)
        self.fc = torch.nn.Parameter(torch.randn(2048, 1008, generator=g) / 45, requires_grad=False)
        self.calls: list[torch.dtype] = []

    def forward(self, x: torch.Tensor):
        self.calls.append(x.dtype)
        small = torch.nn.functional.adaptive_avg_pool2d(x.float() / 255, 8).flatten(1)
        pool = torch.relu(small @ self.pool)
        return pool, pool @ self.fc


def test_inception_path_gives_fid_and_is_named_by_the_network(cifar_dir, monkeypatch):
    bundle = load_dataset(cifar_cfg(cifar_dir))
    stand_in = StandInInception()
    seen = {}

    def loader(weights, *, download):
        seen.update(weights=weights, download=download)
        return stand_in

    monkeypatch.setattr(inception, "load_inception", loader)
    fcfg = OmegaConf.create({"num_real": 100, "splits": 4, "batch_size": 32, "inception_weights": "/w.pth",
                             "download": False})
    fake = torch.rand(60, *SHAPE)
    out = inception.fid_and_is(bundle.train, fake, fcfg=fcfg, device=torch.device("cpu"))
    assert seen == {"weights": "/w.pth", "download": False}
    assert set(stand_in.calls) == {torch.uint8}  # Inception takes 8-bit images
    assert out["feature_network"] == "stand-in-inception" and out["num_real"] == 100 and out["num_fake"] == 60
    assert out["fid"] > 0 and out["inception_score"] >= 1.0 and out["splits"] == 4
    # real images against themselves: FID ~ 0
    same = inception.fid_and_is(bundle.train, bundle.train[:100], fcfg=fcfg, device=torch.device("cpu"))
    assert abs(same["fid"]) < 1e-3 < out["fid"]


def test_inception_weights_absent_and_not_downloadable_says_where(tmp_path):
    with pytest.raises(inception.InceptionUnavailable, match=str(tmp_path / "none.pth")):
        inception.load_inception(tmp_path / "none.pth", download=False)


def test_real_inception_loader_reads_a_weights_file(tmp_path, monkeypatch):
    """torchmetrics' NoTrainInceptionV3 built from a weights file in torch-fidelity's layout
    (random stand-in weights: the real ones are never downloaded by the tests)."""
    fe = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    with monkeypatch.context() as m:
        m.setattr(fe, "load_state_dict_from_url", lambda *a, **k: {})
        m.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, *a, **k: None)
        torch.manual_seed(0)
        layout = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    path = tmp_path / inception.INCEPTION_WEIGHTS
    torch.save(layout.state_dict(), path)
    net = inception.load_inception(path, download=False)
    pool, logits = net(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    assert pool.shape == (2, 2048) and logits.shape == (2, 1008)


# -- trainer.compile ----------------------------------------------------------------
def test_compile_networks_keeps_the_state_dict_keys():
    gan = from_config("gan", SHAPE, generator_optimizer=ADAM, discriminator_optimizer=ADAM, dcgan_width=8)
    keys = list(gan.state_dict())
    assert gan.compile_networks() == ["generator", "discriminator"]
    assert list(gan.state_dict()) == keys  # checkpoints of compiled and eager runs are interchangeable
    assert gan.generator._compiled_call_impl is not None
    ddpm = from_config("ddpm", SHAPE, optimizer=ADAM, base_channels=8)
    assert ddpm.compile_networks() == ["denoiser", "ema"]


@pytest.mark.slow
def test_compiled_training_matches_eager_on_ring8(tmp_path, data_dir):
    runs = {}
    for flag in ("false", "true"):
        cfg = compose_train(tmp_path / flag, data_dir, "model=gan", "dataset=ring8", "trainer.max_steps=5",
                            f"trainer.compile={flag}")
        runs[flag] = train(cfg)["final_losses"]
    for key in runs["false"]:
        assert runs["true"][key] == pytest.approx(runs["false"][key], rel=1e-4)


def test_ddpm_cifar10_warms_up_and_flips_as_the_official_code(tmp_path, cifar_dir):
    """experiment=ddpm_cifar10 sets what scripts/run_cifar.py trains with: warmup=5000,
    randflip=1, grad_clip=1; a few steps of a small U-Net run with the flips on."""
    cfg = compose_train(tmp_path / "cfg", cifar_dir, "experiment=ddpm_cifar10")
    assert cfg.trainer.lr_warmup_steps == 5000 and cfg.dataset.random_flip and cfg.trainer.grad_clip == 1.0
    cfg = compose_train(tmp_path / "run", cifar_dir, "experiment=ddpm_cifar10", "dataset.valid_size=20",
                        "trainer.max_steps=3", "trainer.batch_size=4", "trainer.lr_warmup_steps=2", "metrics=none",
                        "model.module.base_channels=8", "model.module.channel_mults=[1]", "model.module.num_res_blocks=1",
                        "model.module.attention_resolutions=null", "model.module.sample_steps=2",
                        "model.module.sampler=ddim", "trainer.num_grid_samples=2")
    out = train(cfg)
    assert out["steps"] == 3
