"""The 2D mode-collapse experiments compose to the settings they cite and run a few steps:
experiment=pacgan2d and pacgan2d_cpu (PacGAN's setting, Lin et al. 2018)."""
from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

import gencompare.config  # noqa: F401 - registers the schema
from gencompare.train.train import train
from conftest import CONF_DIR

pytestmark = pytest.mark.usefixtures("one_thread")


def compose_plain(*overrides: str, hydra: bool = False):
    """The real config with ``overrides`` only (no test shrinking), as the CLI composes it."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=hydra)


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_pacgan2d_is_pacgans_setting(m):
    cfg = compose_plain("experiment=pacgan2d", "dataset=grid25", f"model.module.pack={m}", hydra=True)
    mod = cfg.model.module
    assert (cfg.model.name, mod.arch, mod.updates, mod.loss, mod.latent_dim, mod.pack) == (
        "gan", "pacgan2d", "simultaneous", "non_saturating", 2, m)
    for opt in (mod.generator_optimizer, mod.discriminator_optimizer):
        assert opt._target_ == "torch.optim.Adam" and opt.lr == 1e-4 and list(opt.betas) == [0.8, 0.999]
    assert cfg.trainer.batch_size == 100 * m  # 100 packs a step
    assert cfg.trainer.max_steps == 400_000  # 400 epochs of 1,000 steps
    assert cfg.dataset.num_train == 100_000 and cfg.metrics.num_samples_2d == 2500
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert dict(cfg.hydra.sweeper.params) == {"dataset": "ring8,grid25", "model.module.pack": "1,2,3,4"}
    assert (cfg.seed, cfg.trainer.seed_batch) == (0, 10)  # PacGAN's 10 runs, stacked in one job each


def test_pacgan2d_cpu_keeps_the_setting_and_shortens_it():
    full = compose_plain("experiment=pacgan2d", "dataset=ring8")
    cpu = compose_plain("experiment=pacgan2d_cpu", "dataset=ring8")
    assert cpu.model == full.model and cpu.dataset == full.dataset and cpu.trainer.batch_size == 100
    assert cpu.trainer.max_steps < full.trainer.max_steps and cpu.trainer.eval_every < cpu.trainer.max_steps


def test_pacgan2d_cpu_runs_and_records_pacgans_network_sizes(compose):
    cfg = compose("experiment=pacgan2d_cpu", "dataset=ring8", "model.module.pack=2", "dataset.num_train=2000",
                  "trainer.seed_batch=1",
                  "trainer.max_steps=4", "trainer.batch_size=200", "trainer.eval_every=2", "metrics=default",
                  "metrics.num_samples_2d=500", "metrics.ais.enabled=false")
    metrics = train(cfg)
    assert metrics["steps"] == 4 and metrics["batch_size"] == 200
    assert metrics["parameters"] == {"generator": 484_802, "discriminator": 407_201}
    assert set(metrics["final_losses"]) >= {"d_loss", "g_loss", "d_real", "d_fake",
                                             "grad_norm/discriminator_and_generator"}
    assert [e["step"] for e in metrics["eval_history"]] == [2]
    assert metrics["mode_coverage"]["num_modes"] == 8


# -- compare: the remedies by name, PacGAN's published rows, coverage over training --------
REMEDIES = {  # label -> the GAN options of its runs
    "GAN": {"pack": 1, "minibatch_kernels": 0, "unrolled_steps": 0},
    "PacGAN2": {"pack": 2, "minibatch_kernels": 0, "unrolled_steps": 0},
    "GAN + minibatch discrimination": {"pack": 1, "minibatch_kernels": 100, "unrolled_steps": 0},
    "unrolled GAN (k=5)": {"pack": 1, "minibatch_kernels": 0, "unrolled_steps": 5},
}


def test_compare_names_the_remedies_beside_pacgans_rows_and_draws_coverage_curves(tmp_path):
    from omegaconf import OmegaConf
    from test_compare import evaluation, make_run

    from gencompare.report import compare

    sweep = tmp_path / "sweep"
    modes = {"GAN": 4, "PacGAN2": 7, "GAN + minibatch discrimination": 6, "unrolled GAN (k=5)": 8}
    for label, options in [*REMEDIES.items(), ("vae", None)]:
        for dataset in ("ring8", "grid25"):
            for seed in (0, 1):
                final = modes.get(label, 8) - seed
                run = make_run(sweep, f"{label}_{dataset}_{seed}".replace(" ", "_"), model="gan" if options else "vae",
                               dataset=dataset, seed=seed, metrics={
                                   "mode_coverage": {"modes_captured": final, "num_modes": 8 if dataset == "ring8" else 25,
                                                     "high_quality_fraction": 0.5},
                                   "eval_history": [evaluation(50, modes_captured=final - 1)]})
                if options:
                    cfg = OmegaConf.load(run / "config.yaml")
                    cfg.model.module.update(options)
                    cfg.trainer.batch_size = 100 * options["pack"]
                    OmegaConf.save(cfg, run / "config.yaml")
    result = compare([sweep], out=tmp_path / "out")
    md = result.files["markdown"].read_text()
    pacgan = md.split("PacGAN layout", 1)[1].split("\n###", 1)[0]
    rows = [line.split("|")[1].strip() for line in pacgan.splitlines() if line.startswith("| ")][1:]
    assert rows == [*REMEDIES, "vae", "GAN, published", "PacGAN2, published"]
    pac2 = next(line for line in pacgan.splitlines() if line.startswith("| PacGAN2 |"))
    assert "6.5 ± 0.5" in pac2  # modes 7 and 6 over two seeds: mean 6.5, standard error 0.5
    published = next(line for line in pacgan.splitlines() if line.startswith("| GAN, published"))
    assert "6.3 ± 0.5" in published and "94.8 ± 0.7" in published
    assert result.files["coverage_curves"].is_file()
    assert {g.label for g in result.groups} == {*REMEDIES, "vae"}


# -- experiment=remedies_2d ------------------------------------------------------------
METHODS = {  # method -> (model.name, pack, minibatch kernels, unrolled steps, batch size, steps)
    "gan": ("gan", 1, 0, 0, 100, 2000),
    "pacgan2": ("gan", 2, 0, 0, 200, 2000),
    "gan_minibatch": ("gan", 1, 100, 0, 100, 2000),
    "unrolled_gan": ("gan", 1, 0, 5, 100, 2000),
    "vae": ("vae", None, None, None, 100, 10000),
    "nade": ("nade", None, None, None, 100, 10000),
    "ddpm": ("ddpm", None, None, None, 100, 3000),
}


@pytest.mark.parametrize("method", list(METHODS))
def test_remedies_2d_methods_compose(method):
    cfg = compose_plain("experiment=remedies_2d", f"method={method}", "dataset=grid25", hydra=True)
    name, m, kernels, k, batch, steps = METHODS[method]
    mod = cfg.model.module
    assert cfg.model.name == name and cfg.trainer.batch_size == batch and cfg.trainer.max_steps == steps
    # coverage curves every 500 steps, the DDPM's every 1,000 (2,500 ancestral samples a seed)
    assert cfg.trainer.eval_every == (1000 if name == "ddpm" else 500)
    if name == "gan":  # every GAN row in PacGAN's setting, one remedy apart
        assert (mod.arch, mod.updates, mod.pack, mod.minibatch_kernels, mod.unrolled_steps) == (
            "pacgan2d", "simultaneous", m, kernels, k)
        assert mod.generator_optimizer.lr == 1e-4 and list(mod.discriminator_optimizer.betas) == [0.8, 0.999]
        plain = compose_plain("experiment=pacgan2d_cpu", "dataset=grid25", f"model.module.pack={m}")
        assert plain.trainer.max_steps == steps and plain.trainer.batch_size == batch
        if not (kernels or k):  # the same runs as pacgan2d_cpu's GAN and PacGAN2
            assert plain.model.module == mod and plain.dataset == cfg.dataset
    else:
        assert "arch" not in mod or mod.arch == "auto"
    assert cfg.hydra.sweeper.params.method == ",".join(METHODS)


@pytest.mark.parametrize("method", ["gan_minibatch", "unrolled_gan"])
def test_remedies_2d_gan_rows_run(compose, method):
    cfg = compose("experiment=remedies_2d", f"method={method}", "dataset=grid25", "dataset.num_train=1000",
                  "trainer.seed_batch=1", "trainer.max_steps=2", "trainer.batch_size=100", "model.module.pacgan2d_hidden=32",
                  "model.module.pacgan2d_maxout_units=16")
    metrics = train(cfg)
    assert metrics["steps"] == 2 and "g_loss" in metrics["final_losses"]
