"""`gencompare eval` and the end-of-training evaluation, through the real CLI and config."""
from __future__ import annotations

import json

import pytest

from conftest import run_cli

TRAIN = ["train", "dataset=mnist", "dataset.download=false", "trainer.max_steps=3", "trainer.batch_size=16",
         "trainer.progress=false", "logger=none", "metrics=none"]
EVAL_FAST = ["metrics=fast", "metrics.parzen.baselines=true", "logger=none"]


@pytest.mark.parametrize("family", ["gan", "vae"])
def test_eval_prints_and_stores_every_image_metric(tmp_path, data_dir, family):
    extra = ["model.module.iwae_k=8"] if family == "vae" else []
    res = run_cli(*TRAIN, f"model={family}", *extra, f"hydra.run.dir={family}", cwd=tmp_path, data_dir=data_dir)
    assert res.returncode == 0, res.stderr
    ev = run_cli("eval", f"run={family}", *EVAL_FAST, cwd=tmp_path, data_dir=data_dir)
    assert ev.returncode == 0, ev.stderr
    out = ev.stdout
    for label in ("Parzen LL (nats)", "train images (baseline)", "k-means centroids (baseline)",
                  "classes covered", "precision", "recall", "density", "coverage", "FD (gencompare-cnn-mnist-5k)",
                  "classifier accuracy %"):
        assert label in out, f"{label!r} missing from eval output:\n{out}"
    m = json.loads((tmp_path / family / "metrics.json").read_text())
    pz = m["parzen"]
    assert pz["num_centres"] == 1000 and pz["sigma"] in pz["sigmas"]
    assert pz["valid_means"][pz["sigmas"].index(pz["sigma"])] == max(pz["valid_means"])
    assert set(m["parzen_baselines"]) == {"train_images", "kmeans_centroids"}
    # three steps of training cannot beat real training images as kernel centres
    assert m["parzen_baselines"]["train_images"]["mean"] > pz["mean"]
    assert 1 <= m["mode_coverage"]["classes_covered"] <= 10
    assert m["classifier"]["test_accuracy"] >= 0.98
    assert 0.0 <= m["features"]["precision"] <= 1.0 and m["features"]["frechet_distance"] >= 0.0
    if family == "vae":
        assert m["likelihood"]["kind"] == "nll_iwae" and m["likelihood"]["nll_nats"] > 0
        assert m["likelihood"]["binarization"] == "dynamic"
    else:
        assert m["likelihood"]["kind"] is None and "no likelihood" in m["likelihood"]["note"]
    assert (tmp_path / family / "parzen_sigma.png").stat().st_size > 0


def test_ring8_training_ends_with_mode_coverage(tmp_path, data_dir):
    """Mode coverage at the end, and with trainer.eval_every over training: the evaluations
    a user watches coverage collapse or recover in (metrics.json eval_history)."""
    res = run_cli("train", "model=gan", "dataset=ring8", "trainer.max_steps=4", "trainer.eval_every=2",
                  "trainer.progress=false", "logger=none", "hydra.run.dir=r", cwd=tmp_path, data_dir=data_dir)
    assert res.returncode == 0, res.stderr
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    mc = m["mode_coverage"]
    assert mc["num_modes"] == 8 and 0 <= mc["modes_captured"] <= 8 and m["num_samples"] == 2500
    assert "modes captured" in res.stdout
    # step 4 is the final evaluation, not an intermediate one
    assert [e["step"] for e in m["eval_history"]] == [2]
    assert m["eval_history"][0]["mode_coverage"]["num_modes"] == 8


def _one_line_error(res) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode != 0 and len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    return lines[0]


def test_eval_bad_input_fails_in_one_line(tmp_path, data_dir):
    (tmp_path / "empty").mkdir()
    assert "has no checkpoint" in _one_line_error(
        run_cli("eval", "run=empty", "logger=none", cwd=tmp_path, data_dir=data_dir))
    assert "missing value for run" in _one_line_error(run_cli("eval", cwd=tmp_path, data_dir=data_dir))
    for family in ("gan", "vae"):
        res = run_cli("train", f"model={family}", "dataset=ring8", "trainer.max_steps=2", "trainer.progress=false",
                      "logger=none", "metrics=none", f"hydra.run.dir={family}", cwd=tmp_path, data_dir=data_dir)
        assert res.returncode == 0, res.stderr
    line = _one_line_error(run_cli("eval", "run=gan", "ckpt=vae/checkpoints/last.ckpt", "logger=none",
                                   cwd=tmp_path, data_dir=data_dir))
    assert "holds a vae model but" in line
    res = run_cli(*TRAIN, "model=gan", "hydra.run.dir=img", cwd=tmp_path, data_dir=data_dir)
    assert res.returncode == 0, res.stderr
    line = _one_line_error(run_cli("eval", "run=img", "metrics=fast", "metrics.num_samples=500", "logger=none",
                                   cwd=tmp_path, data_dir=data_dir))
    assert "below the 1000 Parzen centres" in line


