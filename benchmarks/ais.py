"""Benchmark of AIS (gencompare/metrics/ais.py) on an MLP decoder against the decoder's own floor.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ais.py [--steps K] [--rounds R] [--device cpu]

The decoder is the shape of Goodfellow et al.'s (2014) MNIST generator, 100 -> 1200 -> 1200
-> 784 (ReLU, sigmoid output), built with plain torch.nn and random weights (speed does not
depend on training), in eval mode, with GaussianObservation(decoder, sigma=0.1) and a
standard-normal prior. The batch is N = 8 examples x C = 16 chains = 128 rows.

Measured in one run, interleaved R times so that both see the same load:
  (a) AIS: ais_log_likelihood with K steps and L = 10 leapfrog steps, which makes
      1 + (K - 1) L evaluations of log p(x|z) and its gradient in z (one decoder forward
      plus backward each);
  (b) the floor: the bare decoder forward + torch.autograd.grad(out.sum(), z) on the same
      128 x 100 batch, as many times as (a) evaluates it;
  (c) for attribution, (b) with the Gaussian log-density log p(x|z) in place of out.sum().
The ratio is (a) per evaluation over (b) per evaluation, in process CPU time (the machine is
shared, and with one thread CPU time moves far less with the other jobs' load than wall time)
and in wall time, each as best round over best round and as the median of the rounds'
ratios; the target is <= 1.5. Writes benchmarks/results/ais-<device>.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gencompare.metrics.ais import (  # noqa: E402
    DecoderModel,
    GaussianObservation,
    StandardNormalPrior,
    ais_log_likelihood,
)


def decoder(device: str) -> torch.nn.Module:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(100, 1200), torch.nn.ReLU(), torch.nn.Linear(1200, 1200),
                              torch.nn.ReLU(), torch.nn.Linear(1200, 784), torch.nn.Sigmoid())
    return net.to(device).eval()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def floor(net: torch.nn.Module, z: torch.Tensor, evals: int, device: str, obs=None,
          x: torch.Tensor | None = None) -> tuple[float, float]:
    """Wall and process-CPU seconds per bare forward + backward w.r.t. z; with ``obs``, of
    obs.log_prob(x, z) instead of the decoder's output sum (the decoder plus the density)."""
    sync(device)
    t, c = time.perf_counter(), time.process_time()
    for _ in range(evals):
        zz = z.detach().requires_grad_(True)
        out = net(zz).sum() if obs is None else obs.log_prob(x, zz).sum()
        (g,) = torch.autograd.grad(out, zz)
    sync(device)
    return (time.perf_counter() - t) / evals, (time.process_time() - c) / evals


