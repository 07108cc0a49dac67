"""``gencompare sample run=<run dir> n=64 [out=...]``: samples from a trained run's
checkpoint, as a picture and a tensor file, without training or evaluating.

The model is rebuilt exactly as ``gencompare eval`` rebuilds it
(:func:`gencompare.build.load_run_model`: the run's config, safe targets only,
``weights_only`` checkpoints unless ``trust_checkpoint=true``).

Any ``n`` the disk holds works (a researcher's 50,000 samples): they are drawn
``batch_size`` at a time into a file-backed buffer beside the output, so memory holds one
batch, not ``n`` samples; the picture shows the first :data:`MAX_PICTURED_IMAGES` images
(points: :data:`MAX_PICTURED_POINTS`).
"""
from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from gencompare.build import load_run_model
from gencompare.errors import GencompareError
from gencompare.metrics.ranks import OneProcess
from gencompare.models.base import GenerativeModel
from gencompare.plots import save_samples
from gencompare.record import RunDir, atomic_write
from gencompare.terminal import console
from gencompare.train.distributed import evaluation_ranks

#: images shown in the PNG grid (32 x 32): a grid of 50,000 would be a picture of ~10^9 pixels
MAX_PICTURED_IMAGES = 1024
#: points shown in the scatter plot: beyond this the plot is one blot and slow to draw
MAX_PICTURED_POINTS = 50_000
#: samples per draw when the run's config has no ``metrics.sample_batch_size`` (its default)
DEFAULT_BATCH = 1000


