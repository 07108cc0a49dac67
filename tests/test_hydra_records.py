"""Hydra's records in a run dir: .hydra/ (config, hydra, overrides), a job log that holds
gencompare's lines, and ``--cfg job --resolve``."""
from __future__ import annotations

import yaml

from conftest import run_cli


def test_run_dir_has_hydra_records_and_a_job_log(tmp_path, data_dir):
    res = run_cli("train", "model=gan", "dataset=ring8", "trainer.max_steps=20", "trainer.log_every=10",
                  "trainer.batch_size=16", "trainer.progress=true", "logger=none", "metrics=none",
                  "hydra.run.dir=r", "+hydra.job.env_set.GENCOMPARE_TEST=1", cwd=tmp_path, data_dir=data_dir)
    assert res.returncode == 0, res.stderr
    hyd = tmp_path / "r" / ".hydra"
    assert yaml.safe_load((hyd / "config.yaml").read_text())["model"]["name"] == "gan"
    overrides = yaml.safe_load((hyd / "overrides.yaml").read_text())
    assert "dataset=ring8" in overrides and "trainer.max_steps=20" in overrides
    hydra = yaml.safe_load((hyd / "hydra.yaml").read_text())["hydra"]
    assert "+hydra.job.env_set.GENCOMPARE_TEST=1" in hydra["overrides"]["hydra"]  # hydra.* overrides recorded
    log = (tmp_path / "r" / "train.log").read_text()
    assert "gan/ring8 step 20/20" in log and "eta" in log  # the progress lines off a terminal
    # the record contract's files stay where they were
    assert (tmp_path / "r" / "config.yaml").is_file() and (tmp_path / "r" / "overrides.yaml").is_file()


def test_failed_run_leaves_no_dir_and_cfg_resolve_works(tmp_path, data_dir):
    res = run_cli("train", "model=gan", "dataset=ring8", "trainer.resume=true", "logger=none",
                  "hydra.run.dir=bad", cwd=tmp_path, data_dir=data_dir)
    assert res.returncode == 2 and "error:" in res.stderr
    assert not (tmp_path / "bad").exists()  # its log held only the error: removed with the dir
    res = run_cli("train", "--cfg", "job", "--resolve", "logger=none", cwd=tmp_path, data_dir=data_dir)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    cfg = yaml.safe_load(res.stdout)
    assert cfg["model"]["name"] == "gan" and cfg["paths"]["output_dir"] is None
    assert not (tmp_path / "outputs").exists()
