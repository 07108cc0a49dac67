"""What the W&B runs hold, offline and without an API key, read back with W&B's own reader
of a run's transaction log (``wandb leet inspect --json``, the wandb-core binary): the
checkpoint, metrics.json and the config as artifacts, the console, a summary with one key
per number; and a comparison run that holds the tables, the figures and the compared runs'
W&B paths."""
from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_cli

# the wandb CLI of the Python running the tests (the venv's), not whichever is first on PATH
WANDB = str(Path(sys.executable).with_name("wandb")) if Path(sys.executable).with_name("wandb").is_file() \
    else shutil.which("wandb") or "wandb"


# run_cli runs with WANDB_MODE=offline (no key, no network) and conftest puts W&B's staging
# and cache folders in the session's tmp dir


def records(run_files: Path) -> list[dict]:
    """Every record of the offline run in ``run_files`` (``<run dir>/wandb/offline-run-*``).

    The transaction log is named explicitly: once (CI, 2026-11-28, a loaded machine) the
    comparison run's folder had no ``.wandb`` yet when read, and ``leet inspect`` given the
    folder then looks for a ``latest-run`` inside it; so wait up to 30 s for the log."""
    logs: list[Path] = []
    for _ in range(60):
        logs = sorted(run_files.glob("*.wandb"))
        if logs:
            break
        time.sleep(0.5)
    assert len(logs) == 1, f"{run_files} holds {sorted(p.name for p in run_files.iterdir())}, not one .wandb log"
    res = subprocess.run([WANDB, "leet", "inspect", "--json", str(logs[0])], capture_output=True, text=True,
                         timeout=120)
    if res.returncode != 0 and "No such command" in res.stderr:
        pytest.skip("this wandb CLI has no `wandb leet inspect` (0.31 has), the reader these tests use")
    assert res.returncode == 0, res.stderr
    return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]


def md5_b64(path: Path) -> str:
    return base64.b64encode(hashlib.md5(path.read_bytes()).digest()).decode()


def test_an_offline_run_holds_its_records_as_artifacts_its_console_and_one_key_per_number(tmp_path, data_dir):
    res = run_cli("train", "model=gan", "dataset=ring8", "trainer.max_steps=3", "trainer.batch_size=16",
                  "trainer.progress=false", "dataset.download=false", "metrics=fast", "logger=wandb",
                  "hydra.run.dir=r", cwd=tmp_path, data_dir=data_dir)
    assert res.returncode == 0, res.stderr
    run = tmp_path / "r"
    ref = json.loads((run / "metrics.json").read_text())["wandb"]  # how compare finds the W&B run
    assert ref["mode"] == "offline" and ref["path"] == f"gencompare/{ref['id']}" and "url" not in ref
    recs = records(run / ref["dir"])
    assert [r["run"]["run_id"] for r in recs if r["type"] == "run"] == [ref["id"]]

    # the checkpoint, metrics.json and the config, as artifacts of this run, files under their run-dir paths
    artifacts = {r["artifact"]["name"]: r["artifact"] for r in recs if r["type"] == "artifact"}
    assert {n: a["type"] for n, a in artifacts.items()} == {
        f"model-{ref['id']}": "model", f"metrics-{ref['id']}": "metrics", f"config-{ref['id']}": "config"}
    files = {n: {e["path"]: e["digest"] for e in a["manifest"]["contents"]} for n, a in artifacts.items()}
    assert files[f"model-{ref['id']}"] == {"checkpoints/last.ckpt": md5_b64(run / "checkpoints" / "last.ckpt")}
    assert files[f"metrics-{ref['id']}"] == {"metrics.json": md5_b64(run / "metrics.json")}
    assert {"config.yaml", "overrides.yaml", ".hydra/config.yaml", ".hydra/hydra.yaml",
            ".hydra/overrides.yaml"} == set(files[f"config-{ref['id']}"])
    assert "step-3" in artifacts[f"model-{ref['id']}"]["aliases"]

    # the console, and a summary that holds each number once
    console = [r["output_raw"]["line"] for r in recs if r["type"] == "output_raw"]
    assert any("done: 3 steps" in line for line in console)
    summary: dict = {}
    for r in recs:
        if r["type"] == "summary":
            summary.update(r["summary"].get("update") or {})
    assert summary["eval/mode_coverage/num_samples"] == 2500 and summary["steps"] == 3
    assert [k for k in summary if f"eval/{k}" in summary] == []  # was mode_coverage/* beside eval/mode_coverage/*
    assert [k for k in summary if k.startswith(("final_losses/", "data/name", "data/variant", "wandb/"))] == []
    assert summary["variant"] == "ring8"


def test_the_comparison_run_holds_tables_figures_and_links_to_the_runs_it_compared(tmp_path, data_dir):
    res = run_cli("train", "-m", "model=gan,vae", "dataset=ring8", "trainer.max_steps=2", "trainer.batch_size=16",
                  "trainer.progress=false", "dataset.download=false", "metrics=none", "logger=wandb",
                  "logger.log_model=false", "hydra.sweep.dir=sweep", cwd=tmp_path, data_dir=data_dir)
    assert res.returncode == 0, res.stderr
    paths = sorted(json.loads(p.read_text())["wandb"]["path"] for p in (tmp_path / "sweep").glob("*/metrics.json"))
    assert len(paths) == 2
    res = run_cli("compare", "sweep", "--wandb", "--out", "cmp", cwd=tmp_path, data_dir=data_dir)
    assert res.returncode == 0, res.stderr
    (files,) = (tmp_path / "cmp" / "wandb").glob("offline-run-*")
    recs = records(files)
    (run,) = [r["run"] for r in recs if r["type"] == "run"]
    assert run["job_type"] == "compare"
    assert sorted(run["config"]["update"]["runs"]) == paths  # the W&B paths of the runs it compared
    # history keys are "<key>.<field>" (comparison._type: table-file, comparison/figure._type: image-file)
    logged = {k.split(".")[0]: v for r in recs if r["type"] == "history" for k, v in r["history"]["item"].items()
              if k.endswith("._type")}
    assert {k: logged.get(k) for k in ("comparison", "runs", "comparison/figure", "comparison/mosaic")} == {
        "comparison": "table-file", "runs": "table-file", "comparison/figure": "image-file",
        "comparison/mosaic": "image-file"}
    (where,) = [r["history"]["item"]["runs.path"] for r in recs
                if r["type"] == "history" and "runs.path" in r["history"]["item"]]
    table = json.loads((files / "files" / where).read_text())  # the table file the record names
    column = table["columns"].index("wandb_path")
    assert sorted(row[column] for row in table["data"]) == paths
    (artifact,) = [r["artifact"] for r in recs if r["type"] == "artifact" and r["artifact"]["type"] == "comparison"]
    assert {"comparison.md", "comparison.csv", "comparison.png", "samples_mosaic.png"} <= {
        e["path"] for e in artifact["manifest"]["contents"]}