def test_kmeans_baseline_is_omitted_when_centres_are_not_fewer_than_training_images(tmp_path, data_dir):
    res = run_cli(*TRAIN, "model=gan", "hydra.run.dir=g", cwd=tmp_path, data_dir=data_dir)
    assert res.returncode == 0, res.stderr
    # mnist-5k has 4,000 training images: 5,000 "k-means centroids" of them would be the images
    ev = run_cli("eval", "run=g", "metrics=fast", "metrics.num_samples=5000", "metrics.parzen.num_centres=5000",
                 "metrics.parzen.baselines=true", "metrics.classifier.enabled=false", "logger=none",
                 cwd=tmp_path, data_dir=data_dir)
    assert ev.returncode == 0, ev.stderr
    b = json.loads((tmp_path / "g" / "metrics.json").read_text())["parzen_baselines"]
    assert "kmeans_centroids" not in b and "4000 training images" in b["note"]
    assert b["train_images"]["num_centres"] == 4000
    assert "omitted" in ev.stdout


def test_2d_final_scatter_plot_shows_the_scored_samples_drawn_once(tmp_path, data_dir, monkeypatch):
    """A 2D run's final scatter plot is of the 2,500 samples its evaluation scores, drawn
    once: a DDPM's 1,000-step ancestral sampler made a second draw cost ~30 s of a CPU core
    per run. The modes in metrics.json are those of the plotted points."""
    from conftest import compose_train
    from gencompare import evaluate
    from gencompare.data import mixture_means
    from gencompare.metrics.mode_coverage import mixture_coverage
    from gencompare.train import callbacks
    from gencompare.train.train import train

    draws, plotted = [], []
    real_draw, real_save = evaluate.draw_samples, callbacks.save_samples

    def counting_draw(model, n, batch_size, seed, *ranks):
        out = real_draw(model, n, batch_size, seed, *ranks)
        draws.append(out[0])
        return out

    def keeping_save(samples, path, **kw):
        plotted.append(samples)
        return real_save(samples, path, **kw)

    monkeypatch.setattr(evaluate, "draw_samples", counting_draw)
    monkeypatch.setattr(callbacks, "save_samples", keeping_save)
    monkeypatch.setattr(callbacks, "grid_samples", lambda *a, **k: pytest.fail("the final 2D grid drew its own samples"))
    cfg = compose_train(tmp_path / "r", data_dir, "model=gan", "dataset=ring8", "trainer.max_steps=4", "metrics=default",
                        "metrics.likelihood.enabled=false")
    out = train(cfg)
    assert [len(d) for d in draws] == [2500]
    assert len(plotted) == 1 and plotted[0] is draws[0]
    assert (tmp_path / "r" / out["sample_grid"]).stat().st_size > 0
    means, std = mixture_means("ring8")
    assert out["mode_coverage"] == mixture_coverage(draws[0], means, std)


def test_eval_of_a_run_gives_the_same_numbers_every_time(tmp_path, data_dir):
    """Two `gencompare eval`s of one run write the same metrics: the IWAE estimate (and any
    estimator drawing from the global RNG) is seeded from the run's seed."""
    train = run_cli("train", "model=vae", "dataset=ring8", "trainer.max_steps=20", "logger=none",
                    "trainer.progress=false", "metrics=none", "hydra.run.dir=run", cwd=tmp_path, data_dir=data_dir)
    assert train.returncode == 0, train.stderr
    nll = []
    for _ in range(2):
        ev = run_cli("eval", "run=run", "metrics=fast", "logger=none",
                     cwd=tmp_path, data_dir=data_dir)
        assert ev.returncode == 0, ev.stderr
        nll.append(json.loads((tmp_path / "run" / "metrics.json").read_text())["likelihood"]["nll_nats"])
    assert nll[0] == nll[1]
