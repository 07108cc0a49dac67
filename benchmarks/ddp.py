"""What data parallelism costs on a CPU (issue 22): the step time of 2 ranks (gloo, 1 thread
each) at per-rank batch B against one process (1 thread) at batch B, so the ratio is the
all-reduce's overhead (and that of drawing the global batch and noise on every rank); the
target is at most 1.15.

    OMP_NUM_THREADS=1 python benchmarks/ddp.py            # writes benchmarks/results/ddp-cpu.md
    python benchmarks/ddp.py --steps 60 --out /tmp/x.md   # shorter

Each measurement is ``train(cfg)``'s own ``steps_per_s`` (the loop alone, not start-up or
evaluation), the best of ``--repeats`` runs, one process and 2 ranks alternating; also 2
independent one-process runs at once (what 2 processes cost on the machine without any
communication), against which the ranks' ratio isolates the all-reduce. The two
ranks are started by torchrun (``python -m torch.distributed.run --standalone``) running this
file with ``--worker``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # gencompare from this checkout, installed or not (torchrun's workers too)
# (name, overrides, per-rank batches B, steps at B = 100): the larger B shows how the
# overhead, a fixed cost per step, weighs on a longer step
CASES = [
    ("GAN, MNIST (maxout MLP)", ["model=gan", "dataset=mnist"], (100, 400), 60),
    ("VAE, MNIST (MLP)", ["model=vae", "dataset=mnist"], (100, 400), 60),
    ("GAN, ring8 (2D MLP)", ["model=gan", "dataset=ring8"], (100, 1000), 300),
    ("RNADE, ring8", ["model=nade", "dataset=ring8"], (100, 1000), 300),
]
COMMON = ["logger=none", "metrics=none", "trainer.progress=false", "trainer.log_every=1000000",
          "trainer.sample_every=1000000", "trainer.checkpoint_every=1000000", "dataset.download=false"]


def _compose(overrides: list[str], run_dir: Path):
    from hydra import compose, initialize_config_dir

    import gencompare.config  # noqa: F401 - the schema

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=[*COMMON, f"paths.output_dir={run_dir}", *overrides])


def _steps_per_s(overrides: list[str], batch: int, steps: int) -> float:
    import torch

    from gencompare.train.train import train

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _compose([*overrides, f"trainer.batch_size={batch}", f"trainer.max_steps={steps}"], Path(tmp) / "run")
        return float(train(cfg)["steps_per_s"])


def _worker(args) -> None:
    from gencompare.train.distributed import rank_info, teardown

    rates = []
    try:
        for overrides, batch, steps in json.loads(args.cases):
            rates.append(_steps_per_s(overrides, batch, steps))
    finally:
        teardown()
    if rank_info().main:
        Path(args.result).write_text(json.dumps({"steps_per_s": rates}))


def ranks_steps_per_s(cases: list[tuple[list[str], int, int]], nproc: int) -> list[float]:
    """Steps/s of each ``(overrides, global batch, steps)`` case trained by ``nproc`` ranks
    of one torchrun job (1 thread each), the cases one after another in the same processes.

    Raises:
        subprocess.CalledProcessError: the job failed (its output in ``stderr``).
    """
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "rate.json"
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                        __file__, "--worker", "--cases", json.dumps(cases), "--result", str(result)],
                       check=True, env=env, capture_output=True, text=True)
        return json.loads(result.read_text())["steps_per_s"]


def _two_ranks(overrides: list[str], batch: int, steps: int) -> float:
    return ranks_steps_per_s([(overrides, 2 * batch, steps)], 2)[0]


def _one_process(overrides: list[str], batch: int, steps: int, copies: int = 1) -> float:
    """Steps/s of one process; with ``copies`` > 1, that many independent processes at once
    (their mean): what 2 ranks cost on this machine without any communication."""
    code = ("import json, sys; sys.path.insert(0, %r); from ddp import _steps_per_s; "
            "print(json.dumps(_steps_per_s(%r, %d, %d)))") % (str(Path(__file__).parent), overrides, batch, steps)
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}) for _ in range(copies)]
    rates = [float(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    return sum(rates) / len(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cases", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=None, help="steps per measurement at B = 100 (default: per "
                        "case; fewer at a larger B, at least a third of them and 30)")
    parser.add_argument("--batches", default=None, help="per-rank batches, comma-separated (default: per case)")
    parser.add_argument("--repeats", type=int, default=2, help="measurements of each side; the best is kept")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ddp-cpu.md"))
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return
    load_before = os.getloadavg()
    rows = []
    for name, overrides, batches, steps_100 in CASES:
        for batch in ([int(b) for b in args.batches.split(",")] if args.batches else batches):
            steps = max((args.steps or steps_100) * 100 // batch, (args.steps or steps_100) // 3, 30)
            one, pair, two = 0.0, 0.0, 0.0
            for _ in range(args.repeats):
                one = max(one, _one_process(overrides, batch, steps))
                pair = max(pair, _one_process(overrides, batch, steps, copies=2))
                two = max(two, _two_ranks(overrides, batch, steps))
            rows.append((name, batch, steps, 1000 / one, 1000 / pair, 1000 / two, 1000 / two - 1000 / one, one / two,
                         pair / two))
            print(f"{name}, B={batch}: one process {1000 / one:.2f} ms/step, 2 independent {1000 / pair:.2f}, 2 ranks "
                  f"{1000 / two:.2f}; ratio {one / two:.2f}, against 2 independent {pair / two:.2f}", flush=True)
    load_after = os.getloadavg()
    lines = [
        "# Data-parallel overhead on CPU (`benchmarks/ddp.py`)",
        "",
        f"{datetime.date.today()}, {os.cpu_count()} CPU cores, torch "
        f"{__import__('torch').__version__}; 2 gloo ranks of 1 thread each at per-rank batch B against one "
        "process of 1 thread at batch B (so each rank does the one process's work, plus the all-reduce "
        f"and drawing the global batch and noise); best of {args.repeats}, loop time only.",
        f"Machine load (1/5/15-min load averages) before: {' '.join(f'{x:.2f}' for x in load_before)}, "
        f"after: {' '.join(f'{x:.2f}' for x in load_after)}: the 2 ranks need 2 free cores, which a loaded "
        "machine does not give them, so a ratio above the target here may be the load's.",
        "",
        "| case | B per rank | steps | one process (ms/step) | 2 independent processes at once (ms/step) "
        "| 2 ranks (ms/step) | overhead (ms/step) | ratio to one process (target <= 1.15) | ratio to 2 independent |",
        "|---|---|---|---|---|---|---|---|---|",
        *[f"| {n} | {b} | {s} | {a:.2f} | {p:.2f} | {t:.2f} | {o:.2f} | {r:.2f} | {q:.2f} |"
          for n, b, s, a, p, t, o, r, q in rows],
        "",
        "The last column separates the all-reduce (and the global draws) from what running 2 processes "
        "costs on this machine at all: 2 independent one-process runs started together, each at batch B, "
        "sharing the cores and memory bandwidth as the 2 ranks do. The overhead column is the 2 ranks' "
        "step time less one process's.",
        "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
