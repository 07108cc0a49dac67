"""Checkpoints: what a run saves to continue bit-identically, and the RNG state it needs.

A checkpoint (``<run dir>/checkpoints/last.ckpt``, :class:`gencompare.record.RunDir`) is a
dict written atomically with ``torch.save``: ``family``, ``variant``, ``data_shape``,
``step``, ``batches_drawn`` (the data stream is a pure function of seed and this count),
``model`` and ``optimizers`` state dicts, ``rng`` (torch, numpy, python and CUDA states),
``config``, ``train_time_s``, ``wandb_id``, ``eval_history`` and the last logged losses.
Everything in it is a tensor or a plain value: it loads with ``torch.load(weights_only=True)``,
which cannot execute code (:func:`load_checkpoint`).
"""
from __future__ import annotations

import pickle
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
    """The global generators' states as tensors and plain values (so that
    ``torch.load(weights_only=True)`` reads them), to restore with :func:`set_rng_state`."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64),
                   "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved (also the tuples of checkpoints written before
    RNG states were stored as tensors)."""
    torch.set_rng_state(state["torch"])
    np_state, py_state = state["numpy"], state["python"]
    if isinstance(np_state, dict):
        np_state = (np_state["kind"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                    np_state["has_gauss"], np_state["cached_gaussian"])
    np.random.set_state(np_state)
    if isinstance(py_state, dict):
        py_state = (py_state["version"], tuple(int(v) for v in py_state["internal"].tolist()), py_state["gauss_next"])
    random.setstate(py_state)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(state: dict[str, Any], path: Path) -> Path:
    """Write ``state`` with ``torch.save`` atomically (temp file, then rename): a crash or a
    signal mid-write never leaves a truncated checkpoint, and the previous one stays."""
    return atomic_write(Path(path), lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu", *, trust: bool = False) -> dict[str, Any]:
    """Read a checkpoint written by the runner, without executing anything it holds.

    It is read with ``torch.load(weights_only=True)``: tensors and plain values only, so a
    checkpoint someone sent cannot run code. A checkpoint that needs full unpickling (one
    written before gencompare stored RNG states as tensors, or a crafted one) is refused
    unless ``trust=True`` (``trust_checkpoint=true`` on the command line), which loads it
    with ``weights_only=False``: only for files from a source you trust.

    Raises:
        GencompareError: the file is missing, truncated, needs pickle without ``trust``,
            or is not a gencompare checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise GencompareError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=not trust)
    except pickle.UnpicklingError:
        raise GencompareError(
            f"{path} needs full unpickling, which can run code hidden in the file (written before gencompare "
            "stored checkpoints as tensors only, or not by gencompare); if you trust its source, "
            "pass trust_checkpoint=true"
        ) from None
    except Exception as exc:  # noqa: BLE001 - truncated zip, bad pickle, ...
        raise GencompareError(
            f"checkpoint {path} is unreadable ({type(exc).__name__}; truncated or corrupt); "
            "restore it or start a new run"
        ) from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "family" not in ckpt:
        raise GencompareError(f"{path} is not a gencompare checkpoint")
    return ckpt
