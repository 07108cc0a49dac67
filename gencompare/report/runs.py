"""Finding run dirs and reading one as ``compare`` sees it.

Every file name comes from :class:`gencompare.record.RunDir`; ``metrics.json`` is read
and checked by :func:`gencompare.record.read_metrics`, so a file that does not match the
schema is one problem line and its run is skipped.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from gencompare.plots import OTHER_COLOR
from gencompare.record import RecordError, RunDir, finite_or_none, lookup, read_failure, read_metrics

# What Hydra writes at the top of a sweep (multirun) dir: the sweep's command line.
HYDRA_MULTIRUN = "multirun.yaml"
# Folders inside a run dir (or a sweep dir) that never hold a run of their own.
_SKIP_DIRS = {RunDir.WANDB, RunDir.SAMPLES, Path(RunDir.CHECKPOINT).parts[0], ".submitit", ".hydra", "__pycache__"}
# A run whose record declares no family style (``family_style``, written since the families
# declare it on their class) sorts after those that do: GenerativeModel.family_order's default.
UNDECLARED_ORDER = 100
# metrics.json before schema version 2 has no data.coverage: these are its 2D mixtures.
_LEGACY_MIXTURES = ("ring8", "grid25")


def legacy_coverage_kind(dataset: str) -> str:
    """The coverage kind of a run whose metrics.json predates ``data.coverage``:
    ``mixture`` (2D mixtures), ``stacked`` (Stacked MNIST) or ``classes`` (MNIST-like)."""
    if dataset in _LEGACY_MIXTURES:
        return "mixture"
    return "stacked" if dataset == "stacked_mnist" else "classes"


@dataclass
class Run:
    """One run dir as ``compare`` reads it; ``metrics`` is metrics.json as a dict."""

    path: Path
    metrics: dict[str, Any]
    config: dict[str, Any] | None
    history: list[dict[str, Any]] | None

    @property
    def model(self) -> str:
        return str(self.metrics["model"])

    @property
    def dataset(self) -> str:
        return str(self.metrics["dataset"])

    @property
    def variant(self) -> str:
        return str(self.metrics["variant"])

    @property
    def seed(self) -> Any:
        return self.metrics.get("seed")

    @property
    def family(self) -> str:
        """The family's name (``metrics.json``'s ``family``; the model's config name before it had one)."""
        return str(self.metrics.get("family") or self.model)

    @property
    def color(self) -> str:
        """The family's colour as its class declared it (grey when the record names none)."""
        color = lookup(self.metrics, "family_style.color")
        return color if isinstance(color, str) and color else OTHER_COLOR

    @property
    def family_rank(self) -> tuple[int, str]:
        """Where the family sorts: its declared order, then its name."""
        order = lookup(self.metrics, "family_style.order")
        return (order if isinstance(order, int) else UNDECLARED_ORDER, self.family)

    @property
    def likelihood_label(self) -> str:
        """What the tables write beside the NLL: the family's declared label; for a record
        without one, its ``likelihood.kind`` without the ``nll_`` prefix; ``none`` when the
        family has no likelihood."""
        kind = lookup(self.metrics, "likelihood.kind")
        if kind is None:
            return "none"
        label = lookup(self.metrics, "family_style.likelihood_label")
        return label if isinstance(label, str) and label else str(kind).removeprefix("nll_")

    @property
    def coverage(self) -> str:
        """How mode coverage is scored: ``mixture``, ``classes`` or ``stacked`` (``data.coverage``)."""
        kind = lookup(self.metrics, "data.coverage")
        return kind if isinstance(kind, str) and kind else legacy_coverage_kind(self.dataset)

    def value(self, key: str) -> float | None:
        """The number at dotted ``key`` in metrics.json, None when absent or not a number."""
        return finite_or_none(lookup(self.metrics, key))

    @property
    def sample_path(self) -> Path:
        grid = self.metrics.get("sample_grid")
        return self.path / str(grid) if grid else RunDir(self.path).final_grid