def count_of(value: Any, key: str) -> int:
    """``value`` as a positive whole number: an int, or a float with no fraction (``5e4``).

    Raises:
        GencompareError: a string, a bool, a fraction, or a number below 1, in one line.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not (math.isfinite(value) and value.is_integer())):
        raise GencompareError(f"{key} must be a positive whole number, got {value!r}")
    if value < 1:
        raise GencompareError(f"{key} must be positive, got {int(value)}")
    return int(value)


def sample_run(cfg: DictConfig) -> dict[str, Any]:
    """Draw ``cfg.n`` samples from run ``cfg.run`` with seed ``cfg.seed``, ``cfg.batch_size``
    at a time (null: the run's ``metrics.sample_batch_size``); write the picture to
    ``cfg.out`` (default ``<run>/samples/sample_n<n>_s<seed>.png``) and the samples,
    ``torch.save`` of a float tensor ``(n, *data shape)`` in data space, beside it with
    suffix ``.pt`` (``torch.load(..., mmap=True)`` reads a large one without loading it).

    Returns:
        ``{"png": path, "tensor": path, "n": n, "step": checkpoint step}``.

    Raises:
        GencompareError: ``n`` or ``batch_size`` not a positive whole number, ``seed`` not a
            whole number, ``n`` samples
            that the output folder's free disk cannot hold (the size is said), and
            everything :func:`load_run_model` raises.
    """
    n = count_of(cfg.n, "n")
    batch = cfg.get("batch_size")
    batch = None if batch is None else count_of(batch, "batch_size")
    run = RunDir(cfg.run)
    seed = cfg.seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise GencompareError(f"seed must be a whole number, got {seed!r}")
    png = Path(cfg.out) if cfg.get("out") else run.samples_dir / f"sample_n{n}_s{seed}.png"
    if png.suffix.lower() != ".png":
        raise GencompareError(f"out={png} must name a .png file")
    train_cfg, checkpoint, bundle, model = load_run_model(
        run.path, ckpt=cfg.get("ckpt"), trust=bool(cfg.get("trust_checkpoint", False)),
        data_dir=cfg.paths.data_dir, device=cfg.device.name)
    if batch is None:
        batch = int((train_cfg.get("metrics") or {}).get("sample_batch_size") or DEFAULT_BATCH)
    tensor_path = png.with_suffix(".pt")
    check_disk(n, tuple(bundle.shape), png.parent)
    step = int(checkpoint["step"])
    ranks = evaluation_ranks(model.device)  # trainer.devices=N, torchrun: each chunk split over the ranks
    if not ranks.main:  # rank 0 writes the files; this rank draws its rows of every chunk
        _draw_into(model, n, seed, batch, ranks, lambda start, chunk: None)
        return {"n": n, "step": step}
    samples = draw_to_file(model, n, tuple(bundle.shape), seed, batch, tensor_path, ranks)
    title = f"{train_cfg.model.name} on {bundle.variant}, step {step}, training seed {train_cfg.seed}, sampling seed {seed}"
    shown = samples[: MAX_PICTURED_IMAGES if samples.dim() == 4 else MAX_PICTURED_POINTS]
    if len(shown) < n:
        title += f" (first {len(shown):,} of {n:,})"
    real = bundle.train[: min(len(bundle.train), 5000)].cpu() if bundle.kind == "points" else None
    try:
        save_samples(shown.clone(), png, means=bundle.means, std=bundle.std, real=real, title=title,
                     nrow=max(1, math.ceil(math.sqrt(len(shown)))), color=model.family_color)
    except OSError as exc:
        raise GencompareError(f"cannot write {png.parent}: {exc.strerror or exc}") from None
    console.print(f"{n} samples of {train_cfg.model.name} on {bundle.variant} (step {step}, sampling seed {seed}): "
                  f"{png}, {tensor_path}", highlight=False)
    return {"png": str(png), "tensor": str(tensor_path), "n": n, "step": step}


def check_disk(n: int, shape: tuple[int, ...], folder: Path) -> None:
    """Refuse ``n`` float32 samples of ``shape`` that ``folder``'s disk cannot hold: the
    buffer they are drawn into and the ``.pt`` written from it, both at once.

    Raises:
        GencompareError: the size they would take and the free space, in one line.
    """
    size = n * math.prod(shape) * 4
    where = folder
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free
    if 2 * size > free:
        raise GencompareError(
            f"n={n:,} samples of shape {tuple(shape)} take {_gb(size)} as float32 ({_gb(2 * size)} while the "
            f".pt is written), but {where} has {_gb(free)} free; lower n or write elsewhere with out=")


def _gb(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:,.2f} GB" if n_bytes >= 2**27 else f"{n_bytes / 2**20:,.1f} MB"


def draw_to_file(model: GenerativeModel, n: int, shape: tuple[int, ...], seed: int, batch: int,
                 path: Path, ranks: OneProcess | None = None) -> torch.Tensor:
    """Draw ``n`` samples ``batch`` at a time from a forked RNG seeded with ``seed`` (up to
    ``batch`` samples are one draw, as a training grid draws them: the same seed, the same
    samples) into a file-backed buffer, and save them to ``path`` with :func:`torch.save`.
    On ``ranks`` of a data-parallel job (rank 0 calls this; the others :func:`_draw_into`)
    each draw is split over the ranks and gathered: the same samples as one process's.

    Returns:
        The samples ``(n, *shape)`` float32, backed by the saved file (memory-mapped).

    Raises:
        GencompareError: the folder cannot be written (one line naming the path).
    """
    raw = path.with_name(f".{path.name}.raw")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        raw.unlink(missing_ok=True)
        buffer = torch.from_file(str(raw), shared=True, size=n * math.prod(shape), dtype=torch.float32)
        buffer = buffer.view(n, *shape)
        _draw_into(model, n, seed, batch, ranks or OneProcess(),
                   lambda start, chunk: buffer[start : start + len(chunk)].copy_(chunk.reshape(len(chunk), *shape)))
        atomic_write(path, lambda tmp: torch.save(buffer, tmp))
    except (OSError, RuntimeError) as exc:  # torch reports a full disk as RuntimeError
        raise GencompareError(f"cannot write {path}: {getattr(exc, 'strerror', None) or str(exc).splitlines()[0]}") \
            from None
    finally:
        raw.unlink(missing_ok=True)
    return torch.load(path, mmap=True, weights_only=True)


def _draw_into(model: GenerativeModel, n: int, seed: int, batch: int, ranks: OneProcess,
               write: Callable[[int, torch.Tensor], Any]) -> None:
    """Draw ``n`` samples, ``batch`` per global draw (split over ``ranks``), handing each
    gathered chunk ``(b, ...)`` float32 on the CPU to ``write(start, chunk)``."""
    devices = [model.device] if model.device.type == "cuda" else []
    was_training = model.training
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        model.eval()
        try:
            for start in range(0, n, batch):
                b = min(batch, n - start)
                write(start, ranks.chunk(b, lambda _, count: model.sample(count).detach().float().cpu()))
        finally:
            model.train(was_training)
