"""``metrics.ais`` (issue 23, items 2, 4 and 5): AIS as a metric of the comparison, through
the families' ``latent_decoder()``, recorded in metrics.json and shown by the terminal table
and compare; the other metrics keep their numbers with it; on a VAE it tightens IWAE."""
from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import CONF_DIR, run_cli
from gencompare.data.mixtures import Ring8
from gencompare.evaluate import evaluate_model
from gencompare.metrics.ais_metric import AISLikelihood
from gencompare.metrics.base import EvalContext
from gencompare.record import RunMetrics
from gencompare.report import compare
from model_configs import from_config

ADAM = functools.partial(torch.optim.Adam, lr=1e-3)
# seconds on a shared CPU: a wiring check, not a converged likelihood
TINY_AIS = ["metrics.ais.num_test=8", "metrics.ais.chains=2", "metrics.ais.steps=5", "metrics.ais.leapfrog=2",
            "metrics.ais.sigma_grid=[0.05,0.5]", "metrics.ais.select_steps=3", "metrics.ais.bdmc_examples=2"]
TRAIN = ["train", "dataset=ring8", "trainer.max_steps=3", "trainer.batch_size=16", "trainer.progress=false",
         "logger=none", "metrics=fast", "metrics.likelihood.max_examples=20", "model.module.iwae_k=50"]


@pytest.mark.parametrize("family, blocks", [("gan", {"gaussian"}), ("vae", {"gaussian", "decoder"})])
def test_a_decoder_family_gets_ais_blocks_in_metrics_json_the_terminal_and_compare(tmp_path, data_dir, family,
                                                                                  blocks):
    train = [a for a in TRAIN if family == "vae" or "iwae" not in a]
    res = run_cli(*train, f"model={family}", *TINY_AIS, "hydra.run.dir=run", cwd=tmp_path, data_dir=data_dir)
    assert res.returncode == 0, res.stderr
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(m["ais"]) == blocks
    g = m["ais"]["gaussian"]
    assert g["observation"] == "gaussian" and g["sigma"] in (0.05, 0.5) and g["sigma_grid"] == [0.05, 0.5]
    assert (g["steps"], g["chains"], g["leapfrog"], g["num_test"], g["bdmc_examples"]) == (5, 2, 2, 8, 2)
    assert g["nll_nats"] is not None and g["stderr_nats"] > 0 and 0 <= g["acceptance_rate"] <= 1
    assert g["bdmc_gap_nats"] is not None and g["bdmc_threshold_nats"] == 1.0
    if g["bdmc_gap_too_large"]:
        assert "ais.gaussian: BDMC gap" in res.stderr
    if family == "vae":
        assert m["ais"]["decoder"]["observation"] == "decoder (gaussian)"
        assert m["ais"]["decoder"]["bits_per_dim"] is not None
    RunMetrics.from_dict(m)  # the schema reads it back
    row = next(line for line in res.stdout.splitlines() if "AIS NLL, Gaussian" in line)
    assert f"{g['nll_nats']:.3g}" in row and "sigma=" in row and "K=5" in row
    # the rest of metrics.json is the run's as always: the mode coverage beside it
    assert m["mode_coverage"]["num_modes"] == 8

    result = compare([tmp_path / "run"], out=tmp_path / "cmp")
    (table,) = result.tables
    assert table.rows[0][table.columns.index("AIS NLL, Gaussian obs. (nats)")].startswith(f"{g['nll_nats']:.3g}")
    assert ("AIS NLL, own decoder (nats)" in table.columns) == (family == "vae")
    assert (tmp_path / "cmp" / "comparison.png").is_file()


@pytest.mark.parametrize("family", ["nade", "ddpm"])
def test_a_family_without_a_decoder_gets_the_reason(family):
    model = from_config(family, (2,), optimizer=ADAM)
    reason = AISLikelihood().applies(None, model)
    assert isinstance(reason, str) and family in reason and "no decoder with a prior" in reason


def _ring8_vae(steps: int = 0):
    torch.manual_seed(0)
    bundle = Ring8(num_train=2000, num_valid=200, num_test=200).load(0)
    vae = from_config("vae", (2,), optimizer=ADAM, iwae_k=5000)
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    for i in range(steps):
        loss, _ = vae.training_step(bundle.train[(i * 100) % 2000:][:100], "model")
        opt.zero_grad()
        loss.backward()
        opt.step()
    return vae, bundle


def _metrics_cfg(ais: bool):
    mcfg = OmegaConf.load(Path(CONF_DIR) / "metrics" / "default.yaml")
    mcfg.likelihood.max_examples = 30
    mcfg.ais.update(num_test=6, chains=2, steps=4, leapfrog=2, sigma_grid=[0.1], bdmc_examples=1, enabled=ais)
    return mcfg


@pytest.mark.usefixtures("one_thread")
def test_the_other_metrics_are_bit_identical_with_ais_added_and_the_global_rng_is_untouched(tmp_path):
    vae, bundle = _ring8_vae()
    runs = []
    for ais in (False, True):
        torch.manual_seed(123)
        out = evaluate_model(_metrics_cfg(ais), vae, bundle, run_dir=tmp_path, cache_dir=tmp_path, seed=0)
        runs.append((out, torch.get_rng_state()))
    (off, rng_off), (on, rng_on) = runs
    assert "ais" not in off and set(on["ais"]) == {"gaussian", "decoder"}
    on.pop("ais")
    for d in (off, on):
        d.pop("sample_time_1000_s")
    assert on == off  # the IWAE estimate, which draws from the global RNG, included
    assert torch.equal(rng_off, rng_on)  # AIS drew only from its own generator


@pytest.mark.usefixtures("one_thread")
def test_ais_with_the_vaes_own_decoder_is_not_below_its_iwae_estimate():
    """Issue 23's acceptance on a tiny ring8 VAE: forward AIS and IWAE (k = 5,000) are both
    stochastic lower bounds of the same log p(x); AIS with its own decoder may not fall below
    IWAE by more than its standard error. A 2-D latent: 100 steps converge."""
    vae, bundle = _ring8_vae(steps=150)
    metric = AISLikelihood(num_test=40, chains=4, steps=100, leapfrog=5, sigma_grid=[0.1], bdmc_examples=4)
    ctx = EvalContext(model=vae, bundle=bundle, cont=bundle.continuous_view(), samples=torch.zeros(1),
                      run_dir=Path("."), cache_dir=Path("."), seed=0)
    own = metric.compute(ctx).decoder
    assert own.num_test == 40 and own.bdmc_gap_nats < 1.0
    # the IWAE NLL on the same 40 examples, recorded beside AIS's
    torch.manual_seed(2311)
    with torch.no_grad():
        assert own.family_nll_nats == pytest.approx(-vae.log_likelihood(bundle.test[:40]).double().mean().item())
    assert own.nll_nats <= own.family_nll_nats + own.stderr_nats, (own.nll_nats, own.family_nll_nats, own.stderr_nats)