def sweep_file(path: Path) -> Path | None:
    """``path``'s Hydra multirun.yaml when ``path`` is a sweep dir, else None."""
    f = path / HYDRA_MULTIRUN
    return f if f.is_file() else None


def find_run_dirs(paths: Sequence[Path]) -> tuple[list[Path], list[str]]:
    """Run dirs under ``paths`` (run dirs, sweep dirs or metrics.json files), searched
    recursively, and one problem line per path that holds none.

    A run dir is a folder with a ``metrics.json``, a ``config.yaml`` or a
    ``checkpoints/`` folder (an unfinished run is found, so that it can be reported).
    """
    found: dict[Path, None] = {}
    problems: list[str] = []
    for p in paths:
        if not p.exists():
            problems.append(f"{p}: no such file or directory")
            continue
        if p.is_file():
            if p.name == RunDir.METRICS:
                found[p.parent] = None
            else:
                problems.append(f"{p}: not a run dir (give a run dir, a sweep dir or a {RunDir.METRICS})")
            continue
        below: list[Path] = []
        for root, dirs, _files in os.walk(p):
            d = Path(root)
            if RunDir(d).looks_like_run():
                below.append(d)
                dirs[:] = []  # a run dir's subfolders are its own files
                continue
            dirs[:] = sorted(x for x in dirs if x not in _SKIP_DIRS)
        if below:
            found.update(dict.fromkeys(below))
        elif not any(p.iterdir()):
            problems.append(f"{p}: empty directory, no runs to compare")
        else:
            problems.append(f"{p}: no run dirs below it (no {RunDir.METRICS}, {RunDir.CONFIG} or "
                            f"{Path(RunDir.CHECKPOINT).parts[0]}/)")
    return list(found), problems


def read_history(path: Path) -> list[dict[str, Any]] | None:
    """The records of a ``history.jsonl`` in step order (the last of a step logged twice),
    None when there is no such file."""
    if not path.is_file():
        return None
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a run killed mid-write leaves a partial last line
        if isinstance(rec, dict) and isinstance(rec.get("step"), (int, float)):
            records.append(rec)
    # a resumed run may have logged a step twice: keep the last record of each step
    by_step = {int(r["step"]): r for r in records}
    return [by_step[s] for s in sorted(by_step)]


def load_run(run_dir: Path) -> tuple[Run | None, list[str]]:
    """Read one run dir.

    Returns:
        ``(run, problems)``: ``run`` is None when the run cannot be compared (no
        metrics.json, or one that :func:`~gencompare.record.read_metrics` rejects:
        corrupt JSON, a missing model / dataset / variant, a value of the wrong type);
        ``problems`` holds one line per problem (also non-fatal ones, such as a corrupt
        config.yaml).
    """
    files = RunDir(run_dir)
    failure = read_failure(files)
    if failure is not None and not files.metrics.is_file():
        return None, [f"{run_dir}: FAILED: {failure}"]
    if not files.metrics.is_file():
        hint = (f"; score its checkpoint with `gencompare eval run={run_dir}`"
                if files.checkpoint.is_file() else "")
        return None, [f"{run_dir}: no {RunDir.METRICS} (training unfinished or failed){hint}"]
    try:
        record = read_metrics(files.metrics)
    except RecordError as exc:
        return None, [f"{exc}; skipped"]
    missing = [k for k in ("model", "dataset", "variant") if not getattr(record, k)]
    if missing:
        return None, [f"{files.metrics}: missing {', '.join(missing)}; skipped"]
    problems: list[str] = []
    config = None
    if files.config.is_file():
        try:
            loaded = OmegaConf.to_container(OmegaConf.load(files.config), resolve=False)
            config = loaded if isinstance(loaded, dict) else None
        except Exception as exc:  # noqa: BLE001 - yaml errors come in many types
            problems.append(f"{files.config}: unreadable ({type(exc).__name__}); run compared without its config")
    return Run(run_dir, record.to_dict(), config, read_history(files.history)), problems
