"""The training progress line: step, losses, rate and ETA survive 80 columns and a pipe."""
from __future__ import annotations

import io
import re

from rich.console import Console

import gencompare.terminal as terminal
from conftest import run_cli

STATS = {"d_loss": 0.693147, "g_loss": 0.70001, "d_real": 0.5123, "d_fake": 0.4876, "ex/s": 12345.6}


def test_fields_fit_the_width_and_keep_step_rate_and_eta():
    line = terminal.progress_fields(1200, 25000, STATS, 3725.0, 80 - len("gan/ring8") - 10)
    assert len(line) <= 80 - len("gan/ring8") - 10
    assert line.startswith("1,200/25,000 d_loss=0.693") and line.endswith("12,346 ex/s eta 1:02:05")


def test_live_line_at_80_columns_keeps_every_field(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(terminal, "console", Console(file=out, force_terminal=True, width=80))
    with terminal.TrainProgress("gan/ring8", 25000, 0, enabled=True) as p:
        p.update(1200, STATS)
    last = [ln for ln in re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue()).splitlines() if ln.strip()][-1]
    assert "1,200/25,000" in last and "d_loss=0.693" in last and "ex/s" in last and "eta " in last, last


def test_piped_training_prints_plain_lines_with_step_and_eta(tmp_path, data_dir):
    res = run_cli("train", "model=gan", "dataset=ring8", "trainer.max_steps=20", "trainer.log_every=10",
                  "trainer.batch_size=16", "trainer.progress=true", "logger=none", "metrics=none",
                  "hydra.run.dir=r", cwd=tmp_path, data_dir=data_dir)
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if " step " in ln]
    assert lines and lines[-1].startswith("gan/ring8 step 20/20 d_loss="), res.stderr
    assert all(re.search(r"ex/s elapsed \d:\d\d:\d\d eta \d:\d\d:\d\d$", ln) for ln in lines), lines
    assert "━" not in res.stderr  # no bar drawn into a pipe
