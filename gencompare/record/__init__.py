"""The record contract: what a run dir holds, how its files are written, and the schema of
``metrics.json``.

Every module that writes or reads a run's records goes through here: the runner writes
them, ``gencompare eval`` merges its results in, ``compare`` and the Optuna metric read
them. Nothing else knows a run-dir file name or a ``metrics.json`` key by heart.

A run dir::

    config.yaml             the resolved config (written once, after the checks pass)
    overrides.yaml          the command line (overrides.resume.yaml for a resumed run)
    checkpoints/last.ckpt   model, optimizers, step, RNG states, config (atomic)
    history.jsonl           the train/* scalars of every log step, one JSON object a line
    samples/step_*.png      sample grids (2D data: scatter plots); samples/samples.png at the end
    metrics.json            :class:`RunMetrics`: the run's record and its evaluation
    parzen_sigma.png        Parzen validation log-likelihood against sigma
    wandb/                  the W&B run files (logger=wandb); metrics.json's ``wandb`` names the run
    .lock                   locked (flock) by the one process that writes here: :mod:`gencompare.record.lock`

``metrics.json`` keeps the layout it always had (evaluation blocks at the top level beside
the run's facts) and gains ``schema_version``; a file without one is version 1 and reads
the same way.
"""
from gencompare.record.layout import (
    RunDir,
    atomic_write,
    atomic_write_json,
    finite_or_none,
    flatten,
    history_line,
    lookup,
    read_failure,
    select_metric,
    to_json,
    trim_history,
    write_failure,
)
from gencompare.record.schema import (
    EVALUATION_KEYS,
    SCHEMA_VERSION,
    ClassCoverage,
    Classifier,
    Evaluation,
    FamilyStyle,
    Features,
    FidIs,
    Likelihood,
    MixtureCoverage,
    ModeCoverage,
    Parzen,
    RecordError,
    RunMetrics,
    StackedCoverage,
    WandbRun,
    read_metrics,
    schema_has,
    write_metrics,
)

__all__ = [
    "SCHEMA_VERSION", "EVALUATION_KEYS", "RunDir", "atomic_write", "atomic_write_json", "to_json", "flatten",
    "history_line", "trim_history", "write_failure", "read_failure", "lookup", "select_metric", "finite_or_none", "RecordError", "Likelihood",
    "Parzen", "MixtureCoverage", "ClassCoverage", "StackedCoverage", "ModeCoverage", "Classifier", "Features",
    "FidIs", "Evaluation", "FamilyStyle", "WandbRun", "RunMetrics", "read_metrics", "write_metrics", "schema_has",
]
