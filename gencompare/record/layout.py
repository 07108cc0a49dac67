"""The run dir's files by role, and how every record file is written (atomically, one
JSON style, one flattener). Part of :mod:`gencompare.record`."""
from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gencompare.errors import GencompareError


# ----------------------------------------------------------------------- layout
@dataclass(frozen=True)
class RunDir:
    """The files of one run dir, by role. ``RunDir(path).metrics`` is ``path/metrics.json``."""

    path: Path

    CONFIG = "config.yaml"
    OVERRIDES = "overrides.yaml"
    OVERRIDES_RESUME = "overrides.resume.yaml"
    CHECKPOINT = "checkpoints/last.ckpt"
    HISTORY = "history.jsonl"
    METRICS = "metrics.json"
    SAMPLES = "samples"
    FINAL_GRID = "samples/samples.png"
    PARZEN_PLOT = "parzen_sigma.png"
    WANDB = "wandb"

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def config(self) -> Path:
        return self.path / self.CONFIG

    @property
    def overrides(self) -> Path:
        return self.path / self.OVERRIDES

    @property
    def overrides_resume(self) -> Path:
        return self.path / self.OVERRIDES_RESUME

    @property
    def checkpoint(self) -> Path:
        return self.path / self.CHECKPOINT

    @property
    def checkpoints_dir(self) -> Path:
        return self.checkpoint.parent

    @property
    def history(self) -> Path:
        return self.path / self.HISTORY

    @property
    def metrics(self) -> Path:
        return self.path / self.METRICS

    @property
    def samples_dir(self) -> Path:
        return self.path / self.SAMPLES

    def grid(self, tag: str) -> Path:
        """``samples/<tag>.png``: ``samples`` for the final grid, ``step_0001000`` during training."""
        return self.samples_dir / f"{tag}.png"

    @property
    def final_grid(self) -> Path:
        return self.path / self.FINAL_GRID

    @property
    def parzen_plot(self) -> Path:
        return self.path / self.PARZEN_PLOT

    @property
    def wandb_dir(self) -> Path:
        return self.path / self.WANDB

    CLAIM = ".gencompare-run"
    LOCK = ".lock"  # gencompare.record.lock: one process per run dir
    FAILURE = "failed.json"
    #: the files gencompare writes (a folder standing at one of these paths is refused at start)
    RECORD_FILES = (CONFIG, OVERRIDES, OVERRIDES_RESUME, CHECKPOINT, HISTORY, METRICS, FINAL_GRID, FAILURE,
                    "checkpoints/seed_batch.ckpt")

    @property
    def failure(self) -> Path:
        """``failed.json``: a sweep job that failed says why here (:func:`write_failure`)."""
        return self.path / self.FAILURE

    def claim(self) -> "RunDir":
        """Create ``<dir>/.gencompare-run`` exclusively (``O_EXCL``), so that two runs started
        in the same second never share a dir: when the file exists already, the next free
        ``<dir>_1``, ``<dir>_2``, ... is claimed instead. Returns the claimed dir."""
        for i in range(1000):
            candidate = self.path if i == 0 else self.path.with_name(f"{self.path.name}_{i}")
            candidate.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(candidate / self.CLAIM, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()}\n")
            return RunDir(candidate)
        raise GencompareError(f"no free run dir next to {self.path} (1,000 taken)")

    def check_folders(self) -> None:
        """Fail before any work when a file stands where the run needs a folder, or a
        folder where it writes a file (``history.jsonl/``, ``metrics.json/``, ...).

        Raises:
            GencompareError: naming the path.
        """
        for p in (self.path, self.checkpoints_dir, self.samples_dir, self.wandb_dir):
            if p.exists() and not p.is_dir():
                raise GencompareError(f"{p} is a file where gencompare needs a folder; move it away or choose "
                                      "another hydra.run.dir")
        for name in self.RECORD_FILES:
            if (self.path / name).is_dir():
                raise GencompareError(f"{self.path / name} is a folder where gencompare writes a file; move it "
                                      "away or choose another hydra.run.dir")

    def sweep_temp_files(self) -> list[Path]:
        """Remove the temp files a writer killed mid-write left (:func:`atomic_write`'s
        ``.<name>.gencompare-tmp-<pid>``, and the ``.<name>.tmp-<pid>`` of older versions)
        from the folders gencompare writes. Only for the process that holds the dir's lock:
        no other writer is then alive. Returns the files removed."""
        removed = []
        for folder in (self.path, self.checkpoints_dir, self.samples_dir):
            for p in folder.glob(".*") if folder.is_dir() else []:
                if p.is_file() and (TEMP_MARK in p.name or _LEGACY_TEMP.search(p.name)):
                    p.unlink(missing_ok=True)
                    removed.append(p)
        return removed

    def holds_run(self) -> bool:
        """True when a run was started here (a checkpoint or a metrics.json exists)."""
        return self.checkpoint.exists() or self.metrics.exists()

    def looks_like_run(self) -> bool:
        """True for a folder ``compare`` should report: metrics, config or checkpoints present."""
        return (self.metrics.is_file() or self.config.is_file() or self.checkpoints_dir.is_dir()
                or self.failure.is_file())


