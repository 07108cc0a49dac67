"""Item 4 of issue 20 for a metric: one class and one YAML outside the package
(tests/extension_metric/) are computed by `gencompare train` into metrics.json and shown
in the run's terminal table and in `compare`'s table, with no file of gencompare/ touched."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli
from gencompare.report import compare
from gencompare.report.formatting import fmt

HERE = Path(__file__).resolve().parent
TARGET = "extension_metric.sample_mean.SampleMeanError"
TRAIN = ["train", "model=gan", "dataset=ring8", "trainer.max_steps=4", "trainer.progress=false", "logger=none"]
WAYS = {
    # the class named on the command line
    "override": [f"+metrics.sample_mean_error._target_={TARGET}"],
    # a metrics config of its own, found through Hydra's search path
    "searchpath": [f"hydra.searchpath=[file://{HERE / 'extension_metric' / 'conf'}]", "metrics=with_mean_error"],
}


@pytest.mark.parametrize("way", list(WAYS))
def test_a_metric_outside_the_package_is_computed_stored_and_shown(tmp_path, data_dir, way):
    res = run_cli(*TRAIN, *WAYS[way], "hydra.run.dir=run", cwd=tmp_path, data_dir=data_dir,
                  env={"PYTHONPATH": str(HERE)})
    assert res.returncode == 0, res.stderr
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # computed on the 2,500 shared evaluation samples, beside the built-in metrics
    assert m["sample_mean_error"]["num_samples"] == m["num_samples"] == 2500
    assert 0.0 < m["sample_mean_error"]["l2"] < 10.0
    assert m["mode_coverage"]["num_modes"] == 8
    shown = fmt(m["sample_mean_error"]["l2"])
    row = next(line for line in res.stdout.splitlines() if "mean error" in line)
    assert shown in row and "L2 distance of the sample mean" in row

    if way == "override":
        # `gencompare eval` without the override keeps the block training wrote, and shows it:
        # the run's own config names the metric
        ev = run_cli("eval", "run=run", "logger=none", WAYS["searchpath"][0], cwd=tmp_path, data_dir=data_dir,
                     env={"PYTHONPATH": str(HERE)})
        assert ev.returncode == 0, ev.stderr
        assert json.loads((tmp_path / "run" / "metrics.json").read_text())["sample_mean_error"] == m["sample_mean_error"]
        assert shown in next(line for line in ev.stdout.splitlines() if "mean error" in line)

    result = compare([tmp_path / "run"], out=tmp_path / "cmp", searchpath=[str(HERE / "extension_metric" / "conf")])
    (table,) = result.tables
    assert table.rows[0][table.columns.index("mean error")] == shown
    assert "mean error" in (tmp_path / "cmp" / "comparison.md").read_text()


def test_a_metric_that_does_not_import_stops_train_before_it_starts(tmp_path, data_dir):
    res = run_cli(*TRAIN, f"+metrics.typo._target_={TARGET}x", "hydra.run.dir=run", cwd=tmp_path, data_dir=data_dir,
                  env={"PYTHONPATH": str(HERE)})
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode != 0 and len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert "metrics.typo" in lines[0] and f"{TARGET}x" in lines[0]
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_run_dirs_metric_target_is_read_for_its_rows_never_called(tmp_path, data_dir):
    """compare and eval look a run's metrics classes up for their table rows; a run dir's
    config naming any other callable there runs nothing."""
    res = run_cli(*TRAIN, "metrics=none", "hydra.run.dir=run", cwd=tmp_path, data_dir=data_dir)
    assert res.returncode == 0, res.stderr
    marker = tmp_path / "written"
    config = tmp_path / "run" / "config.yaml"
    text = config.read_text().replace("metrics:\n", f"metrics:\n  evil:\n    _target_: builtins.open\n"
                                                    f"    file: {marker}\n    mode: w\n", 1)
    assert text != config.read_text()
    config.write_text(text)
    compare([tmp_path / "run"], out=tmp_path / "cmp")
    ev = run_cli("eval", "run=run", "logger=none", "metrics=fast", cwd=tmp_path, data_dir=data_dir)
    assert ev.returncode == 0, ev.stderr
    assert not marker.exists()
