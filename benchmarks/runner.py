"""What the shared runner costs over a bare training loop of the same model.

    .venv/bin/python benchmarks/runner.py [--repeats 3] [--device auto] [--threads T]

For each case (GAN and VAE on MNIST, GAN and NADE on ring8) both sides build the model
with the same builder (:func:`gencompare.build.build_model`), the same optimizers
(``configure_optimizers``, ``optimizer_repeats``), batch size and data, and train the
same number of steps:

- **bare**: a plain loop: sample a batch, ``training_step``, ``zero_grad``, ``backward``,
  ``step`` per optimizer, ``on_train_batch_end``; nothing logged, nothing checked.
- **runner**: :func:`gencompare.train.train.train` with ``logger=none metrics=none`` and the
  default duties (log every 50 steps with gradient norms and the finiteness check, a
  checkpoint at the end); its time is the loop's own (``steps / steps_per_s`` of its
  metrics.json: data and model set-up, the final grid and evaluation excluded).

Cases and sides are interleaved (bare, runner, bare, runner, ...) and the best of
``--repeats`` is kept for each, so load on the machine hits both alike. Writes
``benchmarks/results/runner-<device>.md``. Target (issue "One clear house"): runner/bare
at most 1.05 for every case.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402

import gencompare.config  # noqa: E402,F401 - registers the schema
from gencompare.build import build_model, prepare_data, resolve_device  # noqa: E402
from gencompare.checkpoint import seed_everything  # noqa: E402
from gencompare.data import binarize  # noqa: E402
from gencompare.train.train import train  # noqa: E402

import results_file  # noqa: E402 - benchmarks/results_file.py, beside this script

CASES = (("gan", "mnist", 300), ("vae", "mnist", 300), ("gan", "ring8", 2000), ("nade", "ring8", 2000))


def compose_case(family: str, dataset: str, steps: int, device: str, run_dir: Path, extra: tuple[str, ...] = ()):
    overrides = [f"model={family}", f"dataset={dataset}", f"device={device}", "logger=none", "metrics=none",
                 "trainer.progress=false", f"trainer.max_steps={steps}", f"trainer.sample_every={10 * steps}",
                 f"trainer.checkpoint_every={10 * steps}", f"paths.output_dir={run_dir}", *extra]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_loop(cfg) -> float:
    """Seconds for ``trainer.max_steps`` steps of the plain loop (set-up excluded)."""
    device = resolve_device(cfg.device.name)
    seed_everything(int(cfg.seed))
    bundle = prepare_data(cfg)
    model = build_model(cfg, bundle).to(device)
    bundle.to(device)
    optimizers, repeats = model.configure_optimizers(), model.optimizer_repeats()
    data, b = bundle.train, int(cfg.trainer.batch_size)
    dynamic = bundle.binarization == "dynamic"
    model.train()
    sync(device)
    t0 = time.perf_counter()
    for step in range(int(cfg.trainer.max_steps)):
        for name, opt in optimizers.items():
            for _ in range(int(repeats.get(name, 1))):
                batch = data[torch.randint(len(data), (b,), device=device)]
                if dynamic:
                    batch = binarize(batch, "dynamic")
                loss, _ = model.training_step(batch, name)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        model.on_train_batch_end(step)
    sync(device)
    return time.perf_counter() - t0


def runner_loop(cfg) -> float:
    """Seconds of the runner's own loop for the same steps (from its metrics.json)."""
    metrics = train(cfg)
    return metrics["steps"] / metrics["steps_per_s"]


def measure(cases, repeats: int, device: str, work: Path,
            extra: tuple[str, ...] = ()) -> dict[tuple[str, str], dict[str, float]]:
    """The best of ``repeats`` bare and runner times for each ``(family, dataset, steps)``
    case, interleaved; ``extra``: config overrides for every case."""
    best: dict[tuple[str, str], dict[str, float]] = {}
    for rep in range(repeats):
        for family, dataset, steps in cases:
            key = (family, dataset)
            cfg = compose_case(family, dataset, steps, device, work / f"{family}-{dataset}-{rep}", extra)
            times = best.setdefault(key, {"bare": float("inf"), "runner": float("inf"), "steps": steps})
            times["bare"] = min(times["bare"], bare_loop(cfg))
            times["runner"] = min(times["runner"], runner_loop(cfg))
            print(f"repeat {rep + 1}: {family} on {dataset}: bare {times['bare']:.2f} s, "
                  f"runner {times['runner']:.2f} s (best so far)", flush=True)
    return best


def table(best: dict[tuple[str, str], dict[str, float]]) -> list[str]:
    """The markdown table of :func:`measure`'s times, runner/bare against the 1.05 target."""
    lines = ["| family | dataset | steps | bare (s) | runner (s) | runner / bare | target |",
             "|---|---|---:|---:|---:|---:|---|"]
    for (family, dataset), t in best.items():
        ratio = t["runner"] / t["bare"]
        lines.append(f"| {family} | {dataset} | {t['steps']:,.0f} | {t['bare']:.2f} | {t['runner']:.2f} | "
                     f"{ratio:.3f} | {'met' if ratio <= 1.05 else 'MISSED'} (<= 1.05) |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("WANDB_MODE", "disabled")
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="gencompare-runner-bench-") as tmp:
        best = measure(CASES, args.repeats, args.device, Path(tmp))
    device = str(resolve_device(args.device))
    lines = [
        *results_file.head("Runner overhead benchmark", device, load_start),
        f"- best of {args.repeats}, bare and runner interleaved; loop time only (set-up, final grid and "
        "evaluation excluded); runner at its defaults (log every 50 steps, checkpoint at the end)", "",
        *table(best),
    ]
    results_file.write(lines, args.out or ROOT / "benchmarks" / "results" / f"runner-{device.split(':')[0]}.md")

if __name__ == "__main__":
    main()
