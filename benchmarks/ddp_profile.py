"""Where a data-parallel step's extra time goes on a CPU (issue 22): ``torch.profiler``'s
self CPU time per op for one process at batch B and for rank 0 of 2 gloo ranks at per-rank
batch B (1 thread each, as benchmarks/ddp.py), side by side, ms per step.

    OMP_NUM_THREADS=1 python benchmarks/ddp_profile.py model=gan dataset=mnist --batch 100 --steps 60

Profiler time is the calling thread's: the gloo threads' work and a rank's wait for the other
show up only as the ops that wait (``DistributedDataParallel.forward``, the backward's
finalization) and in the wall time per step printed last. Quoted in
benchmarks/results/ddp-cpu.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ddp import _compose  # noqa: E402  (this folder, run as a script or by torchrun)


def _profile(overrides: list[str], batch: int, steps: int, out: Path) -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from gencompare.train.distributed import launched, rank_info, teardown
    from gencompare.train.train import train

    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = _compose([*overrides, f"trainer.batch_size={batch}", f"trainer.max_steps={steps}"], Path(tmp) / "run")
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                result = train(cfg)
    finally:
        if launched():
            teardown()
    if rank_info().main:
        ops = {e.key: e.self_cpu_time_total / 1000 / steps for e in prof.key_averages()}
        out.write_text(json.dumps({"ops": ops, "ms_per_step": 1000 / float(result["steps_per_s"])}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", default=["model=gan", "dataset=mnist"])
    parser.add_argument("--batch", type=int, default=100, help="per-rank batch B")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--top", type=int, default=20, help="ops shown, by their difference")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _profile(args.overrides, args.batch, args.steps, Path(args.worker))
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        one, two = Path(tmp) / "one.json", Path(tmp) / "two.json"
        common = [*args.overrides, "--steps", str(args.steps)]
        subprocess.run([sys.executable, __file__, *common, "--batch", str(args.batch), "--worker", str(one)],
                       check=True, env=env, capture_output=True)
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", __file__,
                        *common, "--batch", str(2 * args.batch), "--worker", str(two)],
                       check=True, env=env, capture_output=True)
        a, b = json.loads(one.read_text()), json.loads(two.read_text())
    keys = sorted(set(a["ops"]) | set(b["ops"]), key=lambda k: -(b["ops"].get(k, 0) - a["ops"].get(k, 0)))
    print(f"{'op (self CPU, ms/step)':60s} {'one process':>12s} {'rank 0 of 2':>12s} {'difference':>11s}")
    for k in keys[: args.top]:
        x, y = a["ops"].get(k, 0.0), b["ops"].get(k, 0.0)
        print(f"{k[:60]:60s} {x:12.2f} {y:12.2f} {y - x:+11.2f}")
    total_a, total_b = sum(a["ops"].values()), sum(b["ops"].values())
    print(f"{'all ops':60s} {total_a:12.2f} {total_b:12.2f} {total_b - total_a:+11.2f}")
    print(f"{'wall time per step':60s} {a['ms_per_step']:12.2f} {b['ms_per_step']:12.2f} "
          f"{b['ms_per_step'] - a['ms_per_step']:+11.2f}")


if __name__ == "__main__":
    main()
