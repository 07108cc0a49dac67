"""Checkpoints: what a run saves to continue bit-identically, and the RNG state it needs.

A checkpoint (``<run dir>/checkpoints/last.ckpt``, :class:`gencompare.record.RunDir`) is a
dict written atomically with ``torch.save``: ``family``, ``variant``, ``data_shape``,
``step``, ``batches_drawn`` (the data stream is a pure function of seed and this count),
``model`` and ``optimizers`` state dicts, ``rng`` (torch, numpy, python and CUDA states),
``config``, ``train_time_s``, ``wandb_id`` and ``eval_history``.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gencompare.errors import GencompareError
from gencompare.record import atomic_write


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's global generators (CUDA's too, through torch)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The global generators' states, to restore with :func:`set_rng_state`."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(state: dict[str, Any], path: Path) -> Path:
    """Write ``state`` with ``torch.save`` atomically (temp file, then rename): a crash or a
    signal mid-write never leaves a truncated checkpoint, and the previous one stays."""
    return atomic_write(Path(path), lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by the runner.

    Raises:
        GencompareError: the file is missing, truncated or not a gencompare checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise GencompareError(f"no checkpoint at {path}")
    try:
        # our own file: it holds numpy/python RNG states, which weights_only rejects
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - truncated zip, bad pickle, ...
        raise GencompareError(
            f"checkpoint {path} is unreadable ({type(exc).__name__}; truncated or corrupt); "
            "restore it or start a new run"
        ) from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "family" not in ckpt:
        raise GencompareError(f"{path} is not a gencompare checkpoint")
    return ckpt
