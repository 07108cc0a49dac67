"""``gencompare compare``: turn run dirs into the table a researcher came for.

Reads each run's ``config.yaml`` and ``metrics.json`` (and ``history.jsonl`` for the
training diagnostics) through :mod:`gencompare.record`, groups runs by (model, dataset,
variant) and by any config value other than the seed that differs between them,
aggregates over seeds and writes comparison.md / .csv / .png, diagnostics.csv and
samples_mosaic.png. One job per module:

- :mod:`.stats`: mean, std (ddof 1), standard error over seeds;
- :mod:`.runs`: finding run dirs and reading one (:class:`Run`);
- :mod:`.groups`: grouping runs into rows (:class:`Group`), the Parzen baselines;
- :mod:`.formatting`: numbers as cells;
- :mod:`.tables`: the metric registry (:data:`METRICS`), the per-variant and PacGAN tables;
- :mod:`.diagnostics`: training instability per run;
- :mod:`.csv_files`: comparison.csv and the CSV writer;
- :mod:`.figures`: comparison.png and samples_mosaic.png;
- :mod:`.published`: the published numbers;
- :mod:`.wandb_log`: logging a comparison to W&B;
- :mod:`.command`: :func:`compare` and the CLI's ``compare``.
"""
from __future__ import annotations

from gencompare.record import select_metric
from gencompare.report.command import Comparison, compare, compare_main
from gencompare.report.diagnostics import training_diagnostics
from gencompare.report.groups import Group, group_runs
from gencompare.report.runs import Run, find_run_dirs, load_run
from gencompare.report.stats import Stat, summarize
from gencompare.report.tables import METRICS, Metric, TableData

__all__ = [
    "Comparison", "compare", "compare_main", "select_metric", "training_diagnostics", "Group", "group_runs",
    "Run", "find_run_dirs", "load_run", "Stat", "summarize", "METRICS", "Metric", "TableData",
]
