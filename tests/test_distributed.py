"""Data-parallel training on 2 CPU processes (gloo), issue 22: the two ways to start
(``trainer.devices=2`` and torchrun), one run dir and one record, and the same model as one
process.

The weights tolerance, ``WEIGHT_ATOL``: 2 ranks compute the same gradients as one process
except for the order of float sums (each rank's mean over its half, then DDP's average of
the two, against one mean over the batch), a relative difference of a few float32 ulps per
step. Measured after 50 steps on ring8 (2026-12-03): at most 2.2e-7 in any weight (DDPM's
EMA; VAE 2.0e-7, NADE 1.2e-7, GAN 6.7e-8, GAN k=2 8.2e-8), with weights of magnitude up to
18 (RNADE's c). One Adam step moves a weight by about its learning rate (1e-4 to 2e-4 here),
so a wrong batch slice or noise draw shows as 1e-4 or more after a single step: 1e-5 (45x
the measured rounding) separates the two.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT, compose_train, run_cli
from gencompare.checkpoint import load_checkpoint
from gencompare.launch import scratch_dir, strip_local_rank
from gencompare.models.base import BatchShard, batch_shard, draw_examples
from gencompare.train.train import train

WEIGHT_ATOL = 1e-5
TWO_RANKS = ["dataset=ring8", "trainer.max_steps=50", "trainer.batch_size=64", "trainer.log_every=10"]
CASES = {  # the paper's GAN (k = 1) and k = 2 discriminator steps; RNADE on ring8 (its data-dependent init)
    "vae": ["model=vae", *TWO_RANKS],
    "nade": ["model=nade", *TWO_RANKS],
    "ddpm": ["model=ddpm", "model.module.timesteps=100", *TWO_RANKS],
    "gan": ["model=gan", *TWO_RANKS],
    "gan_k2": ["model=gan", "model.module.k=2", *TWO_RANKS],
    # the paper's MNIST nets: the maxout discriminator's dropout masks (base.ExampleDropout)
    "gan_mnist": ["model=gan", "dataset=mnist", *TWO_RANKS[1:]],
}


def _env(data_dir: Path) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "GENCOMPARE_DATA_DIR": str(data_dir),
            "GENCOMPARE_CACHE_DIR": str(data_dir / "cache"), "WANDB_MODE": "disabled"}


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "last.ckpt")["model"]


def _assert_same_model(one: Path, two: Path, what: str) -> None:
    a, b = _weights(one), _weights(two)
    assert a.keys() == b.keys()
    for key in a:
        if a[key].is_floating_point():
            diff = (a[key].double() - b[key].double()).abs().max().item()
            assert diff <= WEIGHT_ATOL, f"{what}: {key} differs by {diff:.3g} from the one-process run's"
        else:
            assert torch.equal(a[key], b[key]), f"{what}: {key}"


def _one_process(run: Path, data_dir: Path, *overrides: str) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(compose_train(run, data_dir, *overrides))
    finally:
        torch.set_num_threads(threads)


def _run_dirs(log_dir: Path) -> list[Path]:
    return [p.parent for p in log_dir.rglob(".gencompare-run")]


# -- the mechanism, without processes -------------------------------------------------------
def test_ranks_draw_their_rows_of_the_global_noise():
    """Each rank's draw under its BatchShard is its rows of one process's draw for the
    global batch; outside a shard, the draw is the plain one."""
    torch.manual_seed(3)
    whole = torch.randn(8, 5)
    parts = []
    for rank in range(2):
        torch.manual_seed(3)
        with batch_shard(BatchShard(rank, 2)):
            parts.append(draw_examples(lambda m: torch.randn(m, 5), 4))
    assert torch.equal(torch.cat(parts), whole)
    torch.manual_seed(3)
    assert torch.equal(draw_examples(lambda m: torch.randn(m, 5), 8), whole)


def test_legacy_local_rank_flag_is_dropped_before_hydra(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert strip_local_rank(["--local_rank=1", "train", "model=vae"]) == ["train", "model=vae"]
    assert os.environ["LOCAL_RANK"] == "1"
    assert strip_local_rank(["train", "--local-rank", "0", "seed=1"]) == ["train", "seed=1"]


# -- refused in one line before any process starts ------------------------------------------
@pytest.mark.parametrize(("args", "message"), [
    (["trainer.seed_batch=2"], "trainer.seed_batch=2 with 2 processes is not supported"),
    (["-m", "seed=0,1"], "a sweep (-m) trains each job in one process"),
    (["model=gan", "model.module.unrolled_steps=2"], "model.module.unrolled_steps=2 with 2 processes"),
    (["trainer.batch_size=63"], "trainer.batch_size=63 does not split over 2 processes"),
    (["trainer.sync_batchnorm=true", "device=cpu"], "trainer.sync_batchnorm=true needs CUDA"),
])
def test_what_two_processes_cannot_train_is_refused_in_one_line(tmp_path, data_dir, args, message):
    result = run_cli("train", "trainer.devices=2", "model=vae", "dataset=ring8", "logger=none",
                     f"paths.log_dir={tmp_path / 'logs'}", *args, cwd=tmp_path, data_dir=data_dir, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "logs").exists() or not _run_dirs(tmp_path / "logs")


# -- two processes -----------------------------------------------------------------------------
def test_devices_2_is_one_run_with_the_one_process_model(tmp_path, data_dir):
    """The issue's acceptance command: 2 ranks from inside `gencompare train`, one run dir
    (one .hydra/, metrics.json with world_size 2, history.jsonl), rank 1 silent, no scratch
    dir left, and the weights of one process trained on the same global batches."""
    logs = tmp_path / "logs"
    before = {p.name for p in Path("/tmp").glob("gencompare-rank*")}
    result = subprocess.run(
        [sys.executable, "-m", "gencompare", "train", "trainer.devices=2", "model=vae", "dataset=ring8",
         "trainer.max_steps=50", "logger=none", "metrics=fast", "trainer.progress=false", f"paths.log_dir={logs}"],
        cwd=tmp_path, env=_env(data_dir), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = _run_dirs(logs)
    assert len(runs) == 1 and len(list((logs / "runs").glob("*/*"))) == 1, runs  # no stray dir of rank 1
    run = runs[0]
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["world_size"], metrics["batch_size"], metrics["batch_size_per_rank"]) == (2, 100, 50)
    assert (run / ".hydra" / "config.yaml").is_file()
    assert len((run / "history.jsonl").read_text().splitlines()) == 1  # log_every 50: one record, rank 0's
    assert result.stderr.count("done:") == 1 and result.stdout.count("modes captured") == 1, result.stderr
    assert {p.name for p in Path("/tmp").glob("gencompare-rank*")} <= before  # the scratch dir went
    _one_process(tmp_path / "one", data_dir, "model=vae", "dataset=ring8", "trainer.max_steps=50",
                 "trainer.batch_size=100")
    _assert_same_model(tmp_path / "one", run, "vae, trainer.devices=2")


def test_torchrun_form_is_one_run(tmp_path, data_dir):
    logs = tmp_path / "logs"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "gencompare",
         "train", "model=gan", "dataset=ring8", "trainer.max_steps=20", "logger=none", "metrics=none",
         "trainer.progress=false", f"paths.log_dir={logs}"],
        cwd=tmp_path, env=_env(data_dir), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = _run_dirs(logs)
    assert len(runs) == 1, runs
    assert json.loads((runs[0] / "metrics.json").read_text())["world_size"] == 2
    assert result.stderr.count("done:") == 1, result.stderr


def test_two_ranks_train_the_one_process_model_for_every_family(tmp_path, data_dir):
    """VAE, RNADE, DDPM and the GAN (k = 1 and 2) after 50 steps on 2 gloo ranks have the
    weights of one process trained on the same global batch, to WEIGHT_ATOL."""
    out = tmp_path / "ddp"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(ROOT / "tests" / "distributed_worker.py"), str(out), str(data_dir), json.dumps(CASES)],
        cwd=tmp_path, env=_env(data_dir), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for name, overrides in CASES.items():
        _one_process(out / name / "one", data_dir, *overrides)
        _assert_same_model(out / name / "one", out / name / "rank0", name)


@pytest.mark.parametrize("rank", [0, 1])
def test_an_error_names_its_rank(monkeypatch, capsys, tmp_path, rank):
    """Rank 0 reports through the command's one-line error (prefixed); another rank, whose
    console is silent, writes its line to stderr itself and exits 2."""
    from omegaconf import OmegaConf

    from gencompare.errors import GencompareError
    from gencompare.launch import on_rank

    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", "2")

    def task(cfg):
        raise GencompareError("bad input")

    cfg = OmegaConf.create({"paths": {"output_dir": str(tmp_path)}})
    if rank == 0:
        with pytest.raises(GencompareError, match="^rank 0: bad input$"):
            on_rank(task)(cfg)
    else:
        with pytest.raises(SystemExit) as exc:
            on_rank(task)(cfg)
        assert exc.value.code == 2
        assert capsys.readouterr().err == "error: rank 1: bad input\n"


def _two_ranks(tmp_path: Path, data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "gencompare", "train", "trainer.devices=2", *args],
                            cwd=tmp_path, env=_env(data_dir), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_resume_on_two_ranks_is_bit_identical_and_one_process_may_continue(tmp_path, data_dir):
    """A 2-rank run stopped at step 12 and resumed to 20 on 2 ranks ends with the weights of
    an uninterrupted 2-rank run bit for bit (rank 0's checkpoint is every rank's state:
    equal weights, optimizer states and global RNG). Another world size is allowed: one
    process continues the same checkpoint to the same model, up to float sums."""
    import shutil

    base = ["model=gan", "dataset=ring8", "logger=none", "metrics=none", "trainer.progress=false",
            "trainer.batch_size=64"]
    _two_ranks(tmp_path, data_dir, *base, "trainer.max_steps=20", f"hydra.run.dir={tmp_path / 'full'}")
    _two_ranks(tmp_path, data_dir, *base, "trainer.max_steps=12", f"hydra.run.dir={tmp_path / 'part'}")
    shutil.copytree(tmp_path / "part", tmp_path / "part1")
    _two_ranks(tmp_path, data_dir, *base, "trainer.max_steps=20", "trainer.resume=true",
               f"hydra.run.dir={tmp_path / 'part'}")
    full, part = _weights(tmp_path / "full"), _weights(tmp_path / "part")
    assert all(torch.equal(full[k], part[k]) for k in full), "resumed on 2 ranks: weights differ bit-wise"
    _one_process(tmp_path / "part1", data_dir, *base, "trainer.max_steps=20", "trainer.resume=true")
    _assert_same_model(tmp_path / "full", tmp_path / "part1", "a 2-rank checkpoint continued by one process")


def _rank_pids(parent: int) -> dict[int, int]:
    """rank -> pid of the ranks the launcher process ``parent`` started (from their environment)."""
    out = {}
    for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
        env = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        rank = next((int(e.split(b"=", 1)[1]) for e in env if e.startswith(b"RANK=")), None)
        if rank is not None:
            out[rank] = int(child)
    return out


def test_a_rank_killed_ends_the_job_in_one_line(tmp_path, data_dir):
    """SIGKILL of rank 1 mid-training: rank 0's collective fails at once (no hang until the
    collective timeout), and the command ends with exit status 1 and one line naming rank 1."""
    import signal
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "gencompare", "train", "trainer.devices=2", "model=gan", "dataset=ring8",
         "trainer.max_steps=10000000", "logger=none", "metrics=none", "trainer.progress=false",
         f"paths.log_dir={tmp_path / 'logs'}"],
        cwd=tmp_path, env=_env(data_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in proc.stderr:  # rank 0 says where it trains once both ranks joined
            lines.append(line)
            if "run dir" in line:
                break
        time.sleep(2)
        ranks = _rank_pids(proc.pid)
        assert set(ranks) == {0, 1}, (ranks, lines)
        os.kill(ranks[1], signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 1
    errors = [ln for ln in err.splitlines() if ln.strip()]
    assert errors == ["error: rank 1 was killed by SIGKILL; the job stopped"], err[-2000:]


def test_torchrun_restart_resumes_from_the_checkpoint(tmp_path, data_dir):
    """torchrun --max-restarts=1 and trainer.resume=auto: SIGKILL of rank 1 after the first
    checkpoint, the job restarts, continues that checkpoint in the same run dir and ends
    with the weights of an uninterrupted run, bit for bit."""
    import time

    base = ["model=gan", "dataset=ring8", "logger=none", "metrics=none", "trainer.progress=false",
            "trainer.batch_size=64", "trainer.max_steps=400", "trainer.checkpoint_every=50"]
    logs = tmp_path / "logs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "--max-restarts=1",
         "-m", "gencompare", "train", *base, "trainer.resume=auto", f"paths.log_dir={logs}"],
        cwd=tmp_path, env=_env(data_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not list(logs.rglob("checkpoints/last.ckpt")) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        ranks = _rank_pids(proc.pid)
        assert set(ranks) == {0, 1} and list(logs.rglob("checkpoints/last.ckpt")), ranks
        os.kill(ranks[1], 9)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "resuming" in err, err[-3000:]
    runs = _run_dirs(logs)
    assert len(runs) == 1, runs
    _two_ranks(tmp_path, data_dir, *base, f"hydra.run.dir={tmp_path / 'full'}")
    full, resumed = _weights(tmp_path / "full"), _weights(runs[0])
    assert all(torch.equal(full[k], resumed[k]) for k in full), "restarted job: weights differ bit-wise"


@pytest.mark.parametrize(("sig", "code"), [("SIGTERM", 143), ("SIGINT", 130)])
def test_signal_to_the_launcher_stops_every_rank_at_one_step_with_one_checkpoint(tmp_path, data_dir, sig, code):
    """SIGTERM to `gencompare train trainer.devices=2`: every rank finishes the same step
    (they agree on stopping each step), rank 0 saves one checkpoint at that step and says so
    in one line, the command exits 143, and no scratch dir is left."""
    import signal
    import time

    logs = tmp_path / "logs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gencompare", "train", "trainer.devices=2", "model=gan", "dataset=ring8",
         "trainer.max_steps=10000000", "logger=none", "metrics=none", "trainer.progress=false",
         f"paths.log_dir={logs}"],
        cwd=tmp_path, env=_env(data_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:
            if "run dir" in line:
                break
        time.sleep(3)
        ranks = _rank_pids(proc.pid)
        env = Path(f"/proc/{ranks[1]}/environ").read_bytes().split(b"\0")
        run_id = next(e.split(b"=", 1)[1].decode() for e in env if e.startswith(b"TORCHELASTIC_RUN_ID="))
        proc.send_signal(getattr(signal, sig))
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == code, err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"interrupted ({sig}) at step "), err[-3000:]
    step = int(lines[0].split(" at step ")[1].split("/")[0])
    (run,) = _run_dirs(logs)
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["step"] == step
    assert not scratch_dir(1, run_id).exists(), "rank 1's scratch dir was left"


def test_a_stop_asked_of_one_rank_stops_every_rank_after_one_step(tmp_path):
    """The stop agreement (StopAgreement): rank 1 alone asked to stop at step 150 (a signal
    may reach the ranks at different steps), both ranks stop after the same step, after the
    request and at most one agreement interval (max_steps = 100) and a step later; the
    agreements are spaced (one per step cost 1.2 ms of a 2.7 ms step on this CPU) when steps
    are short: 2 ms steps, every_s = 0.2 s."""
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                    str(ROOT / "tests" / "stop_agreement_worker.py"), "150", "2", str(tmp_path)],
                   check=True, env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["step"] == ranks[1]["step"], ranks
    assert 150 < ranks[0]["step"] <= 150 + 100 + 1, ranks
    assert ranks[0]["agreements"] == ranks[1]["agreements"] <= ranks[0]["step"] / 10, ranks


def test_an_unknown_resume_value_is_one_line(tmp_path, data_dir):
    """trainer.resume takes true, false or auto (the schema's RESUME_CHOICES)."""
    value = "maybe"
    result = run_cli("train", "model=vae", "dataset=ring8", "logger=none", f"trainer.resume={value}",
                     f"paths.log_dir={tmp_path / 'logs'}", cwd=tmp_path, data_dir=data_dir, timeout=120)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "trainer.resume must be one of true, false, auto, got" in lines[0] and value in lines[0]


def test_submitit_tasks_per_node_are_the_ranks_of_one_run(tmp_path, data_dir):
    """hydra/launcher=submitit_slurm hydra.launcher.tasks_per_node=N, tried with submitit's
    local executor (the same task code, the same submitit helper for rank, world size and
    master): the job's 2 tasks train one run as 2 ranks, the one-process model."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    logs = tmp_path / "logs"
    result = subprocess.run(
        [sys.executable, "-m", "gencompare", "train", "-m", "hydra/launcher=submitit_local",
         "hydra.launcher.tasks_per_node=2", "hydra.launcher.timeout_min=10", "model=vae", "dataset=ring8",
         "trainer.max_steps=20", "trainer.batch_size=64", "logger=none", "metrics=none", "trainer.progress=false",
         f"paths.log_dir={logs}"],
        cwd=tmp_path, env=_env(data_dir), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = _run_dirs(logs)
    assert len(runs) == 1, runs
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert (metrics["world_size"], metrics["batch_size_per_rank"]) == (2, 32)
    _one_process(tmp_path / "one", data_dir, "model=vae", "dataset=ring8", "trainer.max_steps=20",
                 "trainer.batch_size=64")
    _assert_same_model(tmp_path / "one", runs[0], "vae, submitit tasks_per_node=2")
