"""Issue 20, item 4 for datasets: a dataset defined outside gencompare (a loader class in
tests/extension_data/toy_data.py and one YAML on Hydra's search path) trains a family,
is named in metrics.json's data block and takes the table order its loader gives, with
no file of gencompare/ touched."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import run_cli

EXTENSION = Path(__file__).resolve().parent / "extension_data"
SEARCHPATH = f"hydra.searchpath=[file://{EXTENSION / 'conf'}]"
ENV = {"PYTHONPATH": os.pathsep.join(filter(None, [str(EXTENSION), os.environ.get("PYTHONPATH")]))}
TRAIN = ["train", "model=gan", "dataset=three_gaussians", SEARCHPATH, "trainer.max_steps=20", "trainer.batch_size=50",
         "trainer.log_every=10", "trainer.progress=false", "logger=none", "metrics=fast", "device=cpu"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir) -> Path:
    root = tmp_path_factory.mktemp("ext")
    res = run_cli(*TRAIN, "hydra.run.dir=run", cwd=root, data_dir=data_dir, env=ENV)
    assert res.returncode == 0, res.stderr
    return root / "run"


def test_a_dataset_from_outside_the_package_trains_and_is_recorded(trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["dataset"] == "three_gaussians" and metrics["variant"] == "three_gaussians-std0.05"
    data = metrics["data"]
    assert data["name"] == "three_gaussians" and data["kind"] == "points" and data["coverage"] == "mixture"
    assert data["sizes"] == {"train": 3000, "valid": 300, "test": 300} and data["table_order"] == 5
    assert data["classifier"] is None
    assert metrics["steps"] == 20
    assert metrics["mode_coverage"]["num_modes"] == 3  # scored on the loader's three modes


def test_its_table_comes_first_by_its_loaders_order(trained, tmp_path):
    """compare orders tables by the bundle's table_order, which the toy sets before MNIST's."""
    from gencompare.report.groups import group_runs
    from gencompare.report.runs import Run

    toy = json.loads((trained / "metrics.json").read_text())
    mnist = {**toy, "dataset": "mnist", "variant": "mnist-5k", "data": {**toy["data"], "table_order": 11}}
    legacy = {k: v for k, v in toy.items() if k != "data"} | {"dataset": "ring8", "variant": "ring8"}
    runs = [Run(tmp_path / name, m, None, None) for name, m in (("a", legacy), ("b", mnist), ("c", toy))]
    assert [g.variant for g in group_runs(runs)] == ["three_gaussians-std0.05", "mnist-5k", "ring8"]


def test_a_typo_in_its_config_fails_before_training_in_one_line(tmp_path, data_dir):
    res = run_cli(*TRAIN, "+dataset.num_trian=3", "hydra.run.dir=run", cwd=tmp_path, data_dir=data_dir, env=ENV)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode != 0 and len(lines) == 1, res.stderr
    assert "dataset=three_gaussians" in lines[0] and "num_trian" in lines[0]
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_eval_of_a_run_on_it_with_its_config_on_the_search_path(trained, data_dir):
    res = run_cli("eval", f"run={trained}", "metrics=fast", SEARCHPATH, cwd=trained.parent, data_dir=data_dir, env=ENV)
    assert res.returncode == 0, res.stderr
    assert (trained / "metrics.json").is_file()


def test_eval_without_its_config_on_the_search_path_is_refused_in_one_line(trained, data_dir):
    # the run dir names the loader's class; only a YAML the command itself reads vouches for it
    res = run_cli("eval", f"run={trained}", "metrics=fast", cwd=trained.parent, data_dir=data_dir, env=ENV)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode != 0 and len(lines) == 1, res.stderr
    assert "toy_data" in lines[0], lines[0]
