"""The shared runner end to end: every family on every dataset, determinism, resume,
checkpoints, metrics.json, and the one-line errors for bad input."""
from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
import torch

from conftest import compose_train, needs_fashion, run_cli
from gencompare.errors import GencompareError
from gencompare.checkpoint import load_checkpoint
from gencompare.train.train import train

FAMILIES = ["gan", "vae", "nade", "ddpm"]
DATASETS = ["mnist", "ring8", "grid25", pytest.param("fashion_mnist", marks=needs_fashion)]
# the few knobs that make each family cheap enough for a 3-step CPU run
FAST = {
    "gan": [],
    "vae": ["model.module.iwae_k=4"],
    "nade": ["model.module.hidden_dim=16"],
    "ddpm": ["model.module.timesteps=20", "model.module.base_channels=8"],
}


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_trains_on_each_dataset(compose, tmp_path, family, dataset):
    cfg = compose(f"model={family}", f"dataset={dataset}", *FAST[family])
    metrics = train(cfg)
    run = tmp_path / "run"
    assert metrics["steps"] == 3 and metrics["status"] == "finished"
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["model"] == family and saved["data"]["name"] == dataset
    assert saved["parameters_total"] > 0 and saved["train_time_s"] > 0 and saved["samples_per_s"] > 0
    assert all(torch.isfinite(torch.tensor(v)) for v in saved["final_losses"].values())
    assert (run / "samples" / "samples.png").stat().st_size > 0
    assert (run / "config.yaml").is_file()
    ckpt = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert ckpt["step"] == 3 and ckpt["family"] == family


def test_all_four_families_train_in_one_sweep_on_ring8(tmp_path, data_dir):
    # a smaller evaluation than the protocol's 2,500 points: DDPM's bound costs T=1000
    # denoiser passes per point, and this test is about the sweep, not the numbers
    res = run_cli("train", "-m", "model=gan,vae,nade,ddpm", "dataset=ring8", "trainer.max_steps=5",
                  "trainer.progress=false", "logger=none", "metrics.num_samples_2d=500",
                  "metrics.likelihood.max_examples=50", "metrics.ais.enabled=false", "hydra.sweep.dir=sweep4", cwd=tmp_path, data_dir=data_dir)
    assert res.returncode == 0, res.stderr
    runs = sorted((tmp_path / "sweep4").glob("*/metrics.json"))
    assert [json.loads(p.read_text())["model"] for p in runs] == ["gan", "vae", "nade", "ddpm"]
    for p in runs:
        m = json.loads(p.read_text())
        assert m["mode_coverage"]["num_modes"] == 8
        assert (m["likelihood"]["kind"] is None) == (m["model"] == "gan")


def test_mnist_offline_variant_is_recorded(compose, tmp_path):
    metrics = train(compose("model=gan", "dataset=mnist"))
    assert metrics["variant"] == "mnist-5k"
    assert metrics["data"]["sizes"]["train"] == 4000
    assert "NOT comparable" in metrics["data"]["notes"][0]


@needs_fashion
def test_fashion_mnist_trains_on_all_60000_images(compose):
    metrics = train(compose("model=vae", "dataset=fashion_mnist"))
    assert metrics["data"]["sizes"]["train"] == 60000


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "last.ckpt")["model"]


def test_same_seed_gives_identical_losses_and_weights(tmp_path, data_dir):
    runs = []
    for name in ("a", "b"):
        cfg = compose_train(tmp_path / name, data_dir, "model=gan", "dataset=ring8", "trainer.max_steps=30", "seed=7")
        runs.append(train(cfg))
    assert runs[0]["final_losses"] == runs[1]["final_losses"]
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    other = train(compose_train(tmp_path / "c", data_dir, "model=gan", "dataset=ring8", "trainer.max_steps=30", "seed=8"))
    assert other["final_losses"] != runs[0]["final_losses"]


def test_checkpoint_resume_matches_uninterrupted_run(tmp_path, data_dir):
    base = ["model=gan", "dataset=ring8", "trainer.checkpoint_every=5", "trainer.sample_every=7", "seed=3"]
    train(compose_train(tmp_path / "full", data_dir, *base, "trainer.max_steps=20"))
    train(compose_train(tmp_path / "part", data_dir, *base, "trainer.max_steps=12"))
    train(compose_train(tmp_path / "part", data_dir, *base, "trainer.max_steps=20", "trainer.resume=true"))
    full, part = _weights(tmp_path / "full"), _weights(tmp_path / "part")
    assert all(torch.equal(full[k], part[k]) for k in full)


