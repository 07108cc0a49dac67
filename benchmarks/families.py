"""Throughput of the four families on this machine: training steps/s and the time to draw
10,000 samples (the Parzen protocol's centres), through the real runner and configs.

    .venv/bin/python benchmarks/families.py [--dataset mnist,cifar10] [--steps 200] [--samples 10000]
        [--families gan,vae,nade,ddpm] [--device auto] [--threads T] [--set KEY=VALUE ...]

    # the paper-size CIFAR-10 U-Net of Ho et al. (35.7M parameters) instead of the small default
    .venv/bin/python benchmarks/families.py --dataset cifar10 --families ddpm --set ddpm:experiment=ddpm_cifar10

For each family it composes ``conf/train.yaml`` (``logger=none metrics=none``), trains
``--steps`` steps with :func:`gencompare.train.train.train` (so the step is exactly the one
``gencompare train`` runs, on the device ``device=auto`` picks) and reads ``steps_per_s``
from the run's metrics.json; then it reloads the model from the run's checkpoint and times
:func:`gencompare.evaluate.draw_samples` for ``--samples`` samples (CUDA synchronised).
Where ``--samples`` is below 10,000 the 10,000-sample time is extrapolated linearly and
the table says so. A dataset that cannot be loaded here (CIFAR-10 offline) is skipped with
its one-line reason, in the output and the results file. Each family's sampler is its
default (the DDPM's for images: DDIM with 50 steps; ``--set
ddpm:model.module.sampler=ancestral`` for the paper's).

Prints a markdown table and writes it to ``benchmarks/results/families-<device>.md``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402

import gencompare.config  # noqa: E402,F401 - registers the schema
from gencompare.evaluate import draw_samples  # noqa: E402
from gencompare.build import build_model, prepare_data, resolve_device  # noqa: E402
from gencompare.checkpoint import load_checkpoint  # noqa: E402
from gencompare.errors import GencompareError  # noqa: E402
from gencompare.record import RunDir  # noqa: E402
from gencompare.train.train import train  # noqa: E402


def family_overrides(family: str, extra: list[str]) -> list[str]:
    """``KEY=VALUE`` applies to every family, ``FAMILY:KEY=VALUE`` to that family only."""
    out = []
    for item in extra:
        head, sep, rest = item.partition(":")
        if sep and "=" not in head:
            if head == family:
                out.append(rest)
        else:
            out.append(item)
    return out


def bench_family(family: str, dataset: str, args, work: Path) -> dict:
    run_dir = work / f"{dataset}_{family}"
    overrides = [
        f"model={family}", f"dataset={dataset}", f"device={args.device}", "logger=none", "metrics=none",
        "trainer.progress=false", f"trainer.max_steps={args.steps}", f"trainer.log_every={max(1, args.steps // 4)}",
        f"trainer.sample_every={10 * args.steps}", f"trainer.checkpoint_every={10 * args.steps}",
        f"paths.output_dir={run_dir}", *family_overrides(family, args.set),
    ]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    metrics = train(cfg)
    row = {
        "family": family, "variant": metrics["variant"], "device": metrics["device"],
        "batch_size": metrics["batch_size"], "steps": metrics["steps"], "steps_per_s": metrics["steps_per_s"],
        "steady_steps_per_s": steady_steps_per_s(run_dir, metrics), "precision": metrics["precision"],
        "compile": metrics["compile"], "parameters": metrics["parameters_total"], "samples_drawn": args.samples,
        "sample_seconds": None, "seconds_10k": None, "extrapolated": False, "sampler": "",
    }
    if args.samples <= 0:  # training throughput alone
        return row
    device = resolve_device(cfg.device.name)
    bundle = prepare_data(cfg)
    model = build_model(cfg, bundle)
    model.load_state_dict(load_checkpoint(RunDir(run_dir).checkpoint)["model"])
    model.to(device)
    draw_samples(model, min(100, args.samples), 100, seed=1)  # warm-up (kernels, caches)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    _, _ = draw_samples(model, args.samples, 1000, seed=2)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return {**row, "sample_seconds": seconds, "seconds_10k": seconds * 10_000 / args.samples,
            "extrapolated": args.samples < 10_000, "sampler": model.describe_sampler() or ""}


def steady_steps_per_s(run_dir: Path, metrics: dict) -> float | None:
    """Steps/s between the run's first and last log step (history.jsonl), so the first
    steps' one-off costs (``torch.compile``'s compilation, CUDA's first allocations) are
    left out; None with fewer than two log steps. Each log line's ``train/samples_per_s`` is
    the loop's mean rate so far, so its elapsed time is ``step * examples_per_step / rate``."""
    lines = (run_dir / "history.jsonl").read_text().splitlines() if (run_dir / "history.jsonl").is_file() else []
    logs = [json.loads(line) for line in lines if line.strip()]
    logs = [r for r in logs if r.get("train/samples_per_s")]
    if len(logs) < 2 or not metrics.get("steps_per_s"):
        return None
    per_step = metrics["samples_per_s"] / metrics["steps_per_s"]  # examples drawn per step
    (s0, r0), (s1, r1) = [(r["step"], r["train/samples_per_s"]) for r in (logs[0], logs[-1])]
    elapsed = per_step * (s1 / r1 - s0 / r0)
    return (s1 - s0) / elapsed if elapsed > 0 else None


