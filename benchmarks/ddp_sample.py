"""Samples drawn across ranks against one process on a CPU (issue 22 item 4, whose GPU target
is 10,000 DDIM samples on 8 GPUs in an eighth of one GPU's time): the wall time of
``gencompare sample run=<DDPM run> n=N`` with one process and with ``trainer.devices=2``
(1 thread each), the fixed cost of either (``n=10``) taken off, and whether the two draw the
same samples.

    OMP_NUM_THREADS=1 python benchmarks/ddp_sample.py           # writes benchmarks/results/ddp-sample-cpu.md
    python benchmarks/ddp_sample.py --n 200 --out /tmp/x.md     # shorter

The run is trained here for 2 steps (the CPU-default MNIST DDPM, ``metrics=none``) with the
DDIM sampler of ``--steps`` steps: sampling time does not depend on the weights.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import results_file  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GENCOMPARE = [sys.executable, "-m", "gencompare"]


def _timed(args: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run([*GENCOMPARE, *args], check=True, env=env, cwd=cwd, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="samples drawn")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ddp-sample-cpu.md"))
    args = parser.parse_args()
    import torch

    load = os.getloadavg()[0]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    with tempfile.TemporaryDirectory() as tmp:
        cwd, run = Path(tmp), Path(tmp) / "run"
        subprocess.run([*GENCOMPARE, "train", "model=ddpm", "dataset=mnist", "trainer.max_steps=2", "logger=none",
                        "metrics=none", "trainer.progress=false", "model.module.sampler=ddim",
                        f"model.module.sample_steps={args.steps}", f"hydra.run.dir={run}"],
                       check=True, env=env, cwd=cwd, capture_output=True)
        wall, pt = {}, {}
        for ranks in (1, 2):
            extra = [f"trainer.devices={ranks}"] if ranks > 1 else []
            for n in (args.n, 10):
                pt[ranks, n] = cwd / f"s{ranks}_{n}.png"
                wall[ranks, n] = _timed(["sample", f"run={run}", f"n={n}", f"out={pt[ranks, n]}", *extra], env, cwd)
        one, two = (torch.load(pt[r, args.n].with_suffix(".pt")) for r in (1, 2))
        same = bool(torch.equal(one, two))
        diff = float((one - two).abs().max())
    draw = {r: wall[r, args.n] - wall[r, 10] for r in (1, 2)}
    lines = [
        *results_file.head("Samples across ranks on a CPU (`benchmarks/ddp_sample.py`)", "cpu", load),
        "",
        f"`gencompare sample run=<MNIST DDPM, CPU defaults, DDIM {args.steps} steps> n={args.n}`, one process "
        "against `trainer.devices=2` (gloo), 1 thread each; wall time of the whole command, and less the same "
        "command's at n=10 (start-up, loading, the grid).",
        "",
        "| | one process | 2 ranks | 2 ranks / one |",
        "|---|---|---|---|",
        f"| wall, n={args.n} (s) | {wall[1, args.n]:.1f} | {wall[2, args.n]:.1f} "
        f"| {wall[2, args.n] / wall[1, args.n]:.2f} |",
        f"| wall, n=10 (s) | {wall[1, 10]:.1f} | {wall[2, 10]:.1f} | |",
        f"| drawing {args.n} samples (s) | {draw[1]:.1f} | {draw[2]:.1f} | {draw[2] / draw[1]:.2f} |",
        "",
        f"The 2 ranks' samples equal one process's: {'bit for bit' if same else f'no, largest difference {diff:.3g}'}.",
        "The ideal is 0.50; what is above it is the data-parallel overhead (the gathers, every rank drawing the "
        "whole chunk's noise), not broken down here.",
    ]
    results_file.write(lines, Path(args.out))


if __name__ == "__main__":
    main()
