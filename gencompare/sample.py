"""``gencompare sample run=<run dir> n=64 [out=...]``: samples from a trained run's
checkpoint, as a picture and a tensor file, without training or evaluating.

The model is rebuilt exactly as ``gencompare eval`` rebuilds it
(:func:`gencompare.build.load_run_model`: the run's config, safe targets only,
``weights_only`` checkpoints unless ``trust_checkpoint=true``).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from gencompare.build import load_run_model
from gencompare.errors import GencompareError
from gencompare.plots import save_samples
from gencompare.record import RunDir, atomic_write
from gencompare.train.callbacks import grid_samples
from gencompare.terminal import console


def sample_run(cfg: DictConfig) -> dict[str, Any]:
    """Draw ``cfg.n`` samples from run ``cfg.run`` with seed ``cfg.seed``; write the picture
    to ``cfg.out`` (default ``<run>/samples/sample_n<n>_s<seed>.png``) and the samples,
    ``torch.save`` of a float tensor in data space, beside it with suffix ``.pt``.

    Returns:
        ``{"png": path, "tensor": path, "n": n, "step": checkpoint step}``.

    Raises:
        GencompareError: ``n`` not positive, and everything :func:`load_run_model` raises.
    """
    n = int(cfg.n)
    if n <= 0:
        raise GencompareError(f"n must be positive, got {n}")
    run = RunDir(cfg.run)
    seed = int(cfg.seed)
    train_cfg, checkpoint, bundle, model = load_run_model(
        run.path, ckpt=cfg.get("ckpt"), trust=bool(cfg.get("trust_checkpoint", False)),
        data_dir=cfg.paths.data_dir, device=cfg.device.name)
    png = Path(cfg.out) if cfg.get("out") else run.samples_dir / f"sample_n{n}_s{seed}.png"
    if png.suffix.lower() != ".png":
        raise GencompareError(f"out={png} must name a .png file")
    tensor_path = png.with_suffix(".pt")
    samples = grid_samples(model, n, seed).detach().float().cpu()  # same seed, same samples
    step = int(checkpoint["step"])
    title = f"{train_cfg.model.name} on {bundle.variant}, step {step}, training seed {train_cfg.seed}, sampling seed {seed}"
    real = bundle.train[: min(len(bundle.train), 5000)].cpu() if bundle.kind == "points" else None
    try:
        save_samples(samples, png, means=bundle.means, std=bundle.std, real=real, title=title,
                     nrow=max(1, math.ceil(math.sqrt(n))), color=model.family_color)
        atomic_write(tensor_path, lambda tmp: torch.save(samples, tmp))
    except OSError as exc:
        raise GencompareError(f"cannot write {png.parent}: {exc.strerror or exc}") from None
    console.print(f"{n} samples of {train_cfg.model.name} on {bundle.variant} (step {step}, sampling seed {seed}): "
                  f"{png}, {tensor_path}", highlight=False)
    return {"png": str(png), "tensor": str(tensor_path), "n": n, "step": step}
