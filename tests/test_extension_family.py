"""A researcher's own family against the four, with no file of gencompare/ touched: one class
(tests/extension/toy_family.py, a mixture of Gaussians with an exact likelihood) and one YAML
(tests/extension/conf/model/gmm.yaml) reached through Hydra's search path. It trains, alone
and stacked, is evaluated and sampled, and compare shows it with its own colour and its own
likelihood label."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import run_cli
from gencompare.report import compare

EXTENSION = Path(__file__).resolve().parent / "extension"
SEARCHPATH = f"hydra.searchpath=[file://{EXTENSION / 'conf'}]"
ORANGE = "#ff7f0e"  # the family_color toy_family.GaussianMixture declares
SMALL = ["logger=none", "trainer.progress=false", "trainer.max_steps=40", "trainer.batch_size=64",
         "trainer.log_every=10", "metrics=fast"]


def gencompare(*args: str, cwd: Path, data_dir: Path, searchpath: bool = True):
    """``gencompare <args>`` with the toy family's module importable, as a user's PYTHONPATH makes it."""
    path = os.pathsep.join(p for p in (str(EXTENSION), os.environ.get("PYTHONPATH")) if p)
    return run_cli(*args, *([SEARCHPATH] if searchpath else []), cwd=cwd, data_dir=data_dir,
                   env={"PYTHONPATH": path})


def has_color(png: Path, hex_color: str, tol: int = 12) -> bool:
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    want = np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)])
    return bool((np.abs(rgb - want).max(axis=-1) <= tol).any())


def test_a_family_from_outside_the_package_trains_evaluates_samples_and_compares(tmp_path, data_dir):
    runs = tmp_path / "runs"
    res = gencompare("train", "model=gmm", "dataset=ring8", *SMALL, f"hydra.run.dir={runs / 'gmm_s0'}",
                     cwd=tmp_path, data_dir=data_dir)
    assert res.returncode == 0, res.stderr[-3000:]
    run = runs / "gmm_s0"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["family"] == "gmm"
    assert metrics["family_style"] == {"color": ORANGE, "order": 4, "likelihood_label": "closed form"}
    assert metrics["likelihood"]["kind"] == "nll_exact" and "8-component Gaussian mixture" in metrics["likelihood"]["note"]
    assert metrics["mode_coverage"]["num_modes"] == 8
    assert has_color(run / metrics["sample_grid"], ORANGE)  # the scatter plot in the family's colour

    # stacked: two seeds trained as one under torch.func.vmap, each its own run dir
    res = gencompare("train", "model=gmm", "dataset=ring8", *SMALL, "seed=1", "trainer.seed_batch=2",
                     f"hydra.run.dir={runs / 'stacked_s1'}", cwd=tmp_path, data_dir=data_dir)
    assert res.returncode == 0, res.stderr[-3000:]
    said = res.stdout + res.stderr
    assert "2 seeds (1..2) stacked" in said and "one after another" not in said  # under vmap, not in turn
    for member in ("stacked_s1", "stacked_s2"):
        m = json.loads((runs / member / "metrics.json").read_text())
        assert m["family"] == "gmm" and m["seed_batch"]["size"] == 2 and m["likelihood"]["nll_nats"] is not None

    # eval and sample rebuild it from the run dir: trusted because its YAML is on the search path
    res = gencompare("eval", f"run={run}", "logger=none", "metrics=fast", cwd=tmp_path, data_dir=data_dir)
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads((run / "metrics.json").read_text())["evaluated_step"] == 40
    res = gencompare("sample", f"run={run}", "n=500", f"out={tmp_path / 'drawn.png'}", cwd=tmp_path,
                     data_dir=data_dir)
    assert res.returncode == 0, res.stderr[-3000:]
    assert has_color(tmp_path / "drawn.png", ORANGE) and (tmp_path / "drawn.pt").is_file()
    # without its config on the search path, nothing names its class: the run dir is refused
    res = gencompare("eval", f"run={run}", "logger=none", "metrics=fast", cwd=tmp_path, data_dir=data_dir,
                     searchpath=False)
    assert res.returncode == 2 and "_target_=toy_family.GaussianMixture is not" in res.stderr

    # compare: its own row, colour and likelihood label, beside a GAN of the same data
    res = run_cli("train", "model=gan", "dataset=ring8", *SMALL, f"hydra.run.dir={runs / 'gan_s0'}",
                  cwd=tmp_path, data_dir=data_dir)
    assert res.returncode == 0, res.stderr[-3000:]
    result = compare([runs], out=tmp_path / "report")
    table = result.tables[0]
    rows = {row[0]: row for row in table.rows}
    assert list(rows)[:2] == ["gan", "gmm"]  # the declared order: after the four families
    assert rows["gmm"][1] == "3"  # seeds 0, 1, 2
    assert rows["gmm"][table.columns.index("NLL (nats)")].endswith("(closed form)")
    assert has_color(result.files["figure"], ORANGE)
    assert has_color(result.files["mosaic"], ORANGE)
