"""Experiments that are sweeps run as sweeps without -m; a missing sweeper or launcher
plugin is one line naming the extra that installs it."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import gencompare.config  # noqa: F401 - registers the schema
from gencompare import cli, precheck
from gencompare.errors import GencompareError
from conftest import CONF_DIR, run_cli


@pytest.mark.parametrize("experiment", ["mode_collapse_2d", "goodfellow2014", "stacked_mnist", "pacgan2d"])
def test_sweep_experiments_force_multirun(experiment):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert cli._is_multirun([f"experiment={experiment}"])
    assert not cli._is_multirun(["experiment=nade_mnist"])


def test_experiment_without_m_runs_as_a_sweep(tmp_path, data_dir):
    res = run_cli("train", "experiment=mode_collapse_2d", "hydra.sweeper.params.model=gan",
                  "hydra.sweeper.params.dataset=ring8", "trainer.seed_batch=2", "trainer.max_steps=2",
                  "logger=none", "metrics=none", "trainer.progress=false", "hydra.sweep.dir=sweep",
                  cwd=tmp_path, data_dir=data_dir)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "sweep" / "multirun.yaml").is_file()
    jobs = sorted(p.parent.name for p in (tmp_path / "sweep").glob("*/metrics.json"))
    assert len(jobs) == 2 and [j[-1] for j in jobs] == ["0", "1"]  # one job, its two stacked seeds
    assert not (tmp_path / "outputs" / "runs").exists()  # not a single run on MNIST


def test_missing_plugin_is_one_line_naming_the_extra(tmp_path, data_dir, monkeypatch):
    res = run_cli("train", "-m", "hydra/sweeper=nope", cwd=tmp_path, data_dir=data_dir)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert "sweeper 'nope' is not installed" in lines[0] and "gencompare[sweep]" in lines[0]
    # the Optuna sweeper chosen inside hparams_search's defaults, on a machine without it
    monkeypatch.setattr(precheck, "_installed_plugins", lambda: {"hydra/sweeper": {"basic"}, "hydra/launcher": {"basic"}})
    with pytest.raises(GencompareError, match=r"hparams_search=gan_ring8: the Hydra sweeper 'optuna' is not "
                                              r"installed \(installed: basic\); pip install 'gencompare\[sweep\]'"):
        cli.precheck("train", ["hparams_search=gan_ring8"])
    with pytest.raises(GencompareError, match="launcher 'submitit_slurm' is not installed.*gencompare\\[sweep\\]"):
        cli.precheck("train", ["-m", "hydra/launcher=submitit_slurm"])


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml")))
def test_every_experiment_composes(experiment):
    """`gencompare train experiment=<name>` composes before any sweep starts: an experiment
    that sets a dataset's own key (num_train of the 2D mixtures) names that dataset too."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        compose(config_name="train", overrides=[f"experiment={experiment}"], return_hydra_config=True)
