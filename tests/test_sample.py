"""``gencompare sample``: samples from a trained run's checkpoint, no training, no evaluation."""
from __future__ import annotations

import json

import torch
from PIL import Image

from conftest import run_cli

TRAIN = ["train", "trainer.max_steps=3", "trainer.batch_size=16", "trainer.progress=false", "logger=none",
         "metrics=none", "dataset.download=false"]


def _one_line_error(res) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode != 0 and len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    return lines[0]


def test_sample_writes_grid_and_tensor_from_a_points_run(tmp_path, data_dir):
    res = run_cli(*TRAIN, "model=gan", "dataset=ring8", "hydra.run.dir=r", cwd=tmp_path, data_dir=data_dir)
    assert res.returncode == 0, res.stderr
    metrics_before = (tmp_path / "r" / "metrics.json").read_text()
    ckpt_mtime = (tmp_path / "r" / "checkpoints" / "last.ckpt").stat().st_mtime_ns

    res = run_cli("sample", "run=r", "n=100", "device=cpu", cwd=tmp_path, data_dir=data_dir)
    assert res.returncode == 0, res.stderr
    png, pt = tmp_path / "r" / "samples" / "sample_n100_s0.png", tmp_path / "r" / "samples" / "sample_n100_s0.pt"
    samples = torch.load(pt, weights_only=True)
    assert samples.shape == (100, 2) and torch.isfinite(samples).all()
    with Image.open(png) as im:
        assert min(im.size) >= 400
    # no training, no evaluation: the run's record is untouched
    assert (tmp_path / "r" / "metrics.json").read_text() == metrics_before
    assert (tmp_path / "r" / "checkpoints" / "last.ckpt").stat().st_mtime_ns == ckpt_mtime
    assert json.loads(metrics_before)["steps"] == 3

    # the same seed draws the same samples; out= puts them elsewhere
    res = run_cli("sample", "run=r", "n=100", "device=cpu", "out=elsewhere/pic.png", cwd=tmp_path, data_dir=data_dir)
    assert res.returncode == 0, res.stderr
    assert torch.equal(torch.load(tmp_path / "elsewhere" / "pic.pt", weights_only=True), samples)
    res = run_cli("sample", "run=r", "n=100", "seed=1", "device=cpu", cwd=tmp_path, data_dir=data_dir)
    assert not torch.equal(torch.load(tmp_path / "r" / "samples" / "sample_n100_s1.pt", weights_only=True), samples)


def test_sample_image_run_grid_is_at_least_twice_the_data_size(tmp_path, data_dir):
    res = run_cli(*TRAIN, "model=vae", "dataset=mnist", "hydra.run.dir=img", cwd=tmp_path, data_dir=data_dir)
    assert res.returncode == 0, res.stderr
    res = run_cli("sample", "run=img", "n=64", "device=cpu", cwd=tmp_path, data_dir=data_dir)
    assert res.returncode == 0, res.stderr
    samples = torch.load(tmp_path / "img" / "samples" / "sample_n64_s0.pt", weights_only=True)
    assert samples.shape == (64, 1, 28, 28)
    with Image.open(tmp_path / "img" / "samples" / "sample_n64_s0.png") as im:
        assert im.size[0] >= 2 * (8 * 28 + 9 * 2)  # 8 columns of 28 px with 2 px padding, twice over


def test_sample_bad_input_fails_in_one_line(tmp_path, data_dir):
    # Hydra makes the run dir (the sample log's home) first; the failure removes it again
    assert "has no checkpoint" in _one_line_error(run_cli("sample", "run=nowhere", cwd=tmp_path, data_dir=data_dir))
    assert not (tmp_path / "nowhere").exists()
    assert "missing value for run" in _one_line_error(run_cli("sample", cwd=tmp_path, data_dir=data_dir))
    (tmp_path / "empty").mkdir()
    assert "has no checkpoint" in _one_line_error(run_cli("sample", "run=empty", cwd=tmp_path, data_dir=data_dir))
    assert "n must be positive" in _one_line_error(run_cli("sample", "run=empty", "n=0", cwd=tmp_path,
                                                           data_dir=data_dir))
