"""Sweeps that scale out with Hydra's own plugins: the Optuna sweeper optimising a metric
that `train` returns, the submitit launcher (local executor, the same code path as
SLURM), the joblib launcher, and the experiment configs composing as sweeps."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import run_cli
from gencompare.report import compare

CONF = Path(__file__).resolve().parent.parent / "conf"
TINY = ["logger=none", "trainer.progress=false", "trainer.log_every=5", "trainer.checkpoint_every=1000",
        "trainer.sample_every=1000", "dataset.num_train=2000"]


def job_dirs(sweep: Path) -> list[Path]:
    return sorted(p.parent for p in sweep.glob("*/metrics.json"))


def test_optuna_sweep_reports_best_trial(tmp_path, data_dir):
    """4 trials of conf/hparams_search/gan_ring8.yaml. After 40 steps no sample is yet
    within 3 std of a ring mode (the config's metric is 0 for every trial), so the test
    optimises a metric that varies between trials: the final generator loss, minimised."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="pip install 'gencompare[sweep]'")
    sweep = tmp_path / "optuna"
    proc = run_cli("train", "-m", "hparams_search=gan_ring8", "hydra.sweeper.n_trials=4",
                   "hydra.sweeper.sampler.n_startup_trials=2", "optimized_metric=final_losses.g_loss",
                   "hydra.sweeper.direction=minimize", "trainer.max_steps=40", *TINY,
                   f"hydra.sweep.dir={sweep}", cwd=tmp_path, data_dir=data_dir, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = job_dirs(sweep)
    assert len(jobs) == 4
    # Hydra's Optuna sweeper writes no multirun.yaml; gencompare's SweepRecord callback does
    multirun = OmegaConf.load(sweep / "multirun.yaml")
    assert multirun.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert "hparams_search=gan_ring8" in multirun.hydra.overrides.task
    # each trial's dir names the values it tried (fixed overrides left out), the seed last
    for job in jobs:
        tried = OmegaConf.load(job / ".hydra" / "overrides.yaml")
        k = next(o for o in tried if o.startswith("model.module.k="))
        assert job.name.endswith(f"__{k.replace('=', '-')}__seed-0"), job.name
        assert "model.module.generator_optimizer.lr-" in job.name and "trainer.max_steps" not in job.name
    # train returned the named metric: the best value is the lowest final g_loss among the
    # trials' metrics.json files
    values = {j: json.loads((j / "metrics.json").read_text())["final_losses"]["g_loss"] for j in jobs}
    assert len(set(values.values())) == 4
    results = OmegaConf.load(sweep / "optimization_results.yaml")
    assert results.name == "optuna"
    assert results.best_value == pytest.approx(min(values.values()))
    params = dict(results.best_params)
    assert set(params) == {"model.module.generator_optimizer.lr", "model.module.discriminator_optimizer.lr",
                           "model.module.generator_optimizer.betas.0", "model.module.discriminator_optimizer.betas.0",
                           "model.module.k"}
    assert 1e-5 <= params["model.module.generator_optimizer.lr"] <= 3e-3
    # the trial with the best value ran with the best parameters
    cfg = OmegaConf.load(min(values, key=values.get) / "config.yaml")
    assert cfg.model.module.k == params["model.module.k"]
    assert cfg.model.module.generator_optimizer.lr == pytest.approx(params["model.module.generator_optimizer.lr"])
    assert cfg.optimized_metric == "final_losses.g_loss"


# joblib is marked slow only to keep this file near a minute; it is the same check
@pytest.mark.parametrize("launcher", ["submitit_local", pytest.param("joblib", marks=pytest.mark.slow)])
def test_parallel_launchers_run_jobs_that_compare_reads(launcher, tmp_path, data_dir):
    """submitit's local executor runs each job as its own process, exactly as on SLURM
    (hydra/launcher=submitit_slurm); joblib runs them in a local process pool."""
    sweep = tmp_path / launcher
    extra = ["hydra.launcher.timeout_min=5"] if launcher == "submitit_local" else ["hydra.launcher.n_jobs=2"]
    proc = run_cli("train", "-m", f"hydra/launcher={launcher}", *extra, "model=gan", "dataset=ring8", "seed=0,1",
                   "trainer.max_steps=5", *TINY, f"hydra.sweep.dir={sweep}", cwd=tmp_path, data_dir=data_dir,
                   timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = job_dirs(sweep)
    assert [j.name for j in jobs] == ["0_seed-0", "1_seed-1"]  # the swept values only
    assert sorted(json.loads((j / "metrics.json").read_text())["seed"] for j in jobs) == [0, 1]
    if launcher == "submitit_local":
        assert any((sweep / ".submitit").iterdir()), "submitit keeps its job files under <sweep>/.submitit"
    result = compare([sweep], out=tmp_path / "cmp")
    assert [(g.label, g.variant, len(g.runs)) for g in result.groups] == [("gan", "ring8", 2)]


def compose_experiment(*overrides: str):
    """conf/train.yaml with an experiment, without the test shrink (it would override the
    experiment's training lengths)."""
    from hydra import compose, initialize_config_dir

    import gencompare.config  # noqa: F401 - registers the schema

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


@pytest.mark.parametrize("experiment,datasets,seeds", [
    ("mode_collapse_2d", {"ring8", "grid25"}, 10),
    ("goodfellow2014", {"mnist"}, 1),
    ("stacked_mnist", {"stacked_mnist"}, 10),
])
def test_experiment_defines_its_sweep(experiment, datasets, seeds):
    """Each experiment is one command (`gencompare train -m experiment=NAME`): its sweep
    crosses the four families (and datasets, seeds), each family with its training length."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    raw = OmegaConf.load(CONF / "experiment" / f"{experiment}.yaml")  # compose() drops the hydra node
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in raw.hydra.sweeper.params.items()])
    values = {o.key_or_group: list(o.sweep_string_iterator()) if o.is_sweep_override()
              else [o.get_value_element_as_str()] for o in parsed}
    assert set(values["model"]) == {"gan", "vae", "nade", "ddpm"}
    cfg = compose_experiment(f"experiment={experiment}")
    assert set(values.get("dataset", [cfg.dataset.name])) == datasets
    # seeds swept, or stacked in each job (trainer.seed_batch, gencompare/train/seeds.py)
    assert len(values.get("seed", [cfg.seed])) * int(cfg.trainer.get("seed_batch") or 1) == seeds
    # the sweep dir, and so the W&B group of its jobs, is named after the experiment
    assert OmegaConf.to_container(raw.hydra.sweep)["dir"].endswith(f"_{experiment}")
    for model in values["model"]:
        per_family = compose_experiment(f"experiment={experiment}", f"model={model}")
        assert per_family.trainer.max_steps == raw.model.experiment_max_steps[model]
    assert compose_experiment(f"experiment={experiment}", "trainer.max_steps=7").trainer.max_steps == 7
    if experiment == "goodfellow2014":
        assert cfg.dataset.allow_offline_sample is False  # Table 1 needs the full MNIST
        assert cfg.metrics.parzen.baselines is True and cfg.metrics.parzen.num_centres == 10000