def ais_run(model, x: torch.Tensor, steps: int, chains: int, leapfrog: int, device: str) -> tuple[float, float, float]:
    """Wall and process-CPU seconds per gradient evaluation of one AIS run, and its mean estimate (nats)."""
    g = torch.Generator(device=device).manual_seed(0)
    sync(device)
    t, c = time.perf_counter(), time.process_time()
    res = ais_log_likelihood(model, x, steps=steps, chains=chains, leapfrog=leapfrog, generator=g)
    sync(device)
    evals = 1 + (steps - 1) * leapfrog
    return (time.perf_counter() - t) / evals, (time.process_time() - c) / evals, float(res.log_px.mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    device, n, chains, leapfrog = args.device, 8, 16, 10
    load_start = os.getloadavg()[0]
    net = decoder(device)
    model = DecoderModel(StandardNormalPrior(100, device=device), GaussianObservation(net, 0.1))
    g = torch.Generator(device=device).manual_seed(1)
    with torch.no_grad():
        x = model.sample_given_latent(model.prior_sample(n, g), g)
    z = torch.randn(n * chains, 100, device=device)
    x_rep = x.repeat(chains, 1)
    evals = 1 + (args.steps - 1) * leapfrog
    floor(net, z, 5, device)  # warm-up (allocator, kernels)
    ais_run(model, x, 2, chains, leapfrog, device)
    floors, ais, estimates, with_ll = [], [], [], []  # (wall, cpu) pairs per round
    for r in range(args.rounds):
        floors.append(floor(net, z, evals, device))
        with_ll.append(floor(net, z, evals, device, model.observation, x_rep))
        *a, est = ais_run(model, x, args.steps, chains, leapfrog, device)
        ais.append(a)
        estimates.append(est)
        print(f"round {r + 1}: floor {floors[-1][0] * 1e3:.2f} ms, AIS {a[0] * 1e3:.2f} ms per evaluation (wall), "
              f"ratio {a[0] / floors[-1][0]:.3f}; CPU time ratio {a[1] / floors[-1][1]:.3f}", flush=True)
    rows = n * chains
    # on a shared CPU the wall time swings with the other jobs' load; the process's CPU time
    # much less (one thread), so that ratio is the headline, the wall-clock ones beside it
    cpu_best = min(a[1] for a in ais) / min(f[1] for f in floors)
    cpu_med = statistics.median(a[1] / f[1] for a, f in zip(ais, floors))
    wall_best = min(a[0] for a in ais) / min(f[0] for f in floors)
    wall_med = statistics.median(a[0] / f[0] for a, f in zip(ais, floors))
    density = statistics.median(w[1] / f[1] for w, f in zip(with_ll, floors))
    where = torch.cuda.get_device_name(0) if device.startswith("cuda") else (platform.processor() or platform.machine())
    lines = [
        f"# AIS gradient evaluations against the decoder's forward + backward floor ({device})", "",
        f"- date: {dt.datetime.now().isoformat(timespec='seconds')}",
        f"- command: `OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(unset)')} "
        f"{' '.join([Path(sys.executable).name, *sys.argv])}`",
        f"- machine: {os.cpu_count()} logical CPUs ({where}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch thread(s); shared with other jobs: load average (1 min) "
        f"{load_start:.2f} at start, {os.getloadavg()[0]:.2f} at end",
        f"- decoder: MLP 100 -> 1200 -> 1200 -> 784 (ReLU, sigmoid), GaussianObservation sigma 0.1, "
        f"N(0, I) prior; batch {n} examples x {chains} chains = {rows} rows",
        f"- AIS: steps K = {args.steps}, leapfrog L = {leapfrog}: {evals} gradient evaluations per run; "
        f"{args.rounds} rounds, each the floor then AIS", "",
        "| round | floor wall (ms / eval) | AIS wall (ms / eval) | wall ratio | floor CPU (ms / eval) "
        "| AIS CPU (ms / eval) | CPU ratio | decoder + log p(x|z) CPU (ms / eval) "
        "| AIS evals/s (wall) "
        "| AIS chain-evals/s (wall) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r, (f, a, w) in enumerate(zip(floors, ais, with_ll)):
        lines.append(f"| {r + 1} | {f[0] * 1e3:.2f} | {a[0] * 1e3:.2f} | {a[0] / f[0]:.3f} | {f[1] * 1e3:.2f} "
                     f"| {a[1] * 1e3:.2f} | {a[1] / f[1]:.3f} | {w[1] * 1e3:.2f} | {1 / a[0]:.1f} "
                     f"| {rows / a[0]:.0f} |")
    lines += [
        "",
        f"Ratio AIS / floor per gradient evaluation (target <= 1.5): process CPU time {cpu_best:.3f} "
        f"(best round of each), {cpu_med:.3f} (median of the rounds' ratios); wall clock {wall_best:.3f} "
        f"(best of each), {wall_med:.3f} (median of the rounds' ratios). The decoder plus the Gaussian "
        f"log-density (forward + backward, no sampler) takes {density:.3f} x the floor in CPU time (median): "
        "that much of the overhead is the density, the rest the sampler.",
        f"AIS estimate (mean log p(x), nats, random decoder, K = {args.steps}): "
        + ", ".join(f"{e:.1f}" for e in estimates) + " (not a likelihood result: far too few steps).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    out = args.out or ROOT / "benchmarks" / "results" / f"ais-{device.split(':')[0]}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
