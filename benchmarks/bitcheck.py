"""Bit-identity check for refactors: compare two sets of run dirs trained with the same
commands and seeds (before and after a change), on the CPU with one torch thread.

    python benchmarks/bitcheck.py BEFORE_DIR AFTER_DIR [--skip-grad-norms]

Each argument holds one run dir per job (same names on both sides). Compared exactly:
every value of ``metrics.json`` except wall-clock times and the keys the newer record
adds (``schema_version``, ``data.coverage``); every ``history.jsonl`` value except
``train/samples_per_s``; every tensor of the checkpoint's model and optimizer states, its
step and batch count. Prints one line per run and exits 1 on any difference.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch

WALL_CLOCK = {"train_time_s", "steps_per_s", "samples_per_s", "sample_time_1000_s", "train/samples_per_s",
              "batch_train_time_s"}
# Since the redesign the gradient norm is measured at log steps only (it cost ~20 % of a
# small network's step): grad_norm/* is the norm at the log step, no longer a mean over the
# window, so --skip-grad-norms compares everything else.
GRAD_NORM = "grad_norm/"
ADDED = {"schema_version", "data.coverage"}


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


def compare_json(a: dict, b: dict) -> list[str]:
    fa, fb = dict(_flat(a)), dict(_flat(b))
    diffs = []
    for key in sorted(set(fa) | set(fb)):
        if key.rsplit(".", 1)[-1] in WALL_CLOCK or key in ADDED or (SKIP_GRAD_NORMS and GRAD_NORM in key):
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
    for run in sorted(p for p in before.iterdir() if p.is_dir()):
        other = after / run.name
        diffs: list[str] = []
        mb, ma = json.loads((run / "metrics.json").read_text()), json.loads((other / "metrics.json").read_text())
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

if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--skip-grad-norms"]
    SKIP_GRAD_NORMS = "--skip-grad-norms" in sys.argv
    sys.exit(main(Path(args[0]), Path(args[1])))
