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


def test_sweep_job_dirs_are_named_by_swept_values_and_hold_hydra_records(tmp_path, data_dir):
    """Each job dir of `-m model=gan,vae` says which job it is (swept values, seed last),
    holds .hydra/ and goes back into an override as it is; the sweep dir has multirun.yaml."""
    res = run_cli("train", "-m", "model=gan,vae", "dataset=ring8", "trainer.max_steps=2", "trainer.batch_size=16",
                  "trainer.progress=false", "logger=none", "metrics=none", "hydra.sweep.dir=sweep",
                  cwd=tmp_path, data_dir=data_dir)
    assert res.returncode == 0, res.stderr
    sweep = tmp_path / "sweep"
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    # the fixed overrides (dataset, trainer.*, logger, metrics) stay out of the names
    assert jobs == ["0_model-gan__seed-0", "1_model-vae__seed-0"]
    for name, model in zip(jobs, ("gan", "vae")):
        hyd = sweep / name / ".hydra"
        assert f"model={model}" in yaml.safe_load((hyd / "overrides.yaml").read_text())
        hydra = yaml.safe_load((hyd / "hydra.yaml").read_text())["hydra"]
        assert hydra["mode"] == "MULTIRUN" and hydra["job"]["override_dirname"] == f"model-{model}"
        assert yaml.safe_load((sweep / name / "config.yaml").read_text())["model"]["name"] == model
    multirun = yaml.safe_load((sweep / "multirun.yaml").read_text())
    assert "model=gan,vae" in multirun["hydra"]["overrides"]["task"]
    # compare finds both jobs; a job dir is a valid `run=` value without quoting
    from gencompare.report import compare

    result = compare([sweep], out=tmp_path / "cmp")
    assert sorted((g.label, len(g.runs)) for g in result.groups) == [("gan", 1), ("vae", 1)]
    res = run_cli("sample", f"run=sweep/{jobs[1]}", "n=8", "device=cpu", cwd=tmp_path, data_dir=data_dir)
    assert res.returncode == 0, res.stderr
    assert (sweep / jobs[1] / "samples" / "sample_n8_s0.png").is_file()


def test_job_dirname_is_safe_unique_and_keeps_the_seed():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from gencompare.sweep_dirs import MAX_NAME, job_dirname

    assert job_dirname(3, "", 7) == "3_seed-7"
    assert job_dirname(0, "dataset-grid25__model-vae__seed-2", 2) == "0_dataset-grid25__model-vae__seed-2"
    # a path or a list value cannot make a sub-folder or break the override grammar
    odd = job_dirname(1, "dataset.path-~/my photos__model.module.betas-[0.5,0.9]", 0)
    assert "/" not in odd and " " not in odd and "," not in odd
    # Optuna's long float values: capped, the seed kept
    assert job_dirname(0, "model.module.lr-0.000123456789012345__model.module.k-2", 1) == \
        "0_model.module.lr-0.0001235__model.module.k-2__seed-1"  # Optuna's floats, shortened
    long = job_dirname(12, "__".join(f"model.module.param_{i}.lr-0.000123456789012345" for i in range(12)), 5)
    assert len(long) <= MAX_NAME and long.startswith("12_model.module.param_0") and long.endswith("...__seed-5")
    for name in (odd, long, job_dirname(0, "model.module.lr-1e-05", 0)):
        (parsed,) = OverridesParser.create().parse_overrides([f"run=outputs/multirun/2026-11-28/18-10-00/{name}"])
        assert not parsed.is_sweep_override()
        assert parsed.value() == f"outputs/multirun/2026-11-28/18-10-00/{name}"
