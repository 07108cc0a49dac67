"""Stacked seeds only (S = 10) of a checkout's benchmarks/seeds.py, twice per family, for a before /
after comparison run side by side (benchmarks/results/seeds-redesign-cpu.md):

    python benchmarks/seeds_before_after.py <checkout>/benchmarks/seeds.py   # PYTHONPATH=<checkout> for an old one
"""
import importlib.util, os, sys, tempfile
from pathlib import Path
import torch
torch.set_num_threads(1)
os.environ.setdefault("WANDB_MODE", "disabled")
sys.path.insert(0, str(Path(sys.argv[1]).parent))
spec = importlib.util.spec_from_file_location("seedsbench", sys.argv[1])
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
print("load start", os.getloadavg(), flush=True)
with tempfile.TemporaryDirectory() as tmp:
    for rep in range(2):
        for label, family, steps, extra in m.CASES:
            if label not in ("gan", "vae", "nade", "ddpm"):
                continue
            cfg = m.compose_case(family, steps, extra, "cpu", Path(tmp) / f"{label}-{rep}" / "batch" / "run_s0", 0, 10)
            t = m.train_seed_batch(cfg)["train_time_s"]  # a member's 1/S share of the batch's loop time
            print(f"RESULT rep{rep} {label} S=10 steps={steps} stacked {t:.2f} s", flush=True)
print("load end", os.getloadavg(), flush=True)
