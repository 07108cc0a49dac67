"""What S seeds cost trained stacked (``trainer.seed_batch=S``) against S separate runs.

    .venv/bin/python benchmarks/seeds.py [--threads 1] [--members 1,2,5,10] [--device auto]

For each family on ring8 and each S, both sides train the same seeds (0..S-1) for the same
number of steps through the real entry points: :func:`gencompare.train.seeds.train_seed_batch`
(S = 1: :func:`gencompare.train.train.train`) and S calls of :func:`gencompare.train.train.train`.
The time compared is the training loop's alone (``train_time_s`` of metrics.json): set-up,
the final grid and the evaluation are excluded (``metrics=none``; the DDPM draws its grid with
10 DDIM steps, which its training never uses). Writes
``benchmarks/results/seeds-<device>.md``. Targets (issue "Many seeds at the price of one"):
10 members of the 2D GAN at most 2x one run.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402

import gencompare.config  # noqa: E402,F401 - registers the schema
from gencompare.build import resolve_device  # noqa: E402
from gencompare.train.train import train  # noqa: E402
from gencompare.train.seeds import train_seed_batch  # noqa: E402

import results_file  # noqa: E402 - benchmarks/results_file.py, beside this script

# (label, model, steps, overrides): long enough that the loop, not its start, is timed. The
# last two are experiment=remedies_2d's GAN networks (PacGAN's 2D setting, 890k parameters)
# plain and unrolled (k = 5); --families selects by label.
CASES = (("gan", "gan", 2000, []), ("vae", "vae", 2000, []), ("nade", "nade", 2000, []),
         ("ddpm", "ddpm", 400, ["model.module.sampler=ddim", "model.module.sample_steps=10"]),
         ("pacgan2d", "pacgan2d", 200, []),
         ("pacgan2d-unrolled5", "pacgan2d", 50, ["model.module.unrolled_steps=5"]))


def compose_case(family: str, steps: int, extra: list[str], device: str, run_dir: Path, seed: int, members: int):
    overrides = [f"model={family}", "dataset=ring8", f"device={device}", "logger=none", "metrics=none",
                 "trainer.progress=false", f"trainer.max_steps={steps}", f"trainer.sample_every={10 * steps}",
                 f"trainer.checkpoint_every={10 * steps}", f"seed={seed}", f"trainer.seed_batch={members}",
                 f"paths.output_dir={run_dir}", *extra]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def stacked_time(result: dict) -> float:
    """The whole batch's loop time of :func:`train_seed_batch`'s result: each member's
    ``train_time_s`` is its share (1/S), ``seed_batch.batch_train_time_s`` the whole."""
    return result["seed_batch"][0]["metrics"]["seed_batch"]["batch_train_time_s"]


def measure(cases, sizes: list[int], device: str, work: Path, *, separate: bool = True,
            extra: tuple[str, ...] = ()) -> list[tuple]:
    """``(label, steps, S, stacked s, S separate s, one run s)`` for each case of ``cases``
    (:data:`CASES`' shape) and each S of ``sizes`` ("one run": the first size's separate
    runs, so ``sizes`` starts with 1). ``separate=False`` trains one separate run first and
    takes S separate runs as S times it; ``extra``: overrides for every run."""
    rows = []
    for label, family, steps, case_extra in cases:
        overrides = [*case_extra, *extra]
        one = None if separate else train(compose_case(family, steps, overrides, device, work / f"{label}-one" / "run_s0",
                                                        0, 1))["train_time_s"]
        for s in sizes:
            base = work / f"{label}-S{s}"
            cfg = compose_case(family, steps, overrides, device, base / "batch" / "run_s0", 0, s)
            batched = stacked_time(train_seed_batch(cfg)) if s > 1 else train(cfg)["train_time_s"]
            if separate:
                alone = sum(train(compose_case(family, steps, overrides, device, base / "alone" / f"run_s{i}", i, 1))
                            ["train_time_s"] for i in range(s))
            else:
                alone = s * one
            one = one if one is not None else alone  # the first size's separate runs (S = 1: one run)
            rows.append((label, steps, s, batched, alone, one))
            print(f"{label} S={s}: stacked {batched:.2f} s, {s} separate runs {alone:.2f} s", flush=True)
    return rows


def table(rows: list[tuple]) -> list[str]:
    """The markdown table of :func:`measure`'s rows."""
    lines = ["| family | steps | S | stacked (s) | S separate (s) | separate / stacked | stacked / one run | ms per step per member |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for family, steps, s, batched, separate, one in rows:
        lines.append(f"| {family} | {steps:,} | {s} | {batched:.2f} | {separate:.2f} | {separate / batched:.2f}x | "
                     f"{batched / one:.2f}x | {1000 * batched / steps / s:.3f} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: one job per core)")
    ap.add_argument("--members", default="1,2,5,10")
    ap.add_argument("--families", default="gan,vae,nade,ddpm")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("WANDB_MODE", "disabled")
    sizes = [int(s) for s in args.members.split(",")]
    families = args.families.split(",")
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="gencompare-seeds-bench-") as tmp:
        rows = measure([c for c in CASES if c[0] in families], sizes, args.device, Path(tmp))
    device = str(resolve_device(args.device))
    lines = [
        *results_file.head("Seed batching benchmark", device, load_start),
        "- ring8, batch 100 per member, seeds 0..S-1; training loop time only (train_time_s: set-up, final grid "
        "and evaluation excluded); separate runs one after another in the same process", "",
        *table(rows),
    ]
    results_file.write(lines, args.out or ROOT / "benchmarks" / "results" / f"seeds-{device.split(':')[0]}.md")

if __name__ == "__main__":
    main()
