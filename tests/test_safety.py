"""Nothing lost, nothing executed: what a user relies on when run dirs are shared, runs
start together, sweeps meet a bad job, signals and faults arrive at any moment. Each
failure is one line on stderr and no traceback."""
from __future__ import annotations

import errno
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import compose_train, run_cli
from gencompare.checkpoint import load_checkpoint
from gencompare.errors import GencompareError
from gencompare.record import RunDir
from gencompare.train.train import train
from gencompare.trust import check_targets, is_safe_target, search_path, trusted_targets

TINY = ["model=gan", "dataset=ring8", "logger=none", "trainer.progress=false", "metrics=none"]
WALL_CLOCK = {"train_time_s", "steps_per_s", "samples_per_s", "sample_time_1000_s"}


def one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def train_tiny(tmp_path, data_dir, name="run", *extra):
    res = run_cli("train", *TINY, "trainer.max_steps=4", f"hydra.run.dir={name}", *extra, cwd=tmp_path,
                  data_dir=data_dir)
    assert res.returncode == 0, res.stderr
    return tmp_path / name


class _Payload:
    """Unpickling this runs ``os.system`` (what a malicious checkpoint would carry)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# ---------------------------------------------------------------- nothing executed
def test_a_checkpoint_that_would_run_code_is_refused_by_eval_and_resume(tmp_path, data_dir):
    run = train_tiny(tmp_path, data_dir)
    marker = tmp_path / "pwned"
    ckpt = RunDir(run).checkpoint
    state = torch.load(ckpt, weights_only=True)
    state["payload"] = _Payload(marker)
    torch.save(state, ckpt)

    ev = run_cli("eval", f"run={run}", "logger=none", "metrics=fast", cwd=tmp_path, data_dir=data_dir)
    assert ev.returncode == 2 and "trust_checkpoint=true" in one_line(ev.stderr)
    res = run_cli("train", *TINY, "trainer.max_steps=8", f"hydra.run.dir={run}", "trainer.resume=true",
                  cwd=tmp_path, data_dir=data_dir)
    assert res.returncode == 2 and "needs full unpickling" in one_line(res.stderr)
    assert not marker.exists()


def test_a_run_dirs_config_cannot_choose_the_code_eval_runs(tmp_path, data_dir):
    run = train_tiny(tmp_path, data_dir)
    marker = tmp_path / "written"
    cfg = RunDir(run).config
    text = cfg.read_text().replace("_target_: gencompare.models.gan.GAN",
                                   f"_target_: builtins.open\n    file: {marker}\n    mode: w")
    assert text != cfg.read_text()
    cfg.write_text(text)
    ev = run_cli("eval", f"run={run}", "logger=none", "metrics=fast", cwd=tmp_path, data_dir=data_dir)
    assert ev.returncode == 2
    assert "_target_=builtins.open is not a gencompare family" in one_line(ev.stderr)
    assert not marker.exists()


EXTENSION_CONF = Path(__file__).resolve().parent / "extension" / "conf"


@pytest.mark.parametrize("target", ["os.system", "builtins.exec", "subprocess.run", "toy_family.GaussianMixture"])
def test_a_target_no_config_of_the_user_names_is_refused_in_one_line(target):
    config = {"model": {"name": "gan", "module": {"_target_": target, "optimizer": {"_target_": "torch.optim.Adam"}}}}
    with pytest.raises(GencompareError) as err:
        check_targets(config, "run/config.yaml")
    assert str(err.value).startswith(f"run/config.yaml: model.module._target_={target} is not a gencompare family")
    assert "\n" not in str(err.value)
    assert "toy_family" not in sys.modules  # deciding never imports what a run dir names


def test_the_shipped_families_optimizers_and_schedulers_are_trusted():
    for target in ("gencompare.models.gan.GAN", "gencompare.models.vae.VAE", "gencompare.models.nade.build",
                   "gencompare.models.ddpm.DDPM", "torch.optim.SGD", "torch.optim.lr_scheduler.StepLR"):
        assert is_safe_target(target), target
    # Hydra's own settings (a sweeper, a callback) are configs of Hydra's, not of a run
    assert not is_safe_target("gencompare.sweep_dirs.SweepRecord")
    assert not is_safe_target("torch.optim.Optimizer.__init__") and not is_safe_target("torch.load")


def test_a_family_on_the_users_search_path_is_trusted_without_importing_it(tmp_path):
    path = (*search_path(), ("hydra.searchpath in command-line", f"file://{EXTENSION_CONF}"))
    trusted = trusted_targets(path)
    assert "toy_family.GaussianMixture" in trusted and "gencompare.models.gan.GAN" in trusted
    assert is_safe_target("toy_family.GaussianMixture", trusted)
    assert not is_safe_target("toy_family.GaussianMixture")  # not on the default search path
    assert not is_safe_target("os.system", trusted)
    assert "toy_family" not in sys.modules
    # a folder that does not exist, or a file that is no YAML, adds nothing
    broken = tmp_path / "conf" / "model"
    broken.mkdir(parents=True)
    (broken / "broken.yaml").write_text("_target_: [unclosed\n")
    assert trusted_targets((*search_path(), ("hydra.searchpath in command-line", f"file://{tmp_path / 'conf'}"))) == \
        trusted_targets(search_path())
    assert trusted_targets((*search_path(), ("hydra.searchpath in command-line", "file:///nonexistent"))) == \
        trusted_targets(search_path())


def test_checkpoints_load_without_pickle_and_resume_bit_identically(tmp_path, data_dir):
    base = [*TINY, "trainer.checkpoint_every=5", "trainer.log_every=1", "seed=3"]
    full = train(compose_train(tmp_path / "full", data_dir, *base, "trainer.max_steps=12"))
    train(compose_train(tmp_path / "part", data_dir, *base, "trainer.max_steps=7"))
    ckpt = torch.load(RunDir(tmp_path / "part").checkpoint, weights_only=True)  # raises if it needed pickle
    assert ckpt["step"] == 7
    part = train(compose_train(tmp_path / "part", data_dir, *base, "trainer.max_steps=12", "trainer.resume=true"))
    a = load_checkpoint(RunDir(tmp_path / "full").checkpoint)["model"]
    b = load_checkpoint(RunDir(tmp_path / "part").checkpoint)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert part["final_losses"] == full["final_losses"]


# ------------------------------------------------------------------ claimed run dirs
def test_two_runs_started_together_get_two_consistent_run_dirs(tmp_path, data_dir):
    args = ["train", *TINY, "trainer.max_steps=1500", "trainer.checkpoint_every=100000", "hydra.run.dir=same"]
    procs = [run_cli(*args, cwd=tmp_path, data_dir=data_dir, wait=False) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e for _, e in outs]
    dirs = sorted(p.parent for p in tmp_path.glob("same*/metrics.json"))
    assert [d.name for d in dirs] == ["same", "same_1"]
    for d in dirs:
        run = RunDir(d)
        metrics = json.loads(run.metrics.read_text())
        steps = [json.loads(ln)["step"] for ln in run.history.read_text().splitlines()]
        assert steps == sorted(set(steps)) and steps[-1] == metrics["steps"] == 1500
        assert load_checkpoint(run.checkpoint)["step"] == 1500
        assert str(d) in run.config.read_text() or d.name in run.config.read_text()
    assert any("taken by a run that started at the same time" in e for _, e in outs)


# --------------------------------------------------------------------------- sweeps
def test_a_sweep_with_a_bad_value_is_refused_before_any_job_starts(tmp_path, data_dir):
    res = run_cli("train", "-m", *TINY, "trainer.batch_size=0,100", "hydra.sweep.dir=sweep",
                  cwd=tmp_path, data_dir=data_dir)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "nothing launched" in res.stderr
    assert "trainer.batch_size=0: trainer.batch_size must be a positive integer" in res.stderr
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_a_job_failing_at_run_time_does_not_stop_the_sweep(tmp_path, data_dir, launcher):
    extra = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"] if launcher == "joblib" else []
    # 60,000 > the 50,000 ring8 training points: known only once the data is loaded
    res = run_cli("train", "-m", *TINY, "trainer.max_steps=4", "trainer.batch_size=60000,100,50",
                  "hydra.sweep.dir=sweep", *extra, cwd=tmp_path, data_dir=data_dir)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "1 sweep job(s) failed" in res.stderr.splitlines()[-1]
    jobs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    failed = [j for j in jobs if (j / RunDir.FAILURE).is_file()]
    finished = [j for j in jobs if (j / RunDir.METRICS).is_file()]
    assert len(failed) == 1 and len(finished) == 2
    assert "exceeds the 50000 training examples" in json.loads((failed[0] / RunDir.FAILURE).read_text())["error"]
    cmp = run_cli("compare", str(tmp_path / "sweep"), "--out", str(tmp_path / "cmp"), cwd=tmp_path, data_dir=data_dir)
    assert cmp.returncode == 0, cmp.stderr
    assert f"{failed[0]}: FAILED: trainer.batch_size=60000 exceeds" in cmp.stderr


# -------------------------------------------------------------------------- signals
def _wait_for(path: Path, text: str, proc, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if path.is_file() and text in path.read_text():
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in {path}")


# SIGINT takes the same path as SIGTERM (signals.StopRequest) but for the exit status; ~2 min each
@pytest.mark.parametrize("sig", [pytest.param(signal.SIGINT, marks=pytest.mark.slow), signal.SIGTERM])
def test_a_signal_during_the_final_evaluation_and_its_resume(tmp_path, data_dir, sig):
    args = ["train", "model=ddpm", "dataset=ring8", "model.module.timesteps=100", "logger=none",
            "trainer.progress=false", "trainer.max_steps=6", "metrics.likelihood.max_examples=100",
            "metrics.num_samples_2d=2500", "seed=4"]
    ref = run_cli(*args, "hydra.run.dir=ref", cwd=tmp_path, data_dir=data_dir)
    assert ref.returncode == 0, ref.stderr
    log = tmp_path / "cut.stderr"
    env = {**os.environ, "GENCOMPARE_DATA_DIR": str(data_dir), "GENCOMPARE_CACHE_DIR": str(data_dir / "cache"),
           "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    import subprocess

    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "gencompare.cli", *args, "hydra.run.dir=cut"],
                                cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _wait_for(log, "evaluating", proc)
        proc.send_signal(sig)
        proc.wait(timeout=120)
    assert proc.returncode == 128 + sig
    message = one_line(log.read_text().split("evaluating ...", 1)[1])
    assert "after training (6 steps, checkpoint saved)" in message and "trainer.resume=true" in message
    assert not (tmp_path / "cut" / RunDir.METRICS).exists()
    resumed = run_cli(*args, "hydra.run.dir=cut", "trainer.resume=true", cwd=tmp_path, data_dir=data_dir)
    assert resumed.returncode == 0, resumed.stderr
    a = json.loads((tmp_path / "ref" / RunDir.METRICS).read_text())
    b = json.loads((tmp_path / "cut" / RunDir.METRICS).read_text())
    for m in (a, b):
        for key in WALL_CLOCK:
            m.pop(key, None)
    assert a == b


# ----------------------------------------------------------------------- resume checks
def test_resume_onto_another_dataset_is_refused(tmp_path, data_dir):
    run = train_tiny(tmp_path, data_dir)
    res = run_cli("train", *TINY, "dataset=grid25", "trainer.max_steps=8", f"hydra.run.dir={run}",
                  "trainer.resume=true", cwd=tmp_path, data_dir=data_dir)
    assert res.returncode == 2 and "was trained on ring8, not grid25" in one_line(res.stderr)


def test_resume_with_another_architecture_is_refused(tmp_path, data_dir):
    fast = ["model=vae", "dataset=mnist", "model.module.iwae_k=4", "trainer.batch_size=16"]
    train(compose_train(tmp_path / "r", data_dir, *TINY, *fast, "trainer.max_steps=2"))
    with pytest.raises(GencompareError, match="holds a mlp network, not conv"):
        train(compose_train(tmp_path / "r", data_dir, *TINY, *fast, "model.module.arch=conv", "trainer.max_steps=4",
                            "trainer.resume=true"))


def test_a_partial_history_line_is_dropped_with_a_warning(tmp_path, data_dir):
    run = train_tiny(tmp_path, data_dir)
    history = RunDir(run).history
    history.write_text(history.read_text() + '{"step": 9, "train/d_lo')
    res = run_cli("train", *TINY, "trainer.max_steps=8", f"hydra.run.dir={run}", "trainer.resume=true",
                  cwd=tmp_path, data_dir=data_dir)
    assert res.returncode == 0, res.stderr
    assert "is not a complete record" in res.stderr and "Traceback" not in res.stderr
    steps = [json.loads(ln)["step"] for ln in history.read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 8


# -------------------------------------------------------------------------- faults
def test_a_full_disk_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, data_dir, monkeypatch):
    import gencompare.checkpoint as checkpoint_module

    real_save, calls = torch.save, []

    def save_until_full(obj, f, *args, **kwargs):
        calls.append(f)
        if len(calls) > 1:  # the first checkpoint fits, the second meets a full disk
            Path(f).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module.torch, "save", save_until_full)
    cfg = compose_train(tmp_path / "r", data_dir, *TINY, "trainer.max_steps=10", "trainer.checkpoint_every=5")
    with pytest.raises(GencompareError, match=r"cannot write .*last\.ckpt: No space left on device"):
        train(cfg)
    monkeypatch.setattr(checkpoint_module.torch, "save", real_save)
    run = RunDir(tmp_path / "r")
    assert load_checkpoint(run.checkpoint)["step"] == 5
    assert [p.name for p in run.checkpoints_dir.iterdir()] == ["last.ckpt"]  # no temp file left


@pytest.mark.parametrize("where", ["paths.log_dir", "hydra.run.dir", "checkpoints"])
def test_a_file_where_a_folder_belongs_fails_before_training(tmp_path, data_dir, where):
    blocker = tmp_path / "blocker"
    if where == "checkpoints":
        (tmp_path / "r").mkdir()
        blocker = tmp_path / "r" / "checkpoints"
        extra = ["hydra.run.dir=r"]
    else:
        extra = [f"{where}={blocker}"] if where == "hydra.run.dir" else [f"{where}={blocker}", "hydra.run.dir=r"]
        if where == "paths.log_dir":
            extra = [f"paths.log_dir={blocker}"]
    blocker.write_text("not a folder")
    res = run_cli("train", *TINY, "trainer.max_steps=4", *extra, cwd=tmp_path, data_dir=data_dir)
    assert res.returncode == 2
    assert f"{blocker}" in one_line(res.stderr) and "folder" in res.stderr


def test_a_batch_larger_than_the_data_leaves_no_run_dir(tmp_path, data_dir):
    res = run_cli("train", *TINY, "trainer.batch_size=60000", "hydra.run.dir=r", cwd=tmp_path, data_dir=data_dir)
    assert res.returncode == 2 and "exceeds the 50000 training examples" in one_line(res.stderr)
    assert not (tmp_path / "r").exists()
    full = run_cli("train", *TINY, "trainer.batch_size=60000", "hydra.run.dir=r", cwd=tmp_path, data_dir=data_dir,
                   env={"HYDRA_FULL_ERROR": "1"})
    assert full.returncode != 0 and "Traceback" in full.stderr  # the traceback is there when asked for


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the socket is: nothing listens there


def test_wandb_online_without_a_reachable_server_falls_back_to_offline(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from gencompare.tracking import make_tracker

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = OmegaConf.create({"name": "wandb", "project": "gencompare-test", "entity": None, "mode": "online",
                               "run_name": None, "group": None, "tags": []})
    t0 = time.perf_counter()
    with make_tracker(logger, run_dir=tmp_path, config={}, default_name="outage", group=None, tags=[]) as tracker:
        tracker.log({"train/loss": 1.0}, step=1)
    elapsed = time.perf_counter() - t0
    offline = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(offline) == 1 and offline[0].stat().st_size > 0
    assert elapsed < 30, f"took {elapsed:.0f} s"


def test_a_wandb_dir_that_cannot_be_written_is_one_line_and_training_goes_on(tmp_path, data_dir, monkeypatch,
                                                                             capsys):
    import wandb

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(tmp_path / "r" / "wandb"))

    monkeypatch.setattr(wandb, "init", refuse)
    metrics = train(compose_train(tmp_path / "r", data_dir, *TINY, "logger=wandb", "logger.mode=offline",
                                  "trainer.max_steps=4"))
    assert metrics["status"] == "finished"
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "W&B" in ln]
    assert len(lines) == 1 and "Permission denied" in lines[0] and "continuing without tracking" in lines[0]


def test_eval_on_a_corrupt_metrics_json_is_one_line(tmp_path, data_dir):
    run = train_tiny(tmp_path, data_dir)
    RunDir(run).metrics.write_text('{"model": "gan", "steps": ')
    ev = run_cli("eval", f"run={run}", "logger=none", "metrics=fast", cwd=tmp_path, data_dir=data_dir)
    assert ev.returncode == 2 and "corrupt JSON" in one_line(ev.stderr)