# ------------------------------------------------------------------- writing
TEMP_MARK = ".gencompare-tmp-"  # in every temp file's name: .<name>.gencompare-tmp-<pid>
_LEGACY_TEMP = re.compile(r"\.tmp-\d+$")


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temp file beside ``path``, then rename it over ``path``,
    so a crash or a signal mid-write never leaves a truncated file. The temp file is
    removed if ``write`` fails; one left by a killed process is recognisable by its name
    (``.<name>.gencompare-tmp-<pid>``) and swept by the next run (:meth:`RunDir.sweep_temp_files`).

    Raises:
        GencompareError: whatever the writer raised (``OSError`` ENOSPC or EACCES, the
            ``RuntimeError`` of ``torch.save`` on a full disk, ...) in one line naming
            ``path``; the file at ``path`` is then unchanged.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GencompareError(f"cannot create {path.parent}: {exc.strerror or exc}") from None
    tmp = path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except GencompareError:
        tmp.unlink(missing_ok=True)
        raise
    except Exception as exc:  # noqa: BLE001 - disk full, read-only, permissions: the old file stays as it was
        tmp.unlink(missing_ok=True)
        raise GencompareError(f"cannot write {path}: {write_error(exc, path)}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_error(exc: BaseException, path: Path) -> str:
    """Why a write failed, in a few words: the OS's reason (``No space left on device``), or
    for another exception (``torch.save``'s ``RuntimeError`` wraps the OS error in its own
    text) its last line, and ``no space left on device`` when the disk is full indeed."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
    try:
        full = shutil.disk_usage(path.parent).free < 1 << 20
    except OSError:
        full = False
    return f"no space left on device ({type(exc).__name__}: {text})" if full else f"{type(exc).__name__}: {text}"


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if type(value).__module__.startswith("torch") and hasattr(value, "tolist"):  # a tensor, without importing torch
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if is_dataclass(value) and hasattr(value, "to_dict"):
        return value.to_dict()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def to_json(obj: Any) -> str:
    """The JSON text every record file uses: indented, sorted keys, numpy/torch scalars as numbers."""
    return json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n"


def atomic_write_json(obj: Any, path: Path) -> Path:
    """Write ``obj`` as JSON (:func:`to_json`) atomically."""
    text = to_json(obj)
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def flatten(node: Mapping[str, Any], prefix: str = "", sep: str = "/") -> dict[str, Any]:
    """Nested dicts to one level with ``sep``-joined keys (``final_losses/d_loss``).

    Leaves kept: numbers, strings, booleans, None, and lists of numbers or strings (W&B
    summary values); other lists are dropped.
    """
    flat: dict[str, Any] = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}{sep}", sep))
        elif isinstance(value, (int, float, str, bool)) or value is None:
            flat[name] = value
        elif isinstance(value, list) and all(isinstance(v, (int, float, str)) for v in value):
            flat[name] = value
    return flat


def write_failure(run: RunDir, error: str, overrides: list[str] | None) -> Path:
    """Record in ``run``'s ``failed.json`` that its job failed: the one-line error and the
    job's overrides (so that ``compare`` lists it as failed)."""
    return atomic_write_json({"status": "failed", "error": error, "overrides": overrides or []}, run.failure)


def read_failure(run: RunDir) -> str | None:
    """The one-line error of a failed job, or None when ``run`` did not fail."""
    try:
        data = json.loads(run.failure.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return str(data.get("error", "failed")) if isinstance(data, dict) else None


def history_line(step: int, scalars: Mapping[str, Any]) -> str:
    """One ``history.jsonl`` record: ``{"step": step, "train/...": value, ...}`` and a newline."""
    return json.dumps({"step": step, **scalars}) + "\n"


def trim_history(path: Path, step: int) -> list[str]:
    """Drop ``history.jsonl`` records logged after ``step`` (a resumed run logs them
    again) and any partial line a crash left mid-write.

    Returns:
        One warning line per dropped partial line (empty when none).
    """
    path = Path(path)
    if not path.is_file():
        return []
    kept, warnings_ = [], []
    for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            logged = int(record["step"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            warnings_.append(f"{path}: line {i} is not a complete record (a crash mid-write?); dropped")
            continue
        if logged <= step:
            kept.append(line)
    atomic_write(path, lambda tmp: tmp.write_text("".join(ln + "\n" for ln in kept)))
    return warnings_


def lookup(metrics: Mapping[str, Any], key: str) -> Any:
    """The value at dotted ``key`` in a metrics dict, or None when absent."""
    node: Any = metrics
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def select_metric(metrics: Mapping[str, Any], key: str) -> float:
    """The scalar at dotted ``key`` in a run's metrics (``train``'s return value, metrics.json).

    For Hydra's Optuna sweeper, which needs the task function to return a float:
    ``select_metric(metrics, cfg.optimized_metric)``. Keys may contain ``/``
    (``final_losses.grad_norm/generator``); dots separate levels.

    Args:
        metrics: the nested dict ``train(cfg)`` returns (:meth:`RunMetrics.to_dict`).
        key: e.g. ``"mode_coverage.reverse_kl"``, ``"likelihood.nll_nats"``, ``"final_losses.loss"``.
    Returns:
        The value as a float; infinities and NaN are passed through (Optuna treats
        NaN as a failed trial and infinity as the worst value).
    Raises:
        GencompareError: the key is absent (the keys available at that level are
            listed) or its value is not a number.
    """
    node: Any = metrics
    seen: list[str] = []
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            where = ".".join(seen) or "the run's metrics"
            options = ", ".join(sorted(map(str, node))) if isinstance(node, Mapping) else f"a {type(node).__name__}"
            raise GencompareError(f"optimized_metric={key}: no {part!r} in {where} (has: {options})")
        node = node[part]
        seen.append(part)
    value = finite_or_none(node)
    if value is None:
        raise GencompareError(f"optimized_metric={key} is {node!r}, not a number")
    return value


def finite_or_none(value: Any) -> float | None:
    """A number as float (inf and nan pass), None for anything else (bools included)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


