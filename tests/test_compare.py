"""`gencompare compare`: aggregation over seeds, variants kept apart, files, bad input.

Compare's input is run dirs on disk, so these tests build small fake run dirs
(config.yaml + metrics.json + a sample PNG) with known numbers and check what
compare computes from them against statistics computed here independently.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from torchvision.utils import save_image

from conftest import run_cli
from gencompare import record
from gencompare.errors import GencompareError
from gencompare.models.ddpm import DDPM
from gencompare.models.gan import GAN
from gencompare.models.nade import NADE
from gencompare.models.vae import VAE
from gencompare.plots import OTHER_COLOR
from gencompare.report import METRICS, compare, select_metric, summarize, training_diagnostics, load_run

FAMILIES = {cls.family: cls for cls in (GAN, VAE, NADE, DDPM)}
NLL_KIND = {name: cls.likelihood_kind for name, cls in FAMILIES.items()}


def make_run(root: Path, name: str, *, model: str, dataset: str, variant: str | None = None, seed: int = 0,
             metrics: dict | None = None, lr: float = 2e-4, history: list[dict] | None = None,
             styled: bool = True) -> Path:
    """A run dir as the runner leaves it: config.yaml, metrics.json, samples/samples.png;
    ``styled=False``: a metrics.json from before the families declared their style."""
    run = root / name
    (run / "samples").mkdir(parents=True)
    kind = "points" if dataset in ("ring8", "grid25") else "image"
    config = {
        "seed": seed, "task_name": "train", "tags": [],
        "model": {"name": model, "binarize": "none", "module": {"_target_": f"gencompare.models.{model}.X",
                                                                "optimizer": {"lr": lr}}},
        "dataset": {"name": dataset, "kind": kind, "data_dir": "data", "download": True},
        "trainer": {"max_steps": 100, "batch_size": 100, "progress": False, "log_every": 10},
        "logger": {"name": "none"}, "paths": {"output_dir": str(run)},
    }
    OmegaConf.save(OmegaConf.create(config), run / "config.yaml")
    m = {"status": "finished", "model": model, "family": model, "dataset": dataset,
         "variant": variant or dataset, "seed": seed, "device": "cpu", "steps": 100,
         "train_time_s": 10.0 + seed, "sample_time_1000_s": 0.5, "parameters": {"net": 1000},
         "parameters_total": 1000, "final_losses": {"loss": 1.0}, "sample_grid": "samples/samples.png",
         "likelihood": {"kind": NLL_KIND[model], "nll_nats": None if model == "gan" else 90.0 + seed,
                        "stderr": None if model == "gan" else 0.3,
                        "note": "no likelihood" if model == "gan" else "test"}}
    if styled:
        m["family_style"] = record.FamilyStyle.of(FAMILIES[model]).to_dict()
    m.update(metrics or {})
    (run / "metrics.json").write_text(json.dumps(m))
    g = torch.Generator().manual_seed(seed)
    channels = 3 if dataset == "stacked_mnist" else 1
    save_image(torch.rand(4, channels, 8, 8, generator=g), run / "samples" / "samples.png", nrow=2)
    if history is not None:
        (run / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    return run


def evaluation(step: int, *, modes_captured: int) -> dict:
    """An intermediate ring8 evaluation as the runner writes it into eval_history (record.Evaluation)."""
    counts = [125] * modes_captured + [0] * (8 - modes_captured)
    return {"step": step, "num_samples": 1000, "sample_time_1000_s": 0.5,
            "mode_coverage": {"modes_captured": modes_captured, "num_modes": 8, "high_quality_fraction": 0.9,
                              "reverse_kl": 0.1, "counts": counts, "num_samples": 1000, "num_high_quality": 900,
                              "num_std": 3.0}}


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def row_of(rows: list[dict[str, str]], label: str, variant: str) -> dict[str, str]:
    found = [r for r in rows if r["label"] == label and r["variant"] == variant]
    assert len(found) == 1, f"expected one row {label!r} on {variant}, got {len(found)}: {[r['label'] for r in rows]}"
    return found[0]


def stats(values):
    """Mean, sample std (ddof 1) and standard error, computed here with numpy."""
    a = np.asarray(values, dtype=float)
    std = a.std(ddof=1)
    return a.mean(), std, std / math.sqrt(len(a))


def test_aggregates_seeds_with_mean_std_and_stderr(tmp_path):
    sweep = tmp_path / "sweep"
    modes = {"ring8": [6, 7, 8], "grid25": [15, 19, 22]}
    hq = {"ring8": [0.91, 0.95, 0.97], "grid25": [0.80, 0.70, 0.88]}
    for dataset in ("ring8", "grid25"):
        for seed in range(3):
            make_run(sweep, f"{dataset}_gan_s{seed}", model="gan", dataset=dataset, seed=seed, metrics={
                "mode_coverage": {"modes_captured": modes[dataset][seed], "num_modes": 8 if dataset == "ring8" else 25,
                                  "high_quality_fraction": hq[dataset][seed], "reverse_kl": 0.1 * (seed + 1)}})
        make_run(sweep, f"{dataset}_vae_s0", model="vae", dataset=dataset, metrics={
            "mode_coverage": {"modes_captured": 3, "num_modes": 8, "high_quality_fraction": 0.5, "reverse_kl": 0.2}})

    result = compare([sweep], out=tmp_path / "out")
    rows = read_csv(result.files["csv"])
    for dataset in ("ring8", "grid25"):
        r = row_of(rows, "gan", dataset)
        assert int(r["n"]) == 3 and r["seeds"] == "0 1 2"
        mean, std, se = stats(modes[dataset])
        assert float(r["modes_captured_mean"]) == pytest.approx(mean)
        assert float(r["modes_captured_std"]) == pytest.approx(std)
        assert float(r["modes_captured_stderr"]) == pytest.approx(se)
        mean, std, se = stats([100 * v for v in hq[dataset]])  # reported as a percentage
        assert float(r["high_quality_pct_mean"]) == pytest.approx(mean)
        assert float(r["high_quality_pct_stderr"]) == pytest.approx(se)
        assert float(r["train_time_s_mean"]) == pytest.approx(11.0)  # 10 + seed over seeds 0, 1, 2
        # a single run has no spread over seeds
        v = row_of(rows, "vae", dataset)
        assert int(v["n"]) == 1 and v["modes_captured_std"] == "" and float(v["modes_captured_mean"]) == 3

    # the PacGAN-style table: one row per family, ring and grid side by side, seeds counted
    md = result.files["markdown"].read_text()
    pacgan = md.split("PacGAN layout", 1)[1].split("###", 1)[0]
    header = next(line for line in pacgan.splitlines() if line.startswith("| method"))
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "method", "ring8 modes /8", "ring8 HQ %", "grid25 modes /25", "grid25 HQ %", "seeds"]
    gan_line = next(line for line in pacgan.splitlines() if line.startswith("| gan |"))
    assert gan_line.rstrip(" |").endswith("3 / 3")


def test_variants_are_never_averaged_together(tmp_path):
    sweep = tmp_path / "sweep"
    for seed, ll in enumerate([220.0, 230.0]):
        make_run(sweep, f"full_s{seed}", model="gan", dataset="mnist", variant="mnist", seed=seed,
                 metrics={"parzen": {"mean": ll, "stderr": 2.0, "sigma": 0.2}})
    for seed, ll in enumerate([150.0, 160.0, 170.0]):
        make_run(sweep, f"sample_s{seed}", model="gan", dataset="mnist", variant="mnist-5k", seed=seed,
                 metrics={"parzen": {"mean": ll, "stderr": 5.0, "sigma": 0.3}})

    result = compare([sweep], out=tmp_path / "out")
    rows = read_csv(result.files["csv"])
    full, small = row_of(rows, "gan", "mnist"), row_of(rows, "gan", "mnist-5k")
    assert (int(full["n"]), int(small["n"])) == (2, 3)
    assert float(full["parzen_ll_mean"]) == pytest.approx(225.0)
    assert float(small["parzen_ll_mean"]) == pytest.approx(160.0)
    assert float(small["parzen_ll_std"]) == pytest.approx(10.0)
    md = result.files["markdown"].read_text()
    assert "### mnist\n" in md and "### mnist-5k\n" in md


def test_runs_differing_in_a_hyperparameter_are_separate_rows(tmp_path):
    sweep = tmp_path / "sweep"
    for seed in range(2):
        make_run(sweep, f"a{seed}", model="gan", dataset="ring8", seed=seed, lr=1e-4,
                 metrics={"mode_coverage": {"modes_captured": 8, "num_modes": 8, "high_quality_fraction": 0.9}})
    make_run(sweep, "b0", model="gan", dataset="ring8", seed=0, lr=1e-3,
             metrics={"mode_coverage": {"modes_captured": 2, "num_modes": 8, "high_quality_fraction": 0.1}})
    rows = read_csv(compare([sweep], out=tmp_path / "out").files["csv"])
    by_lr = {r["label"]: r for r in rows}
    assert set(by_lr) == {"gan (model.module.optimizer.lr=0.0001)", "gan (model.module.optimizer.lr=0.001)"}
    assert float(by_lr["gan (model.module.optimizer.lr=0.0001)"]["modes_captured_mean"]) == 8
    assert int(by_lr["gan (model.module.optimizer.lr=0.001)"]["n"]) == 1


def test_baselines_nll_kinds_and_files(tmp_path):
    sweep = tmp_path / "sweep"
    baselines = {"train_images": {"mean": 243.0, "stderr": 0.8, "sigma": 0.17},
                 "kmeans_centroids": {"mean": 313.0, "stderr": 0.7, "sigma": 0.17}}
    for model in ("gan", "vae", "nade", "ddpm"):
        make_run(sweep, model, model=model, dataset="mnist", metrics={
            "parzen": {"mean": 200.0, "stderr": 2.0, "sigma": 0.2}, "parzen_baselines": baselines,
            "mode_coverage": {"classes_covered": 10, "num_classes": 10, "kl_to_data": 0.01, "kl_to_uniform": 0.02},
            "features": {"precision": 0.7, "recall": 0.6, "density": 0.9, "coverage": 0.8,
                         "frechet_distance": 12.5, "feature_network": "digit-cnn"}})
    result = compare([sweep], out=tmp_path / "out")
    rows = read_csv(result.files["csv"])
    assert float(row_of(rows, "train images (baseline)", "mnist")["parzen_ll_mean"]) == 243.0
    assert float(row_of(rows, "k-means centroids (baseline)", "mnist")["parzen_ll_mean"]) == 313.0
    assert {r["likelihood_kind"] for r in rows if r["model"] in NLL_KIND} == {"", "nll_iwae", "nll_exact", "nll_bound"}

    table = result.tables[0]
    nll = table.columns.index("NLL (nats)")
    cells = {row[0]: row[nll] for row in table.rows}
    assert cells["gan"] == "none"
    assert cells["vae"].endswith("(IWAE)") and cells["nade"].endswith("(exact)") and cells["ddpm"].endswith("(bound)")
    assert "FD (digit-cnn)" in table.columns  # the feature network is named
    # rows: the four families, then the two baselines
    assert [row[0] for row in table.rows] == ["gan", "vae", "nade", "ddpm", "train images (baseline)",
                                              "k-means centroids (baseline)"]

    out = tmp_path / "out"
    for name in ("comparison.md", "comparison.csv", "comparison.png", "samples_mosaic.png"):
        assert (out / name).is_file(), name
    with Image.open(out / "samples_mosaic.png") as im:
        size_four = im.size
    # one row per family: a fifth family makes the mosaic taller, not wider
    make_run(sweep, "gan_b", model="gan", dataset="mnist", lr=1e-3)
    compare([sweep], out=out)
    with Image.open(out / "samples_mosaic.png") as im:
        assert im.size[0] == size_four[0] and im.size[1] > size_four[1]


def test_a_record_without_a_family_style_is_compared_in_neutral_colours(tmp_path):
    """A metrics.json written before the families declared their style on their class:
    compare still reads it, in grey, after the declared families, its likelihood named by
    its kind."""
    sweep = tmp_path / "sweep"
    make_run(sweep, "old_vae", model="vae", dataset="ring8", styled=False)
    make_run(sweep, "gan", model="gan", dataset="ring8")
    groups = {g.model: g for g in load_groups(sweep)}
    assert groups["vae"].color == OTHER_COLOR and groups["gan"].color == GAN.family_color
    result = compare([sweep], out=tmp_path / "out")
    table = result.tables[0]
    cells = {row[0]: row[table.columns.index("NLL (nats)")] for row in table.rows}
    assert [row[0] for row in table.rows] == ["gan", "vae"]  # the undeclared family last
    assert cells["vae"].endswith("(iwae)")


def load_groups(sweep: Path):
    from gencompare.report.groups import group_runs

    return group_runs([load_run(p)[0] for p in sorted(sweep.iterdir())])


def test_gan_diagnostics_from_history_and_eval_history(tmp_path):
    steps = list(range(10, 210, 10))  # 20 logged steps: the last 20 % are the last 4
    d_loss = [1.0 + 0.1 * (i % 3) for i in range(20)]
    g_loss = [0.5 + 0.05 * i for i in range(20)]
    history = [{"step": s, "train/d_loss": d, "train/g_loss": g, "train/d_real": 0.9, "train/d_fake": 0.2,
                "train/grad_norm/generator": 1.0 + i} for i, (s, d, g) in enumerate(zip(steps, d_loss, g_loss))]
    history_text = "".join(json.dumps(r) + "\n" for r in history) + '{"step": 210, "train/d_lo'  # killed mid-write
    run = make_run(tmp_path / "sweep", "gan", model="gan", dataset="ring8", metrics={
        "steps": 200,
        "mode_coverage": {"modes_captured": 3, "num_modes": 8, "high_quality_fraction": 0.9},
        "eval_history": [evaluation(50, modes_captured=6), evaluation(100, modes_captured=8),
                         evaluation(150, modes_captured=5)]})
    (run / "history.jsonl").write_text(history_text)

    loaded, problems = load_run(run)
    assert problems == []
    d = training_diagnostics(loaded)
    assert d["tail_records"] == 4 and d["tail_steps"] == "170-200"
    assert d["d_loss_std"] == pytest.approx(np.std(d_loss[-4:], ddof=1))
    assert d["g_loss_mean"] == pytest.approx(np.mean(g_loss[-4:]))
    assert d["d_gap_mean"] == pytest.approx(0.7)
    assert d["grad_norm_generator_max"] == pytest.approx(20.0)
    assert (d["coverage_peak"], d["coverage_peak_step"], d["coverage_final"]) == (8, 100, 3)
    assert d["coverage_fell"] is True

    result = compare([tmp_path / "sweep"], out=tmp_path / "out")
    diag = read_csv(result.files["diagnostics"])
    assert len(diag) == 1 and diag[0]["coverage_fell"] == "True"


def test_select_metric_for_the_optuna_sweeper():
    metrics = {"mode_coverage": {"modes_captured": 7, "reverse_kl": float("inf")},
               "final_losses": {"grad_norm/generator": 0.5}, "likelihood": {"kind": None, "nll_nats": None}}
    assert select_metric(metrics, "mode_coverage.modes_captured") == 7.0
    assert isinstance(select_metric(metrics, "mode_coverage.modes_captured"), float)
    assert select_metric(metrics, "final_losses.grad_norm/generator") == 0.5
    assert math.isinf(select_metric(metrics, "mode_coverage.reverse_kl"))
    with pytest.raises(GencompareError, match=r"no 'high_quality_fraction' in mode_coverage \(has: modes_captured, reverse_kl\)"):
        select_metric(metrics, "mode_coverage.high_quality_fraction")
    with pytest.raises(GencompareError, match="is None, not a number"):
        select_metric(metrics, "likelihood.nll_nats")


def test_summarize_single_and_infinite_values():
    assert summarize([]) is None
    one = summarize([4.0])
    assert one.mean == 4.0 and math.isnan(one.std) and one.n == 1
    inf = summarize([0.5, float("inf")])
    assert math.isinf(inf.mean) and inf.n == 2


def _bad_inputs(root: Path) -> dict[str, Path]:
    empty = root / "empty"
    empty.mkdir(parents=True)
    unfinished = root / "sweep" / "0_gan_ring8_s0"
    unfinished.mkdir(parents=True)
    OmegaConf.save(OmegaConf.create({"seed": 0}), unfinished / "config.yaml")  # crashed before metrics.json
    corrupt = make_run(root / "sweep", "1_gan_ring8_s1", model="gan", dataset="ring8", seed=1)
    (corrupt / "metrics.json").write_text('{"status": "finished", "model": "gan", ')  # truncated
    return {"empty": empty, "unfinished": unfinished, "corrupt": corrupt}


def test_bad_input_warns_per_problem_and_compares_the_rest(tmp_path, data_dir):
    bad = _bad_inputs(tmp_path)
    make_run(tmp_path / "sweep", "2_gan_ring8_s2", model="gan", dataset="ring8", seed=2,
             metrics={"mode_coverage": {"modes_captured": 5, "num_modes": 8, "high_quality_fraction": 0.5}})
    out = tmp_path / "out"
    proc = run_cli("compare", str(bad["empty"]), str(tmp_path / "sweep"), "--out", str(out),
                   cwd=tmp_path, data_dir=data_dir, timeout=120)
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 3, proc.stderr
    assert any(f"{bad['empty']}: empty directory" in w for w in warnings)
    assert any(f"{bad['unfinished']}: no metrics.json" in w for w in warnings)
    assert any(f"{bad['corrupt'] / 'metrics.json'}: corrupt JSON" in w for w in warnings)
    rows = read_csv(out / "comparison.csv")
    assert len(rows) == 1 and rows[0]["seeds"] == "2" and float(rows[0]["modes_captured_mean"]) == 5
    assert "corrupt JSON" in (out / "comparison.md").read_text()  # problems are listed in the report too


def test_nothing_comparable_exits_non_zero(tmp_path, data_dir):
    bad = _bad_inputs(tmp_path)
    proc = run_cli("compare", str(bad["empty"]), str(tmp_path / "sweep"), str(tmp_path / "missing"),
                   "--out", str(tmp_path / "out"), cwd=tmp_path, data_dir=data_dir, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert sum(line.startswith("warning:") for line in lines) == 4  # empty, unfinished, corrupt, missing
    assert lines[-1].startswith("error: nothing to compare")
    assert not (tmp_path / "out" / "comparison.csv").exists()


def test_wandb_logs_tables_and_images_to_a_comparison_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    sweep = tmp_path / "sweep"
    for seed in range(2):
        make_run(sweep, f"s{seed}", model="gan", dataset="ring8", seed=seed, metrics={
            "mode_coverage": {"modes_captured": 8, "num_modes": 8, "high_quality_fraction": 0.5,
                              "reverse_kl": float("inf") if seed else 0.1}})  # an inf must not break the table
    compare([sweep], out=tmp_path / "out", wandb=True)
    media = list((tmp_path / "out" / "wandb").glob("offline-run-*/files/media"))
    assert len(media) == 1
    tables = {p.name.split("_")[0] for p in (media[0] / "table").rglob("*.table.json")}
    assert {"comparison", "pacgan"} <= tables
    comparison = json.loads(next((media[0] / "table").glob("comparison_*.table.json")).read_text())
    assert comparison["columns"][0] == "label" and len(comparison["data"]) == 1
    assert len(list((media[0] / "images").rglob("*.png"))) == 2  # the figure and the mosaic


def test_metric_registry_names_keys_of_the_record_schema():
    """A typo in a registry key would show as an empty column, never as an error."""
    keys = [k for m in METRICS for k in (m.key, m.own_stderr, m.total) if k]
    assert len(keys) > len(METRICS)
    assert [k for k in keys if not record.schema_has(k)] == []
    assert not record.schema_has("mode_coverage.modes_capture")  # the check can fail


def test_a_metrics_json_of_the_wrong_types_is_one_problem_line(tmp_path):
    run = make_run(tmp_path / "sweep", "gan_s0", model="gan", dataset="ring8", metrics={"model": 3})
    loaded, problems = load_run(run)
    assert loaded is None
    assert problems == [f"{run / 'metrics.json'}.model: expected a string, got 3; skipped"]


def test_coverage_kind_comes_from_the_record_not_the_dataset_name(tmp_path):
    sweep = tmp_path / "sweep"
    cov = {"modes_captured": 5, "num_modes": 6, "high_quality_fraction": 0.8, "reverse_kl": 0.2}
    make_run(sweep, "moons", model="gan", dataset="moons6", metrics={"mode_coverage": cov,
                                                                    "data": {"coverage": "mixture"}})
    make_run(sweep, "old_ring", model="gan", dataset="ring8", metrics={"mode_coverage": cov})  # no data.coverage
    result = compare([sweep], out=tmp_path / "out")
    for table in result.tables:
        assert {"modes captured", "HQ %"} <= set(table.columns), table.title
        assert "Parzen LL (nats)" not in table.columns
        assert table.rows[0][table.columns.index("modes captured")] == "5 /6"
