"""Golden numbers: what each family computes in a few training steps, pinned.

Each case trains one family (or GAN variant, or a seed batch) for a few steps through the
user's entry point (the composed ``conf/train.yaml``, as ``gencompare train``), on the CPU
with one torch thread, and is summarised by :func:`measure` as

- ``losses``: every ``train/*`` scalar of every step's ``history.jsonl`` line (losses,
  D(x) / D(G(z)), gradient norms; the wall-clock ``train/samples_per_s`` left out);
- ``weights``: a digest of the final checkpoint's model state (parameters and buffers:
  the EMA copy, RNADE's initialisation flag), independent of the tensors' names so that a
  refactor that renames a module keeps its goldens, and per-tensor-independent float
  summaries (``sum_abs``, ``sum_sq``, ``count``) for the tolerance path;
- ``data``: the same summaries of the training split, so a changed dataset is told apart
  from a changed model.

``tests/golden/families.json`` holds the values; ``python tests/golden/regenerate.py``
rewrites it, and only on purpose (its commit says why). ``tests/test_golden.py`` compares.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

GOLDEN_FILE = Path(__file__).resolve().parent / "golden" / "families.json"

# the few knobs that keep every case to seconds on one CPU thread (as tests/test_train.py)
_SMALL = {
    "vae": ["model.module.iwae_k=4"],
    "nade": ["model.module.hidden_dim=16"],
    "ddpm_images": ["model.module.timesteps=20", "model.module.base_channels=8"],
    "ddpm_points": ["model.module.timesteps=20", "model.module.mlp_hidden=32"],
}
STEPS = 4
COMMON = ["logger=none", "trainer.progress=false", f"trainer.max_steps={STEPS}", "trainer.batch_size=16",
          "trainer.log_every=1", "trainer.sample_every=1000", "trainer.num_grid_samples=4",
          "dataset.download=false", "metrics=none", "seed=0"]


@dataclass(frozen=True)
class Case:
    name: str
    overrides: tuple[str, ...]
    seeds: int = 1  # trainer.seed_batch: the member run dirs are measured too


def _cases() -> list[Case]:
    cases = []
    for data, tag in (("ring8", "points"), ("mnist", "images")):
        cases += [
            Case(f"gan-{data}", ("model=gan", f"dataset={data}")),
            Case(f"vae-{data}", ("model=vae", f"dataset={data}", *_SMALL["vae"])),
            Case(f"nade-{data}", ("model=nade", f"dataset={data}", *_SMALL["nade"])),
            Case(f"ddpm-{data}", ("model=ddpm", f"dataset={data}", *_SMALL[f"ddpm_{tag}"])),
            Case(f"gan-pack2-{data}", ("model=gan", f"dataset={data}", "model.module.pack=2")),
            Case(f"gan-minibatch-{data}", ("model=gan", f"dataset={data}", "model.module.minibatch_kernels=5")),
            Case(f"gan-unrolled3-{data}", ("model=gan", f"dataset={data}", "model.module.unrolled_steps=3")),
            Case(f"gan-seedbatch2-{data}", ("model=gan", f"dataset={data}", "trainer.seed_batch=2"), seeds=2),
        ]
    cases += [
        Case("pacgan2d-ring8", ("model=pacgan2d", "dataset=ring8")),
        Case("ddpm-seedbatch2-mnist", ("model=ddpm", "dataset=mnist", *_SMALL["ddpm_images"], "trainer.seed_batch=2"),
             seeds=2),
        Case("vae-seedbatch2-ring8", ("model=vae", "dataset=ring8", *_SMALL["vae"], "trainer.seed_batch=2"), seeds=2),
        Case("nade-seedbatch2-ring8", ("model=nade", "dataset=ring8", *_SMALL["nade"], "trainer.seed_batch=2"),
             seeds=2),
    ]
    return cases


CASES = _cases()


def tensor_summary(tensors: list[torch.Tensor]) -> dict:
    """A name-independent digest of ``tensors`` (sorted per-tensor SHA-256 of dtype, shape and
    bytes) with float64 ``sum_abs`` and ``sum_sq`` over all of them (positive sums: a plain
    sum of weights near 0 would make a relative tolerance meaningless) and the element ``count``."""
    digests, total_abs, total_sq, count = [], 0.0, 0.0, 0
    for t in tensors:
        t = t.detach().cpu().contiguous().reshape(-1)  # 0-d tensors cannot be viewed as bytes
        h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        digests.append(h.hexdigest())
        t64 = t.double()
        total_abs += float(t64.abs().sum())
        total_sq += float((t64 * t64).sum())
        count += t.numel()
    return {"sha256": hashlib.sha256("".join(sorted(digests)).encode()).hexdigest(),
            "sum_abs": total_abs, "sum_sq": total_sq, "count": count}


def _run_summary(run: Path) -> dict:
    lines = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
    losses = {k: [ln.get(k) for ln in lines] for k in sorted({k for ln in lines for k in ln})
              if k.startswith("train/") and k != "train/samples_per_s"}
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return {"steps": [ln.get("step") for ln in lines], "losses": losses,
            "weights": tensor_summary([v for v in ckpt["model"].values() if torch.is_tensor(v)])}


def measure(case: Case, run_dir: Path, data_dir: Path, *, threads: int = 1) -> dict:
    """Train ``case`` into ``run_dir`` (on ``threads`` CPU threads: the goldens use one) and
    summarise it; members of a seed batch are keyed by seed."""
    from hydra import compose, initialize_config_dir

    import gencompare.config  # noqa: F401 - registers the schemas
    from gencompare.build import prepare_data
    from gencompare.train.seeds import train

    conf = str(Path(__file__).resolve().parent.parent / "conf")
    overrides = [*COMMON, *case.overrides, f"paths.output_dir={run_dir}", f"paths.data_dir={data_dir}",
                 f"paths.cache_dir={data_dir / 'cache'}"]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with initialize_config_dir(config_dir=conf, version_base="1.3"):
            cfg = compose(config_name="train", overrides=overrides)
        train(cfg)
        data = prepare_data(cfg).train
    finally:
        torch.set_num_threads(before)
    members = {}
    for i in range(case.seeds):
        path = run_dir if i == 0 else run_dir.with_name(f"{run_dir.name}_s{i}")
        members[str(i)] = _run_summary(path)
    return {"overrides": list(case.overrides), "data": tensor_summary([data]), "seeds": members}


def environment() -> dict:
    """What decides whether the CPU arithmetic repeats bit for bit: torch's version and the
    instruction set its kernels were dispatched to."""
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability()}
