"""Issue 21, items 2, 3, 4, 6 and 7: one process per run dir, a resume that refuses what
changes the run, faults and signals in one line that leave nothing behind, a record of what
ran, and printed commands that paste as they are."""
from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import compose_train, run_cli
from gencompare.checkpoint import load_checkpoint, save_checkpoint
from gencompare.errors import GencompareError
from gencompare.record import RunDir, atomic_write_json
from gencompare.train.train import train

TINY = ["model=gan", "dataset=ring8", "logger=none", "trainer.progress=false", "metrics=none"]


def one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def tiny(tmp_path, data_dir, name="r", *extra):
    """A 4-step run in-process; returns its RunDir."""
    train(compose_train(tmp_path / name, data_dir, *TINY, "trainer.max_steps=4", *extra))
    return RunDir(tmp_path / name)


def _wait_for_file(path: Path, proc, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if path.is_file():
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared: {proc.poll()}")


# ------------------------------------------------------------ item 2: one process per run dir
def test_a_second_process_on_a_run_dir_is_refused_and_a_killed_holders_lock_does_not_block(tmp_path, data_dir):
    run = RunDir(tmp_path / "r")
    first = run_cli("train", *TINY, "trainer.max_steps=100000", "trainer.checkpoint_every=10", "hydra.run.dir=r",
                    cwd=tmp_path, data_dir=data_dir, wait=False)
    try:
        _wait_for_file(run.checkpoint, first)
        resume = run_cli("train", *TINY, "trainer.max_steps=10", "hydra.run.dir=r", "trainer.resume=true",
                         cwd=tmp_path, data_dir=data_dir)
        assert resume.returncode == 2
        line = one_line(resume.stderr)
        assert f"{run.path} is in use by pid {first.pid}" in line and "gencompare train" in line, line
        evaluate = run_cli("eval", f"run={run.path}", "metrics=none", cwd=tmp_path, data_dir=data_dir)
        assert evaluate.returncode == 2 and f"in use by pid {first.pid}" in one_line(evaluate.stderr)
        assert "in use" not in (run.path / "train.log").read_text()  # the refused command wrote nothing there
        eval_log = run.path / "eval.log"  # opened by Hydra before the command runs: left empty
        assert (not eval_log.exists() or eval_log.read_text() == "") and not run.failure.exists()
    finally:
        first.send_signal(signal.SIGKILL)  # the kernel drops its lock; the lock file stays
        first.communicate(timeout=60)
    assert str(first.pid) in (run.path / RunDir.LOCK).read_text()
    resumed = run_cli("train", *TINY, "trainer.max_steps=10", "hydra.run.dir=r", "trainer.resume=true",
                      cwd=tmp_path, data_dir=data_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr


def test_a_seed_batch_holds_every_members_lock(tmp_path, data_dir, monkeypatch):
    import gencompare.train.seeds as seeds
    from gencompare.record.lock import holds_lock

    seen = {}
    real = seeds._save_member_checkpoints

    def spy(cfg, members, loop, batch_ckpt):
        seen.update({str(r.path): holds_lock(r.path) for r in members.runs})
        return real(cfg, members, loop, batch_ckpt)

    monkeypatch.setattr(seeds, "_save_member_checkpoints", spy)
    seeds.train(compose_train(tmp_path / "b_s0", data_dir, *TINY, "trainer.max_steps=3", "trainer.seed_batch=2"))
    assert seen == {str(tmp_path / "b_s0"): True, str(tmp_path / "b_s1"): True}
    assert not holds_lock(tmp_path / "b_s0")  # released when the batch ended


def test_the_job_log_and_hydra_record_follow_the_dir_the_run_claimed(tmp_path, data_dir):
    taken = tmp_path / "same"
    taken.mkdir()
    (taken / RunDir.CLAIM).write_text("12345\n")  # a run that started in the same second claimed it
    res = run_cli("train", *TINY, "trainer.max_steps=4", "hydra.run.dir=same", cwd=tmp_path, data_dir=data_dir)
    assert res.returncode == 0, res.stderr
    assert "this run uses" in res.stderr
    claimed = tmp_path / "same_1"
    assert "done" in (claimed / "train.log").read_text()
    assert not (taken / "train.log").is_file() or (taken / "train.log").read_text() == ""
    hydra = OmegaConf.load(claimed / ".hydra" / "hydra.yaml").hydra
    assert Path(hydra.runtime.output_dir) == claimed and Path(hydra.run.dir).resolve() == claimed


# ---------------------------------------------------------- item 3: resume refuses what changes the run
def test_a_resume_that_changes_the_seed_is_refused_naming_the_key(tmp_path, data_dir):
    tiny(tmp_path, data_dir)
    with pytest.raises(GencompareError, match=r"resume changes seed: .* seed=0, this command has 1"):
        train(compose_train(tmp_path / "r", data_dir, *TINY, "trainer.max_steps=8", "seed=1", "trainer.resume=true"))
    with pytest.raises(GencompareError, match=r"resume changes dataset.num_train: .*=50000, this command has 40000"):
        train(compose_train(tmp_path / "r", data_dir, *TINY, "trainer.max_steps=8", "dataset.num_train=40000",
                            "trainer.resume=true"))


def test_a_resume_may_change_lengths_intervals_logging_and_device(tmp_path, data_dir):
    tiny(tmp_path, data_dir)
    out = train(compose_train(tmp_path / "r", data_dir, *TINY, "trainer.max_steps=8", "trainer.log_every=2",
                              "trainer.checkpoint_every=3", "trainer.sample_every=5", "trainer.num_grid_samples=8",
                              "device=cpu", "tags=[again]", "trainer.resume=true"))
    assert out["steps"] == 8


def test_the_resume_key_lists_are_disjoint_and_documented():
    from gencompare.train.state import RESUME_FIXED, RESUME_FREE

    guide = (Path(__file__).resolve().parent.parent / "docs" / "training.md").read_text()
    for key in (*RESUME_FIXED, *RESUME_FREE):
        assert f"`{key}`" in guide, key
    assert not set(RESUME_FIXED) & set(RESUME_FREE)


# ------------------------------------------------- item 4: faults are one line and leave nothing behind
def test_a_full_disk_is_one_line_naming_the_path_whatever_the_writer_raises(tmp_path, monkeypatch):
    import gencompare.checkpoint as checkpoint_module

    path = tmp_path / "checkpoints" / "last.ckpt"
    save_checkpoint({"step": 1}, path)

    def torch_save_on_a_full_disk(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0\n"
                           "PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(checkpoint_module.torch, "save", torch_save_on_a_full_disk)
    with pytest.raises(GencompareError, match=rf"cannot write {re.escape(str(path))}: .*file write failed") as exc:
        save_checkpoint({"step": 2}, path)
    assert "\n" not in str(exc.value)
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]
    assert torch.load(path, weights_only=True)["step"] == 1

    def write_text_on_a_full_disk(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", write_text_on_a_full_disk)
    with pytest.raises(GencompareError, match=r"cannot write .*metrics\.json: No space left on device"):
        atomic_write_json({"a": 1}, tmp_path / "metrics.json")
    assert not list(tmp_path.glob(".metrics.json*"))


def test_a_full_disk_during_training_is_one_error_naming_the_checkpoint(tmp_path, data_dir, monkeypatch):
    import gencompare.checkpoint as checkpoint_module

    def torch_save_on_a_full_disk(obj, f, *args, **kwargs):
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(checkpoint_module.torch, "save", torch_save_on_a_full_disk)
    with pytest.raises(GencompareError, match=r"cannot write .*last\.ckpt: .*file write failed"):
        train(compose_train(tmp_path / "r", data_dir, *TINY, "trainer.max_steps=4"))


def test_temp_files_of_a_killed_writer_are_swept_by_the_next_run(tmp_path, data_dir):
    run = tiny(tmp_path, data_dir)
    left = [run.checkpoints_dir / ".last.ckpt.gencompare-tmp-99999", run.path / ".metrics.json.gencompare-tmp-1",
            run.path / ".history.jsonl.tmp-4242"]  # the last: the name older versions gave them
    for p in left:
        p.write_bytes(b"half a file")
    train(compose_train(run.path, data_dir, *TINY, "trainer.max_steps=6", "trainer.resume=true"))
    assert not [p for p in left if p.exists()]


def _interrupt_twice_at(step: int, monkeypatch) -> None:
    """The Loop's step ``step`` gets two SIGINTs, as a user pressing Ctrl-C twice: the
    second arrives before the checkpoint callback has saved anything."""
    from gencompare.train.loop import Loop

    real = Loop.training_step

    def step_and_interrupt(self):
        real(self)
        if self.step == step:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(Loop, "training_step", step_and_interrupt)


def test_a_double_ctrl_c_never_says_a_checkpoint_was_saved_when_it_was_not(tmp_path, data_dir, monkeypatch, capfd):
    _interrupt_twice_at(3, monkeypatch)
    with pytest.raises(SystemExit) as exc:
        train(compose_train(tmp_path / "r", data_dir, *TINY, "trainer.max_steps=8", "trainer.checkpoint_every=2"))
    assert exc.value.code == 130
    line = [ln for ln in capfd.readouterr().err.splitlines() if "interrupted" in ln][-1]
    assert "at step 3/8; no new checkpoint" in line and "checkpoint saved" not in line, line
    assert load_checkpoint(RunDir(tmp_path / "r").checkpoint)["step"] == 2


@pytest.mark.parametrize("delay", [0.3, 1.0, 2.0, 4.0])
def test_ctrl_c_at_any_moment_of_start_up_is_one_line(tmp_path, data_dir, delay):
    proc = run_cli("train", *TINY, "trainer.max_steps=2", "hydra.run.dir=r", cwd=tmp_path, data_dir=data_dir,
                   wait=False)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if "done:" in err:
        # the run had ended: exit 0, or, in the seconds the interpreter takes to finalize torch,
        # killed by the signal itself (Python restores SIGINT's default action then): the
        # shell's 130, silent, the record complete either way
        assert proc.returncode in (0, -signal.SIGINT) and "Traceback" not in err, err
        assert (tmp_path / "r" / "metrics.json").is_file()
        pytest.skip(f"the run had ended within {delay} s (exit {proc.returncode})")
    assert proc.returncode == 130, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if lines and " run dir " in lines[0]:  # start-up was over: the run's own handling, after its header
        assert "Traceback" not in err and len(lines) == 2 and "interrupted" in lines[1], err
    else:
        assert "interrupted" in one_line(err)


def test_ctrl_c_while_torch_loads_under_python_m_is_one_line(tmp_path, data_dir):
    """``python -m gencompare`` (torchrun's form) imports torch before any command runs: a
    Ctrl-C there is the start-up line too, not Python's traceback. The interrupt is raised at
    the first import of torch or a submodule of it, wherever that is, so the moment is exact on any machine."""
    hook = ("import os, runpy, signal, sys\n"
            "class InterruptAtTorch:\n"  # a meta path finder: every route of an import asks it
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'torch' or name.startswith('torch.'):\n"
            "            sys.meta_path.remove(self)\n"
            "            os.kill(os.getpid(), signal.SIGINT)\n"
            "        return None\n"
            "if 'torch' in sys.modules: sys.stderr.write('torch was loaded before the hook\\n')\n"
            "if signal.getsignal(signal.SIGINT) is not signal.default_int_handler or signal.SIGINT in "
            "signal.pthread_sigmask(signal.SIG_BLOCK, []):\n"
            "    sys.stderr.write('SIGINT ignored or blocked in this process\\n')\n"
            "sys.meta_path.insert(0, InterruptAtTorch())\n"
            "sys.argv = ['gencompare', *sys.argv[1:]]\n"
            "runpy.run_module('gencompare', run_name='__main__', alter_sys=True)\n")
    proc = subprocess.run([sys.executable, "-c", hook, "train", *TINY, "trainer.max_steps=2", "hydra.run.dir=r"], cwd=tmp_path,
                          env={**os.environ, "GENCOMPARE_DATA_DIR": str(data_dir)}, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert one_line(proc.stderr).startswith("interrupted (SIGINT) during start-up")
    assert not (tmp_path / "r").exists()


def test_ctrl_c_during_compare_exits_130_and_writes_nothing(tmp_path, monkeypatch, capsys):
    from test_compare import make_run

    import gencompare.report.command as command

    make_run(tmp_path / "runs", "a", model="gan", dataset="ring8")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(command, "sample_mosaic", interrupted)  # after comparison.csv and the figure are drawn
    out = tmp_path / "cmp"
    with pytest.raises(SystemExit) as exc:
        command.compare_main([str(tmp_path / "runs"), "--out", str(out)])
    assert exc.value.code == 130
    assert "interrupted" in capsys.readouterr().err
    assert not out.exists()
    inside = tmp_path / "runs"  # the default out: the folder compared, which exists already
    with pytest.raises(SystemExit):
        command.compare_main([str(inside)])
    assert sorted(p.name for p in inside.iterdir()) == ["a"]


# ---------------------------------------------------- bad input: a record path that is a folder
@pytest.mark.parametrize("name", [RunDir.HISTORY, RunDir.METRICS, RunDir.CHECKPOINT])
def test_a_record_path_that_is_a_folder_is_refused_before_anything_is_written(tmp_path, data_dir, name):
    (tmp_path / "r" / name).mkdir(parents=True)
    with pytest.raises(GencompareError, match=rf"{re.escape(str(tmp_path / 'r' / name))} is a folder"):
        train(compose_train(tmp_path / "r", data_dir, *TINY, "trainer.max_steps=4"))
    assert not (tmp_path / "r" / RunDir.CONFIG).exists()


# ------------------------------------------------------------------- item 6: the record says what ran
def test_the_record_says_the_precision_and_compile_state_that_ran(tmp_path, data_dir, monkeypatch):
    import torch._dynamo

    import gencompare.train.train as train_module
    from gencompare.tracking import Tracker

    seen: dict = {}

    class Recording(Tracker):
        def summary(self, values):
            seen.setdefault("summary", {}).update(values)

    def make_tracker(logger_cfg, **kwargs):
        seen["config"] = kwargs["config"]
        return Recording()

    monkeypatch.setattr(train_module, "make_tracker", make_tracker)
    monkeypatch.setattr(torch._dynamo, "is_dynamo_supported", lambda: False)
    out = train(compose_train(tmp_path / "r", data_dir, *TINY, "trainer.max_steps=2", "trainer.precision=bf16",
                              "trainer.compile=true", "device=cpu"))
    assert (out["precision"], out["device"], out["compile"]) == ("32", "cpu", "eager (torch.compile unavailable)")
    assert json.loads(RunDir(tmp_path / "r").metrics.read_text())["precision"] == "32"
    assert seen["config"]["ran"] == {"device": "cpu", "precision": "32", "compile": "eager (torch.compile unavailable)"}
    assert seen["config"]["trainer"]["precision"] == "bf16"  # what was asked stays in the config
    assert seen["summary"]["precision"] == "32" and seen["summary"]["compile"].startswith("eager")


# --------------------------------------------------------- item 7: what is printed for copying pastes
def test_the_resume_hint_pastes_into_a_shell_for_a_dir_with_a_space_and_a_dollar(tmp_path, data_dir, monkeypatch,
                                                                                 capfd):
    run = tmp_path / "my run$HOME"
    _interrupt_twice_at(3, monkeypatch)
    with pytest.raises(SystemExit):
        train(compose_train(run, data_dir, *TINY, "trainer.max_steps=8", "trainer.checkpoint_every=2"))
    line = [ln for ln in capfd.readouterr().err.splitlines() if "interrupted" in ln][-1]
    words = re.search(r"same command plus (.*trainer\.resume=true)", line).group(1)
    env = {**os.environ, "GENCOMPARE_DATA_DIR": str(data_dir), "GENCOMPARE_CACHE_DIR": str(data_dir / "cache"),
           "WANDB_MODE": "offline"}
    env.pop("HYDRA_FULL_ERROR", None)
    command = f"{sys.executable} -m gencompare.cli train {' '.join(TINY)} trainer.batch_size=16 trainer.max_steps=8 {words}"
    res = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert f"resuming {run}/checkpoints/last.ckpt at step 2/8" in res.stderr
    assert json.loads(RunDir(run).metrics.read_text())["steps"] == 8