def run(args, datasets: list[str], families: list[str], work: Path) -> tuple[list[dict], list[str]]:
    """:func:`bench_family` for each dataset and family (``args``: steps, samples, device,
    set); a dataset that cannot be loaded here is skipped with its one-line reason."""
    rows, skipped = [], []
    for dataset in datasets:
        for family in families:
            try:
                rows.append(bench_family(family.strip(), dataset.strip(), args, work))
            except GencompareError as exc:  # the data is not here (CIFAR-10 offline)
                skipped.append(f"{dataset}: {exc}")
                print(f"skipping {dataset}: {exc}", flush=True)
                break
            r = rows[-1]
            sampled = f", {r['seconds_10k']:.3g} s per 10,000 samples" if r["seconds_10k"] is not None else ""
            print(f"{dataset}/{family}: {r['steps_per_s']:.2f} steps/s{sampled}", flush=True)
    return rows, skipped


def table(rows: list[dict]) -> list[str]:
    """The markdown table of ``rows`` (:func:`bench_family`'s)."""
    lines = ["| data | family | parameters | batch | steps/s | examples/s | 10,000 samples (s) | sampler |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        ten_k = f"{r['seconds_10k']:.3g}" + (f" (extrapolated from {r['samples_drawn']:,})" if r["extrapolated"] else "")
        lines.append(f"| {r['variant']} | {r['family']} | {r['parameters']:,} | {r['batch_size']} | "
                     f"{r['steps_per_s']:.2f} | {r['steps_per_s'] * r['batch_size']:,.0f} | {ten_k} | "
                     f"{r['sampler'] or 'default'} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="mnist,cifar10", help="comma-separated dataset configs")
    ap.add_argument("--families", default="gan,vae,nade,ddpm")
    ap.add_argument("--steps", type=int, default=200, help="training steps timed per family (after start-up)")
    ap.add_argument("--samples", type=int, default=10_000, help="samples drawn and timed per family")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--set", action="append", default=[], help="config override for every family (trainer.precision=bf16) or one (ddpm:model.module.sampler=ancestral)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("WANDB_MODE", "disabled")
    with tempfile.TemporaryDirectory(prefix="gencompare-bench-") as tmp:
        rows, skipped = run(args, args.dataset.split(","), args.families.split(","), Path(tmp))
    if not rows:
        sys.exit("nothing benchmarked: " + "; ".join(skipped))
    device = rows[0]["device"]
    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") else f"{platform.processor() or platform.machine()}"
    lines = [
        "# Family throughput benchmark", "",
        f"- date: {dt.datetime.now().isoformat(timespec='seconds')}",
        f"- command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
        f"- torch {torch.__version__}, {torch.get_num_threads()} CPU threads; device {device} ({gpu}); "
        f"load average at end {os.getloadavg()[0]:.2f}",
        f"- data: {', '.join(dict.fromkeys(r['variant'] for r in rows))}; {args.steps} training steps per family "
        "(steps/s over the whole loop, start-up steps included)",
        *[f"- skipped {s}" for s in skipped], "",
        *table(rows),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    out = args.out or ROOT / "benchmarks" / "results" / f"families-{device.split(':')[0]}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    (out.with_suffix(".json")).write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {out}")

if __name__ == "__main__":
    main()
