"""A trained VAE's AIS estimate with its own decoder against its IWAE estimate (issue 23's
acceptance: AIS may not fall below IWAE, k = 5,000, by more than its standard error).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ais_vae_iwae.py RUN_DIR [--num-test N]
        [--chains C] [--steps K] [--leapfrog L] [--sigma S] [--bdmc B] [--data-dir DIR]

Loads RUN_DIR's VAE (``gencompare train model=vae ...``), scores its first N test examples
(binarized as its own likelihood scores them) with IWAE (k = 5,000, the global RNG seeded 0)
and with ``metrics.ais`` (:class:`gencompare.metrics.ais_metric.AISLikelihood`: own decoder,
and the Gaussian observation of its decoder mean with sigma S fixed, no selection), and
prints both with their standard errors and the BDMC gaps, as Markdown lines.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from gencompare.build import load_run_model
from gencompare.metrics.ais_metric import AISLikelihood
from gencompare.metrics.base import EvalContext


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--num-test", type=int, default=20)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--leapfrog", type=int, default=10)
    ap.add_argument("--sigma", type=float, default=0.158)  # Wu et al.'s MNIST variance 0.025 as a std
    ap.add_argument("--bdmc", type=int, default=4)
    ap.add_argument("--data-dir", default=None)
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    _, ck, bundle, vae = load_run_model(a.run_dir, data_dir=a.data_dir)
    vae.eval()
    n = a.num_test
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.no_grad():
        iw = vae.log_likelihood(bundle.test[:n], k=5000).double()
    t_iw = time.perf_counter() - t0
    metric = AISLikelihood(num_test=n, chains=a.chains, steps=a.steps, leapfrog=a.leapfrog, sigma_grid=[a.sigma],
                           bdmc_examples=a.bdmc)
    metric.name = "ais"
    ctx = EvalContext(model=vae, bundle=bundle, cont=bundle.continuous_view(), samples=torch.zeros(1),
                      run_dir=Path(a.run_dir), cache_dir=Path(a.run_dir), seed=0)
    out = metric.compute(ctx)
    d, g = out.decoder, out.gaussian
    iw_nll, iw_se = float(-iw.mean()), float(iw.std() / n ** 0.5)
    print(f"- model: {a.run_dir}, variant {bundle.variant}, binarization {bundle.binarization}, "
          f"step {ck.get('step')}; first {n} test examples")
    print(f"- IWAE (k = 5,000): NLL {iw_nll:.2f} ± {iw_se:.2f} nats ({t_iw:.0f} s)")
    print(f"- AIS, own decoder ({d.observation}), K = {a.steps}, {a.chains} chains, L = {a.leapfrog}: NLL "
          f"{d.nll_nats:.2f} ± {d.stderr_nats:.2f} nats; BDMC gap {d.bdmc_gap_nats:.2f} nats on {a.bdmc} simulated; "
          f"acceptance {d.acceptance_rate:.2f} ({d.seconds:.0f} s)")
    print(f"- IWAE NLL - AIS NLL = {iw_nll - d.nll_nats:.2f} nats (positive: AIS is the tighter bound); "
          f"AIS standard error {d.stderr_nats:.2f}")
    print(f"- AIS, Gaussian observation of the decoder mean, sigma = {a.sigma} on [0, 1] pixels: NLL "
          f"{g.nll_nats:.2f} ± {g.stderr_nats:.2f} nats; BDMC gap {g.bdmc_gap_nats:.2f} nats ({g.seconds:.0f} s)")


if __name__ == "__main__":
    main()
