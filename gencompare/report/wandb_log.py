"""Logging a comparison to W&B: the tables (``wandb.Table``) and figures, in a run of
job type ``compare`` (in the sweep's group when one sweep dir is compared)."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from gencompare.report.runs import sweep_file
from gencompare.report.tables import TableData
from gencompare.tracking import make_tracker


def _wandb_cell(v: Any) -> Any:
    # a column is typed by W&B: an infinite reverse KL would turn it into strings (the CSV keeps inf)
    return None if isinstance(v, float) and not math.isfinite(v) else v


def log_comparison(out: Path, paths: Sequence[Path], tables: Sequence[TableData], pac: TableData | None,
                   diag: TableData | None, header: list[str], csv_rows: list[dict[str, Any]],
                   files: Mapping[str, Path], project: str, mode: str) -> None:
    """Log comparison.csv's rows, every table and the figure and mosaic (``files["figure"]``,
    ``files["mosaic"]``) to a new W&B run in ``out``; ``mode``: auto, online, offline or disabled."""
    group = None
    if len(paths) == 1 and sweep_file(paths[0]):
        # the same group the sweep's jobs were logged to (runner.sweep_group)
        group = f"sweep-{paths[0].resolve().parent.name}_{paths[0].resolve().name}"
    logger = OmegaConf.create({"name": "wandb", "project": project, "entity": None, "mode": mode, "group": None,
                               "run_name": None, "tags": ["compare"], "log_images": True})
    tracker = make_tracker(logger, run_dir=out, config={"paths": [str(p) for p in paths]},
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
        for key in ("figure", "mosaic"):
            if key in files:
                tracker.log_image(f"comparison/{key}", files[key], caption=files[key].name)
    finally:
        tracker.finish()