# SIGINT takes SIGTERM's path (signals.StopRequest) but for the exit status, which
# test_hardening_runs and test_distributed check for SIGINT in make test
@pytest.mark.parametrize("sig", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)])
def test_signal_saves_checkpoint_and_resume_ends_with_same_weights(tmp_path, data_dir, sig):
    args = ["train", "model=gan", "dataset=ring8", "logger=none", "trainer.progress=false",
            "trainer.max_steps=600", "trainer.checkpoint_every=20", "trainer.batch_size=64", "seed=5",
            "metrics=none"]  # the weights are the test: the evaluation would only add minutes
    ref = run_cli(*args, "hydra.run.dir=ref", cwd=tmp_path, data_dir=data_dir)
    assert ref.returncode == 0, ref.stderr
    proc = run_cli(*args, "hydra.run.dir=cut", cwd=tmp_path, data_dir=data_dir, wait=False)
    ckpt = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    stopped = load_checkpoint(ckpt)["step"]
    assert 0 < stopped < 600, "the signal should arrive mid-training"
    assert "trainer.resume=true" in err
    resumed = run_cli(*args, "hydra.run.dir=cut", "trainer.resume=true", cwd=tmp_path, data_dir=data_dir)
    assert resumed.returncode == 0, resumed.stderr
    a, b = _weights(tmp_path / "ref"), _weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_two_job_multirun_gives_two_run_dirs_and_two_wandb_runs(tmp_path, data_dir):
    res = run_cli("train", "-m", "model=gan,vae", "dataset=ring8", "trainer.max_steps=5", "metrics=none",
                  "trainer.progress=false", "hydra.sweep.dir=sweep", cwd=tmp_path, data_dir=data_dir)
    assert res.returncode == 0, res.stderr
    jobs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0_model-gan__seed-0", "1_model-vae__seed-0"]
    for job in jobs:
        assert json.loads((job / "metrics.json").read_text())["steps"] == 5
        offline = list((job / "wandb").glob("offline-run-*"))
        assert len(offline) == 1 and list(offline[0].glob("*.wandb")), f"no W&B run files in {job}"


def test_offline_fallback_warns_on_the_command_line(tmp_path, data_dir):
    res = run_cli("train", "model=vae", "dataset=mnist", "dataset.download=false", "trainer.max_steps=2",
                  "logger=none", "trainer.progress=false", "metrics=none", "hydra.run.dir=r", cwd=tmp_path,
                  data_dir=data_dir)
    assert res.returncode == 0, res.stderr
    assert "offline sample" in res.stderr and "mnist-5k" in res.stderr


BAD_INPUT = [
    (["model=nope"], "model=nope is not a model config; choose one of: "),
    (["dataset=nope"], "dataset=nope is not a dataset config; choose one of: "),
    (["trainer.batch_size=0"], "trainer.batch_size must be a positive integer"),
    (["model.module.generator_optimizer.lr=-0.1"], "must be a positive learning rate"),
    (["device=cuda"], "no CUDA GPU"),
    (["trainer.resume=true"], "does not exist"),
    (["trainer.batch_size=abc"], "could not be converted to Integer"),
    (["trainer.max_stpes=3"], "Key 'max_stpes' not in"),
    (["dataset.allow_offline_sample=false", "dataset.download=false"], "MNIST not found"),
]


@pytest.mark.parametrize("args,message", BAD_INPUT, ids=[a[0][0] for a in BAD_INPUT])
def test_bad_input_fails_in_one_line(tmp_path, data_dir, args, message):
    if "device=cuda" in args and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    res = run_cli("train", "logger=none", *args, "hydra.run.dir=r", cwd=tmp_path, data_dir=data_dir)
    assert res.returncode != 0
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: ") and message in lines[0]
    assert "Traceback" not in res.stderr + res.stdout
    assert not (tmp_path / "r").exists(), "a rejected command must not leave a run dir"


