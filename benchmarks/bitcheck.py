"""Bit-identity check for refactors: compare two sets of run dirs trained with the same
commands and seeds (before and after a change), on the CPU with one torch thread.

    python benchmarks/bitcheck.py run OUT_DIR [--checkout DIR] [--only a,b] [--list]
    python benchmarks/bitcheck.py BEFORE_DIR AFTER_DIR [--skip-grad-norms]

``run`` trains the suite below into ``OUT_DIR/<case>`` with the code of ``--checkout`` (a
checkout of another commit, ``git worktree add /tmp/before <commit>``; default this one),
each case a ``gencompare train`` process on one torch thread; the older checkout runs with
its own package and its own ``conf/``, not the installed ones. The suite is the redesign
issue's: the main job at 300 steps with full metrics; GAN, VAE, NADE, DDPM on ring8 and on
MNIST; seed batches of 3 GANs and of 3 unrolled GANs; PacGAN's 2D GAN; one run per family
on a CIFAR-10-format archive (tests/image_data.py's, written into ``OUT_DIR/data``).

Each argument of the comparison holds one run dir per job (same names on both sides). Compared exactly:
every value of ``metrics.json`` except wall-clock times and the keys the newer record
adds (``schema_version``, ``data.coverage``); every ``history.jsonl`` value except
``train/samples_per_s``; every tensor of the checkpoint's model and optimizer states, its
step and batch count. Prints one line per run and exits 1 on any difference.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import torch

WALL_CLOCK = {"train_time_s", "steps_per_s", "samples_per_s", "sample_time_1000_s", "train/samples_per_s",
              "batch_train_time_s"}
# Since the redesign the gradient norm is measured at log steps only (it cost ~20 % of a
# small network's step): grad_norm/* is the norm at the log step, no longer a mean over the
# window, so --skip-grad-norms compares everything else.
GRAD_NORM = "grad_norm/"
# keys the newer record adds: the family's style, as its class declares it, and what the data's
# loader says of it (the classifier that scores coverage, the table's order) (issue 20)
ADDED = {"schema_version", "data.coverage", "family_style.color", "family_style.order",
         "family_style.likelihood_label", "data.classifier", "data.table_order",
         "compile"}  # the compile state that ran (issue 21)
# blocks the newer record adds, every key under them: the AIS estimates (issue 23), the facts of
# several processes (issue 22)
ADDED_BLOCKS = ("ais.", "world_size", "batch_size_per_rank")
# each side's OUT_DIR in strings (the data folder named in data.notes / data.source) reads as this
OUT_DIR = "<OUT_DIR>"


def _flat(node, prefix=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _flat(v, f"{prefix}{k}.")
    elif isinstance(node, list) and any(isinstance(v, (dict, list)) for v in node):
        for i, v in enumerate(node):
            yield from _flat(v, f"{prefix}{i}.")
    else:
        yield prefix[:-1], node


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _strip(node, root: Path):
    if isinstance(node, str):
        return node.replace(str(root.resolve()), OUT_DIR).replace(str(root), OUT_DIR)
    if isinstance(node, dict):
        return {k: _strip(v, root) for k, v in node.items()}
    if isinstance(node, list):
        return [_strip(v, root) for v in node]
    return node


def compare_json(a: dict, b: dict) -> list[str]:
    fa, fb = dict(_flat(a)), dict(_flat(b))
    diffs = []
    for key in sorted(set(fa) | set(fb)):
        if key.rsplit(".", 1)[-1] in WALL_CLOCK or key in ADDED or key.startswith(ADDED_BLOCKS) \
                or (SKIP_GRAD_NORMS and GRAD_NORM in key):
            continue
        if key not in fa or key not in fb:
            diffs.append(f"{key}: only in {'after' if key in fb else 'before'}")
        elif not _same(fa[key], fb[key]):
            diffs.append(f"{key}: {fa[key]!r} != {fb[key]!r}")
    return diffs


def _tensors(node, prefix=""):
    if isinstance(node, torch.Tensor):
        yield prefix, node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _tensors(v, f"{prefix}{k}/")
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _tensors(v, f"{prefix}{i}/")


def compare_checkpoints(a: Path, b: Path) -> tuple[int, list[str]]:
    ca = torch.load(a, map_location="cpu", weights_only=False)
    cb = torch.load(b, map_location="cpu", weights_only=False)
    diffs = [f"{k}: {ca.get(k)} != {cb.get(k)}" for k in ("step", "batches_drawn", "family", "variant")
             if ca.get(k) != cb.get(k)]
    ta = dict(_tensors({"model": ca["model"], "optimizers": ca["optimizers"]}))
    tb = dict(_tensors({"model": cb["model"], "optimizers": cb["optimizers"]}))
    if ta.keys() != tb.keys():
        diffs.append(f"tensor names differ: {sorted(set(ta) ^ set(tb))[:5]}")
    for k in sorted(set(ta) & set(tb)):
        if ta[k].shape != tb[k].shape or not torch.equal(ta[k], tb[k]):
            diffs.append(f"tensor {k} differs")
    return len(ta), diffs


def main(before: Path, after: Path) -> int:
    failed = 0
    for run in sorted(p for p in before.iterdir() if (p / "metrics.json").is_file()):  # not OUT_DIR/data
        other = after / run.name
        diffs: list[str] = []
        mb = _strip(json.loads((run / "metrics.json").read_text()), before)
        ma = _strip(json.loads((other / "metrics.json").read_text()), after)
        diffs += compare_json(mb, ma)
        hb = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
        ha = [json.loads(x) for x in (other / "history.jsonl").read_text().splitlines()]
        diffs += [f"history line {i}: {d}" for i, (x, y) in enumerate(zip(hb, ha)) for d in compare_json(x, y)]
        if len(hb) != len(ha):
            diffs.append(f"history: {len(hb)} vs {len(ha)} lines")
        n, cdiffs = compare_checkpoints(run / "checkpoints" / "last.ckpt", other / "checkpoints" / "last.ckpt")
        diffs += cdiffs
        nkeys = sum(1 for _ in _flat(mb))
        print(f"{run.name}: {'IDENTICAL' if not diffs else 'DIFFERENT'} ({nkeys} metrics.json values, "
              f"{len(hb)} history lines, {n} checkpoint tensors)")
        for d in diffs[:10]:
            print(f"    {d}")
        failed += bool(diffs)
    return 1 if failed else 0


SKIP_GRAD_NORMS = False

_QUIET = ("logger=none", "trainer.progress=false", "dataset.download=false")
_CIFAR = ("dataset=cifar10", "metrics=fast", "metrics.classifier.epochs=1", "metrics.fid_is.num_real=100",
          "metrics.parzen.num_centres=200", "metrics.parzen.num_valid=50", "metrics.parzen.num_test=50",
          "dataset.valid_size=60", "metrics.features.num_real=100",
          "metrics.num_samples=200", "metrics.likelihood.max_examples=50",
          "trainer.max_steps=20", "trainer.batch_size=20")
SUITE: dict[str, tuple[str, ...]] = {
    "main-300": ("trainer.max_steps=300",),
    **{f"{f}-ring8": (f"model={f}", "dataset=ring8", "trainer.max_steps=300") for f in ("gan", "vae", "nade")},
    "ddpm-ring8": ("model=ddpm", "dataset=ring8", "trainer.max_steps=200", "model.module.timesteps=100"),
    "gan-mnist": ("model=gan", "dataset=mnist", "trainer.max_steps=200", "metrics=fast"),
    "vae-mnist": ("model=vae", "dataset=mnist", "trainer.max_steps=200", "metrics=fast", "model.module.iwae_k=50"),
    "nade-mnist": ("model=nade", "dataset=mnist", "trainer.max_steps=100", "metrics=fast"),
    "ddpm-mnist": ("model=ddpm", "dataset=mnist", "trainer.max_steps=150", "metrics=fast", "model.module.timesteps=50"),
    "gan-seedbatch3-ring8": ("model=gan", "dataset=ring8", "trainer.max_steps=300", "trainer.seed_batch=3"),
    "unrolled-seedbatch3-ring8": ("model=gan", "dataset=ring8", "trainer.max_steps=100", "trainer.seed_batch=3",
                                  "model.module.unrolled_steps=5"),
    "pacgan2d-ring8": ("model=pacgan2d", "dataset=ring8", "trainer.max_steps=300"),
    "gan-cifar10": ("model=gan", *_CIFAR),
    "vae-cifar10": ("model=vae", *_CIFAR, "model.module.iwae_k=10"),
    "nade-cifar10": ("model=nade", *_CIFAR, "trainer.max_steps=3", "model.module.hidden_dim=16"),
    "ddpm-cifar10": ("model=ddpm", *_CIFAR, "model.module.timesteps=50", "model.module.base_channels=8"),
}

# runs an older checkout's CLI: its package and conf/ first, the editable install's finder removed
_OLD_CLI = (
    "import sys; wt = sys.argv.pop(1); "
    "sys.meta_path = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]; sys.path.insert(0, wt); "
    "import gencompare; assert gencompare.__file__.startswith(wt), gencompare.__file__; "
    "from gencompare.cli import main; sys.exit(main())"
)


def run_suite(out: Path, checkout: Path | None, only: list[str]) -> int:
    out = out.resolve()
    data = out / "data"
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from image_data import write_fake_cifar10

    if not (data / "cifar-10-batches-py").is_dir():
        write_fake_cifar10(data, per_batch=60, num_test=60)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    prefix = [sys.executable, "-c", _OLD_CLI, str(checkout.resolve())] if checkout else \
        [sys.executable, "-m", "gencompare.cli"]
    failed = 0
    for name, overrides in SUITE.items():
        if only and name not in only:
            continue
        cmd = [*prefix, "train", *_QUIET, *overrides, f"paths.data_dir={data}", f"paths.cache_dir={data / 'cache'}",
               f"hydra.run.dir={out / name}"]
        with open(out / f"{name}.log", "w") as log:
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=out).returncode
        print(f"{name}: {'done' if rc == 0 else f'FAILED (exit {rc}, see {out / name}.log)'}", flush=True)
        failed += rc != 0
    return 1 if failed else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["run"]:
        import argparse

        ap = argparse.ArgumentParser(prog="bitcheck.py run")
        ap.add_argument("out", type=Path)
        ap.add_argument("--checkout", type=Path, help="a checkout of the commit to run (default: this one)")
        ap.add_argument("--only", default="", help="comma-separated case names")
        ap.add_argument("--list", action="store_true", help="print the cases and exit")
        a = ap.parse_args(sys.argv[2:])
        if a.list:
            print("\n".join(f"{k}: {' '.join(v)}" for k, v in SUITE.items()))
            sys.exit(0)
        a.out.mkdir(parents=True, exist_ok=True)
        sys.exit(run_suite(a.out, a.checkout, [n for n in a.only.split(",") if n]))
    args = [a for a in sys.argv[1:] if a != "--skip-grad-norms"]
    SKIP_GRAD_NORMS = "--skip-grad-norms" in sys.argv
    sys.exit(main(Path(args[0]), Path(args[1])))
