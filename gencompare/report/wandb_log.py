"""Logging a comparison to W&B: a run of job type ``compare`` (in the sweep's group when one
sweep dir is compared) that holds the tables (``wandb.Table``), the figures, the report's
files as an artifact, and which runs it compared (their W&B run paths, table ``runs``)."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from gencompare.report.runs import Run, sweep_file
from gencompare.report.tables import TableData
from gencompare.tracking import make_tracker

RUN_COLUMNS = ["model", "variant", "seed", "run_dir", "wandb_path", "wandb_id", "wandb_url", "wandb_dir"]


def _wandb_cell(v: Any) -> Any:
    # a column is typed by W&B: an infinite reverse KL would turn it into strings (the CSV keeps inf)
    return None if isinstance(v, float) and not math.isfinite(v) else v


def run_links(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """One row per compared run: what it trained, its dir and its W&B run (``metrics.json``'s
    ``wandb``: run path ``entity/project/id``, id, URL when online, files dir to ``wandb sync``);
    the W&B cells are None for a run trained with ``logger=none``."""
    rows = []
    for run in runs:
        ref = run.metrics.get("wandb") or {}
        files = ref.get("dir")
        rows.append({"model": run.model, "variant": run.variant, "seed": run.seed, "run_dir": str(run.path),
                     "wandb_path": ref.get("path"), "wandb_id": ref.get("id"), "wandb_url": ref.get("url"),
                     "wandb_dir": str(run.path / files) if files else None})
    return rows


def log_comparison(out: Path, paths: Sequence[Path], tables: Sequence[TableData], pac: TableData | None,
                   diag: TableData | None, header: list[str], csv_rows: list[dict[str, Any]],
                   files: Mapping[str, Path], project: str, mode: str, runs: Sequence[Run] = ()) -> None:
    """Log the comparison to a new W&B run in ``out``: comparison.csv's rows (table
    ``comparison``), every table, every figure in ``files`` (PNGs, under ``comparison/<key>``),
    the files themselves as artifact ``comparison-<run id>`` (type ``comparison``) and the
    compared runs (table ``runs`` and config ``runs``: :func:`run_links`).
    ``mode``: auto, online, offline or disabled."""
    group = None
    if len(paths) == 1 and sweep_file(paths[0]):
        # the same group the sweep's jobs were logged to (runner.sweep_group)
        group = f"sweep-{paths[0].resolve().parent.name}_{paths[0].resolve().name}"
    links = run_links(runs)
    logger = OmegaConf.create({"name": "wandb", "project": project, "entity": None, "mode": mode, "group": None,
                               "run_name": None, "tags": ["compare"], "log_images": True})
    tracker = make_tracker(logger, run_dir=out,
                           config={"paths": [str(p) for p in paths],
                                   "runs": [r["wandb_path"] or r["run_dir"] for r in links]},
                           default_name=f"compare-{Path(out).resolve().name}", group=group, tags=["compare"],
                           job_type="compare")
    try:
        # W&B types each column: numbers or None, never "" for a missing number
        tracker.log_table("comparison", header, [[_wandb_cell(row.get(h)) for h in header] for row in csv_rows])
        for t in tables:
            tracker.log_table(f"table/{t.title}", t.columns, t.rows)
        for t, key in ((pac, "pacgan_2d"), (diag, "training_diagnostics")):
            if t is not None:
                tracker.log_table(key, t.columns, t.rows)
        tracker.log_table("runs", RUN_COLUMNS, [[r[c] for c in RUN_COLUMNS] for r in links])
        for key, f in files.items():
            if f.suffix == ".png" and f.is_file():
                tracker.log_image(f"comparison/{key}", f, caption=f.name)
        ref = tracker.reference()
        if ref is not None:
            tracker.log_artifact(f"comparison-{ref.id}", "comparison",
                                 {f.name: f for f in files.values() if f.is_file()},
                                 metadata={"runs": len(links), "paths": [str(p) for p in paths]})
    finally:
        tracker.finish()