def test_truncated_checkpoint_and_existing_run_are_refused_without_touching_files(tmp_path, data_dir):
    args = ["train", "model=gan", "dataset=ring8", "logger=none", "trainer.progress=false",
            "trainer.max_steps=4", "hydra.run.dir=r"]
    assert run_cli(*args, cwd=tmp_path, data_dir=data_dir).returncode == 0
    run = tmp_path / "r"
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.suffix != ".log" and p.name != ".lock"}
    again = run_cli(*args, cwd=tmp_path, data_dir=data_dir)
    assert again.returncode == 2 and "already holds a run" in again.stderr
    ckpt = run / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    before[ckpt] = ckpt.read_bytes()
    bad = run_cli(*args, "trainer.max_steps=8", "trainer.resume=true", cwd=tmp_path, data_dir=data_dir)
    assert bad.returncode == 2
    lines = [ln for ln in bad.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "unreadable" in lines[0] and "Traceback" not in bad.stderr
    # the records, not the logs nor the run dir's lock (which names its last holder: gencompare.record.lock)
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.suffix != ".log" and p.name != ".lock"}
    assert after == before


def test_resume_refuses_a_checkpoint_of_another_family(tmp_path, data_dir):
    train(compose_train(tmp_path / "r", data_dir, "model=gan", "dataset=ring8"))
    with pytest.raises(GencompareError, match="holds a gan model"):
        train(compose_train(tmp_path / "r", data_dir, "model=vae", "dataset=ring8", "trainer.resume=true"))


@pytest.mark.parametrize("line, expected", [
    ("gencompare tr", {"train"}),
    ("gencompare train model=", {"model=gan", "model=vae", "model=nade", "model=ddpm", "model=pacgan2d"}),
    ("gencompare train model=vae trainer.max_s", {"trainer.max_steps="}),
])
def test_shell_completion_knows_the_subcommands(line, expected, tmp_path, data_dir):
    """Hydra's bash completion script calls `gencompare -sc query=bash` with the typed line
    in COMP_LINE; the subcommand must be completed, then skipped for Hydra's own completion."""
    proc = run_cli("-sc", "query=bash", cwd=tmp_path, data_dir=data_dir, env={"COMP_LINE": line}, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert set(proc.stdout.split()) == expected


def test_lr_warmup_ramps_every_optimizer_and_resumes_on_the_ramp(tmp_path, data_dir):
    """trainer.lr_warmup_steps=N: the update after s steps uses lr * min(s / N, 1) (the first
    one rate 0, as the DDPM code's get_warmed_up_lr); history shows it; a resumed run
    continues the ramp and ends with the weights of the uninterrupted run."""
    base = ["model=gan", "dataset=ring8", "trainer.lr_warmup_steps=4", "trainer.checkpoint_every=3", "seed=2"]
    train(compose_train(tmp_path / "full", data_dir, *base, "trainer.max_steps=7"))
    lrs = [json.loads(line) for line in (tmp_path / "full" / "history.jsonl").read_text().splitlines()]
    cfg = compose_train(tmp_path / "x", data_dir, *base)
    for name, opt in (("discriminator", cfg.model.module.discriminator_optimizer),
                      ("generator", cfg.model.module.generator_optimizer)):
        got = [h[f"train/lr/{name}"] for h in lrs]
        assert got == pytest.approx([opt.lr * min(s / 4, 1.0) for s in range(7)], rel=1e-6)
    train(compose_train(tmp_path / "part", data_dir, *base, "trainer.max_steps=3"))
    train(compose_train(tmp_path / "part", data_dir, *base, "trainer.max_steps=7", "trainer.resume=true"))
    full, part = _weights(tmp_path / "full"), _weights(tmp_path / "part")
    assert all(torch.equal(full[k], part[k]) for k in full)
    plain = train(compose_train(tmp_path / "plain", data_dir, *base[:2], *base[3:], "trainer.max_steps=7"))
    assert "lr/generator" not in plain["final_losses"] and not torch.equal(
        _weights(tmp_path / "plain")["generator.0.weight"], full["generator.0.weight"])


def test_bad_warmup_and_flip_on_points_are_one_line(tmp_path, data_dir):
    for bad, words in (("trainer.lr_warmup_steps=-1", "lr_warmup_steps must be >= 0"),
                       ("dataset.random_flip=true", "random_flip mirrors images; ring8 holds 2D points")):
        res = run_cli("train", "model=gan", "dataset=ring8", bad, "logger=none", cwd=tmp_path, data_dir=data_dir)
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert res.returncode != 0 and len(lines) == 1 and words in lines[0], res.stderr
