"""`make gpu-check DEVICE=cpu`: the GPU checks' script (benchmarks/gpu_check.py) at toy
sizes on the CPU, through the Makefile's entry, so the command the first GPU session runs
has run here: every section writes its results file with its rows, a failed section is
reported in one line and the others still run."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ["cuda-tests", "families", "ddim-10k", "runner", "seeds", "ddp", "pacgan2d-slice"]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def gpu_check(out: Path, args: str = "") -> subprocess.CompletedProcess:
    cmd = ["make", "-s", "gpu-check", "DEVICE=cpu", f"OUT={out}", f"GPU_PY={sys.executable}", f"ARGS={args}"]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def table_rows(text: str) -> list[list[str]]:
    """The cells of every markdown table row but the header separators."""
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in text.splitlines()
            if ln.startswith("|") and not ln.startswith("|---")]


@pytest.mark.slow  # ~60 s on 2 loaded cores: the whole toy check, in `make test-all`
def test_every_section_writes_its_rows_and_none_fails(tmp_path):
    res = gpu_check(tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert re.fullmatch(r"gpu-check: all 7 sections passed in \d+ s", res.stdout.strip().splitlines()[-1])
    files = {name: (tmp_path / f"{name}-cpu-toy.md").read_text() for name in SECTIONS}
    for name, text in files.items():
        assert "**error**" not in text, f"{name}: {text}"
        assert "- torch " in text and "load average at start" in text  # results_file's head
        assert len(table_rows(text)) >= 2, f"{name} wrote no rows: {text}"
    families = {(r[0], r[1], r[2]): r for r in table_rows(files["families"])}
    for data in ("mnist-5k", "cifar10-unverified"):
        row = families[("fp32", data, "ddpm")]
        assert float(row[5]) > 0 and float(row[6]) > 0 and "DDIM" in row[10]
    assert families[("bf16", "all", "all")][3].startswith("skipped: bf16 autocast runs on CUDA only")
    assert re.search(r"\*\*Full table\*\* \(8 jobs of 2 stacked seeds.* about \*\*[\d.]+ hours\*\*", files["pacgan2d-slice"])
    assert "interpolated (1, 4)" in files["pacgan2d-slice"]
    ddp_rows = [r for r in table_rows(files["ddp"]) if r[0].startswith("GAN, ring8")]
    assert ddp_rows and float(ddp_rows[0][5]) > 0
    summary = table_rows((tmp_path / "gpu-check-cpu-toy.md").read_text())
    assert [r[0] for r in summary[1:]] == SECTIONS and all(r[3] == "ok" for r in summary[1:])


def test_a_failed_section_is_reported_in_one_line_and_the_others_still_run(tmp_path):
    res = gpu_check(tmp_path, "--only ddim-10k,seeds --fail ddim-10k")
    assert res.returncode != 0
    assert res.stdout.strip().splitlines()[-1] == (
        "gpu-check: 1 of 2 sections failed: ddim-10k (RuntimeError: forced failure (--fail ddim-10k))")
    assert "**error**: RuntimeError: forced failure (--fail ddim-10k)" in (tmp_path / "ddim-10k-cpu-toy.md").read_text()
    seeds = (tmp_path / "seeds-cpu-toy.md").read_text()
    assert "**error**" not in seeds
    assert [r[:3] for r in table_rows(seeds)[1:]] == [["gan", "10", "3"]]
    summary = {r[0]: r[3] for r in table_rows((tmp_path / "gpu-check-cpu-toy.md").read_text())[1:]}
    assert summary == {"ddim-10k": "FAILED: RuntimeError: forced failure (--fail ddim-10k)", "seeds": "ok"}


def test_an_unknown_section_is_refused_in_one_line(tmp_path):
    res = gpu_check(tmp_path, "--only nope")
    assert res.returncode != 0
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error")]
    assert lines == ["error: unknown section nope; choose from " + ", ".join(SECTIONS)]
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_the_cuda_check_without_a_gpu_is_refused_in_one_line(tmp_path):
    res = subprocess.run(["make", "-s", "gpu-check", f"OUT={tmp_path}", f"GPU_PY={sys.executable}"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0
    assert [ln for ln in res.stderr.splitlines() if ln.startswith("error")] == [
        "error: --device cuda but torch sees no CUDA GPU here; DEVICE=cpu (--device cpu) runs the toy sizes"]
    assert not list(tmp_path.iterdir())
